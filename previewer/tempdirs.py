"""Private temporary directories that a later run can tell apart from a live one's.

A process killed by SIGKILL (or the out-of-memory killer) runs no cleanup, so the directories it
made under the temporary directory stay behind. Every top-level directory previewer makes there
holds a marker file, :data:`LOCK_NAME`, on which each process using the directory keeps a shared
``flock`` for as long as it uses it; the kernel drops the lock when the process dies, however it
dies. :func:`reap` removes the directories whose marker nobody holds any more: never one of a live
run (its lock is held), never one without the marker (another program's, or a ``--keep-temp``
directory, whose marker is removed when it is kept), never another user's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["LOCK_NAME", "Held", "adopt", "hold", "make", "reap", "reap_once"]

log = logging.getLogger(__name__)

LOCK_NAME = ".previewer-lock"
"""Marker file inside each of previewer's temporary directories; holds the creator's pid."""

PREFIXES = ("previewer-", "pymp-")
"""Top-level names :func:`reap` looks at: previewer's own, and multiprocessing's socket folder."""

_adopted: dict[str, Held] = {}
_reaped = False


class Held:
    """A temporary directory and the shared lock that marks it in use by this process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self, *, keep: bool = False) -> None:
        """Drop the lock; with ``keep``, also remove the marker so no run reaps the directory.

        Args:
            keep: The directory is being kept on purpose (``--keep-temp``).
        """
        if keep:
            with contextlib.suppress(OSError):
                os.unlink(self.path / LOCK_NAME)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _mark(path: Path) -> int:
    """Put a marker, already locked, into ``path`` (a directory of ours without one)."""
    # Locked under a temporary name and renamed into place, so a reaper never sees the
    # marker of a live directory unlocked, not even between its creation and the flock.
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = f"{LOCK_NAME}.{os.getpid()}.tmp"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.rename(tmp, LOCK_NAME, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        return fd
    finally:
        os.close(dfd)


def _lock(path: Path) -> int:
    """Take a shared lock on the marker already in ``path``."""
    fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make(prefix: str, parent: str | os.PathLike[str] | None = None) -> Held:
    """Create a private temporary directory (mode 0700) holding the marker, locked.

    Args:
        prefix: Start of the directory's name (``previewer-...``).
        parent: Where to create it (default: the temporary directory).

    Returns:
        The directory, held until :meth:`Held.release`.

    Raises:
        OSError: If it cannot be created.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        return Held(path, _mark(path))
    except BaseException:
        os.rmdir(path)
        raise


def hold(path: str | os.PathLike[str]) -> Held | None:
    """Take a shared lock on the marker of an existing directory of ours (a worker's view).

    Args:
        path: A directory made by :func:`make` in another process.

    Returns:
        The held directory, or None if it has no marker (left as it is).
    """
    try:
        return Held(Path(path), _lock(Path(path)))
    except OSError:
        return None


def adopt(path: str | os.PathLike[str]) -> None:
    """Mark a directory someone else made for this process (multiprocessing's) as ours.

    The lock is held for the rest of the process's life: multiprocessing removes the directory
    at a normal exit, and a later run reaps it after an abnormal one.

    Args:
        path: The directory.
    """
    key = os.fspath(path)
    if key in _adopted:
        return
    held = hold(key)  # already marked (by this process before a fork, say)
    if held is None:
        try:
            held = Held(Path(key), _mark(Path(key)))
        except OSError as exc:
            log.debug("cannot mark %s: %s", key, exc)
            return
    _adopted[key] = held


def reap_once() -> None:
    """Run :func:`reap` the first time it is called in this process; do nothing later."""
    global _reaped
    if _reaped:
        return
    _reaped = True
    reap()


def reap(where: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the temporary directories that dead previewer processes left in ``where``.

    A directory is removed only if it is a real directory (not a link) owned by this user,
    named like one of ours, holds the marker, and nobody holds a lock on that marker (an
    exclusive lock is taken without waiting, and held while the directory is removed).

    Args:
        where: The directory to clean (default: the temporary directory, and ``/tmp`` too
            when multiprocessing's socket folder is put there; see ``pool``).

    Returns:
        The names of the directories removed.
    """
    if where is None:
        places = [tempfile.gettempdir()]
        if len(places[0]) > 60 and places[0] != "/tmp":
            places.append("/tmp")
    else:
        places = [os.fspath(where)]
    removed: list[str] = []
    for place in places:
        removed.extend(_reap_in(place))
    return removed


def _reap_in(place: str) -> list[str]:
    import shutil

    try:
        top = os.open(place, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    removed = []
    uid = os.geteuid()
    try:
        for name in os.listdir(top):
            if not name.startswith(PREFIXES):
                continue
            try:
                dfd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top
                )
            except OSError:
                continue  # gone, a link, or not a directory
            try:
                st = os.fstat(dfd)
                if st.st_uid != uid or not stat.S_ISDIR(st.st_mode):
                    continue
                try:
                    lfd = os.open(LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                except OSError:
                    continue  # not marked: not ours, or kept on purpose
                try:
                    if os.fstat(lfd).st_uid != uid:
                        continue
                    try:
                        fcntl.flock(lfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError as exc:
                        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                            continue  # a live process holds it
                        raise
                    shutil.rmtree(name, ignore_errors=True, dir_fd=top)
                    removed.append(name)
                    log.info("removed %s, left by a previewer run that died", Path(place, name))
                finally:
                    os.close(lfd)
            except OSError as exc:
                log.debug("cannot reap %s: %s", Path(place, name), exc)
            finally:
                os.close(dfd)
    finally:
        os.close(top)
    return removed
