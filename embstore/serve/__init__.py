"""`embstore serve`: a read-only explorer of a store in the browser (pages in app.py, their data in views.py).

>>> server = start(embstore.open("~/.embstore"), port=0)     # doctest: +SKIP
>>> server.url                                               # doctest: +SKIP
'http://127.0.0.1:41873/'
>>> server.stop()                                            # doctest: +SKIP
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from embstore.errors import UsageError

if TYPE_CHECKING:
    from embstore.api import Store

DEFAULT_PORT = 8765


class Server:
    """A running `embstore serve`: its `url` (with the token, if any), `stop()` it."""

    def __init__(self, server: Any, reader: Store, url: str, thread: threading.Thread) -> None:
        self._server, self._reader, self.url, self._thread = server, reader, url, thread

    def wait(self) -> None:
        """Serve until stopped; Ctrl-C stops it (and returns: the normal end of a server)."""
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._reader.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
) -> Server:
    """Serve `store`'s published snapshot at http://host:port/ (port 0: a free one), in a thread.

    A host that is not a loopback address needs a `token` (`token='auto'` makes one; the URL carries
    it). Returns at once (a notebook, a test); `Server.wait()` serves until interrupted (the CLI).
    """
    import uvicorn

    from embstore.serve.app import LOOPBACK, make_app
    from embstore.store.core import StoreCore

    if token == "auto":
        token = secrets.token_urlsafe(18)
    if token is not None and len(token) < 8:
        raise UsageError("token: at least 8 characters (or `token='auto'` for a random one)")
    if not _loopback(host) and token is None:
        raise UsageError(
            f"host {host} is reachable from other machines: pass `token=TOKEN` (or `token='auto'`), "
            "or serve on 127.0.0.1"
        )
    reader = type(store)(StoreCore.open(store.path, snapshot=True))  # a Store (its class: api imports this module)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    hosts = {*LOOPBACK, shown} if _loopback(host) else {shown}
    if host in ("0.0.0.0", "::"):  # every interface: any name this machine is reached by, loopback too
        hosts |= {*LOOPBACK, socket.gethostname(), socket.getfqdn()} | _addresses()
    where = "127.0.0.1" if host in ("0.0.0.0", "::") else shown
    url = f"http://{where}:{bound}/" + (f"?token={token}" if token else "")
    config = uvicorn.Config(
        make_app(reader, token=token, hosts=hosts), log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="embstore-serve")
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    return Server(server, reader, url, thread)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (pass another `port=`, 0 for a free one)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _addresses() -> set[str]:
    try:
        return {str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return set()
