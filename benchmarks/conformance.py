"""Conformance of ``previewer convert`` against the reference tools installed on this machine.

Given directories of files, it converts them all with previewer (one batch, ``--json``, first
page, 256 px) and asks the reference tools that are installed whether they can read each file:

- pdf: ``mutool draw`` (render), ``pdfinfo`` (header);
- mupdf (XPS, EPUB, CBZ, FB2, SVG): ``mutool draw``;
- raster (JPEG, PNG, GIF, WebP, TIFF, BMP, ICO): Pillow (full decode), ``vipsthumbnail``
  (render), ``vipsheader`` (header);
- psd: Pillow, ImageMagick ``convert``;
- postscript (EPS, PS, AI): ``gs``;
- magick (XCF, TGA, PCX, PNM, JPEG 2000, HEIC ...): ImageMagick ``convert``, Pillow (render),
  ``vipsheader`` (header);
- office: ``soffice --convert-to pdf``, on a sample of ``--sample N`` files.

A file counts as readable by the references when a render-level reference renders it (the
header-level ones decide only where no render-level reference ran). Per family it prints the
files previewer and the references both read (both-ok), both refuse (both-fail), the
references read and previewer does not (previewer-miss, listed with every reference's verdict)
and previewer reads and no reference does (previewer-only); then the slow files, and for PDFs
(and the other MuPDF formats) the visual difference of previewer's page 1 against mutool's:
the mean absolute difference of the two images as 64 px grey images (0-255), worst first.

Every reference runs as its own process group under ``--timeout`` (killed as a group when it
expires); previewer runs under the same per-file ``--timeout``.

Run it with the project's interpreter, from the repository root::

    .venv/bin/python benchmarks/conformance.py /work/shared/corpus
    .venv/bin/python benchmarks/conformance.py ~/Documents --sample 10 --timeout 60 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("pdf", "mupdf", "raster", "psd", "postscript", "magick", "office", "other")
VERDICTS = ("both-ok", "both-fail", "previewer-miss", "previewer-only", "unchecked")
DIFF_SIZE = 64
MIN_PREVIEWER_TIMEOUT = 60.0  # the whole batch gets at least this long, plus timeout per file

# --------------------------------------------------------------------------- families

MAGIC: list[tuple[bytes, int, str]] = [
    (b"%PDF", 0, "pdf"),
    (b"\x89PNG\r\n\x1a\n", 0, "raster"),
    (b"\xff\xd8\xff", 0, "raster"),
    (b"GIF87a", 0, "raster"),
    (b"GIF89a", 0, "raster"),
    (b"II*\x00", 0, "raster"),
    (b"MM\x00*", 0, "raster"),
    (b"BM", 0, "raster"),
    (b"\x00\x00\x01\x00", 0, "raster"),
    (b"8BPS", 0, "psd"),
    (b"%!PS", 0, "postscript"),
    (b"\xc5\xd0\xd3\xc6", 0, "postscript"),
    (b"gimp xcf", 0, "magick"),
    (b"\x00\x00\x00\x0cjP  ", 0, "magick"),
    (b"\xff\x4f\xff\x51", 0, "magick"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "office"),
    (b"{\\rtf", 0, "office"),
]
EXTENSIONS = {
    "mupdf": {".xps", ".oxps", ".epub", ".cbz", ".fb2", ".svg"},
    "raster": {".jpg", ".jpeg", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".ico"},
    "psd": {".psd", ".psb"},
    "postscript": {".eps", ".ps", ".ai", ".epsf"},
    "magick": {
        ".xcf", ".tga", ".pcx", ".pnm", ".pbm", ".pgm", ".ppm", ".pam", ".dds", ".pict", ".pct",
        ".sgi", ".rgb", ".jp2", ".j2k", ".heic", ".heif", ".avif",
    },
    "office": {
        ".doc", ".docx", ".docm", ".dotx", ".rtf", ".wpd", ".odt", ".ods", ".odp", ".odg",
        ".ott", ".ots", ".otp", ".xls", ".xlsx", ".xlsm", ".csv", ".ppt", ".pptx", ".ppsx",
        ".vsd", ".vsdx", ".pub",
    },
}  # fmt: skip
MIME_FAMILIES = [
    ("application/pdf", "pdf"),
    ("application/vnd.ms-xpsdocument", "mupdf"),
    ("application/oxps", "mupdf"),
    ("application/epub+zip", "mupdf"),
    ("application/x-cbz", "mupdf"),
    ("application/x-fictionbook", "mupdf"),
    ("image/svg", "mupdf"),
    ("image/vnd.adobe.photoshop", "psd"),
    ("application/postscript", "postscript"),
    ("image/x-eps", "postscript"),
    ("application/illustrator", "postscript"),
    ("image/jpeg", "raster"),
    ("image/png", "raster"),
    ("image/gif", "raster"),
    ("image/webp", "raster"),
    ("image/tiff", "raster"),
    ("image/bmp", "raster"),
    ("image/x-icon", "raster"),
    ("image/vnd.microsoft.icon", "raster"),
    ("image/", "magick"),
    ("application/vnd.openxmlformats", "office"),
    ("application/vnd.oasis.opendocument", "office"),
    ("application/msword", "office"),
    ("application/vnd.ms-", "office"),
    ("application/rtf", "office"),
    ("text/csv", "office"),
    ("application/vnd.wordperfect", "office"),
]


def sniff_family(path: Path, mime: str | None = None) -> str:
    """The family of a file from its first bytes and name, independently of previewer.

    previewer's MIME type (``mime``) only decides where the bytes and the name do not.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        head = b""
    for magic, offset, family in MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if family == "raster" and magic == b"\x00\x00\x01\x00" and path.suffix != ".ico":
                continue
            return family
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "raster"
    suffix = path.suffix.lower()
    for family, suffixes in EXTENSIONS.items():
        if suffix in suffixes:
            return family
    if head[:2] == b"PK":
        return "office"  # a zip container named otherwise: the Office formats are the usual ones
    if mime:
        for prefix, family in MIME_FAMILIES:
            if mime.startswith(prefix):
                return family
    return "other"


# --------------------------------------------------------------------------- running programs


@dataclass
class Ran:
    """One program run: exit status (None on timeout), seconds, stderr tail."""

    status: int | None
    seconds: float
    stdout: str
    stderr: str


def run(argv: list[str], timeout: float, *, cwd: Path | None = None, env: Any = None) -> Ran:
    """Run ``argv`` in its own process group; kill the whole group when ``timeout`` expires."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return Ran(127, 0.0, "", f"cannot start {argv[0]}: {exc}")
    try:
        out, err = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        status = None
    _kill_group(proc.pid)  # anything the program left behind in its group
    return Ran(
        status,
        time.monotonic() - started,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- references


@dataclass
class Verdict:
    """What one reference said about one file."""

    tool: str
    ok: bool
    seconds: float
    detail: str = ""
    image: Path | None = None  # its rendering of page 1, when it made one

    def text(self) -> str:
        word = "ok" if self.ok else "fail"
        return f"{self.tool}: {word}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Reference:
    """A reference tool: families it reads, render- or header-level, how to ask it."""

    name: str
    families: frozenset[str]
    render: bool
    executable: str | None
    ask: Callable[[Reference, Path, Path, float], Verdict]
    sample_only: bool = False

    @property
    def available(self) -> bool:
        return self.executable is not None


def _png_made(ref: Reference, ran: Ran, out: Path) -> Verdict:
    if ran.status is None:
        return Verdict(ref.name, False, ran.seconds, "timed out")
    made = out.is_file() and out.stat().st_size > 0
    if ran.status == 0 and made:
        return Verdict(ref.name, True, ran.seconds, _tail(ran.stderr), out)
    detail = _tail(ran.stderr) or _tail(ran.stdout) or f"exit {ran.status}, no output"
    return Verdict(ref.name, False, ran.seconds, detail)


def ask_mutool(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    # mutool 1.21: -w/-h without -r fit the page into the box (aspect kept).
    out = tmp / "mutool.png"
    argv = [str(ref.executable), "draw", "-q", "-o", str(out), "-w", "256", "-h", "256"]
    return _png_made(ref, run([*argv, str(path), "1"], timeout), out)


def ask_pdfinfo(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    ran = run([str(ref.executable), str(path)], timeout)
    if ran.status is None:
        return Verdict(ref.name, False, ran.seconds, "timed out")
    pages = next(
        (
            line.split(":", 1)[1].strip()
            for line in ran.stdout.splitlines()
            if line.startswith("Pages:")
        ),
        "",
    )
    if ran.status == 0 and pages.isdigit() and int(pages) > 0:
        return Verdict(ref.name, True, ran.seconds, f"{pages} pages")
    return Verdict(ref.name, False, ran.seconds, _tail(ran.stderr) or f"pages: {pages or '?'}")


def ask_vipsthumbnail(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    out = tmp / "vips.png"
    ran = run([str(ref.executable), str(path), "-s", "256", "-o", str(out)], timeout)
    return _png_made(ref, ran, out)


def ask_vipsheader(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    ran = run([str(ref.executable), str(path)], timeout)
    if ran.status is None:
        return Verdict(ref.name, False, ran.seconds, "timed out")
    if ran.status == 0:
        return Verdict(ref.name, True, ran.seconds, _tail(ran.stdout).split(": ", 1)[-1])
    return Verdict(ref.name, False, ran.seconds, _tail(ran.stderr) or f"exit {ran.status}")


PILLOW_CHILD = """\
import sys
from PIL import Image
path = sys.argv[1]
Image.init()
# Never let Pillow hand a file to Ghostscript: the decoders for images only.
formats = [f for f in Image.OPEN if f not in ("EPS", "PDF")]
with Image.open(path, formats=formats) as im:
    im.seek(0)
    im.load()
    print(f"{im.format} {im.width}x{im.height} {im.mode}")
"""


def ask_pillow(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    ran = run([sys.executable, "-I", "-c", PILLOW_CHILD, str(path)], timeout)
    if ran.status is None:
        return Verdict(ref.name, False, ran.seconds, "timed out")
    if ran.status == 0:
        return Verdict(ref.name, True, ran.seconds, _tail(ran.stdout))
    return Verdict(ref.name, False, ran.seconds, _tail(ran.stderr) or f"exit {ran.status}")


def ask_magick(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    out = tmp / "magick.png"
    ran = run([str(ref.executable), f"{path}[0]", "-thumbnail", "256x256", str(out)], timeout)
    return _png_made(ref, ran, out)


def ask_gs(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    out = tmp / "gs.png"
    private = tmp / "gs-tmp"  # Ghostscript 10.0's SAFER still reads the shared temp directory
    private.mkdir(exist_ok=True)
    argv = [str(ref.executable), "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=png16m"]
    argv += ["-r20", "-dFirstPage=1", "-dLastPage=1", "-dEPSCrop", f"-sOutputFile={out}"]
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(private), "HOME": str(private)}
    return _png_made(ref, run([*argv, str(path)], timeout, env=env), out)


def ask_soffice(ref: Reference, path: Path, tmp: Path, timeout: float) -> Verdict:
    profile = tmp / "lo-profile"
    outdir = tmp / "lo-out"
    outdir.mkdir(exist_ok=True)
    argv = [str(ref.executable), "--headless", "--norestore", "--nologo"]
    argv += [f"-env:UserInstallation={profile.as_uri()}", "--convert-to", "pdf"]
    argv += ["--outdir", str(outdir), str(path.resolve())]
    env = {**os.environ, "HOME": str(tmp)}
    ran = run(argv, timeout, env=env)
    if ran.status is None:
        return Verdict(ref.name, False, ran.seconds, "timed out")
    made = list(outdir.glob("*.pdf"))
    # LibreOffice 7.4's exit status lies ("source file could not be loaded" exits 0).
    if made and made[0].stat().st_size > 0:
        return Verdict(ref.name, True, ran.seconds, "")
    return Verdict(ref.name, False, ran.seconds, _tail(ran.stderr) or _tail(ran.stdout))


def references() -> list[Reference]:
    """The reference tools, each with its executable or None when it is not installed."""
    from importlib.util import find_spec

    pillow = sys.executable if find_spec("PIL") is not None else None
    convert = "/usr/bin/convert" if os.access("/usr/bin/convert", os.X_OK) else None
    return [
        Reference("mutool", frozenset({"pdf", "mupdf"}), True, shutil.which("mutool"), ask_mutool),
        Reference("pdfinfo", frozenset({"pdf"}), False, shutil.which("pdfinfo"), ask_pdfinfo),
        Reference("pillow", frozenset({"raster", "psd", "magick"}), True, pillow, ask_pillow),
        Reference(
            "vipsthumbnail",
            frozenset({"raster"}),
            True,
            shutil.which("vipsthumbnail"),
            ask_vipsthumbnail,
        ),
        Reference(
            "vipsheader",
            frozenset({"raster", "magick"}),
            False,
            shutil.which("vipsheader"),
            ask_vipsheader,
        ),
        # /usr/local/bin/convert may be a stand-in: only Debian's ImageMagick is a reference.
        Reference("magick", frozenset({"psd", "magick"}), True, convert, ask_magick),
        Reference("gs", frozenset({"postscript"}), True, shutil.which("gs"), ask_gs),
        Reference(
            "soffice",
            frozenset({"office"}),
            True,
            shutil.which("soffice"),
            ask_soffice,
            sample_only=True,
        ),
    ]


# --------------------------------------------------------------------------- the run


@dataclass
class Entry:
    """One input file and what everyone said about it."""

    path: Path
    shown: str
    family: str = "other"
    status: str = "missing"
    error: dict[str, Any] | None = None
    seconds: float = 0.0
    image: Path | None = None
    refs: list[Verdict] = field(default_factory=list)
    verdict: str = "unchecked"
    diff: float | None = None
    sizes: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "converted"


def walk(dirs: list[Path]) -> list[Entry]:
    """Every regular file under ``dirs`` as previewer walks them (hidden ones left out)."""
    entries = []
    for root in dirs:
        if root.is_file():
            entries.append(Entry(root.resolve(), root.name))
            continue
        for current, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(current) / name
                if name.startswith(".") or path.is_symlink() or not path.is_file():
                    continue
                shown = str(path.relative_to(root)) if len(dirs) == 1 else str(path)
                entries.append(Entry(path.resolve(), shown))
    return entries


def run_previewer(
    dirs: list[Path], entries: list[Entry], out: Path, timeout: float, jobs: int
) -> tuple[float, str, list[str]]:
    """Convert everything in one previewer batch; fill in each entry's status and output.

    Returns:
        The batch's seconds, a problem with the run ("" if none), and the lines of stdout
        that are not JSON results (stdout must carry nothing else).
    """
    argv = [sys.executable, "-m", "previewer", "convert", *map(str, dirs), "-o", str(out)]
    argv += ["--json", "-q", "--force", "-s", "256", "-p", "1", "--timeout", f"{timeout:g}"]
    argv += ["-j", str(jobs)]
    budget = MIN_PREVIEWER_TIMEOUT + timeout * len(entries)
    ran = run(argv, budget)
    by_path = {e.path: e for e in entries}
    stray: list[str] = []
    for line in ran.stdout.splitlines():
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or "input" not in data:
                raise ValueError(line)
        except ValueError:
            stray.append(line)
            continue
        entry = by_path.get(Path(os.path.abspath(data["input"])).resolve())
        if entry is None:
            continue
        entry.status = str(data["status"])
        entry.error = data.get("error")
        entry.seconds = float(data.get("duration") or 0.0)
        entry.family = sniff_family(entry.path, data.get("mime"))
        outputs = data.get("outputs") or []
        if outputs and outputs[0].get("path"):
            entry.image = Path(outputs[0]["path"])
    for entry in entries:
        if entry.status == "missing":
            entry.family = sniff_family(entry.path)
    problem = "" if ran.status in (0, 10) else f"previewer exited {ran.status}: {_tail(ran.stderr)}"
    return ran.seconds, problem, stray


def ask_references(
    entries: list[Entry], refs: list[Reference], work: Path, timeout: float, sample: int, jobs: int
) -> None:
    """Ask every available reference about the files of its families (soffice on a sample)."""
    office = [e for e in entries if e.family == "office"]
    sampled = {e.path for e in random.Random(0).sample(office, min(sample, len(office)))}
    tasks: list[tuple[Entry, Reference, Path]] = []
    for index, entry in enumerate(entries):
        for ref in refs:
            if not ref.available or entry.family not in ref.families:
                continue
            if ref.sample_only and entry.path not in sampled:
                continue
            tmp = work / f"{index:05d}-{ref.name}"
            tmp.mkdir(parents=True)
            tasks.append((entry, ref, tmp))

    def one(task: tuple[Entry, Reference, Path]) -> tuple[Entry, Verdict]:
        entry, ref, tmp = task
        return entry, ref.ask(ref, entry.path, tmp, timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for entry, verdict in pool.map(one, tasks):
            entry.refs.append(verdict)
    for entry in entries:
        rendered = [v for v in entry.refs if _is_render(v.tool, refs)]
        deciding = rendered or entry.refs
        if not deciding:
            entry.verdict = "unchecked"
            continue
        readable = any(v.ok for v in deciding)
        entry.verdict = {
            (True, True): "both-ok",
            (False, False): "both-fail",
            (False, True): "previewer-miss",
            (True, False): "previewer-only",
        }[(entry.ok, readable)]


def _is_render(tool: str, refs: list[Reference]) -> bool:
    return any(r.name == tool and r.render for r in refs)


def visual_diff(entries: list[Entry]) -> None:
    """Page 1 of previewer against mutool: mean absolute difference of 64 px grey images."""
    from PIL import Image, ImageChops, ImageStat

    def grey(path: Path) -> Image.Image:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
                flat.alpha_composite(im)
                im = flat
            return im.convert("L")

    for entry in entries:
        mutool = next((v for v in entry.refs if v.tool == "mutool" and v.ok), None)
        if not (entry.ok and entry.image and mutool and mutool.image):
            continue
        try:
            ours, theirs = grey(entry.image), grey(mutool.image)
        except OSError:
            continue
        entry.sizes = f"previewer {ours.width}x{ours.height}, mutool {theirs.width}x{theirs.height}"
        scale = DIFF_SIZE / max(ours.size)
        size = (max(1, round(ours.width * scale)), max(1, round(ours.height * scale)))
        a = ours.resize(size, Image.Resampling.BOX)
        b = theirs.resize(size, Image.Resampling.BOX)
        entry.diff = float(ImageStat.Stat(ImageChops.difference(a, b)).mean[0])


# --------------------------------------------------------------------------- sample files

DOCX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
    ),
    "word/document.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>A letter made by the conformance check.</w:t></w:r></w:p>"
        "<w:p><w:r><w:t>Second paragraph.</w:t></w:r></w:p></w:body></w:document>"
    ),
}


def make_samples(root: Path) -> None:
    """Write a small mixed set into ``root``.

    pdf: report.pdf (3 A4 pages), landscape.pdf, broken.pdf (no pages: nobody reads it);
    raster: photo.jpg, photo.webp, photo.bmp (palette), alpha.png (RGBA), anim.gif (2 frames),
    scan.tiff (2 pages), truncated.png (cut in half: Pillow and previewer refuse it, libvips
    reads what is there); office: letter.docx (a minimal Word package); other: notes.txt.
    """
    import io
    import zipfile

    import pymupdf
    from PIL import Image, ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    doc = pymupdf.open()
    for number in range(3):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 100), f"Page {number + 1} of a generated report", fontsize=24)
        page.draw_rect((72, 150, 400, 400), color=(0, 0, 0.6), fill=(0.9, 0.8, 0.2))
    doc.save(root / "report.pdf")
    doc = pymupdf.open()
    page = doc.new_page(width=842, height=595)
    for k in range(40):
        page.draw_circle((60 + k * 18, 300), 20 + k % 7 * 5, color=(k / 40, 0.2, 0.5))
    doc.save(root / "landscape.pdf")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj<<>>\ngarbage\n" * 3)
    photo = Image.new("RGB", (640, 480))
    draw = ImageDraw.Draw(photo)
    for y in range(0, 480, 8):
        draw.rectangle((0, y, 640, y + 8), fill=(y // 2, 128, 255 - y // 2))
    draw.ellipse((100, 100, 400, 380), fill=(250, 240, 20))
    photo.save(root / "photo.jpg", quality=88)
    photo.save(root / "photo.webp", quality=80)
    photo.convert("P").save(root / "photo.bmp")
    alpha = photo.convert("RGBA")
    alpha.putalpha(Image.linear_gradient("L").resize(photo.size))
    alpha.save(root / "alpha.png")
    frames = [photo, photo.rotate(90)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(root / "scan.tiff", save_all=True, append_images=frames[1:])
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    data = buffer.getvalue()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(root / "letter.docx", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in DOCX_PARTS.items():
            zf.writestr(name, text)
    (root / "notes.txt").write_text("plain text: no converter claims it\n")


# --------------------------------------------------------------------------- the report


def summarise(
    entries: list[Entry],
    refs: list[Reference],
    args: argparse.Namespace,
    seconds: float,
    stray: list[str],
) -> dict[str, Any]:
    """Everything the report shows, as one JSON-serialisable dict."""
    families: dict[str, dict[str, int]] = {}
    for entry in entries:
        row = families.setdefault(entry.family, {"files": 0, **dict.fromkeys(VERDICTS, 0)})
        row["files"] += 1
        row[entry.verdict] += 1
    total = {"files": len(entries), **{v: sum(r[v] for r in families.values()) for v in VERDICTS}}

    def describe(entry: Entry) -> dict[str, Any]:
        error = entry.error or {}
        return {
            "file": entry.shown,
            "family": entry.family,
            "previewer": entry.status
            if entry.ok
            else f"{error.get('type', entry.status)}: {error.get('message', '')}".strip(),
            "previewer_seconds": round(entry.seconds, 3),
            "references": [
                {"tool": v.tool, "ok": v.ok, "seconds": round(v.seconds, 3), "detail": v.detail}
                for v in entry.refs
            ],
        }

    diffs = sorted((e for e in entries if e.diff is not None), key=lambda e: -(e.diff or 0))
    slow = sorted(
        (
            e
            for e in entries
            if e.seconds >= args.slow or any(v.seconds >= args.slow for v in e.refs)
        ),
        key=lambda e: -max([e.seconds, *(v.seconds for v in e.refs)]),
    )
    return {
        "inputs": [str(d) for d in args.dirs],
        "timeout": args.timeout,
        "slow_seconds": args.slow,
        "previewer_seconds": round(seconds, 2),
        "references": {r.name: (r.executable is not None) for r in refs},
        "office_sample": args.sample,
        "stdout_not_json": stray,
        "families": {f: families[f] for f in FAMILIES if f in families},
        "total": total,
        "misses": [describe(e) for e in entries if e.verdict == "previewer-miss"],
        "previewer_only": [describe(e) for e in entries if e.verdict == "previewer-only"],
        "slow": [describe(e) for e in slow[: args.worst]],
        "visual": {
            "compared": len(diffs),
            "mean": round(statistics.fmean(e.diff or 0 for e in diffs), 2) if diffs else None,
            "median": round(statistics.median(e.diff or 0 for e in diffs), 2) if diffs else None,
            "worst": [
                {"file": e.shown, "diff": round(e.diff or 0, 2), "sizes": e.sizes}
                for e in diffs[: args.worst]
            ],
        },
    }


def print_report(summary: dict[str, Any]) -> None:
    refs = summary["references"]
    have = ", ".join(name for name, ok in refs.items() if ok) or "none"
    missing = ", ".join(name for name, ok in refs.items() if not ok)
    total = summary["total"]
    print(
        f"previewer conformance: {total['files']} files in {', '.join(summary['inputs'])} "
        f"(previewer batch {summary['previewer_seconds']:.1f} s, "
        f"--timeout {summary['timeout']:g} s)"
    )
    print(f"reference tools: {have}" + (f"; not installed: {missing}" if missing else ""))
    print(f"soffice runs on a sample of {summary['office_sample']} office file(s)")
    print()
    header = f"{'family':<11} {'files':>5}" + "".join(f" {v:>14}" for v in VERDICTS)
    print(header)
    for family, row in summary["families"].items():
        print(f"{family:<11} {row['files']:>5}" + "".join(f" {row[v]:>14}" for v in VERDICTS))
    print(f"{'total':<11} {total['files']:>5}" + "".join(f" {total[v]:>14}" for v in VERDICTS))

    def listing(title: str, items: list[dict[str, Any]]) -> None:
        print()
        print(f"{title}: {len(items)}")
        for item in items:
            refs_text = "; ".join(
                f"{r['tool']}: {'ok' if r['ok'] else 'fail'}"
                + (f" ({r['detail']})" if r["detail"] else "")
                for r in item["references"]
            )
            print(f"  {item['file']} [{item['family']}]")
            print(f"      previewer: {item['previewer']}")
            print(f"      {refs_text}")

    if summary["stdout_not_json"]:
        print()
        print(
            f"previewer wrote {len(summary['stdout_not_json'])} line(s) on stdout "
            "that are not JSON results:"
        )
        for line in summary["stdout_not_json"][:10]:
            print(f"  {line[:160]}")
    listing("previewer misses (a reference reads the file, previewer does not)", summary["misses"])
    listing(
        "previewer only (previewer reads the file, no reference does)", summary["previewer_only"]
    )
    print()
    print(
        f"slow files (any tool taking {summary['slow_seconds']:g} s or more): "
        f"{len(summary['slow'])}"
    )
    for item in summary["slow"]:
        times = ", ".join(f"{r['tool']} {r['seconds']:.2f} s" for r in item["references"])
        print(
            f"  {item['file']}: previewer {item['previewer_seconds']:.2f} s"
            + (f"; {times}" if times else "")
        )
    visual = summary["visual"]
    print()
    if not visual["compared"]:
        print("page 1 against mutool: nothing to compare")
        return
    print(
        f"page 1 against mutool ({DIFF_SIZE} px grey, mean absolute difference 0-255): "
        f"{visual['compared']} compared, mean {visual['mean']:.2f}, median {visual['median']:.2f}"
    )
    for item in visual["worst"]:
        print(f"  {item['diff']:6.2f}  {item['file']}  ({item['sizes']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="directories (or files) to check")
    parser.add_argument(
        "--make-samples",
        type=Path,
        metavar="DIR",
        help="write a small mixed sample set (PDFs, images, a DOCX, broken files) into DIR "
        "and check it (with any other directories given)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per file and tool (default 30)"
    )
    parser.add_argument(
        "--sample", type=int, default=3, help="office files given to soffice (default 3)"
    )
    parser.add_argument(
        "--slow", type=float, default=2.0, help="list files taking this long (default 2 s)"
    )
    parser.add_argument(
        "--worst", type=int, default=10, help="entries in the slow and visual lists (default 10)"
    )
    parser.add_argument(
        "--jobs", "-j", type=int, default=os.cpu_count() or 1, help="parallel runs (default: CPUs)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    parser.add_argument(
        "--keep", type=Path, help="keep previewer's and the references' outputs here"
    )
    args = parser.parse_args(argv)
    if args.make_samples is not None:
        make_samples(args.make_samples)
        args.dirs.append(args.make_samples)
    if not args.dirs:
        parser.error("give directories to check, or --make-samples DIR")
    for d in args.dirs:
        if not d.exists():
            parser.error(f"{d} does not exist")
    entries = walk(args.dirs)
    if not entries:
        parser.error("no files to check")
    work = Path(tempfile.mkdtemp(prefix="previewer-conformance-"))
    try:
        refs = references()
        seconds, problem, stray = run_previewer(
            args.dirs, entries, work / "previewer", args.timeout, args.jobs
        )
        if problem:
            print(f"conformance: {problem}", file=sys.stderr)
        ask_references(entries, refs, work / "refs", args.timeout, args.sample, args.jobs)
        visual_diff(entries)
        summary = summarise(entries, refs, args, seconds, stray)
        if args.json:
            json.dump(summary, sys.stdout, indent=1)
            print()
        else:
            print_report(summary)
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
