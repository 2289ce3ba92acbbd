"""Third-party converters and documents given the contract's defaults, once, when loaded.

The contract (:mod:`previewer.plugin`) declares optional members with defaults in
:class:`~previewer.plugin.BaseConverter` and :class:`~previewer.plugin.BaseDocument`. A plugin
need not subclass either: the registry wraps every converter that is not built in, and the
wrapper wraps each document it opens that is not a ``BaseDocument``, so the rest of previewer
reads every member as a plain attribute. This is the only place that looks for a member.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from previewer.plugin import (
    Availability,
    BaseConverter,
    BaseDocument,
    Box,
    ConvertContext,
    Converter,
    Document,
)

__all__ = ["conform_converter", "conform_document"]

REQUIRED_CONVERTER = ("name", "mime_types", "priority", "availability", "open")
"""What a converter must have (the rest has defaults)."""

OPTIONAL_CONVERTER = ("fallback_mime_types", "sandboxed", "warm_engine")
"""The optional members of a converter; their defaults are :class:`BaseConverter`'s."""


class _Converter(BaseConverter):
    """A converter from a plugin, with the defaults of what it does not declare."""

    name: ClassVar[str]
    mime_types: ClassVar[frozenset[str]]
    priority: ClassVar[int]

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def availability(self) -> Availability:
        """Return the plugin's availability."""
        result: Availability = self._inner.availability()
        return result

    def open(self, source: Path, ctx: ConvertContext) -> Document:
        """Open ``source`` with the plugin and give the document the contract's defaults."""
        return conform_document(self._inner.open(source, ctx))

    def __repr__(self) -> str:
        return f"conformed({self._inner!r})"


def conform_converter(converter: Any) -> Converter:
    """Return ``converter`` with every member of the contract, optional ones defaulted.

    Args:
        converter: A converter instance from a plugin (or a test).

    Returns:
        A converter whose optional members (``fallback_mime_types``, ``sandboxed``,
        ``warm_engine``) are the plugin's or the defaults, and whose documents are conformed.

    Raises:
        TypeError: A required member is missing (the registry lists the converter as failed
            to load, with this message).
    """
    missing = [m for m in REQUIRED_CONVERTER if not hasattr(converter, m)]
    if missing:
        raise TypeError(
            f"{type(converter).__qualname__} does not implement the converter contract: "
            f"missing {', '.join(missing)}"
        )
    members: dict[str, Any] = {
        "name": str(converter.name),
        "mime_types": frozenset(str(m) for m in converter.mime_types),
        "priority": int(converter.priority),
    }
    for member in OPTIONAL_CONVERTER:
        members[member] = getattr(converter, member, getattr(BaseConverter, member))
    members["fallback_mime_types"] = frozenset(members["fallback_mime_types"])
    # One class per converter: the members stay class attributes, as the contract says.
    cls = type(f"Conformed{type(converter).__name__}", (_Converter,), members)
    return cast(Converter, cls(converter))


class _Document(BaseDocument):
    """A document from a plugin, with the defaults of what it does not have."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.units: Literal["pt", "px"] = inner.units
        self.page_count_known = bool(getattr(inner, "page_count_known", True))
        self._render_png = getattr(inner, "render_png", None)
        self._metadata = getattr(inner, "metadata", None)
        self._text = getattr(inner, "text", None)

    @property
    def page_count(self) -> int:
        """The plugin document's page count."""
        return int(self._inner.page_count)

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the plugin document's page size."""
        width, height = self._inner.page_size(index)
        return float(width), float(height)

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Any:
        """Render with the plugin document."""
        return self._inner.render(index, scale=scale, clip=clip)

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """The plugin document's PNG fast path, if it has one."""
        if self._render_png is None:
            return None
        data = self._render_png(index, size=size)
        return data if isinstance(data, bytes) else None

    def metadata(self) -> dict[str, Any]:
        """The plugin document's facts, if it gives any."""
        return dict(self._metadata()) if self._metadata is not None else {}

    def text(self, *, max_pages: int, max_chars: int) -> str | None:
        """The plugin document's text layer, if it has one."""
        if self._text is None:
            return None
        found = self._text(max_pages=max_pages, max_chars=max_chars)
        return found if isinstance(found, str) else None

    def close(self) -> None:
        """Close the plugin document."""
        self._inner.close()


def conform_document(doc: Any) -> Document:
    """Return ``doc`` with every member of :class:`~previewer.plugin.Document`.

    Args:
        doc: What a plugin's ``open()`` returned.

    Returns:
        ``doc`` itself when it is a :class:`~previewer.plugin.BaseDocument`, else a wrapper
        giving the defaults of the optional members it lacks.
    """
    if isinstance(doc, BaseDocument):
        return cast(Document, doc)
    return cast(Document, _Document(doc))
