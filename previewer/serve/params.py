"""Request options of ``POST /v2/previews/``: parsed from JSON, form fields or the query string.

Field names and shapes follow the FilePreviews v2 API: ``url``, ``sizes`` (ints or ``"WxH"``
strings), ``format``, ``metadata`` (keys), ``pages`` (``"1"``, ``"1-3"``, ``"all"``), ``data``
(returned as ``user_data``) and ``callback_url``. Errors are collected per field, so a 400
names every field that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from previewer.errors import InvalidOptionsError
from previewer.options import Options
from previewer.serve.work import METADATA_KEYS

__all__ = ["MAX_SIZES", "FieldErrors", "Request", "from_multi", "parse"]

MAX_SIZES = 10
"""Sizes one request may ask for."""

FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
"""Accepted ``format`` values (FilePreviews took ``png`` and ``jpg``) -> the format written."""

DEFAULT_SIZE = "256"
"""The size when a request names none."""

FieldErrors = dict[str, list[str]]


@dataclass
class Request:
    """A validated request.

    Attributes:
        url: Where to fetch the input (None for an upload).
        sizes: Normalised size labels (``256``, ``300x200``).
        pages: The page selection as given.
        format: The image format: ``png`` (default), ``jpeg`` or ``webp``.
        metadata: Metadata keys asked for.
        data: The client's own data, returned as ``user_data``.
        callback_url: Where to post the job when it ends.
    """

    url: str | None = field(default=None, repr=False)
    sizes: list[str] = field(default_factory=lambda: [DEFAULT_SIZE])
    pages: str = "1"
    format: str = "png"
    metadata: list[str] = field(default_factory=list)
    data: Any = None
    callback_url: str | None = field(default=None, repr=False)

    def stored(self) -> dict[str, Any]:
        """What the job row keeps (no input URL: it may carry credentials)."""
        return {
            "sizes": self.sizes,
            "pages": self.pages,
            "format": self.format,
            "metadata": self.metadata,
            "data": self.data,
            "callback_url": self.callback_url,
        }


def _http_url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 4096:
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def _str_list(value: Any) -> list[Any] | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return value
    return None


def parse(data: Mapping[str, Any], *, upload: bool) -> tuple[Request, FieldErrors]:
    """Validate request options.

    Args:
        data: The options (a JSON object, or form/query fields turned into one).
        upload: The file comes in the body (``url`` is then not allowed).

    Returns:
        The request and the errors by field (empty when valid).
    """
    req, errors = Request(), FieldErrors()

    def bad(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    known = {"url", "sizes", "format", "metadata", "pages", "data", "callback_url"}
    for name in sorted(set(data) - known):
        bad(name, "unknown field")
    if upload:
        if data.get("url") is not None:
            bad("url", "give either a file in the body or a url, not both")
    elif (url := _http_url(data.get("url"))) is None:
        bad("url", "required: an http or https URL of the file (or upload the file)")
    else:
        req.url = url
    if data.get("sizes") is not None:
        sizes = _str_list(data["sizes"])
        if not sizes:
            bad("sizes", 'a list of sizes: integers or "WIDTHxHEIGHT" strings')
        elif len(sizes) > MAX_SIZES:
            bad("sizes", f"at most {MAX_SIZES} sizes")
        else:
            try:
                opts = Options.build(sizes=[str(s) for s in sizes])
                req.sizes = [s.label for s in opts.sizes]
            except InvalidOptionsError as exc:
                bad("sizes", exc.message)
    if data.get("pages") is not None:
        pages = data["pages"]
        if isinstance(pages, bool) or not isinstance(pages, (str, int)):
            bad("pages", 'a page selection: "1", "1-3", "1,3,5" or "all"')
        else:
            try:
                Options.build(pages=str(pages))
                req.pages = str(pages)
            except InvalidOptionsError as exc:
                bad("pages", exc.message)
    fmt = data.get("format")
    if fmt is not None:
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            bad("format", f"one of {', '.join(FORMATS)}")
        else:
            req.format = FORMATS[fmt.lower()]
    if data.get("metadata") is not None:
        keys = _str_list(data["metadata"])
        allowed = (*METADATA_KEYS, "all")
        if keys is None or not all(isinstance(k, str) for k in keys):
            bad("metadata", "a list of metadata keys")
        elif unknown := sorted({k for k in keys if k not in allowed}):
            bad("metadata", f"unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
        else:
            req.metadata = list(dict.fromkeys(keys))
    if "data" in data:
        req.data = data["data"]
    if data.get("callback_url") is not None:
        if (cb := _http_url(data["callback_url"])) is None:
            bad("callback_url", "an http or https URL")
        req.callback_url = cb
    return req, errors


def from_multi(items: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], FieldErrors]:
    """Turn form or query fields into options: repeated or comma-separated lists, a ``json``.

    Args:
        items: The ``(name, value)`` pairs, in order.

    Returns:
        The options as a JSON-like object, and errors (a ``json`` field that is not an object).
    """
    out: dict[str, Any] = {}
    errors = FieldErrors()
    for name, value in items:
        if name == "json":
            try:
                obj = json.loads(value)
            except json.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                errors.setdefault("json", []).append("not a JSON object")
                continue
            out.update(obj)
        elif name in ("sizes", "metadata"):
            out.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
        elif name == "data":
            try:
                out["data"] = json.loads(value)
            except json.JSONDecodeError:
                out["data"] = value
        elif name not in ("wait",):
            out[name] = value
    return out, errors
