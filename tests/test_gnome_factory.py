"""The real client: GNOME's thumbnail factory runs previewer under bubblewrap and reads our cache.

Needs Debian's ``gir1.2-gnomedesktop-3.0``, ``python3-gi`` and ``bubblewrap``, and previewer
installed where the sandbox sees it, ``/usr/local/bin/previewer`` (README, "Desktop thumbnails";
``scripts/setup.sh --desktop`` installs them, CI uses it). Skipped otherwise. The factory is
driven from ``/usr/bin/python3`` in a child process with a private ``$XDG_DATA_HOME`` (holding
our ``.thumbnailer`` entry) and ``$XDG_CACHE_HOME``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import GNOME_PREVIEWER, GNOME_PYTHON, requires_engine, run_previewer

from previewer import freedesktop as fd
from previewer.thumbnailer import ENTRY_NAME, entry_text

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "samples" / "report.pdf"
PSD = ROOT / "tests" / "fixtures" / "psd" / "pixel-layer.psd"
DOCX = ROOT / "tests" / "fixtures" / "corpus" / "office" / "sct-section-props.docx"
SYSTEM_PYTHON = GNOME_PYTHON
SANDBOXED_PREVIEWER = GNOME_PREVIEWER

PROBE = r"""
import hashlib, json, os, sys
import gi
gi.require_version("GnomeDesktop", "3.0")
from gi.repository import GLib, Gio, GnomeDesktop

size = getattr(GnomeDesktop.DesktopThumbnailSize, sys.argv[1])
factory = GnomeDesktop.DesktopThumbnailFactory.new(size)
out = []
for item in json.loads(sys.argv[2]):
    path, mime, action = item["path"], item["mime"], item["action"]
    uri = Gio.File.new_for_path(path).get_uri()
    mtime = int(os.stat(path).st_mtime)
    row = {"path": path, "uri": uri}
    if action == "generate":
        row["can"] = factory.can_thumbnail(uri, mime, mtime)
        try:
            pix = factory.generate_thumbnail(uri, mime, None)
        except GLib.Error as exc:
            row["error"] = exc.message
        else:
            data = bytes(pix.get_pixels())
            stride, n = pix.get_rowstride(), pix.get_n_channels()
            colours = {
                data[y * stride + x * n : y * stride + x * n + n]
                for y in range(pix.get_height())
                for x in range(pix.get_width())
            }
            rows = b"".join(
                data[y * stride : y * stride + pix.get_width() * n] for y in range(pix.get_height())
            )
            row.update(width=pix.get_width(), height=pix.get_height(),
                       alpha=pix.get_has_alpha(), channels=n, colours=len(colours),
                       md5=hashlib.md5(rows).hexdigest())
    else:
        row["lookup"] = factory.lookup(uri, mtime)
        row["failed"] = factory.has_valid_failed_thumbnail(uri, mtime)
    out.append(row)
print(json.dumps(out))
"""


pytestmark = requires_engine("gnome-thumbnail-factory")


def _probe(tmp_path: Path, size: str, items: list[dict[str, str]]) -> list[dict[str, object]]:
    data = tmp_path / "data"
    (data / "thumbnailers").mkdir(parents=True, exist_ok=True)
    (data / "thumbnailers" / ENTRY_NAME).write_text(entry_text())
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "XDG_DATA_HOME": str(data),
        "XDG_DATA_DIRS": "/usr/local/share:/usr/share",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GSETTINGS_BACKEND": "memory",
    }
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", PROBE, size, json.dumps(items)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


def test_factory_generates_through_our_entry_in_its_sandbox(tmp_path: Path) -> None:
    items = [
        {"path": str(PDF), "mime": "application/pdf", "action": "generate"},
        {"path": str(PSD), "mime": "image/vnd.adobe.photoshop", "action": "generate"},
    ]
    pdf, psd = _probe(tmp_path, "LARGE", items)
    assert pdf["can"] is True and "error" not in pdf, pdf
    assert (pdf["width"], pdf["height"]) == (181, 256)
    assert pdf["alpha"] is True and pdf["channels"] == 4
    assert int(str(pdf["colours"])) > 10
    assert psd["can"] is True and "error" not in psd, psd
    from PIL import Image

    with Image.open(PSD) as im:
        native = im.size
    scale = min(1.0, 256 / max(native))
    assert abs(int(str(psd["width"])) - native[0] * scale) <= 1
    assert abs(int(str(psd["height"])) - native[1] * scale) <= 1
    assert psd["alpha"] is True


def test_factory_office_document(tmp_path: Path) -> None:
    # Inside GNOME's sandbox /etc is hidden: Debian's LibreOffice registry (/etc/libreoffice/
    # registry) and fontconfig setup (/etc/fonts) are missing, and the Office engine switches to
    # the copies under /usr. The thumbnail must be the one previewer makes outside the sandbox.
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    (docx,) = _probe(tmp_path, "NORMAL", [{"path": str(DOCX), "mime": mime, "action": "generate"}])
    assert docx["can"] is True and "error" not in docx, docx
    assert (docx["width"], docx["height"]) == (128, 99)
    assert docx["alpha"] is True and int(str(docx["colours"])) > 10
    out = tmp_path / "outside.png"
    made = run_previewer("thumbnail", "--size", "128", DOCX, out)
    assert made.returncode == 0, made.stderr
    from PIL import Image

    with Image.open(out) as im:
        assert im.mode == "RGBA"
        assert docx["md5"] == hashlib.md5(im.tobytes()).hexdigest()


def test_factory_accepts_our_cache_entries(tmp_path: Path) -> None:
    good = tmp_path / "a b#1.pdf"
    bad = tmp_path / "bad.pdf"
    shutil.copy(PDF, good)
    bad.write_bytes(PDF.read_bytes()[:300])
    root = tmp_path / "cache" / "thumbnails"
    report = fd.fill_cache([good, bad], sizes=("normal",), root=root)
    assert report.converted == 1 and report.failed == 1
    # GNOME only consults its own fail directory (each program keeps its own, as the spec
    # says); a copy of our fail entry there shows the factory accepts its format.
    ours = fd.fail_path(fd.to_uri(bad), root)
    gnome_fail = root / "fail" / "gnome-thumbnail-factory"
    gnome_fail.mkdir(parents=True)
    items = [
        {"path": str(good), "mime": "application/pdf", "action": "lookup"},
        {"path": str(bad), "mime": "application/pdf", "action": "lookup"},
    ]
    before = _probe(tmp_path, "NORMAL", items)
    shutil.copy(ours, gnome_fail / ours.name)
    after = _probe(tmp_path, "NORMAL", items)
    assert before[0]["uri"] == fd.to_uri(good)
    assert before[0]["lookup"] == str(root / "normal" / fd.thumbnail_name(fd.to_uri(good)))
    assert before[1]["lookup"] is None and before[1]["failed"] is False
    assert after[1]["failed"] is True


@pytest.mark.parametrize(
    "name", ["a b.pdf", "ü#?;[x]%.pdf", "it's (1)+[2].png", "!$&*,=:@~_-.x", '"<>\\^`{|}.x']
)
def test_uri_matches_glib(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    proc = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import sys; from gi.repository import Gio; "
            "print(Gio.File.new_for_path(sys.argv[1]).get_uri())",
            str(path),
        ],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == fd.to_uri(path)
