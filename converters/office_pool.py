"""The warm LibreOffice engines of this process: borrowed per conversion, capped, stopped idle.

:data:`ENGINES` is the one engine set of the process (LibreOffice instances are expensive to
start, so every conversion of the process shares them, whichever registry resolved the
converter). Engines start lazily on the first Office document and are reused for the next ones:
at most :meth:`EnginePool.capacity` per process (callers beyond it wait, within their timeout);
an engine idle for :attr:`EnginePool.idle_seconds` is stopped; an engine is recycled after
:data:`~previewer.converters.office_engine.RECYCLE_AFTER` documents (LibreOffice leaks) and
replaced after a crash or a timeout (the whole group is killed). :meth:`EnginePool.shutdown`
stops them all and removes their work directories; it is registered with
:func:`previewer.plugin.register_shutdown` on first use, so ``previewer.shutdown()`` and
interpreter exit run it. A host killed without exit handlers (SIGKILL, or SIGTERM without a
handler) takes its engines with it (they die with their parent, and the bridge exits when its
stdin closes); the work directories left behind name the dead process and are removed by the
next engine started on the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from previewer.converters.office_engine import ENGINE_MEMORY, RECYCLE_AFTER, Engine
from previewer.errors import EncryptedError, EngineError, EngineTimeoutError, InputError
from previewer.plugin import register_shutdown

__all__ = ["ENGINES", "EnginePool"]

log = logging.getLogger(__name__)


class EnginePool:
    """A set of warm LibreOffice engines shared by the conversions of one process.

    Attributes:
        limit: Most engines at once; None means one per CPU (see :meth:`capacity`).
        idle_seconds: An engine with no work for this long is stopped.
        idle: Engines waiting for work.
        busy: Engines converting.
        starting: Engines being started.
        registered: Whether the shutdown hook is registered (on first use).
    """

    def __init__(self) -> None:
        self.limit: int | None = None
        self.idle_seconds = 60.0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.idle: list[Engine] = []
        self.busy: set[Engine] = set()
        self.starting = 0
        self.registered = False
        self._reaper_pid = 0

    def capacity(self) -> int:
        """Most engines this process runs at once: :attr:`limit`, else the CPUs."""
        if self.limit is not None:
            return max(1, self.limit)
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)

    def _register(self) -> None:
        """On first use in this process: stop engines at shutdown, and when they sit idle."""
        if not self.registered:
            register_shutdown(self.shutdown)
            self.registered = True
        if self._reaper_pid != os.getpid():
            self._reaper_pid = os.getpid()
            threading.Thread(
                target=self._reap_idle, name="previewer-office-idle", daemon=True
            ).start()

    def _reap_idle(self) -> None:
        """Stop engines that had no work for :attr:`idle_seconds` (runs in a daemon thread)."""
        while True:
            with self.lock:
                self.changed.wait(max(self.idle_seconds / 4, 0.05))
                now = time.monotonic()
                stale = [e for e in self.idle if now - e.last_used >= self.idle_seconds]
                for engine in stale:
                    self.idle.remove(engine)
                if stale:
                    self.changed.notify_all()
            for engine in stale:
                log.debug("stopping LibreOffice idle for %.0f s", now - engine.last_used)
                engine.stop()

    @contextlib.contextmanager
    def borrow(
        self,
        timeout: float,
        *,
        memory: int,
        allow_unisolated: bool,
        meanwhile: Callable[[], None] | None = None,
    ) -> Iterator[Engine]:
        """Borrow an idle engine, or start one while under :meth:`capacity`, or wait for one.

        ``meanwhile`` (if given) is called once: while a new engine starts (see
        :class:`~previewer.converters.office_engine.Engine`), else when the engine is borrowed.

        Raises:
            EngineTimeoutError: Every engine stayed busy for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        engine = None
        retire: list[Engine] = []
        with self.lock:
            self._register()
            while True:
                for candidate in list(self.idle):
                    if candidate.pid != os.getpid() or not candidate.alive():
                        self.idle.remove(candidate)
                        retire.append(candidate)
                    elif engine is None and (allow_unisolated or not candidate.unisolated):
                        self.idle.remove(candidate)
                        engine = candidate
                if engine is not None:
                    break
                in_use = len(self.idle) + len(self.busy) + self.starting
                if in_use >= self.capacity() and self.idle:
                    retire.append(self.idle.pop(0))  # unusable for this call: make room
                if len(self.idle) + len(self.busy) + self.starting < self.capacity():
                    self.starting += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineTimeoutError(
                        f"all {self.capacity()} LibreOffice engines stayed busy for {timeout:g} s",
                        hint="raise --timeout, or convert fewer Office documents at once",
                    )
                self.changed.wait(left)
            if engine is not None:
                self.busy.add(engine)
        for old in retire:
            old.stop()
        if engine is None:
            try:
                engine = Engine(memory=memory, allow_unisolated=allow_unisolated, started=meanwhile)
            finally:
                with self.lock:
                    self.starting -= 1
                    if engine is not None:
                        self.busy.add(engine)
                    self.changed.notify_all()
        elif meanwhile is not None:
            meanwhile()
        try:
            yield engine
        finally:
            with self.lock:
                self.busy.discard(engine)
                engine.last_used = time.monotonic()
                keep = engine.alive() and engine.uses < RECYCLE_AFTER and not engine.retired
                if keep:
                    self.idle.append(engine)
                self.changed.notify_all()
            if not keep:
                engine.stop()

    def convert(
        self,
        source: Path,
        out: Path,
        *,
        timeout: float,
        pages: str | None = None,
        password: str | None = None,
        asked: bool | None = None,
        import_filter: str | None = None,
        filter_options: str | None = None,
        memory: int = 0,
        allow_unisolated: bool = False,
        no_text: bool = False,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Convert ``source`` to the PDF ``out`` with a warm LibreOffice.

        ``source`` is copied into a job directory of the engine (the only host files the sandboxed
        LibreOffice sees are its own); the PDF is written there and moved to ``out``.

        Args:
            source: Absolute path of the document.
            out: Absolute path of the PDF to write.
            timeout: Seconds the call may take, waiting for a free engine included (the instance
                is killed after it).
            pages: A page range such as ``"1-3"`` to export only those pages, or None for all.
            password: Password for an encrypted document.
            asked: Whether the user gave ``password`` (default: whether there is one); a wrong
                password the user did not give is reported as a missing one.
            import_filter: LibreOffice import filter to force (else LibreOffice detects the type).
            filter_options: Options of that filter (CSV separators and encoding).
            memory: Address-space cap of a newly started engine (at least :data:`ENGINE_MEMORY`).
            allow_unisolated: Run LibreOffice unisolated where nothing isolates.
            no_text: Refuse the document when LibreOffice's own type detection takes it for plain
                text (it was sniffed as an Office type, most likely by its name only).
            meanwhile: Work to overlap with LibreOffice (see :meth:`borrow`); it must not raise.

        Raises:
            EncryptedError: The document asks for a password (none given, or a wrong one).
            InputError: LibreOffice cannot load the document.
            EngineTimeoutError: The conversion ran past ``timeout``, or no engine became free.
            EngineUnavailableError: LibreOffice cannot be isolated here.
            EngineError: LibreOffice crashed or failed to export.
        """
        started = time.monotonic()
        with self.borrow(
            timeout,
            memory=max(memory, ENGINE_MEMORY),
            allow_unisolated=allow_unisolated,
            meanwhile=meanwhile,
        ) as engine:
            job = engine.jobs / uuid.uuid4().hex
            job.mkdir()
            try:
                staged = job / source.name
                shutil.copyfile(source, staged)
                req = {
                    "op": "convert",
                    "src": str(staged),
                    "out": str(job / "out.pdf"),
                    "pages": pages,
                    "password": password,
                    "filter": import_filter,
                    "filter_options": filter_options,
                    "no_text": no_text,
                }
                engine.uses += 1
                left = max(timeout - (time.monotonic() - started), 1.0)
                try:
                    reply = engine.request(req, left)
                except BaseException:
                    # Interrupted (Ctrl-C) or failed mid-request: a late reply would desynchronise
                    # the protocol, and the document may still be busy in LibreOffice.
                    engine.stop(graceful=False)
                    raise
                if reply.get("error") == "crashed":
                    engine.stop()
                elif reply.get("ok"):
                    shutil.move(job / "out.pdf", out)
            finally:
                shutil.rmtree(job, ignore_errors=True)
        if reply.get("ok"):
            return
        error, message = reply.get("error"), str(reply.get("message", ""))
        if error == "encrypted":
            given = bool(password) if asked is None else asked
            raise EncryptedError(
                "document is encrypted and the password is wrong"
                if given
                else "document is encrypted and needs a password",
                hint=None if given else "pass the password with --password",
            )
        if error == "unloadable":
            raise InputError(message or "LibreOffice cannot load it")
        raise EngineError(message or "LibreOffice failed")

    def shutdown(self) -> None:
        """Stop every engine of this process and remove their work directories.

        Run by ``previewer.shutdown()`` and at interpreter exit. Engines busy with a
        conversion are stopped too (that conversion fails with an
        :class:`~previewer.errors.EngineError`). Engines start again on the next Office
        document.
        """
        with self.lock:
            engines = list(self.idle) + list(self.busy)
            self.idle.clear()
            for engine in self.busy:
                engine.retired = True
            self.changed.notify_all()
        for engine in engines:
            if engine.pid == os.getpid():
                engine.stop(graceful=engine not in self.busy)


ENGINES = EnginePool()
"""The engine set of this process (see the module's docstring)."""
