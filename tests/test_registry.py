"""Dispatch, tolerant plugin loading, and failure paths through fault-injecting converters."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support import clean_env, gone, run_previewer, temp_leftovers

import previewer
from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    ExitCode,
    InvalidOptionsError,
    UnsupportedFormatError,
)
from previewer.registry import Registry
from tests.plugins import faulty

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "plugins" / "previewer-demo-plugin"


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    return path


def registry(*converters: type) -> Registry:
    return Registry(converters=list(converters), entry_points=False)


def test_builtins_are_listed_and_available() -> None:
    names = {c.name: c for c in previewer.list_converters(Registry(entry_points=False))}
    assert {"pdf-pymupdf", "raster-pillow"} <= set(names)
    assert all(c.available for c in names.values())


def test_builtin_declarations_match_the_classes() -> None:
    # The registry chooses among built-ins by the catalog, before importing any module; each
    # class takes its name, priority and MIME types from its spec.
    import pkgutil

    from previewer.converters import BUILTIN_SPECS
    from previewer.plugin import BaseConverter, BaseDocument

    classes = [pkgutil.resolve_name(s.target) for s in BUILTIN_SPECS]
    declared = [(s.name, s.priority, s.mime_types) for s in BUILTIN_SPECS]
    actual = [(c.name, c.priority, frozenset(c.mime_types)) for c in classes]
    assert declared == actual
    assert all(issubclass(c, BaseConverter) for c in classes)
    assert len({s.name for s in BUILTIN_SPECS}) == len(BUILTIN_SPECS)
    # Built-ins are used as they are (no conformance wrapper), so their documents must have
    # every member of the contract: they are BaseDocuments.
    reg = Registry(entry_points=False)
    assert {type(e.converter) for e in reg.entries} == set(classes)
    import inspect

    documents = [
        obj
        for c in classes
        for _, obj in inspect.getmembers(sys.modules[c.__module__], inspect.isclass)
        if obj.__module__ == c.__module__ and hasattr(obj, "page_size")
    ]
    assert len(documents) >= 6
    assert all(issubclass(d, BaseDocument) for d in documents), documents


def test_plugins_get_the_optional_members_and_need_the_required_ones() -> None:
    class Bare:  # subclasses nothing, declares only what the contract requires
        name = "bare"
        mime_types = frozenset({"text/plain"})
        priority = 1

        def availability(self) -> Any:
            return faulty.Availability(True, "bare")

        def open(self, source: Path, ctx: Any) -> Any:
            return faulty.FakeDocument()

    class NoOpen:
        name = "no-open"
        mime_types = frozenset({"text/plain"})
        priority = 99

        def availability(self) -> Any:
            return faulty.Availability(True, "none")

    reg = registry(Bare, NoOpen)
    conv = reg.resolve("text/plain")
    assert conv.name == "bare"
    assert (conv.fallback_mime_types, conv.sandboxed, conv.warm_engine) == (
        frozenset(),
        None,
        False,
    )
    doc = conv.open(Path("x"), None)  # type: ignore[arg-type]
    assert doc.page_count_known is True and doc.metadata() == {}
    assert doc.render_png(0, size=(4, 2)) is None
    (broken,) = [e for e in reg.entries if e.converter is None]
    assert "missing open" in broken.load_error


def test_only_the_chosen_builtin_is_imported() -> None:
    code = (
        "import sys\n"
        "from previewer.registry import Registry\n"
        "reg = Registry(entry_points=False)\n"
        "assert len(reg.entries) >= 6\n"
        "print(reg.resolve('application/postscript').name)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('previewer.converters.'))))\n"
        "print(len([e for e in reg.entries if e.converter is not None]))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('previewer.converters.'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    chosen, before, loaded, after = proc.stdout.splitlines()
    assert chosen == "postscript-ghostscript"
    assert before == "previewer.converters.ghostscript"
    assert int(loaded) >= 6  # the others still load on demand (listing, fallbacks)
    assert {
        "previewer.converters.pdf",
        "previewer.converters.psd",
        "previewer.converters.magick",
    } <= set(after.split())


def test_builtin_that_fails_to_import_is_listed_not_fatal() -> None:
    from previewer.registry import _load_builtin

    entry = _load_builtin("previewer.converters.no_such_module:Nothing")
    assert entry.converter is None and "failed to load" in entry.load_error
    assert not entry.availability().ok


def test_exact_type_beats_wildcard_and_priority_orders() -> None:
    class Wild(faulty.GoodConverter):
        name = "wild"
        mime_types = frozenset({"text/*"})
        priority = 100

    class Low(faulty.GoodConverter):
        name = "low"
        priority = 1

    class High(faulty.GoodConverter):
        name = "high"
        priority = 20

    reg = registry(Wild, Low, High)
    assert reg.resolve("text/plain").name == "high"
    assert reg.resolve("text/csv").name == "wild"
    assert reg.resolve("text/plain", name="low").name == "low"


def test_unavailable_candidate_is_skipped_then_reported() -> None:
    reg = registry(faulty.UnavailableConverter, faulty.GoodConverter)
    assert reg.resolve("text/plain").name == "test-good"
    reg = registry(faulty.UnavailableConverter)
    with pytest.raises(EngineUnavailableError, match="nothing is not installed") as info:
        reg.resolve("text/plain")
    assert info.value.exit_code == ExitCode.ENGINE_MISSING


def test_unclaimed_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError, match="image/x-nothing"):
        registry(faulty.GoodConverter).resolve("image/x-nothing")


def test_unknown_forced_name() -> None:
    with pytest.raises(InvalidOptionsError, match="no converter named 'zzz'"):
        registry(faulty.GoodConverter).resolve("text/plain", name="zzz")


def test_broken_converter_is_listed_not_fatal(text_file: Path, tmp_path: Path) -> None:
    reg = registry(faulty.BrokenInitConverter, faulty.GoodConverter)
    listing = {c.name: c for c in previewer.list_converters(reg)}
    broken = [c for c in listing.values() if not c.available]
    assert len(broken) == 1 and "cannot initialise" in broken[0].reason
    previews = previewer.convert(text_file, out_dir=tmp_path, registry=reg)
    assert previews[0].converter == "test-good"


def test_timeout_kills_the_whole_process_group(text_file: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(EngineTimeoutError) as info:
        previewer.convert(text_file, out_dir=tmp_path, registry=registry(faulty.SleepConverter))
    assert time.monotonic() - started < 10
    err = info.value
    assert err.exit_code == ExitCode.TIMEOUT
    assert str(text_file) in str(err) and "timeout of 1 s" in str(err)
    grandchild = int((tmp_path / "notes.txt.pid").read_text())
    assert gone(grandchild, within=5), "a grandchild of the engine survived the timeout"
    assert not list(tmp_path.glob("*.png"))


def test_nonzero_exit_is_an_engine_error_with_stderr(text_file: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="exited with status 3: engine exploded") as info:
        previewer.convert(text_file, out_dir=tmp_path, registry=registry(faulty.ExitConverter))
    assert info.value.exit_code == ExitCode.ENGINE_FAILED
    assert info.value.converter == "test-exit"


def test_missing_output_is_an_engine_error(text_file: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="wrote no output"):
        previewer.convert(text_file, out_dir=tmp_path, registry=registry(faulty.NoOutputConverter))


def test_foreign_exception_surfaces_as_ours(text_file: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="unexpected ZeroDivisionError: engine bug") as info:
        previewer.convert(
            text_file, out_dir=tmp_path, registry=registry(faulty.ForeignErrorConverter)
        )
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not list(tmp_path.glob("*.png"))


def test_batch_goes_on_after_failures(text_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("x")
    reg = registry(faulty.ForeignErrorConverter)
    report = previewer.convert_many(
        [text_file, tmp_path / "missing.txt", other], out_dir=tmp_path, registry=reg
    )
    assert [r.status for r in report.results] == ["failed"] * 3
    assert report.exit_code == ExitCode.BATCH_PARTIAL
    reg = registry(faulty.GoodConverter)
    report = previewer.convert_many(
        [text_file, tmp_path / "missing.txt"], out_dir=tmp_path, registry=reg
    )
    assert [r.status for r in report.results] == ["converted", "failed"]
    assert report.failures_by_type() == {"InputError": 1}


def test_work_directories_are_removed(
    text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    log = tmp_path / "workdirs.log"
    out = tmp_path / "out"
    text_file.write_text(f"LOG {log}\n")  # the Recording* converters log their work directory

    def workdirs() -> list[Path]:
        return [Path(line) for line in log.read_text().splitlines()] if log.exists() else []

    def convert(conv: type, source: Path | bytes, **kwargs: str) -> Path:
        """Convert with a converter that leaves a file in its work directory; return that dir."""
        seen = len(workdirs())
        reg = registry(conv)
        if conv is faulty.RecordingGoodConverter:
            (preview,) = previewer.convert(source, out_dir=out, registry=reg, **kwargs)
            assert preview.path is not None and preview.path.is_file()
        elif conv is faulty.RecordingForeignErrorConverter:
            with pytest.raises(EngineError, match="unexpected ZeroDivisionError"):
                previewer.convert(source, out_dir=out, registry=reg, **kwargs)
        else:
            with pytest.raises(EngineError, match="exited with status 3"):
                previewer.convert(source, out_dir=out, registry=reg, **kwargs)
        (workdir,) = workdirs()[seen:]  # the converter ran, once, and had a work directory
        # Under the caller's TMPDIR, also when the child comes from a fork server started
        # (by an earlier test) with another TMPDIR.
        assert tmp in workdir.parents, workdir
        assert any(p.name.startswith("previewer-") for p in [workdir, *workdir.parents])
        assert not workdir.exists(), f"{conv.__name__} left its work directory {workdir}"
        return workdir

    used = []
    for conv in (
        faulty.RecordingGoodConverter,
        faulty.RecordingForeignErrorConverter,
        faulty.RecordingExitConverter,
    ):
        used.append(convert(conv, text_file))
        used.append(convert(faulty.RecordingGoodConverter, f"LOG {log}".encode(), name="b.txt"))
    assert len(set(used)) == len(used) == 6, "each conversion has a work directory of its own"
    assert temp_leftovers(tmp) == []


@pytest.fixture(scope="module")
def demo_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the demo plugin package (entry points and all) into a private target dir."""
    build = tmp_path_factory.mktemp("demo-src")
    src = build / "previewer-demo-plugin"
    shutil.copytree(DEMO, src)
    target = tmp_path_factory.mktemp("demo-site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert list(target.glob("previewer_demo_plugin-1.0.dist-info/entry_points.txt"))
    return target


def _cli(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_previewer(*args, env=clean_env(pythonpath=[target]), text=True, timeout=60)


def test_installed_plugin_is_listed_and_used(demo_plugin: Path, tmp_path: Path) -> None:
    listing = _cli(demo_plugin, "converters")
    assert listing.returncode == 0, listing.stderr
    assert "✓ colour-demo" in listing.stdout
    assert "entry point demo (previewer-demo-plugin)" in listing.stdout
    assert "✗ broken" in listing.stdout and "previewer_demo_dependency_that_does_not_exist" in (
        listing.stdout
    )
    assert "✓ pdf-pymupdf" in listing.stdout  # the broken plugin breaks nothing else

    doc = tmp_path / "swatch.txt"
    doc.write_text("COLOUR #ff8000 200x100\n")
    run = _cli(demo_plugin, "convert", str(doc), "-o", str(tmp_path), "-s", "50")
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "swatch.txt.p1.50.png") as im:
        assert im.size == (50, 25)
        assert im.convert("RGB").getpixel((10, 10)) == (255, 128, 0)
    pdf = _cli(demo_plugin, "convert", str(ROOT / "samples" / "report.pdf"), "-o", str(tmp_path))
    assert pdf.returncode == 0, pdf.stderr


PRIORITY_PLUGIN = """
from previewer.plugin import Availability, BaseConverter, BaseDocument


class Doc(BaseDocument):
    units = "px"
    page_count = 1

    def page_size(self, index):
        return (10.0, 10.0)

    def render(self, index, *, scale, clip=None):
        from PIL import Image

        return Image.new("RGB", (round(10 * scale), round(10 * scale)), (1, 2, 3))


class JpegOverride(BaseConverter):
    name = "jpeg-override"
    mime_types = frozenset({"image/jpeg"})
    priority = 100

    def availability(self):
        return Availability(True, "override")

    def open(self, source, ctx):
        return Doc()
"""


def test_plugin_with_a_higher_priority_wins_a_builtin_type(tmp_path: Path) -> None:
    # Entry points are only read when a distribution declares the group, but then a plugin
    # claiming a built-in's type with a higher priority wins it.
    site = tmp_path / "site"
    info = site / "jpeg_override-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jpeg-override\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[previewer.converters]\noverride = jpeg_override:JpegOverride\n"
    )
    (site / "jpeg_override.py").write_text(PRIORITY_PLUGIN)
    photo = str(ROOT / "samples" / "photo.jpg")
    with_plugin = _cli(site, "info", "--json", photo)
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert '"converter": "jpeg-override"' in with_plugin.stdout
    without = _cli(tmp_path, "info", "--json", photo)
    assert '"converter": "raster-pillow"' in without.stdout


def test_no_plugin_installed_reads_no_metadata() -> None:
    # importlib.metadata costs about 20 ms (email, zipfile, csv): not paid without plugins.
    code = (
        "import sys\n"
        "from previewer.registry import Registry, _declared\n"
        "assert not _declared('previewer.no-such-group')\n"
        "Registry().resolve('image/jpeg')\n"
        "print('importlib.metadata' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    declared = subprocess.run(
        [
            sys.executable,
            "-c",
            "from previewer.registry import _declared\nprint(_declared('previewer.converters'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # With the demo plugin installed in this environment the group is declared, and then
    # importlib.metadata reads it.
    assert proc.stdout.strip() == declared.stdout.strip()


def test_unnamed_byte_inputs_never_overwrite_each_other(tmp_path: Path) -> None:
    reg = registry(faulty.GoodConverter)
    report = previewer.convert_many([b"one", b"two"], out_dir=tmp_path, registry=reg)
    assert [r.status for r in report.results] == ["converted", "failed"]
    error = report.results[1].error
    assert isinstance(error, previewer.OutputError) and "would overwrite" in str(error)
    assert report.exit_code == 10


def test_pixel_limit_does_not_leak_into_the_process(tmp_path: Path) -> None:
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.new("RGB", (60, 40)).save(tmp_path / "a.png")
    with pytest.raises(previewer.LimitExceededError, match="2,400 pixels"):
        previewer.convert(
            tmp_path / "a.png", out_dir=tmp_path, limits=previewer.Limits(max_pixels=1000)
        )
    assert Image.MAX_IMAGE_PIXELS == before


def test_converters_install_inside_the_previewer_package(tmp_path: Path) -> None:
    # converters/ sits at the top of the repository but installs as previewer.converters:
    # nothing generic named "converters" is importable from outside the source tree.
    code = (
        "import importlib.util, previewer.converters.pdf as p\n"
        "print(importlib.util.find_spec('converters'))\n"
        "print(p.__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "previewer.converters.pdf"]


def test_every_package_in_the_tree_is_installed() -> None:
    # A package missing from pyproject's list works in the editable checkout and is absent
    # from every real installation (the desktop copy under /usr/local, a wheel).
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "previewer").rglob("__init__.py")
        if "converters" not in init.parent.relative_to(root).parts[1:]
    }
    found.add("previewer.converters")
    assert listed == found


def test_a_fork_server_child_uses_the_callers_temporary_directory(
    text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller with a second thread gets its children from a fork server, which keeps the
    # TMPDIR of its start; each child must still work under the caller's current one.
    import tempfile
    import threading

    log = tmp_path / "workdirs.log"
    text_file.write_text(f"LOG {log}\n")
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        for name in ("first", "second"):
            tmp = tmp_path / name
            tmp.mkdir()
            monkeypatch.setenv("TMPDIR", str(tmp))
            monkeypatch.setattr(tempfile, "tempdir", None)
            previewer.convert(
                text_file,
                out_dir=tmp_path / "out",
                registry=registry(faulty.RecordingGoodConverter),
            )
            workdir = Path(log.read_text().splitlines()[-1])
            assert tmp in workdir.parents, (name, workdir)
    finally:
        stop.set()
        helper.join()
