"""Downloading a client's URL for the HTTP service, inside the outbound-request policy.

:func:`fetch_url` downloads one http(s) URL into a directory the service chose:

- every hop (the URL and each redirect, at most ``policy.max_redirects``) goes through
  :func:`previewer.serve.netguard.check_url` and connects only to the addresses checked there;
  credentials in the URL's userinfo are sent as Basic auth to the first hop only;
- the body is capped at ``policy.max_bytes`` (a larger ``Content-Length`` is refused before
  reading; a body that streams past the cap is cut off), the whole fetch at ``policy.timeout``;
- the file is written under a fresh name (``fetched-<random hex>`` plus a sanitised
  extension) through a temporary file renamed into place, and nothing is left on failure.

Each failure is a :class:`FetchError` whose ``status`` is the HTTP status the API should
answer. Messages and log lines name the host, never the path, query string or credentials
(signed URLs carry secrets in their query).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import logging
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpcore

from previewer.serve.netguard import (
    BlockedURLError,
    NetPolicy,
    Target,
    UnresolvableHostError,
    check_url,
    open_pool,
    request_url,
)

__all__ = ["FetchError", "Fetched", "fetch_url", "fetch_url_sync", "safe_filename"]

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_USER_AGENT = b"previewer (+https://pypi.org/project/previewer/)"


@dataclass(frozen=True)
class Fetched:
    """A downloaded file.

    Attributes:
        path: The file, inside the destination directory, under a fresh name.
        size: Its size in bytes.
        content_type: The media type the server declared (lower-case, no parameters), if any.
        filename: A safe basename from ``Content-Disposition`` or the URL's path (display only).
    """

    path: Path
    size: int
    content_type: str | None
    filename: str


class FetchError(Exception):
    """A URL that could not be downloaded.

    Attributes:
        status: The HTTP status the API should answer: 400 bad or blocked URL, 413 too
            large, 502 upstream failed or answered a bad status, 504 timeout.
    """

    status: int

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def fetch_url(url: str, dest_dir: Path, policy: NetPolicy) -> Fetched:
    """Download ``url`` into ``dest_dir`` within ``policy``.

    Args:
        url: An absolute http or https URL.
        dest_dir: An existing directory the service owns.
        policy: Where requests may go, the size cap, the time limit, the redirect limit.

    Returns:
        The downloaded file.

    Raises:
        FetchError: With ``status`` 400 (bad, blocked or unresolvable URL, or a redirect to
            one), 413 (larger than ``policy.max_bytes``), 502 (connection failure, bad HTTP,
            non-2xx status, too many redirects) or 504 (``policy.timeout`` exceeded).
    """
    state = _State()
    try:
        async with asyncio.timeout(policy.timeout):
            return await _fetch(url, Path(dest_dir), policy, state)
    except TimeoutError:
        raise FetchError(
            504, f"fetching from {state.origin} took longer than {policy.timeout:g} s"
        ) from None


def fetch_url_sync(url: str, dest_dir: Path, policy: NetPolicy) -> Fetched:
    """Run :func:`fetch_url` to completion (for code outside an event loop, such as a worker).

    Args:
        url: An absolute http or https URL.
        dest_dir: An existing directory.
        policy: The outbound-request policy.

    Returns:
        The downloaded file.

    Raises:
        FetchError: As :func:`fetch_url`.
        RuntimeError: If called from a running event loop (await :func:`fetch_url` there).
    """
    return asyncio.run(fetch_url(url, dest_dir, policy))


@dataclass
class _State:
    origin: str = "the URL's host"


async def _fetch(url: str, dest_dir: Path, policy: NetPolicy, state: _State) -> Fetched:
    current = url
    for hop in range(policy.max_redirects + 1):
        what = "URL" if hop == 0 else "redirect"
        try:
            target = await check_url(current, policy)
        except BlockedURLError as exc:
            raise FetchError(400, f"{what} refused: {exc}") from None
        except UnresolvableHostError as exc:
            raise FetchError(400, f"{what} refused: {exc}") from None
        state.origin = target.origin
        log.info("fetching from %s", target.origin)
        headers = [
            (b"Host", target.host_header.encode("ascii")),
            (b"User-Agent", _USER_AGENT),
            (b"Accept", b"*/*"),
            (b"Accept-Encoding", b"identity"),
        ]
        if hop == 0 and target.authorization is not None:
            headers.append((b"Authorization", target.authorization.encode()))
        timeouts = {k: policy.timeout for k in ("connect", "read", "write", "pool")}
        try:
            async with (
                open_pool(target) as pool,
                pool.stream(
                    b"GET",
                    request_url(target),
                    headers=headers,
                    extensions={"timeout": timeouts},
                ) as response,
            ):
                if response.status in _REDIRECTS:
                    location = _header(response, b"location")
                    if not location:
                        raise FetchError(
                            502, f"{target.origin} answered HTTP {response.status} without Location"
                        )
                    current = urljoin(target.url(), location)
                    continue
                if not 200 <= response.status < 300:
                    raise FetchError(502, f"{target.origin} answered HTTP {response.status}")
                return await _save(response, target, dest_dir, policy)
        except httpcore.TimeoutException:
            raise FetchError(504, f"{target.origin} did not answer in time") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            kind = type(exc).__name__
            raise FetchError(502, f"fetching from {target.origin} failed ({kind})") from None
    raise FetchError(502, f"more than {policy.max_redirects} redirects")


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


async def _save(
    response: httpcore.Response, target: Target, dest_dir: Path, policy: NetPolicy
) -> Fetched:
    length = _header(response, b"content-length")
    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
        raise FetchError(
            413, f"{target.origin} sends {int(length)} bytes, over the {policy.max_bytes} limit"
        )
    filename = _filename(_header(response, b"content-disposition"), target.target)
    suffix = Path(filename).suffix
    suffix = suffix.lower() if _SUFFIX.fullmatch(suffix) else ""
    fd, temp = tempfile.mkstemp(prefix=".fetch-", suffix=".part", dir=dest_dir)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in response.aiter_stream():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise FetchError(
                        413, f"{target.origin} sent more than the {policy.max_bytes} byte limit"
                    )
                out.write(chunk)
        final = dest_dir / f"fetched-{uuid.uuid4().hex}{suffix}"
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return Fetched(final, size, _media_type(_header(response, b"content-type")), filename)


def _media_type(value: str | None) -> str | None:
    if value is None:
        return None
    media = value.split(";", 1)[0].strip().lower()
    return media if _MEDIA_TYPE.fullmatch(media) else None


def _filename(disposition: str | None, target: str) -> str:
    if disposition:
        message = email.message.Message()
        try:
            message["Content-Disposition"] = disposition
            name = message.get_filename()
        except (ValueError, LookupError, TypeError):
            name = None
        if name:
            return safe_filename(name)
    return safe_filename(unquote(urlsplit(target).path))


def safe_filename(name: str, default: str = "download") -> str:
    r"""Reduce a name from the network to a harmless basename.

    Only the last component (after ``/`` or ``\``) is kept; control characters are dropped,
    surrounding whitespace and dots are stripped, and the result is at most 200 characters
    (keeping the extension).

    Args:
        name: A name from ``Content-Disposition`` or a URL path.
        default: What to return when nothing usable remains.

    Returns:
        The basename, or ``default``.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F)
    base = base.strip().strip(".").strip()
    if not base:
        return default
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = f"{stem[: 199 - len(ext)]}.{ext}" if dot and len(ext) <= 10 else base[:200]
    return base
