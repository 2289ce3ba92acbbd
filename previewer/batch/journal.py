"""The batch journal: converted inputs recorded in the output directory, so reruns resume.

``<out_dir>/.previewer-journal.jsonl`` holds one JSON line per converted input: its absolute
path, size, modification time, the options that decide its outputs, and the outputs written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from previewer.batch.jobs import Job
from previewer.options import Options
from previewer.results import UP_TO_DATE, FileResult, Preview, Status

__all__ = ["JOURNAL_NAME", "Journal"]

log = logging.getLogger(__name__)

JOURNAL_NAME = ".previewer-journal.jsonl"
"""File in the output directory recording finished inputs, for resuming."""


_OUTPUT_OPTIONS = ("converter", "pages", "sizes", "upscale")
"""The options that decide an input's outputs (beyond its content)."""


def _fingerprint(options: Options) -> str:
    """What decides the outputs of an input, beyond its content (so resuming is safe).

    The format and quality count only for JPEG and WebP, so PNG runs keep the fingerprint
    journals written before previewer had other formats.
    """
    data = options.to_dict()
    keys = _OUTPUT_OPTIONS if options.format == "png" else (*_OUTPUT_OPTIONS, "format", "quality")
    return json.dumps({key: data[key] for key in keys}, sort_keys=True)


class Journal:
    """Records finished inputs in ``<out_dir>/.previewer-journal.jsonl`` to make reruns resume.

    An input is up to date when the journal holds an entry with the same path, size, mtime and
    options, and every output it lists exists and is not older than the input.
    """

    def __init__(self, out_dir: Path, options: Options) -> None:
        self.path = out_dir / JOURNAL_NAME
        self.absolute = out_dir.is_absolute()
        self.fingerprint = _fingerprint(options)
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        self._fd: int | None = None
        self.disabled = False
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._disable(exc)
            return
        with open(fd, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(entry, dict) and "input" in entry:
                    self.entries[(entry["input"], str(entry.get("options")))] = entry

    def _open(self, flags: int) -> int:
        """Open the journal itself: never through a symbolic link, never a FIFO or device."""
        import stat

        fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a regular file")
        return fd

    def _disable(self, exc: OSError) -> None:
        import errno

        self.disabled = True
        reason = (
            "it is a symbolic link, which is not followed"
            if exc.errno == errno.ELOOP
            else (exc.strerror or str(exc))
        )
        log.warning("not using the journal %s (no resuming, no recording): %s", self.path, reason)

    @staticmethod
    def _stat(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def up_to_date(self, job: Job) -> FileResult | None:
        """Return a "skipped" result listing the existing outputs, or None if work is needed."""
        if self.disabled or not isinstance(job.source, str):
            return None
        key = os.path.abspath(job.source)
        entry = self.entries.get((key, self.fingerprint))
        stat = self._stat(job.source)
        if entry is None or stat is None:
            return None
        if [entry.get("size"), entry.get("mtime_ns")] != list(stat):
            return None
        outputs = entry.get("outputs") or []
        for out in outputs:
            try:
                if os.stat(out["path"]).st_mtime_ns < stat[1]:
                    return None
            except (OSError, KeyError, TypeError):
                return None

        def shown(path: str) -> Path:
            # Report paths the way this run names them (relative when OUTDIR is relative).
            return Path(path) if self.absolute else Path(os.path.relpath(path))

        mime, converter = entry.get("mime"), entry.get("converter")
        try:
            previews = [
                Preview.from_dict(
                    {**o, "path": shown(o["path"])},
                    source=job.display,
                    converter=str(converter),
                    mime=str(mime),
                )
                for o in outputs
            ]
        except (KeyError, TypeError, ValueError):
            return None
        return FileResult(
            input=job.display,
            status=Status.SKIPPED,
            mime=mime,
            converter=converter,
            outputs=previews,
            reason=UP_TO_DATE,
        )

    def record(self, job: Job, result: FileResult, stat: tuple[int, int] | None) -> None:
        """Append a converted input to the journal (one line, one write)."""
        if self.disabled or result.status != Status.CONVERTED or not isinstance(job.source, str):
            return
        if stat is None:
            return
        entry = {
            "input": os.path.abspath(job.source),
            "size": stat[0],
            "mtime_ns": stat[1],
            "options": self.fingerprint,
            "mime": result.mime,
            "converter": result.converter,
            "outputs": [
                {**p.to_dict(), "path": os.path.abspath(str(p.path))} for p in result.outputs
            ],
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = self._open(os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.write(self._fd, line.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            self._disable(exc)

    def close(self) -> None:
        """Close the journal file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
