"""ASGI middleware: the access log, request metrics and the streaming body-size guard.

Written as plain ASGI (no ``BaseHTTPMiddleware``), so a client that disconnects while a request
waits never cancels the app's own work.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from previewer.serve.metrics import Metrics

__all__ = ["BodyTooLargeError", "Observe"]

access = logging.getLogger("previewer.serve.access")


class BodyTooLargeError(Exception):
    """A request body went past the limit while it was being read."""


class Observe:
    """Logs one line per request, counts it by route and status, and caps request bodies.

    The log line is ``client= method= path= route= status= bytes= ms=``: never the query
    string (signatures) or headers (credentials).

    Args:
        app: The app.
        metrics: The metrics.
        max_body: Largest request body read; past it, reading raises :class:`BodyTooLargeError`.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        sent = 0
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLargeError
            return message

        async def observing_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, observing_send)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            if status == 429:
                self.metrics.rejected.inc()
            client = scope.get("client") or ("-", 0)
            fields = {
                "client": client[0],
                "method": scope["method"],
                "path": scope["path"],
                "route": template,
                "status": status,
                "bytes": sent,
                "ms": round((time.monotonic() - started) * 1000, 1),
            }
            # key=value text for people and log shippers; the same fields on the record
            # (``record.http``) for a structured formatter.
            access.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra={"http": fields})
