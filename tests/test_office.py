"""The Office converter with the real LibreOffice: content, isolation, warm reuse and faults.

The corpus rows (Word, Excel, PowerPoint, OpenDocument, RTF, encrypted and broken files) are
checked by ``tests/test_corpus.py``; this module covers what the corpus cannot: documents
generated with known page-1 content, remote content never fetched, one warm LibreOffice reused
within a process, per-document timeouts, a LibreOffice killed mid-conversion, concurrent
previewer processes, and no ``soffice.bin`` left behind. Every test process shares one warm
LibreOffice (the engine pool lives as long as the process), so only the subprocess tests pay
for a cold start.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import officegen
import psutil
import pytest
from PIL import Image
from pngcheck import check_png
from support import (
    clean_env,
    osl_pipes,
    processes,
    requires_engine,
    start_previewer,
    wait_until,
)

import previewer
from previewer.converters import office_engine
from previewer.converters.office_pool import ENGINES
from previewer.errors import (
    EncryptedError,
    EngineError,
    EngineTimeoutError,
    ExitCode,
    InputError,
    LimitExceededError,
)

OFFICE = Path(__file__).parent / "fixtures" / "corpus" / "office"
BIGFOOT = OFFICE / "bigfoot.xlsx"
A4 = (595.3, 841.9)

pytestmark = requires_engine("soffice")

NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" office:version="1.2"'
)


def make_odt(path: Path, pages: int = 1, *, image_url: str | None = None) -> Path:
    """Write an A4 text document: page N says "Page N" in 48 pt black bold at the top."""
    paragraphs = "".join(
        f'<text:p text:style-name="{"Big" if n == 1 else "Break"}">Page {n}</text:p>'
        for n in range(1, pages + 1)
    )
    if image_url:
        paragraphs += (
            '<text:p><draw:frame draw:name="remote" text:anchor-type="paragraph" '
            'svg:width="5cm" svg:height="5cm"><draw:image xlink:href="'
            + image_url
            + '" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/>'
            "</draw:frame></text:p>"
        )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {NS}>'
        "<office:automatic-styles>"
        '<style:style style:name="Big" style:family="paragraph">'
        '<style:text-properties fo:font-size="48pt" fo:font-weight="bold" fo:color="#000000"/>'
        "</style:style>"
        '<style:style style:name="Break" style:family="paragraph" style:parent-style-name="Big">'
        '<style:paragraph-properties fo:break-before="page"/>'
        '<style:text-properties fo:font-size="48pt" fo:font-weight="bold"/></style:style>'
        "</office:automatic-styles>"
        f"<office:body><office:text>{paragraphs}</office:text></office:body>"
        "</office:document-content>"
    )
    styles = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-styles {NS}>'
        '<office:automatic-styles><style:page-layout style:name="pm1">'
        '<style:page-layout-properties fo:page-width="21cm" fo:page-height="29.7cm" '
        'fo:margin-top="2cm" fo:margin-bottom="2cm" fo:margin-left="2cm" fo:margin-right="2cm"/>'
        "</style:page-layout></office:automatic-styles>"
        '<office:master-styles><style:master-page style:name="Standard" '
        'style:page-layout-name="pm1"/></office:master-styles></office:document-styles>'
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        '<manifest:file-entry manifest:full-path="styles.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text", zipfile.ZIP_STORED)
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        zf.writestr("styles.xml", styles, zipfile.ZIP_DEFLATED)
        zf.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
    return path


def soffice_processes(marker: str) -> list[int]:
    """PIDs of running processes whose command line mentions ``marker`` (a private path)."""
    return processes(cmdline=marker)


def soffice_bin(marker: str) -> list[int]:
    """The LibreOffice process itself (``soffice.bin``) among :func:`soffice_processes`."""
    return processes(cmdline=marker, programs={"soffice.bin"})


def run_cli(args: list[str], tmpdir: Path) -> subprocess.Popen[bytes]:
    return start_previewer(*args, env=clean_env(TMPDIR=str(tmpdir)))


# --------------------------------------------------------------------------- content


def test_generated_document_has_known_page_one(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "three.odt", pages=3)

    info = previewer.info(doc)
    (preview,) = previewer.convert(doc, out_dir=tmp_path / "out", sizes=[256])

    assert info.converter == "office-libreoffice"
    assert info.pages == 3
    assert all(abs(w - A4[0]) < 1 and abs(h - A4[1]) < 1 for w, h in info.page_sizes)
    image = check_png(preview.path, longest=256, aspect=A4)
    # "Page 1" in 48 pt black bold sits in the top band; the bottom half is empty paper.
    grey = image.convert("L")
    top = grey.crop((0, 0, grey.width, grey.height // 5))
    bottom = grey.crop((0, grey.height // 2, grey.width, grey.height))
    assert top.getextrema()[0] < 80, "no dark text at the top of page 1"
    assert bottom.getextrema()[0] > 240, "page 1 is not empty below its heading"


def test_all_pages_render_with_page_count(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "two.odt", pages=2)

    previews = previewer.convert(doc, out_dir=tmp_path, sizes=[128], pages="all")

    assert [p.page for p in previews] == [1, 2]
    for p in previews:
        check_png(p.path, longest=128, aspect=A4)


def test_slides_are_16_9(tmp_path: Path) -> None:
    (preview,) = previewer.convert(
        OFFICE / "LibreOfficeImpress_odp_1.3.odp", out_dir=tmp_path, sizes=[320]
    )
    image = check_png(preview.path, longest=320, aspect=(16, 9))
    assert image.size == (320, 180)


def test_docx_without_extension_is_sniffed(tmp_path: Path) -> None:
    nameless = tmp_path / "document"
    nameless.write_bytes((OFFICE / "sct-section-props.docx").read_bytes())

    info = previewer.info(nameless)

    assert info.mime.endswith("wordprocessingml.document")
    assert info.pages == 5
    assert info.page_sizes[0] == pytest.approx((792, 612), abs=0.5)


def test_csv_named_so_opens_as_a_spreadsheet(tmp_path: Path) -> None:
    """CSV goes to the table converter by default; LibreOffice still opens it when asked."""
    csv = tmp_path / "table.csv"
    csv.write_text("name,value\n" + "".join(f"row{i},{i * i}\n" for i in range(30)))

    assert previewer.info(csv).converter == "table-story"
    info = previewer.info(csv, converter="office-libreoffice")

    assert info.mime == "text/csv" and info.converter == "office-libreoffice"
    assert info.pages == 1


def test_flat_opendocument_is_sniffed_and_converted(tmp_path: Path) -> None:
    flat = tmp_path / "flat.xml"
    flat.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2" '
        'office:mimetype="application/vnd.oasis.opendocument.text">'
        "<office:body><office:text><text:p>Flat</text:p></office:text></office:body>"
        "</office:document>"
    )

    info = previewer.info(flat)

    assert info.mime == "application/vnd.oasis.opendocument.text-flat-xml"
    assert info.converter == "office-libreoffice" and info.pages == 1


def test_info_names_the_office_format(tmp_path: Path) -> None:
    info = previewer.info(OFFICE / "lorem-ipsum.doc")
    assert info.metadata["format"] == "Word 97-2003"
    assert info.metadata["engine"].startswith("LibreOffice 7.")


def test_file_name_starting_with_dashes(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "--help.odt")
    (preview,) = previewer.convert(doc, out_dir=tmp_path / "out")
    assert preview.path.name == "--help.odt.p1.256.png"


# --------------------------------------------------------------------------- bad input


def test_encrypted_documents_fail_fast() -> None:
    for name in ("WordPasswordProtected.docx", "Word_protected_encrypted.doc"):
        started = time.monotonic()
        with pytest.raises(EncryptedError) as excinfo:
            previewer.info(OFFICE / name)
        assert name in str(excinfo.value) and "password=" in str(excinfo.value)
        assert excinfo.value.exit_code == ExitCode.BAD_INPUT
        assert time.monotonic() - started < 15


def test_zip_bomb_is_refused_before_libreoffice(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b"<w:document>" + b" " * (64 << 20) + b"</w:document>")

    with pytest.raises(LimitExceededError, match="zip bomb"):
        previewer.info(bomb)


def test_empty_and_broken_packages_are_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.docx"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.odt"
    broken.write_bytes(make_odt(tmp_path / "x.odt").read_bytes()[:300])
    for path in (empty, broken):
        with pytest.raises(InputError) as excinfo:
            previewer.info(path)
        assert not isinstance(excinfo.value, EncryptedError)


def test_empty_file_never_starts_libreoffice(tmp_path: Path) -> None:
    (tmp_path / "empty.xlsx").write_bytes(b"")
    code = (
        "import previewer\nfrom previewer.converters import office_pool as e\n"
        "try:\n    previewer.info('empty.xlsx')\nexcept previewer.InputError:\n    pass\n"
        "print(e.ENGINES.registered, len(e.ENGINES.idle))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert proc.stdout.split() == [b"False", b"0"], proc.stderr


# --------------------------------------------------------------------------- safety


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 that records every request it receives."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            requests.append(f"{self.command} {self.path}")
            self.send_response(404)
            self.end_headers()

        do_GET = do_HEAD = do_OPTIONS = do_PROPFIND = _record

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_linked_remote_image_is_not_fetched(
    tmp_path: Path, http_server: tuple[str, list[str]]
) -> None:
    url, requests = http_server
    doc = make_odt(tmp_path / "linked.odt", image_url=f"{url}/tracker.png")

    (preview,) = previewer.convert(doc, out_dir=tmp_path)

    check_png(preview.path, longest=256, aspect=A4)
    time.sleep(0.5)
    assert requests == []


# --------------------------------------------------------------------------- warm engine


def test_one_warm_instance_serves_consecutive_documents(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "warm.odt")
    previewer.info(doc)
    (engine,) = ENGINES.idle
    uses = engine.uses

    started = time.monotonic()
    for _ in range(3):
        previewer.info(doc)
    elapsed = time.monotonic() - started

    assert ENGINES.idle == [engine] and engine.uses == uses + 3
    assert engine.alive()
    assert elapsed < 6, f"three warm conversions took {elapsed:.1f} s"


def test_engine_start_skips_the_first_start_render_tests(tmp_path: Path) -> None:
    # A headless LibreOffice 7.4 never records the version it ran, so every start used to run
    # the VCL graphics render tests of a first start (~0.8 s; they write this log).
    previewer.shutdown()
    started = time.time()
    previewer.info(make_odt(tmp_path / "start.odt"))
    (engine,) = ENGINES.idle
    log = engine.workdir / "profile" / "user" / "GraphicsRenderTests.log"
    assert not log.exists() or log.stat().st_mtime < started - 1


def test_timeout_kills_the_instance_and_the_next_document_converts(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "after.odt")
    previewer.info(doc)
    (engine,) = ENGINES.idle
    workdir = str(engine.workdir)

    report = previewer.convert_many(
        [BIGFOOT, doc], out_dir=tmp_path, limits=previewer.Limits(timeout=3)
    )

    first, second = report.results
    assert isinstance(first.error, EngineTimeoutError)
    assert first.exit_code == ExitCode.TIMEOUT
    assert second.status == "converted"
    assert not engine.alive()
    assert soffice_processes(workdir) == []
    assert not Path(workdir).exists()
    assert ENGINES.idle and ENGINES.idle[0] is not engine


@pytest.mark.slow
def test_bigfoot_converts_to_one_blank_page() -> None:
    info = previewer.info(BIGFOOT)
    assert info.pages == 1
    assert info.page_sizes[0] == pytest.approx(A4, abs=1)


def test_libreoffice_killed_mid_conversion(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "survivor.odt")
    previewer.info(doc)
    (engine,) = ENGINES.idle
    workdir = str(engine.workdir)

    def kill_soffice() -> None:
        if wait_until(lambda: engine in ENGINES.busy, 30):
            time.sleep(1.0)
            for pid in soffice_bin(workdir):
                os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_soffice)
    killer.start()
    report = previewer.convert_many([BIGFOOT, doc], out_dir=tmp_path)
    killer.join()

    first, second = report.results
    assert isinstance(first.error, EngineError), first.error
    assert "crash" in str(first.error) or "died" in str(first.error)
    assert second.status == "converted"
    assert wait_until(lambda: soffice_processes(workdir) == [], 10)


# --------------------------------------------------------------------------- processes


def test_two_processes_at_once_and_nothing_left_behind(tmp_path: Path) -> None:
    docs = [make_odt(tmp_path / f"doc{n}.odt", pages=n) for n in (1, 2)]
    procs = [
        run_cli(["convert", str(doc), "-o", str(tmp_path / "out"), "-p", "all"], tmp_path)
        for doc in docs
    ]
    results = [p.communicate(timeout=120) for p in procs]

    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "doc1.odt.p1.256.png",
        "doc2.odt.p1.256.png",
        "doc2.odt.p2.256.png",
    ]
    assert soffice_processes(str(tmp_path)) == []
    assert not list(tmp_path.glob("previewer-*")), "an engine work directory was left"


def test_sigterm_leaves_no_soffice(tmp_path: Path) -> None:
    proc = run_cli(["convert", str(BIGFOOT), "-o", str(tmp_path)], tmp_path)
    try:
        assert wait_until(lambda: soffice_bin(str(tmp_path)), 60), "LibreOffice never started"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert wait_until(lambda: soffice_processes(str(tmp_path)) == [], 10)
        assert wait_until(lambda: not list(tmp_path.glob("previewer-office-*")), 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_converters_lists_the_libreoffice_version() -> None:
    (office,) = [c for c in previewer.list_converters() if c.name == "office-libreoffice"]
    assert office.available
    assert office.engine == "LibreOffice"
    assert office.version and office.version[0].isdigit()


def test_page_range_export_in_the_bridge(tmp_path: Path) -> None:
    doc = make_odt(tmp_path / "ten.odt", pages=10)
    out = tmp_path / "first.pdf"

    ENGINES.convert(doc, out, timeout=60, pages="1")

    import pymupdf

    with pymupdf.open(out) as pdf:
        assert pdf.page_count == 1
    with Image.open(check_png_source(out, tmp_path)) as image:
        assert image.size[1] > image.size[0]


def check_png_source(pdf: Path, tmp_path: Path) -> Path:
    (preview,) = previewer.convert(pdf, out_dir=tmp_path)
    return preview.path


def test_missing_libreoffice_is_reported_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(office_engine, "SOFFICE_BIN", Path("/nonexistent/soffice.bin"))
    version, reason = office_engine.probe.__wrapped__()
    assert version is None
    assert "apt-get install" in reason and "python3-uno" in reason


def test_only_the_pages_to_render_are_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = make_odt(tmp_path / "ten.odt", pages=10)
    # info needs the whole document; a first-page preview needs page 1 only.
    assert previewer.info(doc).pages == 10
    seen: list[object] = []
    real = ENGINES.convert

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(kwargs.get("pages"))
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ENGINES, "convert", spy)
    (first,) = previewer.convert(doc, out_dir=tmp_path, pages="1")
    third = previewer.convert(doc, out_dir=tmp_path, pages="2-3")
    every = previewer.convert(doc, out_dir=tmp_path, pages="all", sizes=[64])
    with pytest.raises(previewer.InvalidOptionsError, match="has 10 pages"):
        previewer.convert(doc, out_dir=tmp_path, pages="12")
    assert seen == ["1-1", "1-3", None, "1-12"]
    assert first.page == 1 and [p.page for p in third] == [2, 3] and len(every) == 10


# --------------------------------------------------------------------------- comments


@pytest.mark.parametrize(
    "name, make",
    [
        ("comment.docx", officegen.docx_with_comment),
        ("comment.odt", officegen.odt_with_comment),
        ("comment.rtf", officegen.rtf_with_comment),
    ],
)
def test_documents_with_comments_convert(name: str, make: object, tmp_path: Path) -> None:
    # LibreOffice 7.4 (-nogui packages) aborted on these when loaded outside its main thread.
    doc = make(tmp_path / name)  # type: ignore[operator]

    (preview,) = previewer.convert(doc, out_dir=tmp_path / "out", sizes=[800])

    image = check_png(preview.path, longest=800)
    assert image.convert("L").getextrema()[0] < 100, "the commented text is not rendered"


# --------------------------------------------------------------------------- engine pool


def test_engines_are_capped_and_callers_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previewer.shutdown()
    monkeypatch.setattr(ENGINES, "limit", 1)
    docs = [make_odt(tmp_path / f"c{n}.odt") for n in range(3)]
    peak: list[int] = []
    errors: list[BaseException] = []

    def work(doc: Path) -> None:
        try:
            previewer.convert(doc, out_dir=tmp_path / "out", sizes=[64])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in docs]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        with ENGINES.lock:
            peak.append(len(ENGINES.idle) + len(ENGINES.busy) + ENGINES.starting)
        time.sleep(0.02)
    assert errors == []
    assert max(peak) == 1
    assert len(list((tmp_path / "out").iterdir())) == 3

    # A caller that cannot get an engine within its timeout fails with a timeout.
    with ENGINES.borrow(60, memory=0, allow_unisolated=False):
        started = time.monotonic()
        with pytest.raises(EngineTimeoutError, match="stayed busy"):
            ENGINES.convert(docs[0], tmp_path / "x.pdf", timeout=1)
        assert time.monotonic() - started < 5


def test_idle_engines_stop_by_themselves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previewer.info(make_odt(tmp_path / "idle.odt"))
    (engine,) = ENGINES.idle
    monkeypatch.setattr(ENGINES, "idle_seconds", 0.5)
    with ENGINES.lock:
        ENGINES.changed.notify_all()

    assert wait_until(lambda: not engine.alive(), 10)
    assert wait_until(lambda: not engine.workdir.exists(), 5)
    assert ENGINES.idle == []


def test_shutdown_stops_engines_and_removes_their_files(tmp_path: Path) -> None:
    previewer.info(make_odt(tmp_path / "stop.odt"))
    (engine,) = ENGINES.idle
    workdir = engine.workdir

    previewer.shutdown()

    assert not engine.alive() and not workdir.exists()
    assert soffice_processes(str(workdir)) == []
    assert ENGINES.idle == [] and ENGINES.busy == set()
    # Engines start again on demand.
    assert previewer.info(make_odt(tmp_path / "again.odt")).pages == 1


def test_work_directories_of_dead_processes_are_reaped(tmp_path: Path) -> None:
    dead = subprocess.Popen(["/usr/bin/true"])
    dead.wait()
    base = Path(tempfile.gettempdir())
    stale = base / f"{office_engine.WORKDIR_PREFIX}{dead.pid}-left"
    (stale / "profile").mkdir(parents=True)
    mine = base / f"{office_engine.WORKDIR_PREFIX}{os.getpid()}-mine"
    mine.mkdir()
    try:
        previewer.shutdown()
        previewer.info(make_odt(tmp_path / "reap.odt"))
        assert not stale.exists()
        assert mine.exists(), "a live process's directory was removed"
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)


def test_libreoffice_gets_its_own_memory_cap(tmp_path: Path) -> None:
    previewer.info(make_odt(tmp_path / "cap.odt"))
    (engine,) = ENGINES.idle
    (pid,) = soffice_bin(str(engine.workdir))
    soft, _hard = psutil.Process(pid).rlimit(psutil.RLIMIT_AS)
    assert soft == office_engine.ENGINE_MEMORY


def test_no_uno_pipe_is_left_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from previewer import sandbox

    previewer.shutdown()
    names = []
    previewer.info(make_odt(tmp_path / "bwrap.odt"))
    names += [e.workdir.name for e in ENGINES.idle]
    previewer.shutdown()
    # Without bubblewrap's private /tmp (network namespace only), the bridge removes them.
    unshare = sandbox.Mechanism("unshare", "/usr/bin/unshare", "test")
    if Path("/usr/bin/unshare").exists():
        monkeypatch.setattr(sandbox, "mechanism", lambda **kw: unshare)
        previewer.info(make_odt(tmp_path / "unshare.odt"))
        names += [e.workdir.name for e in ENGINES.idle]
        assert any(name in p for p in osl_pipes() for name in names[-1:]), "no pipe seen in /tmp"
        previewer.shutdown()
    assert len(names) == 2
    # The accept pipe is named after the engine's work directory.
    assert [p for p in osl_pipes() if any(name in p for name in names)] == []


# --------------------------------------------------------------------------- default password


def test_default_excel_password_opens_and_others_are_asked_for(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    velvet = officegen.libreoffice_save(
        csv, tmp_path / "velvet.xls", "MS Excel 97", "VelvetSweatshop"
    )
    secret = officegen.libreoffice_save(csv, tmp_path / "secret.xls", "MS Excel 97", "s3cret")

    assert previewer.info(velvet).pages == 1
    with pytest.raises(EncryptedError, match="needs a password"):
        previewer.info(secret)
    assert previewer.info(secret, password="s3cret").pages == 1
    with pytest.raises(EncryptedError, match="password is wrong"):
        previewer.info(secret, password="nope")


def test_encrypted_ooxml_is_tried_with_the_default_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []
    real = ENGINES.convert

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(kwargs.get("password"))
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ENGINES, "convert", spy)
    with pytest.raises(EncryptedError, match="needs a password") as excinfo:
        previewer.info(OFFICE / "WordPasswordProtected.docx")
    assert "password=" in str(excinfo.value)
    assert seen == ["VelvetSweatshop"]


# --------------------------------------------------------------------------- types by name


def _biff3(path: Path) -> Path:
    import struct

    def rec(kind: int, data: bytes) -> bytes:
        return struct.pack("<HH", kind, len(data)) + data

    path.write_bytes(
        rec(0x0209, struct.pack("<HHH", 0, 0x10, 0))  # BIFF3 BOF, worksheet
        + rec(0x0204, struct.pack("<HHHH", 0, 0, 0, 5) + b"Hello")  # LABEL A1
        + rec(0x000A, b"")  # EOF
    )
    return path


def test_types_sniffing_cannot_name_go_to_libreoffice(tmp_path: Path) -> None:
    biff3 = _biff3(tmp_path / "old.xls")
    word2003 = tmp_path / "letter.xml"
    word2003.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><?mso-application progid="Word.Document"?>'
        '<w:wordDocument xmlns:w="http://schemas.microsoft.com/office/word/2003/wordml">'
        "<w:body><w:p><w:r><w:t>Hello 2003</w:t></w:r></w:p></w:body></w:wordDocument>"
    )

    for doc, mime in (
        (biff3, "application/vnd.ms-excel"),
        (word2003, "application/vnd.ms-wordml"),
    ):
        info = previewer.info(doc)
        assert (info.mime, info.converter, info.pages) == (mime, "office-libreoffice", 1)


def test_unloadable_office_named_data_is_a_bad_input(tmp_path: Path) -> None:
    from previewer import mime

    visio = tmp_path / "plan.vsdx"
    with zipfile.ZipFile(visio, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("visio/document.xml", "<VisioDocument/>")
    # libmagic calls this "data"; LibreOffice's detection would read it as plain text.
    binary = tmp_path / "memo.doc"
    binary.write_bytes(b"hello\x00world\x01 " * 200)

    assert mime.sniff(visio) == "application/vnd.ms-visio.drawing"
    assert mime.sniff(binary) == "application/msword"
    with pytest.raises(InputError):  # LibreOffice's detection decided, not "unsupported"
        previewer.info(visio)
    with pytest.raises(InputError, match="plain text"):
        previewer.info(binary)


def test_text_with_an_office_extension_is_text(tmp_path: Path) -> None:
    fake = tmp_path / "notes.docx"
    fake.write_text("just some text\n")
    described = previewer.info(fake)
    assert (described.mime, described.converter) == ("text/plain", "text-story")


def test_libreoffice_escapes_a_batch_workers_memory_cap(tmp_path: Path) -> None:
    # A batch worker caps its own address space (soft limit, 2 GiB by default); LibreOffice
    # started from it still gets ENGINE_MEMORY (a 68-slide deck needs more than 2 GiB).
    doc = make_odt(tmp_path / "worker.odt")
    code = (
        "import resource, sys, previewer\n"
        "from pathlib import Path\n"
        "from previewer.converters import office_pool as e\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))\n"
        f"previewer.info({str(doc)!r})\n"
        "(engine,) = e.ENGINES.idle\n"
        "import psutil\n"
        "for p in psutil.process_iter(['name', 'cmdline']):\n"
        "    if p.info['name'] == 'soffice.bin' and str(engine.workdir) in ' '.join(\n"
        "        p.info['cmdline'] or []\n"
        "    ):\n"
        "        print(p.rlimit(psutil.RLIMIT_AS)[0])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, cwd=tmp_path
    )
    assert proc.stdout.split() == [str(office_engine.ENGINE_MEMORY).encode()], proc.stderr
