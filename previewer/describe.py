"""Describing an open document (``previewer info``) and the converters (``previewer converters``).

:func:`document_info` runs inside the pipeline (:func:`previewer.pipeline.info`), on the
document the pipeline opened; :func:`converter_infos` only asks the registry.
"""

from __future__ import annotations

import hashlib

from previewer.inputs import Opened, guard
from previewer.registry import Registry
from previewer.results import ConverterInfo, DocumentInfo

__all__ = ["converter_infos", "document_info"]


def document_info(od: Opened, registry: Registry) -> DocumentInfo:
    """Describe an open input: type, converter, engine, pages and their sizes, bytes, SHA-256.

    Args:
        od: The input, as the pipeline opened it.
        registry: The converters (for the engine's name and version).

    Returns:
        The description; ``pages`` is None when the document's page tree is damaged and its
        page count unknown. At most 1,000 page sizes are listed.

    Raises:
        PreviewerError: A subclass naming the input, when the engine fails.
    """
    cname = od.converter.name
    with guard(od.display, cname):
        count = od.doc.page_count
        known = getattr(od.doc, "page_count_known", True)
        sizes = [tuple(od.doc.page_size(i)) for i in range(min(count, 1000))]
        meta_fn = getattr(od.doc, "metadata", None)
        metadata = dict(meta_fn()) if callable(meta_fn) else {}
    avail = registry.availability(registry.get(cname))
    digest = hashlib.sha256()
    with open(od.path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return DocumentInfo(
        input=od.display,
        mime=od.mime,
        converter=cname,
        engine=f"{avail.engine} {avail.version}" if avail.version else avail.engine,
        pages=count if known else None,
        page_sizes=[(float(w), float(h)) for w, h in sizes],
        units=od.doc.units,
        bytes=od.path.stat().st_size,
        sha256=digest.hexdigest(),
        metadata=metadata,
    )


def converter_infos(registry: Registry) -> list[ConverterInfo]:
    """List every converter of ``registry`` with its MIME types, engine, version and availability.

    Args:
        registry: The registry to describe.

    Returns:
        One entry per converter, in the registry's order (sorted by name); ``isolation`` says
        how its engine is confined (the sandbox's description, ``in-process`` or
        ``not declared``).
    """
    listing = []
    sandbox_detail: str | None = None
    for entry in registry.entries:
        avail = registry.availability(entry)
        sandboxed = getattr(entry.converter, "sandboxed", None)
        if sandboxed is True:
            if sandbox_detail is None:
                from previewer import sandbox

                sandbox_detail = sandbox.describe()
            isolation = sandbox_detail
        else:
            isolation = "in-process" if sandboxed is False else "not declared"
        listing.append(
            ConverterInfo(
                name=entry.name,
                mime_types=sorted(entry.mime_types),
                priority=entry.priority,
                engine=avail.engine,
                version=avail.version,
                available=avail.ok,
                reason=avail.reason,
                origin=entry.origin,
                isolation=isolation,
            )
        )
    return listing
