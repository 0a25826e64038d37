#!/usr/bin/env bash
# Test setup: Debian's Chromium for the report's browser tests (and a font for its text).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup-browser: need root or sudo to apt-get install chromium" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
chromium --version
