"""Running the app under uvicorn: bind, serve, and drain gracefully on SIGTERM or Ctrl-C.

On SIGTERM uvicorn stops accepting connections and lets open requests finish; the app's
lifespan then lets queued and running jobs finish for up to the grace period (see
:meth:`previewer.serve.runner.Runner.drain`), stops the engines and returns.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from previewer.serve.app import Settings, create_app

__all__ = ["is_loopback", "parse_bind", "run"]

log = logging.getLogger("previewer.serve")


def parse_bind(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:8000`` for IPv6).

    Args:
        value: The address.

    Returns:
        ``(host, port)``.

    Raises:
        ValueError: If malformed.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"expected HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_class() -> type:
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, for which SIGTERM is the normal way to stop.

        uvicorn 0.29+ raises a captured signal again once it has shut down gracefully, which
        would turn a drained stop into a "terminated" exit; SIGTERM is not raised again.
        """

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
                captured.remove(sig)

    return Server


def run(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C, then drain.

    Args:
        settings: The configuration.
        host: Address to bind.
        port: Port to bind (0 picks a free one).
    """
    import uvicorn

    _Server = _server_class()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.grace) + 5,
        server_header=False,
    )
    server = _Server(config)
    auth = "HTTP Basic, tokens from the tokens file" if settings.tokens else "none (loopback only)"
    log.info(
        "previewer serve on http://%s:%d (storage %s; authentication: %s; %d job(s) at once, "
        "%d queued)",
        host,
        port,
        app.state.service.files.where,
        auth,
        settings.jobs,
        settings.queue_size,
    )
    server.run()
