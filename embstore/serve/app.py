"""The web application of `embstore serve`: its routes, its guard (host and token) and its one error shape.

Starlette + uvicorn: a small, well-kept ASGI stack (Starlette is FastAPI's core, without pydantic)
that serves sync endpoints from a thread pool, static files and one middleware; nothing here needs
more. Every route reads a Store opened on the published snapshot (`embstore.open(…, snapshot=True)`),
so a page never takes a lock an ingest waits for. Store calls are serialised by one lock: DuckDB
connections of one process share an instance, and a page's reads are milliseconds each.

Safe by default: pages send a Content-Security-Policy that lets the browser fetch only from this
server; a request must name this server as its Host (no DNS rebinding); with a token every request
carries it (`?token=`, once, then a cookie; or `Authorization: Bearer`); image routes take an image id
and serve only the file the catalog lists for it, and only while its content still hashes to that id.
A bad request gets a 4xx with one line: JSON `{"error": {"type", "message"}}` under /api, text elsewhere.
"""

from __future__ import annotations

import hmac
import html
import json
import re
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

from embstore.errors import EmbstoreError, MissingDependencyError, NotFoundError, StoreError, UsageError
from embstore.serve import views

if TYPE_CHECKING:
    from embstore.api import Store

IMAGE_ID = re.compile(r"^[0-9a-f]{20}$")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})  # the Host names of a loopback server
TOKEN_COOKIE = "embstore_token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
FOREVER = "public, max-age=31536000, immutable"  # image ids are content hashes: a file never changes


def make_app(store: Store, *, token: str | None = None, hosts: set[str] | None = None) -> Any:
    """The Starlette application serving `store` (a snapshot reader); `hosts`: the Host names accepted."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    lock = threading.Lock()
    hosts = hosts or set(LOOPBACK)

    def api(compute):
        """A JSON endpoint: `compute(request)` under the store lock."""

        def endpoint(request):
            from starlette.responses import JSONResponse

            with lock:
                body = compute(request)
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

        return endpoint

    def query(request) -> dict[str, str]:
        return dict(request.query_params)

    routes = [
        Route("/", _page("store")),
        Route("/class/{name:path}", _page("class", "name")),
        Route("/image/{image_id}", _page("image", "image_id")),
        Route("/analyses", _page("analyses")),
        Route("/map", _page("map")),
        Route("/sql", _page("sql")),
        Route("/api/status", api(lambda r: views.status(store))),
        Route("/api/store", api(lambda r: views.overview(store))),
        Route("/api/class/{name:path}", api(lambda r: views.class_page(store, r.path_params["name"], query(r)))),
        Route("/api/image/{image_id}", api(lambda r: views.image_page(store, _image_id(r), query(r)))),
        Route("/api/analyses", api(lambda r: views.analyses(store))),
        Route("/api/map", api(lambda r: views.projection(store, query(r)))),
        Route("/api/sql", api(lambda r: views.sql(store, r.query_params.get("q", "")))),
        Route("/api/examples", api(lambda r: {"examples": examples()})),
        Route("/file/thumb/{image_id}", _file(store, lock, thumb=True)),
        Route("/file/image/{image_id}", _file(store, lock, thumb=False)),
        Mount("/static", StaticFiles(directory=str(resources.files("embstore.serve") / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, hosts=hosts, token=token)],
        exception_handlers={EmbstoreError: _error, Exception: _error, 404: _error, 405: _error},
    )


def examples() -> list[dict[str, str]]:
    """The README's five useful queries (title, SQL), as the SQL page offers them."""
    text = (resources.files("embstore.serve") / "examples.sql").read_text()
    out = []
    for block in text.strip().split("\n\n"):
        title, _, sql = block.partition("\n")
        out.append({"title": title.removeprefix("-- ").strip(), "sql": sql.strip()})
    return out


# -- pages and files -------------------------------------------------------------------------
def _page(kind: str, arg: str | None = None):
    """The HTML shell of one page: the script renders it from /api (same path, same query)."""
    template = (resources.files("embstore.serve") / "static" / "page.html").read_text()

    def endpoint(request):
        from starlette.responses import HTMLResponse

        value = _image_id(request) if kind == "image" else request.path_params.get(arg, "") if arg else ""
        body = template.replace("{{page}}", kind).replace("{{arg}}", html.escape(json.dumps(value), quote=True))
        return HTMLResponse(body, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    return endpoint


def _image_id(request) -> str:
    value = request.path_params["image_id"]
    if not IMAGE_ID.match(value):
        raise UsageError(f"{value!r} is not an image id (20 hex digits)")
    return value


def _file(store: Store, lock: threading.Lock, *, thumb: bool):
    """An image's thumbnail (made once, cached in the store) or its file, by id: only what the catalog lists."""

    def endpoint(request):
        import mimetypes

        from starlette.responses import Response

        from embstore.report.thumbnails import Thumbnails
        from embstore.store.catalog import Catalog

        image_id = _image_id(request)
        with lock, store.core.read() as con:
            card = Catalog(con).image_card(image_id)
        if card is None:
            raise NotFoundError(f"no stored image with id {image_id}")
        if thumb:
            thumbs = Thumbnails(store.core)
            path, media = thumbs.path(image_id), "image/jpeg"
            made = None if path.is_file() else thumbs.get(image_id, card["path"])  # made once, then cached
            if made is None and not path.is_file():
                raise NotFoundError(f"image {image_id}: its file {card['path']} is gone or changed")
            data = path.read_bytes() if path.is_file() else _jpeg(made)  # a read-only store caches nothing
        else:
            data = _listed_file(image_id, card["path"])
            media = mimetypes.guess_type(card["path"])[0] or "application/octet-stream"
        headers = {"Cache-Control": FOREVER, "ETag": f'"{image_id}"', "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=media, headers=headers)

    return endpoint


def _listed_file(image_id: str, path: str) -> bytes:
    """The bytes at the catalog's path of `image_id`, if they still are that image."""
    from embstore.ingest.images import read_image_bytes

    data = read_image_bytes(path, image_id)
    if data is None:
        raise NotFoundError(f"image {image_id}: its file {path} is gone or changed")
    return data


def _jpeg(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


# -- the guard and the errors ----------------------------------------------------------------
class _Guard:
    """ASGI middleware: the Host must be this server's, and the token (when set) must be given."""

    def __init__(self, app, hosts: set[str], token: str | None) -> None:
        self.app, self.hosts, self.token = app, hosts, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        request = Request(scope)
        host = _host_name(request.headers.get("host") or "")
        if host not in self.hosts:
            await _refuse(scope, receive, send, 421, "UsageError", f"host {host or '(none)'!r} is not this server")
            return
        if self.token is not None:
            auth = request.headers.get("authorization", "")
            given = request.query_params.get("token") or (auth[7:] if auth.startswith("Bearer ") else None) or \
                request.cookies.get(TOKEN_COOKIE)  # fmt: skip
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(
                    scope,
                    receive,
                    send,
                    401,
                    "UsageError",
                    "a token is required: open the URL "
                    "`embstore serve` printed (…?token=…) or send `Authorization: Bearer TOKEN`",
                )
                return

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start" and self.token is not None and \
                    request.query_params.get("token"):  # fmt: skip
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _host_name(header: str) -> str:
    """The host of a Host header, without its port.

    >>> _host_name("127.0.0.1:8765"), _host_name("[::1]:80"), _host_name("localhost")
    ('127.0.0.1', '[::1]', 'localhost')
    """
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0]


async def _refuse(scope, receive, send, status: int, kind: str, message: str) -> None:
    response = _response(scope["path"], status, kind, message)
    await response(scope, receive, send)


STATUS = ((NotFoundError, 404), (MissingDependencyError, 501), (UsageError, 400), (StoreError, 503))


async def _error(request, exc) -> Any:
    """Every error as one line: 4xx for what the request asked, 5xx for what the server could not do."""
    from starlette.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        message = {404: f"no page {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
        return _response(request.url.path, exc.status_code, "UsageError", message)
    if isinstance(exc, EmbstoreError):
        status = next((s for t, s in STATUS if isinstance(exc, t)), 400)
        return _response(request.url.path, status, type(exc).__name__, " ".join(str(exc).split()))
    return _response(request.url.path, 500, "InternalError", " ".join(f"{type(exc).__name__}: {exc}".split())[:300])


def _response(path: str, status: int, kind: str, message: str) -> Any:
    from starlette.responses import JSONResponse, PlainTextResponse

    if path.startswith("/api/"):
        return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)
    return PlainTextResponse(message + "\n", status_code=status)
