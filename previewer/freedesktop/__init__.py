"""The freedesktop.org thumbnail cache: the specification's rules, and filling the cache.

:mod:`~previewer.freedesktop.spec` holds the standard (cache paths, URIs and names, the
entries' tEXt keys, atomic 0600 writes, validity and fail entries);
:mod:`~previewer.freedesktop.fill` thumbnails one file or a batch into it.
"""

from __future__ import annotations

from previewer.freedesktop.fill import CacheTask, fill_cache, thumbnail_file
from previewer.freedesktop.spec import (
    SIZES,
    ThumbnailFacts,
    atomic_write,
    cache_root,
    fail_path,
    is_valid,
    read_text,
    save_rgba_png,
    thumbnail_name,
    thumbnail_path,
    to_uri,
    uri_to_path,
    write_fail_entry,
    write_thumbnail,
)

__all__ = [
    "SIZES",
    "CacheTask",
    "ThumbnailFacts",
    "atomic_write",
    "cache_root",
    "fail_path",
    "fill_cache",
    "is_valid",
    "read_text",
    "save_rgba_png",
    "thumbnail_file",
    "thumbnail_name",
    "thumbnail_path",
    "to_uri",
    "uri_to_path",
    "write_fail_entry",
    "write_thumbnail",
]
