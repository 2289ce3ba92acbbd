"""The real-world corpus through the public API: every row of every family.

Rows come from ``tests/fixtures/corpus/MANIFEST.tsv`` (a copy of the shared corpus manifest);
``conftest.py`` parametrises ``ok_row`` and ``error_row`` over them. The ``expected`` column is the
oracle: page counts, displayed page sizes, EXIF orientation, Photoshop colour mode and depth, and
the error kind a failing file must be reported as. (``tests/test_psd.py`` and
``tests/test_ghostscript.py`` check those families' pixels further, e.g. against the golden
Photoshop composites.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps, UnidentifiedImageError
from pngcheck import check_png
from support import mean_difference, partial_outputs

import previewer
from previewer.errors import (
    EncryptedError,
    ExitCode,
    InputError,
    PreviewerError,
)
from tests.conftest import ERRORS

CRASH_TIFF = "raster/crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif"
DAMAGED_PIXELS = {CRASH_TIFF, "psd/group-divider-blend-mode.psd"}
"""Error rows whose headers are sound: ``info`` describes them; converting them fails."""

CONVERTERS = {
    "pdf": "pdf-pymupdf",
    "xps": "pdf-pymupdf",
    "epub": "pdf-pymupdf",
    "raster": "raster-pillow",
    "office": "office-libreoffice",
    "psd": "psd-psdtools",
    ".eps": "postscript-ghostscript",
    ".ps": "postscript-ghostscript",
    ".ai": "pdf-pymupdf",  # PDF-compatible Illustrator file
    ".svg": "pdf-pymupdf",
    ".xcf": "magick-wand",
}
"""The converter a row's file must reach: by family, or by content for misc and vector rows."""


def _converter(row: Any) -> str:
    if row.family in CONVERTERS:
        return CONVERTERS[row.family]
    if row.family == "misc":  # files named after another format: the content decides
        if "pages" in row.fields:
            return "office-libreoffice" if row.name == "the_docx" else "pdf-pymupdf"
        return "raster-pillow"
    return CONVERTERS[Path(row.name).suffix]


PENDING: dict[str, str] = {}
"""Rows whose converter does not exist yet; they are expected to convert once it does."""

SLOW = {
    "office/bigfoot.xlsx": "1024 sheets take LibreOffice 7.4 about 20 s; "
    "tests/test_office.py converts it once and uses it for the timeout test",
}
"""Rows too slow to convert four times here; another test covers each."""

ROW_MARKS: dict[str, list[Any]] = {
    **{path: [pytest.mark.xfail(strict=True, reason=reason)] for path, reason in PENDING.items()},
    **{path: [pytest.mark.skip(reason=reason)] for path, reason in SLOW.items()},
}


# --------------------------------------------------------------------------- helpers


def _expected_pages(row: Any) -> int:
    if "pages" in row.fields:
        return int(row.fields["pages"])
    if "frames" in row.fields and row.fields.get("format") == "TIFF":
        return int(row.fields["frames"])  # a multi-page TIFF is a document, one page per frame
    return 1  # a still image, or an animation previewed by its first frame


def _displayed(row: Any) -> tuple[float, float]:
    """Page 1 as displayed; for an SVG that states no size, whatever default the engine chose."""
    if row.displayed is not None:
        return row.displayed  # type: ignore[no-any-return]
    assert "no-intrinsic-size" in row.flags, row.path
    width, height = previewer.info(row.file).page_sizes[0]
    assert width > 0 and height > 0
    return width, height


def _fit_box(row: Any, box_w: int, box_h: int) -> tuple[float, float]:
    """Where page 1 lands in a ``box_w`` x ``box_h`` box (raster sources are never enlarged)."""
    width, height = _displayed(row)
    scale = min(box_w / width, box_h / height)
    if row.units == "px":
        scale = min(scale, 1.0)
    return width * scale, height * scale


def _source_is_flat(row: Any) -> bool:
    """True when page 1 of a raster source is itself one colour (so a flat preview is right)."""
    if "blank-page" in row.flags:
        return True
    if row.units != "px" or row.family != "raster":
        return False
    # The format the name says first: unrestricted, Pillow tries its plugins in the order they
    # were imported, and TGA (no magic number) may claim an ICO file.
    Image.init()
    named = Image.registered_extensions().get(row.file.suffix.lower())
    try:
        image = Image.open(row.file, formats=[named] if named else None)
    except UnidentifiedImageError:
        image = Image.open(row.file)
    with image:
        image.seek(0)
        return all(lo == hi for lo, hi in image.convert("RGBA").getextrema())


def _on_white(image: Image.Image) -> Image.Image:
    image = image.convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


def _check_first_frame(row: Any, preview: Image.Image) -> None:
    """An animation's preview shows its first frame, not a later one."""
    with Image.open(row.file) as source:
        first = _on_white(source)
        source.seek(source.n_frames - 1)
        last = _on_white(source)
    shown = _on_white(preview)
    to_first, to_last = (
        mean_difference(shown, first, resize=True),
        mean_difference(shown, last, resize=True),
    )
    assert to_first < 8, f"preview differs from frame 1 by {to_first:.1f}"
    if mean_difference(first, last, resize=True) > 10:
        assert to_last > to_first, "preview looks more like the last frame than the first"


def _check_exif(row: Any, preview: Image.Image) -> None:
    """The preview shows the photo as displayed (EXIF applied), not as stored."""
    with Image.open(row.file) as source:
        stored = source.convert("RGB")
        displayed = ImageOps.exif_transpose(source).convert("RGB")
    if stored.width != stored.height:
        return  # the size/aspect checks already tell the orientations apart
    upright = mean_difference(preview, displayed, resize=True)
    as_stored = mean_difference(preview, stored, resize=True)
    assert upright < 8, f"preview differs from the EXIF-oriented source by {upright:.1f}"
    assert as_stored > upright + 10, "preview looks like the stored (unrotated) pixels"


# --------------------------------------------------------------------------- ok rows


def test_ok_row_converts_at_256(ok_row: Any, tmp_path: Path) -> None:
    previews = previewer.convert(ok_row.file, out_dir=tmp_path, sizes=[256])

    assert len(previews) == 1
    (preview,) = previews
    assert preview.page == 1
    assert preview.size == "256"
    assert preview.path == tmp_path / f"{ok_row.name}.p1.256.png"
    assert preview.source == str(ok_row.file)
    assert preview.converter == _converter(ok_row)
    width, height = _displayed(ok_row)
    longest = 256 if ok_row.units == "pt" else min(256, round(max(width, height)))
    image = check_png(
        preview.path, longest=longest, aspect=(width, height), allow_flat=_source_is_flat(ok_row)
    )
    assert (preview.width, preview.height) == image.size
    if "exif-orientation" in ok_row.fields:
        _check_exif(ok_row, image)
    if "first-frame" in ok_row.flags:
        _check_first_frame(ok_row, image)
    assert sorted(p.name for p in tmp_path.iterdir()) == [preview.path.name]
    assert not partial_outputs(tmp_path)


def test_ok_row_converts_to_several_sizes(ok_row: Any, tmp_path: Path) -> None:
    previews = previewer.convert(ok_row.file, out_dir=tmp_path, sizes=[128, "1024x768"])

    assert [(p.page, p.size) for p in previews] == [(1, "128"), (1, "1024x768")]
    small, box = previews
    assert small.path == tmp_path / f"{ok_row.name}.p1.128.png"
    assert box.path == tmp_path / f"{ok_row.name}.p1.1024x768.png"
    flat = _source_is_flat(ok_row)
    width, height = _displayed(ok_row)
    small_longest = 128 if ok_row.units == "pt" else min(128, round(max(width, height)))
    check_png(small.path, longest=small_longest, aspect=(width, height), allow_flat=flat)
    fit_w, fit_h = _fit_box(ok_row, 1024, 768)
    image = check_png(
        box.path, longest=round(max(fit_w, fit_h)), aspect=(width, height), allow_flat=flat
    )
    assert image.width <= 1024 and image.height <= 768
    assert (box.width, box.height) == image.size
    assert abs(image.width - fit_w) <= 1 and abs(image.height - fit_h) <= 1
    assert not partial_outputs(tmp_path)


def test_ok_row_info(ok_row: Any) -> None:
    info = previewer.info(ok_row.file)

    assert info.pages == _expected_pages(ok_row)
    assert info.units == ok_row.units
    assert len(info.page_sizes) == info.pages
    width, height = _displayed(ok_row)
    got_w, got_h = info.page_sizes[0]
    tolerance = 0.5 if ok_row.units == "pt" else 0
    assert abs(got_w - width) <= tolerance and abs(got_h - height) <= tolerance
    assert info.bytes == ok_row.file.stat().st_size
    assert info.sha256 == hashlib.sha256(ok_row.file.read_bytes()).hexdigest()
    if "format" in ok_row.fields:
        assert info.metadata["format"] == ok_row.fields["format"]
    if ok_row.family == "psd":
        assert info.metadata["color_mode"] == ok_row.fields["mode"]
        assert info.metadata["bit_depth"] == int(ok_row.fields["depth"])
        assert info.metadata["has_composite"] is ("no-composite" not in ok_row.flags)
        assert info.metadata["format"] == ("PSB" if "psb" in ok_row.flags else "PSD")


# --------------------------------------------------------------------------- error rows


def test_error_row_fails_cleanly(error_row: Any, tmp_path: Path) -> None:
    expected = ERRORS[error_row.kind]

    with pytest.raises(PreviewerError) as excinfo:
        previewer.convert(error_row.file, out_dir=tmp_path, sizes=[256])

    error = excinfo.value
    assert isinstance(error, expected), f"{type(error).__name__}: {error}"
    if expected is InputError:
        assert not isinstance(error, EncryptedError)
    assert error.exit_code == expected.exit_code
    assert error_row.name in str(error)
    assert list(tmp_path.rglob("*")) == [], "a failed conversion left files behind"


def test_error_row_info_fails_the_same_way(error_row: Any) -> None:
    if error_row.kind == "truncated" or error_row.path in DAMAGED_PIXELS:
        # info reads headers only; the damage is in the pixel data, which it never decodes.
        facts = previewer.info(error_row.file)
        assert facts.pages == 1 and facts.converter == _converter(error_row)
        return
    with pytest.raises(ERRORS[error_row.kind]) as excinfo:
        previewer.info(error_row.file)
    assert error_row.name in str(excinfo.value)


def test_crash_tiff_is_bad_input_whatever_the_warning_filters(
    manifest_rows: list[Any], tmp_path: Path
) -> None:
    """Pillow's warnings about the damaged file are logged, never raised: InputError, exit 5."""
    (row,) = [r for r in manifest_rows if r.path == CRASH_TIFF]
    with pytest.raises(InputError, match="decoder error") as excinfo:
        previewer.convert(row.file, out_dir=tmp_path)
    assert excinfo.value.exit_code == ExitCode.BAD_INPUT
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- batch


def test_batch_over_all_rows(manifest_rows: list[Any], tmp_path: Path) -> None:
    rows = [
        r
        for r in manifest_rows
        if r.file is not None and r.status in ("ok", "error") and r.path not in {**PENDING, **SLOW}
    ]
    assert len(rows) >= 40
    seen: list[str] = []

    report = previewer.convert_many(
        [r.file for r in rows],
        out_dir=tmp_path,
        sizes=[256],
        on_result=lambda r: seen.append(r.input),
    )

    assert report.exit_code == ExitCode.BATCH_PARTIAL == 10
    assert len(report.results) == len(rows)
    assert seen == [str(r.file) for r in rows]
    for row, result in zip(rows, report.results, strict=True):
        assert result.input == str(row.file)
        if row.status == "ok":
            assert result.status == "converted", f"{row.path}: {result.error}"
            assert result.error is None and result.exit_code == 0
            (preview,) = result.outputs
            assert preview.path == tmp_path / f"{row.name}.p1.256.png"
            assert preview.path.is_file()
        else:
            assert result.status == "failed", row.path
            assert result.outputs == []
            expected = ERRORS[row.kind]
            assert isinstance(result.error, expected), f"{row.path}: {result.error!r}"
            assert result.exit_code == expected.exit_code
            assert row.name in str(result.error)
            assert result.to_dict()["error"]["exit_code"] == expected.exit_code
    n_ok = sum(r.status == "ok" for r in rows)
    assert report.converted == n_ok
    assert report.failed == len(rows) - n_ok
    assert report.skipped == 0
    assert sum(report.failures_by_type().values()) == report.failed
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{r.name}.p1.256.png" for r in rows if r.status == "ok")


# --------------------------------------------------------------------------- provenance


def test_vendored_copies_match_the_shared_corpus(
    corpus_dir: Path, manifest_rows: list[Any]
) -> None:
    vendored = Path(__file__).parent / "fixtures" / "corpus"
    with open(corpus_dir / "MANIFEST.tsv", encoding="utf-8") as fh:
        corpus_lines = fh.read().splitlines()
    with open(vendored / "MANIFEST.tsv", encoding="utf-8") as fh:
        vendored_lines = fh.read().splitlines()
    assert vendored_lines[0] == corpus_lines[0]
    assert set(vendored_lines[1:]) <= set(corpus_lines[1:])
    families = {line.split("/", 1)[0] for line in vendored_lines[1:]}
    assert families == {"pdf", "xps", "epub", "raster", "misc", "office", "psd", "vector"}
    assert vendored_lines[1:] == corpus_lines[1:]
    copies = [
        r.file for r in manifest_rows if r.file is not None and corpus_dir not in r.file.parents
    ]
    assert len(copies) >= 90
    for row in manifest_rows:
        if row.file is not None and corpus_dir not in row.file.parents:
            assert row.file.read_bytes() == (corpus_dir / row.path).read_bytes(), row.path
