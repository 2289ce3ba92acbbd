"""Fault-injecting converters for tests: each fails in one specific way.

Most claim text/plain; ``CrashingPng``, ``CrashingSecondPage`` and ``BrokenFallback`` claim PNG
(the ImageMagick fallback tests). The ``Recording*`` ones prove they had a work directory. They use only the plugin surface (previewer.plugin, previewer.errors), like a
third-party plugin.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from previewer.errors import EngineError, InputError
from previewer.plugin import Availability, ConvertContext


class FakeDocument:
    """``pages`` pages of ``size`` px in one colour; pages from ``fail_from`` on crash."""

    units: Literal["pt", "px"] = "px"

    def __init__(
        self, size: tuple[int, int] = (40, 20), pages: int = 1, fail_from: int | None = None
    ) -> None:
        self._size = size
        self.page_count = pages
        self._fail_from = fail_from

    def page_size(self, index: int) -> tuple[float, float]:
        return (float(self._size[0]), float(self._size[1]))

    def render(self, index: int, *, scale: float, clip: Any = None) -> Image.Image:
        if self._fail_from is not None and index >= self._fail_from:
            raise EngineError("the engine crashed while decoding")
        width, height = round(self._size[0] * scale), round(self._size[1] * scale)
        return Image.new("RGB", (width, height), (0, 128, 255))

    def metadata(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OddInputError(InputError):
    """A plugin's own error class, unknown to previewer (exit code 5 through InputError)."""


class _Base:
    mime_types: ClassVar[frozenset[str]] = frozenset({"text/plain"})
    priority: ClassVar[int] = 90  # above the built-in text converter (50), which also claims it

    def availability(self) -> Availability:
        return Availability(True, "test")


class SleepConverter(_Base):
    """Starts a child (and a grandchild) that sleep far past the timeout."""

    name: ClassVar[str] = "test-sleep"

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        sh = shutil.which("sh") or "/bin/sh"
        marker = source.with_name(source.name + ".pid")  # the test reads the grandchild's pid
        # Unisolated: the marker lies beside the input, and the test reads a host pid.
        ctx.run([sh, "-c", f"sleep 30 & echo $! > {marker}; sleep 30"], timeout=1.0, isolate=False)
        return FakeDocument()


class ExitConverter(_Base):
    """Runs a program that fails with status 3 and a message on stderr."""

    name: ClassVar[str] = "test-exit"

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        sh = shutil.which("sh") or "/bin/sh"
        ctx.run([sh, "-c", "echo 'engine exploded' >&2; exit 3"])
        return FakeDocument()


class NoOutputConverter(_Base):
    """Runs a program that succeeds but writes nothing."""

    name: ClassVar[str] = "test-nooutput"

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        ctx.run(["/bin/true"], expect_output=ctx.workdir / "out.pdf")
        return FakeDocument()


class ForeignErrorConverter(_Base):
    """Raises an exception that is not a PreviewerError while rendering."""

    name: ClassVar[str] = "test-foreign"

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        class Broken(FakeDocument):
            def render(self, index: int, *, scale: float, clip: Any = None) -> Image.Image:
                raise ZeroDivisionError("engine bug")

        return Broken()


class UnavailableConverter(_Base):
    """Claims text/plain but its engine is missing."""

    name: ClassVar[str] = "test-unavailable"
    priority: ClassVar[int] = 99

    def availability(self) -> Availability:
        return Availability(
            False, "Nothing", reason="nothing is not installed; apt-get install nothing"
        )

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        raise AssertionError("must never be opened")


class GoodConverter(_Base):
    """A working converter for text/plain: a 40x20 px blue image."""

    name: ClassVar[str] = "test-good"

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        return FakeDocument()


class BrokenInitConverter(_Base):
    """Fails to instantiate."""

    name: ClassVar[str] = "test-broken-init"

    def __init__(self) -> None:
        raise RuntimeError("cannot initialise")


class TripwireConverter(_Base):
    """Claims text/plain and misbehaves in the way the file's first word says.

    HANG: sleeps in-process (no subprocess to time out); ABORT: os.abort(), as a crashing engine
    would; HOG: allocates memory until the address-space cap stops it; SLOW: takes 1 s, then
    converts; NAP: runs an engine (sleep) that overruns the timeout; STUCK: hangs deaf to
    signals and exceptions, as an engine busy in C code is; WEDGE: deaf to SIGTERM, with a
    helper process of its own in its process group (both pids are written to ``<file>.pids``);
    NOISY: issues a Python warning and writes engine messages on file descriptors 1 and 2, then
    converts; LEAK: fails with a message naming a file in its work directory; ODD: raises the
    plugin's own OddInputError; anything else converts to a 40x20 blue image. ``HANG PID``
    also writes the converting process's pid to ``<file>.pid``.
    """

    name: ClassVar[str] = "test-tripwire"

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        import os
        import signal
        import time
        import warnings

        word = source.read_bytes()[:5].strip()
        if word == b"HANG":
            if b"PID" in source.read_bytes():
                source.with_name(source.name + ".pid").write_text(str(os.getpid()))
            time.sleep(3600)
        elif word == b"WEDGE":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            helper = os.fork()
            if helper == 0:
                time.sleep(3600)
                os._exit(0)
            source.with_name(source.name + ".pids").write_text(f"{os.getpid()} {helper}")
            time.sleep(3600)
        elif word == b"NOISY":
            warnings.warn("engine: strange data in chunk 7", UserWarning, stacklevel=1)
            os.write(2, b"TIFFFillStrip: Read error on strip 3; got 0 bytes, expected 512\n")
            os.write(1, b"mupdf: syntax error in content stream\n")
        elif word == b"LEAK":
            raise EngineError(f"unable to open image '{ctx.workdir}/magick/tmp/magick-Xq1'")
        elif word == b"ABORT":
            os.abort()
        elif word == b"HOG":
            hoard = []
            while True:
                hoard.append(bytearray(64 * 1024 * 1024))
        elif word == b"SLOW":
            time.sleep(1)
        elif word == b"NAP":
            ctx.run([shutil.which("sleep") or "/bin/sleep", "3600"])
        elif word == b"ODD":
            raise OddInputError("the tripwire does not like it")
        elif word == b"STUCK":
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                try:
                    time.sleep(3600)
                except BaseException:  # noqa: BLE001 - what a stuck engine does, in effect
                    pass
        return FakeDocument()


class CrashingPng:
    """Claims PNG, opens fine, and crashes while rendering page ``FAIL_FROM`` onwards."""

    name: ClassVar[str] = "test-crashing-png"
    mime_types: ClassVar[frozenset[str]] = frozenset({"image/png"})
    priority: ClassVar[int] = 90
    PAGES = 1
    FAIL_FROM = 0

    def availability(self) -> Availability:
        return Availability(True, "test")

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        with Image.open(source) as im:
            return FakeDocument(im.size, self.PAGES, self.FAIL_FROM)


class CrashingSecondPage(CrashingPng):
    """Claims PNG: two pages, the second crashes."""

    name: ClassVar[str] = "test-crashing-page-2"
    PAGES = 2
    FAIL_FROM = 1


class BrokenFallback:
    """A third-party fallback for PNG that opens the file and then fails to render it."""

    name: ClassVar[str] = "test-broken-fallback"
    mime_types: ClassVar[frozenset[str]] = frozenset({"image/x-test-none"})
    fallback_mime_types: ClassVar[frozenset[str]] = frozenset({"image/png"})
    priority: ClassVar[int] = 5

    def availability(self) -> Availability:
        return Availability(True, "test")

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        assert ctx.fallback_for == "test-crashing-png"
        return FakeDocument((30, 10), 1, 0)


WORKDIR_MARK = "engine-was-here"
"""The file a recording converter leaves in its work directory."""


def record_workdir(source: Path, ctx: ConvertContext) -> None:
    """If the input reads ``LOG <path>``, prove the converter had a work directory.

    Writes :data:`WORKDIR_MARK` into ``ctx.workdir`` (which makes the directory exist) and
    appends the directory's path to ``<path>``, one per line. The log's path comes with the
    input, so it works for byte inputs and in whichever child process the conversion runs.
    """
    data = source.read_bytes()
    if data.startswith(b"LOG "):
        (ctx.workdir / WORKDIR_MARK).write_text(str(source))
        with open(data[4:].decode().strip(), "a") as fh:
            fh.write(f"{ctx.workdir}\n")


class RecordingGoodConverter(GoodConverter):
    """:class:`GoodConverter` that records its work directory (:func:`record_workdir`)."""

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        record_workdir(source, ctx)
        return super().open(source, ctx)


class RecordingForeignErrorConverter(ForeignErrorConverter):
    """:class:`ForeignErrorConverter` that records its work directory first."""

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        record_workdir(source, ctx)
        return super().open(source, ctx)


class RecordingExitConverter(ExitConverter):
    """:class:`ExitConverter` that records its work directory first."""

    def open(self, source: Path, ctx: ConvertContext) -> FakeDocument:
        record_workdir(source, ctx)
        return super().open(source, ctx)
