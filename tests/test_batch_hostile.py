"""The bad-input suite: one batch over every nasty file we know, plus generated ones.

Each input gets its expected status and error class; the good files all convert; no partial
output, no changed input, no surviving child process.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import time
import zlib
from pathlib import Path

import pymupdf
import pytest
from support import (
    children,
    cmdline,
    mp_helpers,
    processes,
    snapshot,
    temp_leftovers,
    wait_until,
    written_outside,
)

import previewer
from previewer.converters import BUILTIN
from previewer.errors import (
    EncryptedError,
    EngineError,
    EngineTimeoutError,
    InputError,
    LimitExceededError,
    PreviewerError,
    UnsupportedFormatError,
)
from previewer.registry import Registry
from tests.conftest import ERRORS, load_manifest
from tests.plugins.faulty import TripwireConverter

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "samples" / "report.pdf"
JPEG = ROOT / "samples" / "photo.jpg"

# (status, error class) by file name; "skipped" inputs are unsupported files met while walking.
Expect = tuple[str, type[PreviewerError] | None]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def build(base: Path) -> tuple[Path, dict[str, Expect], Path]:
    src = base / "in"
    src.mkdir()
    # Office files go in a tree of their own, converted with the normal timeout: starting
    # LibreOffice in a fresh worker takes longer than the short timeout the hang test uses.
    office = base / "in-office"
    office.mkdir()
    expect: dict[str, Expect] = {}

    for row in load_manifest():
        if row.status != "error" or row.file is None:
            continue
        name = f"corpus-{row.family}-{row.name}"
        shutil.copyfile(row.file, (office if row.family == "office" else src) / name)
        kind = ERRORS[row.kind]
        # Walking a tree, files nobody claims are skipped rather than failed.
        expect[name] = ("skipped", None) if kind is UnsupportedFormatError else ("failed", kind)

    (src / "zero.pdf").write_bytes(b"")
    expect["zero.pdf"] = ("failed", InputError)
    (src / "truncated.jpg").write_bytes(JPEG.read_bytes()[: JPEG.stat().st_size // 3])
    expect["truncated.jpg"] = ("failed", InputError)
    (src / "random.pdf").write_bytes(random.Random(7).randbytes(4096))
    expect["random.pdf"] = ("skipped", None)
    (src / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    expect["bomb.png"] = ("failed", LimitExceededError)

    doc = pymupdf.open(PDF)
    doc.save(src / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="o")
    expect["locked.pdf"] = ("failed", EncryptedError)

    unreadable = src / "unreadable.pdf"
    unreadable.write_bytes(PDF.read_bytes())
    unreadable.chmod(0)
    # root reads anything: then the file simply converts.
    expect["unreadable.pdf"] = ("converted", None) if os.geteuid() == 0 else ("failed", InputError)

    for name in ["with space.pdf", "new\nline.pdf", "-rf.pdf", os.fsdecode(b"na\xefve.pdf")]:
        (src / name).write_bytes(PDF.read_bytes())
        expect[name] = ("converted", None)
    (src / "photo.jpg").write_bytes(JPEG.read_bytes())
    expect["photo.jpg"] = ("converted", None)

    outside = base / "outside.pdf"
    outside.write_bytes(PDF.read_bytes())
    (src / "escape.pdf").symlink_to(outside)  # leaves the tree: never followed, never listed

    (src / "hang.txt").write_text("HANG")
    expect["hang.txt"] = ("failed", EngineTimeoutError)
    (src / "crash.txt").write_text("ABORT")
    expect["crash.txt"] = ("failed", EngineError)
    (src / "zzz-deleted.pdf").write_bytes(PDF.read_bytes())  # removed while the batch runs
    expect["zzz-deleted.pdf"] = ("failed", InputError)
    return src, expect, outside


def checksums(paths: list[Path]) -> dict[Path, str]:
    sums = {}
    for path in paths:
        try:
            sums[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        except PermissionError:
            sums[path] = "unreadable"
    return sums


def engines_under(marker: str) -> dict[int, str]:
    """Processes anywhere whose environment mentions ``marker`` (engines get HOME/TMPDIR in
    their private work directory, which lies under this test's temporary directory)."""
    return {pid: cmdline(pid) for pid in processes(environ=marker, exclude=mp_helpers())}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_hostile_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    src, expect, outside = build(tmp_path)
    # Processes this test process already had, such as the warm LibreOffice bridge of an earlier
    # office test in the same pytest worker (stopped only when that worker exits).
    preexisting = children()
    office = tmp_path / "in-office"
    inputs = sorted(p for p in src.iterdir() if not p.is_symlink() and p.name != "zzz-deleted.pdf")
    inputs += sorted(office.iterdir())
    before = checksums(inputs + [outside])
    out = tmp_path / "out"
    deleted: list[str] = []

    def on_result(result: previewer.FileResult) -> None:
        if not deleted:
            (src / "zzz-deleted.pdf").unlink()
            deleted.append(result.input)

    tree_before = snapshot(tmp_path)
    started = time.monotonic()
    report = previewer.convert_many(
        [src],
        out_dir=out,
        jobs=2,
        registry=Registry(converters=[*BUILTIN, TripwireConverter], entry_points=False),
        limits=previewer.Limits(timeout=3),
        on_result=on_result,
    )
    office_report = previewer.convert_many([office], out_dir=out / "office", jobs=2)
    elapsed = time.monotonic() - started
    assert elapsed < 120

    got = {Path(r.input).name: r for r in report.results + office_report.results}
    assert set(got) == set(expect), "every input reported exactly once; the escaping link never"
    for name, (status, error) in sorted(expect.items()):
        result = got[name]
        assert result.status == status, f"{name!r}: {result.status} {result.error}"
        if error is not None:
            assert type(result.error) is error or isinstance(result.error, error), (
                f"{name!r}: expected {error.__name__}, got {result.error!r}"
            )
            assert result.error is not None and name in str(result.error), result.error
        else:
            assert result.error is None, f"{name!r}: {result.status} with {result.error!r}"
        if status == "converted":
            assert result.outputs and all(p.path and p.path.is_file() for p in result.outputs)
    # Exit 10 exactly when an input of that batch failed (skipped inputs are not failures).
    for batch in (report, office_report):
        names = [Path(r.input).name for r in batch.results]
        assert batch.exit_code == (10 if any(expect[n][0] == "failed" for n in names) else 0)
    assert report.exit_code == 10

    assert list(out.rglob("*.tmp")) == [], "partial output left behind"
    assert written_outside(tmp_path, tree_before, out, tmp) == [], "a file written outside OUTDIR"
    assert all(p.parent in (out, out / "office") for p in out.rglob("*.png")), "stray output"
    (src / "unreadable.pdf").chmod(0o644)
    after = checksums(inputs + [outside])
    assert {p: s for p, s in after.items() if p.name != "unreadable.pdf"} == {
        p: s for p, s in before.items() if p.name != "unreadable.pdf"
    }, "an input was modified"
    wait_until(lambda: not children() - preexisting, 5)
    survivors = {pid: cmdline(pid) for pid in children() - preexisting}
    assert survivors == {}, "a worker process survived the batch"
    wait_until(lambda: not engines_under(str(tmp)), 5)
    assert engines_under(str(tmp)) == {}, "an engine process survived the batch"
    # pymp-*: the fork server's socket directory, removed when this process exits.
    assert temp_leftovers(tmp, allow=["pymp-"]) == [], "a temporary directory was left behind"
