"""A scriptable HTTP server on a loopback address, for the service's outbound-request tests.

:class:`LoopServer` runs a threaded stdlib HTTP server on ``127.0.0.x`` (a random port unless
one is asked for), answers each path with a route function, and records every accepted TCP
connection and every request (method, path, headers, body), so a test can assert that a
refused URL reached nothing at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["LoopServer", "Recorded", "Reply", "body_of", "redirect", "slow", "status"]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[bytes] | None = None  # sent one by one, `delay` apart, without Content-Length
    delay: float = 0.0
    length: int | None = None  # a Content-Length to announce instead of len(body)


Route = Callable[[Recorded], Reply]


def body_of(data: bytes, content_type: str = "application/octet-stream", **extra: str) -> Route:
    headers = [
        ("Content-Type", content_type),
        *((k.replace("_", "-"), v) for k, v in extra.items()),
    ]
    return lambda _req: Reply(200, headers, data)


def redirect(location: str, code: int = 302) -> Route:
    return lambda _req: Reply(code, [("Location", location)])


def status(code: int) -> Route:
    return lambda _req: Reply(code, [("Content-Type", "text/plain")], f"status {code}".encode())


def slow(total: int, delay: float) -> Route:
    return lambda _req: Reply(
        200, [], chunks=[b"x" * 16] * (total // 16), delay=delay, length=total
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    owner: LoopServer

    def verify_request(self, request: object, client_address: object) -> bool:
        with self.owner.lock:
            self.owner.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Recorded(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(req)
        route = owner.routes.get(self.path.split("?", 1)[0])
        reply = route(req) if route else Reply(404, [], b"not found")
        try:
            self.send_response(reply.status)
            for key, value in reply.headers:
                self.send_header(key, value)
            self.send_header("Connection", "close")
            if reply.chunks is None:
                self.send_header(
                    "Content-Length",
                    str(reply.length if reply.length is not None else len(reply.body)),
                )
                self.end_headers()
                self.wfile.write(reply.body)
            else:
                if reply.length is not None:
                    self.send_header("Content-Length", str(reply.length))
                self.end_headers()
                for chunk in reply.chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if reply.delay:
                        time.sleep(reply.delay)
        except OSError:
            pass  # the client gave up (size cap, timeout): expected
        self.close_connection = True

    do_GET = _handle
    do_POST = _handle


class LoopServer:
    """An HTTP server on ``host`` (a 127.0.0.x address), used as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.routes: dict[str, Route] = {}
        self.requests: list[Recorded] = []
        self.connections = 0
        self.lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> LoopServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
