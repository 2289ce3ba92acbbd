"""Running ``previewer serve`` for the tests: a real server on a free loopback port.

:class:`Served` starts the command as a subprocess (log to a file), waits for ``/healthz`` and,
on :meth:`Served.stop`, sends SIGTERM and reports the exit status and any child left behind.
:class:`FileServer` serves files (and records POSTed callbacks) on 127.0.0.1 from a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support import start_previewer

__all__ = ["FileServer", "Served", "free_port", "sign"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign(secret: str, path: str, exp: int) -> str:
    """The signature ``previewer serve`` gives ``path`` valid until ``exp``."""
    return hmac.new(secret.encode(), f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()


class Served:
    """A running ``previewer serve``.

    Args:
        storage: Its storage directory.
        *args: More options.
        env: Its environment (default: :func:`tests.support.clean_env`).
        storage_url: ``--storage`` when not ``storage`` (an ``s3://`` URL); ``storage`` then
            only names the log file beside it.
    """

    def __init__(
        self,
        storage: Path,
        *args: str,
        env: dict[str, str] | None = None,
        storage_url: str | None = None,
    ) -> None:
        self.storage = storage
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = storage.parent / f"{storage.name}.log"
        self._log = self.log_path.open("wb")
        self.proc = start_previewer(
            "serve",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--storage",
            storage_url or storage,
            *args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"previewer serve exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"previewer serve did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        """What it has logged so far."""
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> set[int]:
        """Live processes it started."""
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return set()
        return {p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}

    def stop(self, timeout: float = 60) -> tuple[int, set[int]]:
        """SIGTERM it and wait.

        Returns:
            Its exit status and the processes it had started that are still alive 5 s later.
        """
        kids = self.descendants()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        deadline = time.monotonic() + 5
        alive = kids
        while alive and time.monotonic() < deadline:
            alive = {p for p in alive if psutil.pid_exists(p) and _live(p)}
            time.sleep(0.05)
        return code, alive


def _live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class FileServer:
    """Serves ``root`` over HTTP on 127.0.0.1; POSTs are recorded in :attr:`posts`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.posts.append((self.path, dict(self.headers), json.loads(body or b"null")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
