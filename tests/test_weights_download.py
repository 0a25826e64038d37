"""Pretrained weights: downloaded whole and checked, or refused quickly when the network is silent."""

import hashlib
import http.server
import socket
import threading
import time

import pytest

from embstore.errors import WeightsUnavailableError
from embstore.ingest import models


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_silent_network_fails_within_the_timeout(torch_home, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (in the kernel) and never answers
    monkeypatch.setattr(models, "DOWNLOAD_TIMEOUT", 1.0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/resnet18-f37072fd.pth"
    started = time.monotonic()
    try:
        with pytest.raises(WeightsUnavailableError, match="cannot be downloaded .*timed out.*put the file at"):
            models._cached_or_download(url)
    finally:
        listener.close()
    assert time.monotonic() - started < 5
    assert not list(torch_home.glob("*")), "nothing half-written is left in the cache"


def test_a_download_is_checked_against_the_hash_in_its_name(torch_home):
    body = b"weights" * 1000
    good = hashlib.sha256(body).hexdigest()[:8]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = _serve(Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        path = models._cached_or_download(f"{base}/net-{good}.pth")
        assert path.read_bytes() == body and path.parent == torch_home
        with pytest.raises(WeightsUnavailableError, match="does not start with 0bad0bad"):
            models._cached_or_download(f"{base}/net-0bad0bad.pth")
        assert sorted(p.name for p in torch_home.iterdir()) == [f"net-{good}.pth"]
    finally:
        server.shutdown()
