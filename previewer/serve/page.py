"""The service's human page: ``GET /`` (a drop zone that uploads files and shows their previews).

The page is static (``static/index.html``, ``app.js``, ``style.css``, shipped as package data):
no build step, no framework, nothing loaded from another origin. It talks to the same server's
``/v2/previews/`` API like any other client. :func:`page_routes` gives the routes an application
mounts; every response carries a strict Content-Security-Policy, ``nosniff`` and a validator
(``ETag``) so browsers revalidate instead of downloading the files again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

STATIC = Path(__file__).resolve().parent / "static"

# The files the page is made of and their types; nothing else under /static/ is served, so
# no request path ever reaches the file system.
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page changes only with the package: a short max-age, then revalidation by ETag.
_CACHE_PAGE = "no-cache"
_CACHE_ASSET = "public, max-age=300, must-revalidate"


def content_security_policy(img_sources: Sequence[str] = ()) -> str:
    """The page's Content-Security-Policy.

    Args:
        img_sources: Further origins thumbnails may load from (an S3 bucket's origin, say),
            besides the service itself, ``blob:`` and ``data:``.

    Returns:
        The header value: scripts, styles and requests only from the service itself.
    """
    images = " ".join(["'self'", "blob:", "data:", *img_sources])
    return (
        "default-src 'self'; "
        f"img-src {images}; "
        "script-src 'self'; "
        "style-src 'self'; "
        "connect-src 'self'; "
        "font-src 'none'; "
        "object-src 'none'; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str
    cache: str


def _load(name: str) -> _Asset:
    body = (STATIC / name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    cache = _CACHE_PAGE if name == "index.html" else _CACHE_ASSET
    return _Asset(body, _TYPES[name], etag, cache)


def page_routes(*, img_sources: Sequence[str] = ()) -> list[BaseRoute]:
    """The routes of the page, for an application to put in its route list.

    ``GET /`` answers the page, ``GET /static/{name}`` its script and style sheet (404 for
    any other name). Both answer ``HEAD`` too and honour ``If-None-Match``.

    Args:
        img_sources: Origins besides the service that thumbnail URLs may point at (storage
            that is not served by the service itself); added to the policy's ``img-src``.

    Returns:
        The routes: ``/`` (named ``page``) and ``/static/{name}`` (named ``static``).
    """
    assets = {name: _load(name) for name in _TYPES}
    headers = {
        "Content-Security-Policy": content_security_policy(img_sources),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }

    def answer(request: Request, asset: _Asset) -> Response:
        own = {**headers, "ETag": asset.etag, "Cache-Control": asset.cache}
        if asset.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=own)
        body = b"" if request.method == "HEAD" else asset.body
        response = Response(body, media_type=asset.media_type, headers=own)
        response.headers["Content-Length"] = str(len(asset.body))
        return response

    async def index(request: Request) -> Response:
        return answer(request, assets["index.html"])

    async def static(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None or request.path_params["name"] == "index.html":
            return Response(
                b'{"error":{"type":"not_found","code":"not_found","message":"no such file"}}',
                status_code=404,
                media_type="application/json",
                headers={"X-Content-Type-Options": "nosniff"},
            )
        return answer(request, asset)

    return [
        Route("/", index, methods=["GET", "HEAD"], name="page"),
        Route("/static/{name:str}", static, methods=["GET", "HEAD"], name="static"),
    ]


def _etags(header: str) -> set[str]:
    """The entity tags of an ``If-None-Match`` header (weak ones compared as strong)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
