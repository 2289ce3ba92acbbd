"""The ``previewer serve`` command: runs the HTTP service (:mod:`previewer.serve`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from previewer.cli_limits import limit_options, limits_from_params

if TYPE_CHECKING:
    from previewer.serve.storage import Files

__all__ = ["default_storage", "serve"]


def default_storage() -> Path:
    """``$XDG_DATA_HOME/previewer/serve`` (``~/.local/share/previewer/serve``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "previewer" / "serve"


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--bind",
    default="127.0.0.1:8000",
    show_default=True,
    envvar="PREVIEWER_BIND",
    help="Address and port to listen on (HOST:PORT).",
)
@click.option(
    "--storage",
    envvar="PREVIEWER_STORAGE",
    default=None,
    help="Directory for the job database and files, or s3://BUCKET/PREFIX?endpoint=URL&"
    "region=NAME for the job files in a bucket (credentials from the AWS environment)  "
    "[default: $XDG_DATA_HOME/previewer/serve].",
)
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PREVIEWER_STATE",
    default=None,
    help="Directory for the job database and the generated signing key (with s3:// storage "
    "also the jobs' working files)  [default: the storage directory; with s3:// storage "
    "$XDG_DATA_HOME/previewer/serve].",
)
@click.option(
    "--tokens",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="PREVIEWER_TOKENS",
    default=None,
    help="File of API credentials: key:secret per line, or a JSON object. Required unless "
    "bound to loopback.",
)
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=2, show_default=True,
    help="Conversions running at once.",
)  # fmt: skip
@click.option(
    "--queue-size", type=click.IntRange(min=0), default=16, show_default=True,
    help="Jobs waiting at most; beyond it requests get 429.",
)  # fmt: skip
@click.option(
    "--allow-net",
    multiple=True,
    help="Network (CIDR or address) URL inputs and callbacks may reach although private; "
    "repeatable.",
)
@click.option(
    "--ttl", type=click.FloatRange(min=1), default=86400.0, show_default=True,
    help="Seconds jobs and their files are kept.",
)  # fmt: skip
@click.option(
    "--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
    help="Seconds running jobs get to finish on SIGTERM.",
)  # fmt: skip
@click.option(
    "--signing-key",
    "signing_keys",
    multiple=True,
    envvar="PREVIEWER_SIGNING_KEYS",
    help="ID:SECRET signing result URLs; repeatable, the first signs, all verify "
    "[default: a key generated once in the storage directory].",
)
@click.option(
    "--webhook-secret",
    envvar="PREVIEWER_WEBHOOK_SECRET",
    default=None,
    help="Standard Webhooks secret (whsec_...) signing callbacks; callbacks are also sent as "
    "FilePreviews JWTs signed with the job's API secret.",
)
@click.option(
    "--broker",
    default=None,
    envvar="PREVIEWER_BROKER_URL",
    help="Redis URL: send conversions to queue workers (previewer worker) and keep job state "
    "in Redis; the workers must see the storage directory at the same path.",
)
@click.option(
    "--worker-grace", type=click.FloatRange(min=1), default=30.0, show_default=True,
    help="With --broker: seconds without any queue worker answering after which waiting "
    "jobs fail.",
)  # fmt: skip
@limit_options
def serve(
    bind: str,
    storage: str | None,
    state: Path | None,
    tokens: Path | None,
    jobs: int,
    queue_size: int,
    allow_net: tuple[str, ...],
    ttl: float,
    grace: float,
    signing_keys: tuple[str, ...],
    webhook_secret: str | None,
    broker: str | None,
    worker_grace: float,
    **limit_params: Any,
) -> None:
    """Run the HTTP preview service (a FilePreviews v2 compatible API).

    \b
    Examples:
      previewer serve
      previewer serve --bind 0.0.0.0:8000 --tokens tokens.txt --jobs 4
      curl -F file=@report.pdf 'http://127.0.0.1:8000/v2/previews/?wait=10'
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    import logging

    from previewer.serve import auth, netguard, server, signing
    from previewer.serve.app import Settings

    try:
        host, port = server.parse_bind(bind)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bind") from exc
    token_set = None
    if tokens is not None:
        try:
            token_set = auth.load_tokens(tokens)
        except auth.TokenError as exc:
            raise click.BadParameter(str(exc), param_hint="--tokens") from exc
    elif not server.is_loopback(host):
        raise click.UsageError(
            f"refusing to serve on {host} without authentication: give --tokens FILE, "
            "or bind to 127.0.0.1"
        )
    files, root, state_dir = _storage(storage, state)
    for folder, hint in ((root, "--storage"), (state_dir, "--state")):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            if files is not None:
                hint = "--state"
            raise click.BadParameter(
                f"cannot create {folder}: {exc.strerror}", param_hint=hint
            ) from exc
    keys = []
    for spec in signing_keys:
        try:
            keys.append(signing.parse_key(spec))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--signing-key") from exc
    if not keys:
        keys.append(signing.load_or_create_key((state_dir or root) / "signing.key"))
    limits = limits_from_params(limit_params)
    try:
        policy = netguard.NetPolicy.from_allow(allow_net, max_bytes=limits.max_file_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-net") from exc
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("previewer.serve", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    settings = Settings(
        storage=root,
        tokens=token_set,
        signing_keys=keys,
        jobs=jobs,
        queue_size=queue_size,
        ttl=ttl,
        grace=grace,
        limits=limits,
        policy=policy,
        webhook_secret=webhook_secret,
        broker=broker,
        state=state_dir,
        files=files,
        worker_grace=worker_grace,
    )
    server.run(settings, host, port)


def _storage(storage: str | None, state: Path | None) -> tuple[Files | None, Path, Path | None]:
    """The job files' storage, the local storage directory and a separate state directory.

    Returns:
        ``(files, root, state)``: ``files`` is None for a local directory (``root``, the
        database in ``state`` when given); for ``s3://`` it is the bucket, and ``root`` the
        local state and working directory.
    """
    if storage is None or "://" not in storage:
        root = (Path(storage) if storage else default_storage()).absolute()
        separate = state.absolute() if state is not None else None
        return None, root, separate if separate != root else None
    from previewer.serve.storage import StorageError, parse_s3_url

    if not storage.startswith("s3://"):
        scheme = storage.partition("://")[0]
        raise click.BadParameter(
            f"unsupported storage URL scheme {scheme!r}: give a directory or s3://BUCKET/PREFIX",
            param_hint="--storage",
        )
    try:
        location = parse_s3_url(storage)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage") from None
    from previewer.serve.s3 import S3Files

    try:
        files = S3Files(location)
    except StorageError as exc:
        raise click.UsageError(str(exc)) from None
    return files, (state or default_storage()).absolute(), None
