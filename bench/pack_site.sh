#!/usr/bin/env bash
# Packs the packages a lent GPU machine lacks (duckdb, deltalake and its arro3/deprecated, faiss-cpu)
# for its Python 3.12 into .whl/site.tar.xz, for bench/on_device.sh. xz -9 takes ~3 min on 2 cores.
set -euo pipefail
work=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$work/wheels" \
  "duckdb==$(python3 -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null || echo 2.0.1)" \
  deltalake arro3-core deprecated faiss-cpu
mkdir -p "$work/site" .whl
for w in "$work"/wheels/*.whl; do unzip -q -o "$w" -d "$work/site"; done
tar -C "$work/site" -cf - . | xz -9e -T0 >.whl/site.tar.xz
rm -rf "$work"
ls -l .whl/site.tar.xz
