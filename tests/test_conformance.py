"""benchmarks/conformance.py on its own generated sample set: the counts it prints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "conformance.py"
COLUMNS = ("files", "both-ok", "both-fail", "previewer-miss", "previewer-only", "unchecked")


def _table(text: str) -> dict[str, dict[str, int]]:
    rows = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\s+" + r"\s+".join([r"(\d+)"] * len(COLUMNS)), line.strip())
        if match:
            rows[match[1]] = dict(zip(COLUMNS, map(int, match.groups()[1:]), strict=True))
    return rows


def test_counts_on_generated_samples(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--make-samples", str(tmp_path / "s"), "--sample", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = _table(proc.stdout)
    vips = shutil.which("vipsthumbnail") is not None
    pdf_refs = shutil.which("mutool") or shutil.which("pdfinfo")
    # Pillow (always there) refuses the truncated PNG like previewer; libvips reads its top half.
    assert rows["raster"] == {
        "files": 7,
        "both-ok": 6,
        "both-fail": 0 if vips else 1,
        "previewer-miss": 1 if vips else 0,
        "previewer-only": 0,
        "unchecked": 0,
    }, proc.stdout
    if pdf_refs:
        assert rows["pdf"] == {
            **dict.fromkeys(COLUMNS, 0),
            "files": 3,
            "both-ok": 2,
            "both-fail": 1,
        }
    else:
        assert rows["pdf"] == {**dict.fromkeys(COLUMNS, 0), "files": 3, "unchecked": 3}
    # --sample 0: soffice is given no office file; nothing claims the text file.
    assert rows["office"] == {**dict.fromkeys(COLUMNS, 0), "files": 1, "unchecked": 1}
    assert rows["other"] == {**dict.fromkeys(COLUMNS, 0), "files": 1, "unchecked": 1}
    assert rows["total"]["files"] == 12
    assert rows["total"]["both-ok"] == 6 + (2 if pdf_refs else 0)
    misses = proc.stdout.split("previewer misses", 1)[1].split("previewer only", 1)[0]
    assert ("truncated.png [raster]" in misses) == vips
    if shutil.which("mutool"):
        assert re.search(r"page 1 against mutool .*: 2 compared", proc.stdout), proc.stdout
        worst = re.findall(r"^\s+(\d+\.\d+)\s+(\S+\.pdf)", proc.stdout, re.M)
        assert {name for _, name in worst} == {"report.pdf", "landscape.pdf"}
        assert all(float(diff) < 5 for diff, _ in worst)  # the same engine family: near equal

    # --json, on a few of the files (named one by one, as the tool also takes files).
    names = ["report.pdf", "broken.pdf", "photo.jpg", "truncated.png"]
    as_json = subprocess.run(
        [sys.executable, str(SCRIPT), *(str(tmp_path / "s" / n) for n in names), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert as_json.returncode == 0, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["total"]["files"] == 4
    assert summary["families"]["raster"]["both-ok"] == 1
    assert summary["families"]["raster"]["previewer-miss"] == (1 if vips else 0)
    assert [m["file"].endswith("truncated.png") for m in summary["misses"]] == (
        [True] if vips else []
    )
    if pdf_refs:
        assert summary["families"]["pdf"]["both-ok"] == summary["families"]["pdf"]["both-fail"] == 1
    assert summary["stdout_not_json"] == []
