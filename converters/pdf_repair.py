"""Damage in PDFs that readers work around and MuPDF 1.28 alone does not: what PyMuPDF can mend.

Two cases, both found in public test suites, both drawn by poppler:

- A page tree whose ``/Count`` is wrong (negative, larger than the file's objects, zero with
  pages below it) or that loops back on itself: MuPDF refuses the whole document ("Invalid
  number of pages") or fails on the looping page. :func:`repair_page_tree` rebuilds the tree in
  memory from the ``/Kids`` that lead to pages, once each.
- Only the embedded files are encrypted (``/EFF`` with ``/StmF`` and ``/StrF`` ``/Identity``,
  Acrobat's "encrypt only file attachments"): the pages are plain, but MuPDF asks for the
  password to open anything. :func:`unencrypted_copy` writes a copy whose newest trailer has no
  ``/Encrypt`` (an incremental update), which MuPDF opens without one.

Nothing here writes to the input: the page tree is changed in MuPDF's memory only, and the copy
goes into the conversion's private work directory.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

__all__ = ["content_is_unencrypted", "page_tree_damaged", "repair_page_tree", "unencrypted_copy"]

_REF = re.compile(r"(\d+)\s+(\d+)\s+R")
_STARTXREF = re.compile(rb"startxref\s+(\d+)")

MAX_DEPTH = 64
"""Deeper page trees are not followed (real ones are a few levels deep)."""

# What MuPDF 1.28 logs when its page map cannot be built ("Page tree load failed. Falling back to
# slow lookup"), after the reason; it then looks pages up one by one and fails on the bad one.
_TREE_FAILED = "page tree load failed"
_TREE_REASONS = (
    ("cycle in page tree", "the page tree loops back on itself"),
    ("non-page object in page tree", "the page tree holds an object that is not a page"),
)


def page_tree_damaged(warnings: str) -> str:
    """Say what is wrong with the page tree, going by MuPDF's collected warnings.

    Args:
        warnings: Text of ``TOOLS.mupdf_warnings()`` after loading a page.

    Returns:
        A short description ("the page tree loops back on itself"), or "" when MuPDF read the
        page tree without complaint.
    """
    lowered = warnings.lower()
    if _TREE_FAILED not in lowered:
        return ""
    for text, description in _TREE_REASONS:
        if text in lowered:
            return description
    return "MuPDF cannot load the page tree"


def repair_page_tree(doc: Any) -> int:
    """Rebuild ``doc``'s page tree in memory from the ``/Kids`` that lead to pages.

    Each ``/Pages`` node keeps only kids met for the first time (a loop or a page listed twice is
    dropped) that are pages or lead to some, and gets the ``/Count`` of the pages below it.

    Args:
        doc: An open, authenticated PyMuPDF PDF document.

    Returns:
        The number of pages found (0 if the catalog has no usable ``/Pages``).
    """
    kind, value = doc.xref_get_key(doc.pdf_catalog(), "Pages")
    match = _REF.fullmatch(value) if kind == "xref" else None
    if match is None:
        return 0
    top = int(match.group(1))
    limit = doc.xref_length()
    seen = {top}

    def walk(node: int, depth: int) -> int:
        kind, value = doc.xref_get_key(node, "Kids")
        kids = [int(number) for number, _gen in _REF.findall(value)] if kind == "array" else []
        keep: list[int] = []
        total = 0
        for kid in kids:
            if kid in seen or not 0 < kid < limit:
                continue
            seen.add(kid)
            node_type = doc.xref_get_key(kid, "Type")[1]
            if node_type == "/Page":
                keep.append(kid)
                total += 1
            elif node_type == "/Pages" or doc.xref_get_key(kid, "Kids")[0] == "array":
                below = walk(kid, depth + 1) if depth < MAX_DEPTH else 0
                if below:
                    keep.append(kid)
                    total += below
        doc.xref_set_key(node, "Kids", "[" + " ".join(f"{kid} 0 R" for kid in keep) + "]")
        doc.xref_set_key(node, "Count", str(total))
        return total

    return walk(top, 0)


def content_is_unencrypted(doc: Any) -> bool:
    """Return True if ``doc`` encrypts only its embedded files, not its pages.

    That is a version 4 or 5 security handler whose stream and string crypt filters are both
    ``/Identity`` (the default when absent, PDF 32000-1:2008 7.6.5).

    Args:
        doc: An open PyMuPDF document that still needs a password.

    Returns:
        Whether pages, strings and streams can be read without the password.
    """
    kind, value = doc.xref_get_key(-1, "Encrypt")
    match = _REF.fullmatch(value) if kind == "xref" else None
    if match is None:
        return False
    encrypt = int(match.group(1))
    version = doc.xref_get_key(encrypt, "V")
    if version[0] != "int" or int(version[1]) not in (4, 5):
        return False
    for key in ("StmF", "StrF"):
        kind, value = doc.xref_get_key(encrypt, key)
        if kind != "null" and value != "/Identity":
            return False
    return True


def unencrypted_copy(doc: Any, source: Path, workdir: Path) -> Path | None:
    """Copy ``source`` into ``workdir`` with a newest trailer that has no ``/Encrypt``.

    The copy gets an incremental update: an empty cross-reference section and a trailer with the
    same ``/Root``, ``/Size`` and ``/ID`` and ``/Prev`` pointing at the file's last section.

    Args:
        doc: ``source`` opened by PyMuPDF (the trailer is read from it).
        source: The input file.
        workdir: The conversion's private work directory.

    Returns:
        The copy, or None when the file's last ``startxref`` cannot be found.
    """
    with open(source, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    offsets = _STARTXREF.findall(tail)
    root = doc.xref_get_key(-1, "Root")
    if not offsets or root[0] != "xref":
        return None
    ident = doc.xref_get_key(-1, "ID")
    trailer = f"/Size {doc.xref_length()} /Root {root[1]} /Prev {int(offsets[-1])}"
    if ident[0] == "array":
        trailer += f" /ID {ident[1]}"
    copy = workdir / "unencrypted.pdf"
    shutil.copyfile(source, copy)
    with open(copy, "ab") as fh:
        start = size + 1
        fh.write(
            f"\nxref\n0 0\ntrailer\n<< {trailer} >>\nstartxref\n{start}\n%%EOF\n".encode("ascii")
        )
    return copy
