"""Shared test set-up: the test corpus, its manifest, and per-row parametrisation.

The files of the shared corpus (``/work/shared/corpus``, beside the repository) are vendored into
``tests/fixtures/corpus/`` (PDF, XPS, EPUB, raster, misc, office) and ``tests/fixtures/psd/``,
``tests/fixtures/vector/``, with a copy of the manifest in ``tests/fixtures/corpus/MANIFEST.tsv``,
so the suite runs on a fresh clone. The few rows not vendored (see ``tests/fixtures/README.md``)
use the shared corpus when it is present and skip only when it is absent.

A test that takes an argument named ``ok_row`` is run once per manifest row expected to convert,
``error_row`` once per row expected to fail, ``corpus_row`` once per row. A test module can attach
marks to rows (known bugs, pending converters) with a ``ROW_MARKS`` dict mapping a row's path to
a list of marks.

Tests marked with ``support.requires_engine(...)`` are skipped when an engine is missing, and
fail instead in CI (``tests/support.py``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import require_engine

from previewer.errors import (
    EncryptedError,
    InputError,
    LimitExceededError,
    PreviewerError,
    UnsupportedFormatError,
)

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
VENDORED = FIXTURES / "corpus"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

FAMILIES = ("pdf", "xps", "epub", "raster", "misc", "office", "psd", "vector")
"""Manifest families the tests run (all of them)."""

# The error class each manifest ``error:<kind>`` calls for (corpus README, STYLE.md section 4).
ERRORS: dict[str, type[PreviewerError]] = {
    "encrypted": EncryptedError,
    "corrupt": InputError,
    "truncated": InputError,
    "empty": InputError,
    "no-pages": InputError,
    "unloadable": InputError,
    "decompression-bomb": LimitExceededError,
    "unsupported": UnsupportedFormatError,
}

_SIZE = re.compile(r"^([\d.]+)x([\d.]+)(pt|@72dpi)?$")


@dataclass(frozen=True)
class Row:
    """One MANIFEST.tsv row, with its ``expected`` column parsed.

    Attributes:
        path: Path relative to the corpus root, e.g. ``raster/chi.gif``.
        source: ``owner/repo@commit:path`` of the upstream file.
        family: Corpus folder (which engine the content calls for).
        expected: The raw ``expected`` column.
        note: The raw ``note`` column.
        status: ``"ok"`` or ``"error"`` (``"unverified"`` rows are not parametrised).
        kind: The error kind for error rows (``encrypted``, ``corrupt``, ...), else ``""``.
        fields: ``key=value`` items of ``expected`` (``pages``, ``page1``, ``size``, ...).
        flags: Bare words of ``expected`` (``first-frame``, ``blank-page``, ...).
        file: The file to read: the vendored copy, else the shared corpus file, else None.
    """

    path: str
    source: str
    family: str
    expected: str
    note: str
    status: str
    kind: str
    fields: dict[str, str] = field(hash=False)
    flags: frozenset[str]
    file: Path | None

    @property
    def name(self) -> str:
        """The file's name (what error messages must mention)."""
        return Path(self.path).name

    def dims(self, key: str) -> tuple[float, float] | None:
        """Parse a ``WxH`` / ``WxHpt`` field into floats, or None when absent."""
        value = self.fields.get(key)
        if value is None:
            return None
        match = _SIZE.match(value)
        assert match, f"{self.path}: cannot parse {key}={value}"
        return float(match.group(1)), float(match.group(2))

    @property
    def units(self) -> str:
        """``"pt"`` for vector sources, ``"px"`` for raster ones.

        Vector rows give ``page1=WxHpt``, ``size=WxH@72dpi`` (PostScript: points), ``size=WxH``
        (SVG user units, which the engine takes as points) or the flag ``no-intrinsic-size``;
        XCF rows (vector family, but raster content) give ``canvas=WxH`` in pixels.
        """
        if "page1" in self.fields:
            return "pt"
        return "pt" if self.family == "vector" and "canvas" not in self.fields else "px"

    @property
    def displayed(self) -> tuple[float, float] | None:
        """Page 1 as displayed: ``page1``, else ``displayed`` (EXIF), ``size``, ``canvas``."""
        return (
            self.dims("page1") or self.dims("displayed") or self.dims("size") or self.dims("canvas")
        )


def _parse(raw: dict[str, str], root: Path) -> Row:
    words = raw["expected"].split()
    head = words[0] if words else ""
    if head.startswith("error:"):
        status, kind = "error", head.split(":", 1)[1]
    else:
        status, kind = head, ""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for word in words[1:]:
        if "=" in word:
            key, value = word.split("=", 1)
            fields[key] = value
        else:
            flags.add(word)
    file = None
    for base in (root, VENDORED, FIXTURES, CORPUS):
        candidate = base / raw["path"]
        if candidate.is_file():
            file = candidate
            break
    return Row(
        path=raw["path"],
        source=raw["source"],
        family=raw["family"],
        expected=raw["expected"],
        note=raw["note"],
        status=status,
        kind=kind,
        fields=fields,
        flags=frozenset(flags),
        file=file,
    )


def load_manifest(manifest: Path = VENDORED / "MANIFEST.tsv") -> list[Row]:
    """Read a MANIFEST.tsv (tab-separated, no quoting) into rows of the tested families.

    Args:
        manifest: The manifest to read; files are looked up beside it, then in the vendored
            copy, then in the shared corpus.

    Returns:
        The rows of :data:`FAMILIES`, in file order.
    """
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert reader.fieldnames == ["path", "source", "family", "expected", "note"]
        rows = [_parse(raw, manifest.parent) for raw in reader]
    return [row for row in rows if row.family in FAMILIES]


ROWS = load_manifest()


def _params(rows: list[Row], marks_by_path: dict[str, list[Any]]) -> Iterator[Any]:
    for row in rows:
        marks = list(marks_by_path.get(row.path, ()))
        if row.file is None:
            marks.append(
                pytest.mark.skip(
                    reason=f"{row.path} is not vendored into tests/fixtures/corpus (size "
                    f"budget) and the shared corpus is absent ({CORPUS})"
                )
            )
        yield pytest.param(row, id=row.path, marks=marks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``ok_row`` / ``error_row`` / ``corpus_row`` over the manifest rows."""
    marks_by_path = getattr(metafunc.module, "ROW_MARKS", {})
    selections = {
        "ok_row": [r for r in ROWS if r.status == "ok"],
        "error_row": [r for r in ROWS if r.status == "error"],
        "corpus_row": ROWS,
    }
    for argname, rows in selections.items():
        if argname in metafunc.fixturenames:
            metafunc.parametrize(argname, list(_params(rows, marks_by_path)))


@pytest.fixture(scope="session")
def manifest_rows() -> list[Row]:
    """Every manifest row of the tested families (vendored or found in the shared corpus)."""
    return ROWS


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus directory; skips the test when it is not beside the repository."""
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``requires_engine`` mark (``support.requires_engine``)."""
    config.addinivalue_line(
        "markers", "requires_engine(*names): skip without the engines (fail in CI); see support.py"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check the engines a test requires before it runs (skip, or fail in CI)."""
    for mark in item.iter_markers("requires_engine"):
        require_engine(*mark.args)
