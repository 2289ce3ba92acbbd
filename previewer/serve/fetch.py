"""Fetching an input file from a URL into the job's directory (simple version).

This is the simple version: one checked URL, httpx following redirects, the size capped while
streaming. The SSRF-safe implementation replaces it with the same interface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from previewer.serve.netguard import BlockedURLError, NetPolicy, check_url

__all__ = ["FetchError", "Fetched", "fetch_url"]


@dataclass(frozen=True)
class Fetched:
    """A fetched file.

    Attributes:
        path: Where it was written.
        size: Its size in bytes.
        content_type: The Content-Type the server gave.
        filename: From Content-Disposition or the URL's path, a basename only.
    """

    path: Path
    size: int
    content_type: str | None
    filename: str


class FetchError(Exception):
    """A fetch that failed; ``status`` is the HTTP status the API answers.

    Args:
        message: What went wrong (never a server path).
        status: 400 bad or blocked URL, 413 too large, 502 upstream failed, 504 timeout.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _filename(url: str, disposition: str | None) -> str:
    if disposition:
        match = re.search(r'filename="?([^";]+)"?', disposition)
        if match:
            name = PurePosixPath(match.group(1).replace("\\", "/")).name
            if name not in ("", ".", ".."):
                return name
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name if name not in ("", ".", "..") else "download"


async def fetch_url(url: str, dest_dir: Path, policy: NetPolicy) -> Fetched:
    """Download ``url`` into ``dest_dir`` under the policy.

    Args:
        url: The URL.
        dest_dir: An existing directory.
        policy: What may be fetched.

    Returns:
        The fetched file.

    Raises:
        FetchError: With the status to answer.
    """
    import httpx

    try:
        check_url(url, policy)
    except BlockedURLError as exc:
        raise FetchError(str(exc), 400) from exc
    dest = dest_dir / "download"
    size = 0
    try:
        async with (
            httpx.AsyncClient(
                timeout=policy.timeout, follow_redirects=True, max_redirects=policy.max_redirects
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                raise FetchError(f"the URL answered HTTP {response.status_code}", 502)
            with dest.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise FetchError(
                            f"the file at the URL is larger than {policy.max_bytes} bytes", 413
                        )
                    out.write(chunk)
            return Fetched(
                path=dest,
                size=size,
                content_type=response.headers.get("content-type"),
                filename=_filename(str(response.url), response.headers.get("content-disposition")),
            )
    except httpx.TimeoutException as exc:
        raise FetchError("the URL did not answer in time", 504) from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"the URL could not be fetched ({type(exc).__name__})", 502) from exc
