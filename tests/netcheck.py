"""Helpers for isolation tests: a listener that records connections, and planted files.

An engine that escapes its isolation shows up in one of two ways, and both are checked on
real runs:

- it connects somewhere: :class:`Listener` accepts TCP connections on ``127.0.0.1`` (a random
  port), records each one with the first bytes it sent, and answers an HTTP request with a
  small PNG of :data:`PLANTED_RGB`, so a fetched image would also show in the preview;
- it reads a file it was not given: :func:`plant` writes a PNG of :data:`PLANTED_RGB` and a
  text file with :data:`SECRET`; :func:`planted_pixels` counts those pixels in a preview and
  :func:`assert_no_secret` checks the preview's bytes for the text.

The colour is one no test document uses (a pure magenta).
"""

from __future__ import annotations

import socket
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "PLANTED_RGB",
    "SECRET",
    "Connection",
    "Listener",
    "Planted",
    "assert_no_secret",
    "plant",
    "planted_pixels",
    "png_bytes",
]

PLANTED_RGB = (255, 0, 255)
SECRET = "previewer-planted-secret-7f3a9c"


def png_bytes(size: tuple[int, int] = (16, 16), rgb: tuple[int, int, int] = PLANTED_RGB) -> bytes:
    """Return a solid RGB PNG, written without Pillow (usable from any test)."""
    width, height = size

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    row = b"\0" + bytes(rgb) * width
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\0\0\0"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Connection:
    """One accepted connection: the peer address and the first bytes it sent."""

    peer: tuple[str, int]
    data: bytes


@dataclass
class Listener:
    """A TCP listener on 127.0.0.1 that records every connection (use as a context manager).

    Attributes:
        port: The port it listens on (chosen by the kernel).
        connections: What connected so far.
    """

    port: int = 0
    connections: list[Connection] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Listener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(0.1)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="netcheck", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def url(self, path: str = "/x.png") -> str:
        """An ``http://`` URL on this listener."""
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                self.connections.append(Connection(peer, data))
                if data[:4] in (b"GET ", b"HEAD", b"OPTI", b"POST"):
                    body = png_bytes()
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    ).encode()
                    try:
                        conn.sendall(head + body)
                    except OSError:
                        pass


@dataclass(frozen=True)
class Planted:
    """Files planted outside what an engine is given.

    Attributes:
        image: A PNG of :data:`PLANTED_RGB`.
        text: A text file holding :data:`SECRET`.
    """

    image: Path
    text: Path


def plant(directory: Path) -> Planted:
    """Write the planted image and text file into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / "planted.png"
    image.write_bytes(png_bytes((64, 64)))
    text = directory / "planted.txt"
    text.write_text(SECRET + "\n", encoding="ascii")
    return Planted(image, text)


def planted_pixels(png: Path, tolerance: int = 40) -> int:
    """Count the pixels of ``png`` close to :data:`PLANTED_RGB` (anti-aliasing tolerated)."""
    from PIL import Image

    with Image.open(png) as image:
        data = image.convert("RGB").tobytes()
    r0, g0, b0 = PLANTED_RGB
    return sum(
        1
        for i in range(0, len(data), 3)
        if abs(data[i] - r0) <= tolerance
        and abs(data[i + 1] - g0) <= tolerance
        and abs(data[i + 2] - b0) <= tolerance
    )


def assert_no_secret(*paths: Path) -> None:
    """Fail if any of ``paths`` (outputs, logs) contains :data:`SECRET`."""
    for path in paths:
        assert SECRET.encode() not in path.read_bytes(), f"{path} holds the planted secret"
