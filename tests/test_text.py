"""Text, source code, CSV/TSV and Markdown through the text converters (PyMuPDF's Story).

Inputs are generated here. Laid-out pages are checked as PDFs (their text, with PyMuPDF) and as
previews (pixels); "only the needed pages were laid out" is checked through the documents'
facts, not timing (the benchmark measures speed).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from PIL import Image
from support import run_previewer

import previewer
from previewer.inputs import Opened, open_document, open_input, sniff
from previewer.options import Options
from previewer.pagespec import PageSpec
from previewer.registry import Registry

REGISTRY = Registry(entry_points=False)


@contextlib.contextmanager
def opened(path: Path, pages: str = "1", *, hint: bool = True) -> Iterator[Opened]:
    """Open ``path`` in this process with the converter the registry picks for it."""
    options = Options(pages=PageSpec.parse(pages))
    with open_input(path, options.limits) as inp:
        mime = sniff(inp)
        conv = REGISTRY.resolve(mime)
        with open_document(conv, inp, mime, options, REGISTRY, page_hint=hint) as od:
            yield od


def page_text(od: Opened, index: int = 0) -> str:
    """The text of laid-out page ``index``, extracted from its PDF."""
    doc: Any = od.doc
    if hasattr(doc, "page_pdf"):
        path, index = doc.page_pdf(index), 0
    else:
        path = doc.pdf_path
    with pymupdf.open(path) as pdf:
        return str(pdf[index].get_text())


def colourful(image: Image.Image) -> int:
    """Pixels clearly not grey (highlighting), counted on a small copy."""
    saturation = image.convert("RGB").convert("HSV").getchannel("S").histogram()
    return sum(saturation[80:])


def markdown_readme(size: int = 34_000) -> str:
    """A README-like Markdown document of about ``size`` characters."""
    parts = ["# Project\n\nA tool that does things.\n"]
    n = 0
    while sum(map(len, parts)) < size:
        n += 1
        parts.append(
            f"\n## Section {n}\n\nSome *prose* with `code` and a [link](https://example.org/{n})."
            " It goes on for a while to fill the line and wrap once or twice on the page.\n\n"
            f"- item one of {n}\n- item two\n\n```python\ndef f{n}(x):\n    return x * {n}\n```\n\n"
            "| option | meaning |\n|---|---|\n| `-a` | all |\n| `-b` | both |\n"
        )
    return "".join(parts)


@pytest.fixture(scope="module")
def readme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("md") / "README.md"
    path.write_text(markdown_readme())
    return path


# --------------------------------------------------------------------------- Markdown


def test_markdown_page_one_lays_out_only_what_it_needs(readme: Path) -> None:
    with opened(readme) as od:
        facts = od.doc.metadata()
        assert od.mime == "text/markdown"
        assert od.converter.name == "markdown-story"
        assert od.doc.page_count == 1
        assert facts["laid_out_pages"] <= 2
        assert facts["lines_laid_out"] < facts["lines"] / 5
        assert "Project" in page_text(od)


def test_markdown_all_pages_are_counted(readme: Path) -> None:
    with opened(readme, "all", hint=False) as od:
        facts = od.doc.metadata()
        assert facts["complete"] is True
        assert facts["lines_laid_out"] == facts["lines"]
        assert 8 <= od.doc.page_count == facts["laid_out_pages"] <= 40
        assert od.doc.page_count_known
        last = page_text(od, od.doc.page_count - 1)
    n = markdown_readme().count("\n## Section ")
    assert f"f{n}" in last  # the last section's code block is on the last page
    info = previewer.info(readme)
    assert info.pages == od.doc.page_count


def test_markdown_html_is_shown_not_interpreted(tmp_path: Path) -> None:
    path = tmp_path / "raw.md"
    path.write_text("import os\n\n<b>not bold</b> <script>x</script>\n")
    with opened(path) as od:
        assert od.mime == "text/markdown"  # libmagic calls this a Python script
        text = page_text(od)
    assert "<b>not bold</b>" in text
    assert "<script>x</script>" in text


# --------------------------------------------------------------------------- text and code

CODE = '''#!/usr/bin/env python3
"""A module."""

import os


def main(argv: list[str]) -> int:
    # say hello
    print("hello", os.getcwd())
    return 0
'''


def test_code_is_highlighted_and_plain_text_is_not(tmp_path: Path) -> None:
    code = tmp_path / "tool.py"
    code.write_text(CODE * 3)
    plain = tmp_path / "notes.txt"
    plain.write_text(CODE * 3)
    image = previewer.render(code, size=600)
    assert image.size == (424, 600)
    assert colourful(image) > 200
    assert colourful(previewer.render(plain, size=600)) == 0
    # Bytes lose the file name: the sniffed type carries the language.
    assert colourful(previewer.render(code.read_bytes(), name="tool.py", size=600)) > 200
    with opened(code) as od:
        assert od.mime == "text/x-python"
        assert od.doc.metadata()["format"] == "Python"
        assert "def main(argv: list[str]) -> int:" in page_text(od)


def test_shebang_picks_the_lexer(tmp_path: Path) -> None:
    path = tmp_path / "script"
    path.write_text(CODE)
    with opened(path) as od:
        assert od.doc.metadata()["format"] == "Python"


def test_long_text_page_count_and_wrapping(tmp_path: Path) -> None:
    from previewer.converters.text import COLUMNS, LINES

    path = tmp_path / "long.log"
    lines = [f"line {n:05d} " + "x" * (COLUMNS + 20) for n in range(200)]  # each wraps once
    path.write_text("\n".join(lines) + "\n")
    with opened(path, "all", hint=False) as od:
        assert od.doc.page_count == -(-400 // LINES)
        second = page_text(od, 1)
    assert f"line {LINES // 2:05d}" in second
    assert previewer.info(path).pages == -(-400 // LINES)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("Grüße aus Köln — ½ €\nzweite Zeile\n".encode("utf-16"), "utf-16-le"),
        ("Grüße aus Köln — ½ €\nzweite Zeile\n".encode("utf-8-sig"), "utf-8"),
        ("Grüße aus Köln, ½ café\nzweite Zeile\n".encode("latin-1"), "windows-1252"),
    ],
    ids=["utf-16", "utf-8-bom", "latin-1"],
)
def test_encodings(tmp_path: Path, data: bytes, encoding: str) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    with opened(path) as od:
        assert od.mime == "text/plain"
        assert od.doc.metadata()["encoding"] == encoding
        text = page_text(od)
    assert "Grüße aus Köln" in text
    assert "½" in text
    assert "zweite Zeile" in text


def test_control_characters_are_shown_safely(tmp_path: Path) -> None:
    path = tmp_path / "term.txt"
    path.write_bytes(b"red \x1b[31mALERT\x1b[0m bell\x07 back\x08 form\x0c end\n")
    with opened(path) as od:
        text = page_text(od)
    assert "\x1b" not in text
    assert "\u241b[31mALERT" in text  # ESC shown as its control picture
    assert "\u2407" in text


def test_ten_megabyte_single_line_is_quick(tmp_path: Path) -> None:
    path = tmp_path / "one-line.txt"
    path.write_bytes(b"0123456789abcdefghij" * 500_000)
    out = tmp_path / "out"
    started = time.monotonic()
    done = run_previewer("convert", path, "-o", out, "--json", timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 8
    result = json.loads(done.stdout)
    assert result["converter"] == "text-story"
    with Image.open(result["outputs"][0]["path"]) as preview:
        assert preview.size == (181, 256)
    # Every page: 10 MB at 100 characters a line is over 1,000 pages, refused cleanly.
    started = time.monotonic()
    done = run_previewer("convert", path, "-o", out, "-p", "all", timeout=60, text=True)
    assert done.returncode == 6, done.stderr
    assert "over the limit of 1000" in done.stderr
    assert time.monotonic() - started < 8
    with opened(path) as od:
        assert od.doc.metadata()["bytes_read"] < 64_000


# --------------------------------------------------------------------------- tables


def test_csv_is_a_table(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    rows = ["name,city,age"] + [f"person {n},town {n},{20 + n}" for n in range(300)]
    path.write_text("\n".join(rows) + "\n")
    with opened(path) as od:
        assert od.converter.name == "table-story"
        facts = od.doc.metadata()
        assert facts["columns"] == 3
        assert facts["rows_laid_out"] < 200  # only what page 1 needs
        with pymupdf.open(od.doc.pdf_path) as pdf:  # type: ignore[attr-defined]
            words = pdf[0].get_text("words")
    where = {w[4]: (w[0], w[1]) for w in words}
    assert where["name"][1] == pytest.approx(where["city"][1], abs=1)  # one header row...
    assert where["name"][0] < where["city"][0] < where["age"][0]  # ...in three columns
    assert where["town"][1] > where["city"][1]


def test_tsv_is_a_table_and_wide_tables_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "wide.tsv"
    header = "\t".join(f"column{n}" for n in range(40))
    path.write_text(header + "\n" + "\t".join(str(n) for n in range(40)) + "\n")
    with opened(path) as od:
        assert od.mime == "text/tab-separated-values"
        assert od.doc.metadata()["delimiter"] == "\t"
        text = page_text(od)
    assert "column0" in text
    assert "column39" not in text
    assert "of 40 columns shown" in text
