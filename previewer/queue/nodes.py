"""Worker layout: the Celery worker nodes one ``previewer worker`` runs, and their supervisor.

Celery's prefork pool cannot split its processes between queues: every process takes from
every queue the node consumes. So that giant files never slow the small ones, the default
layout of a worker with two or more processes is three nodes forked from one warm parent:

- a **light** node (as many processes as the worker has, ``previewer.light`` only) at normal
  CPU priority;
- an **office** node (half as many, at least one; ``previewer.office``) at a slightly lower
  priority (``nice`` :data:`OFFICE_NICE`): LibreOffice documents progress beside a burst of
  light files without taking a core from it;
- a **heavy** node (as many processes as the worker has; ``previewer.heavy``) at the lowest
  priority (``nice`` :data:`HEAVY_NICE` and, on Linux, the ``SCHED_IDLE`` class, under which a
  waking light process takes the core at once): a giant render takes only the CPU the light
  files leave, so light files keep every core while giants run, and giants get every core
  when nothing else is queued.

The parent supervises them: a stop signal goes to all, and when one exits the others are
stopped too. It also logs each class's queue depth and waits every ``stats_interval`` seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from celery import Celery

from previewer.queue.cost import CLASSES, HEAVY, LIGHT, OFFICE
from previewer.queue.routing import queue_name, queue_stats

__all__ = ["HEAVY_NICE", "OFFICE_NICE", "Node", "default_layout", "node_name", "run_nodes"]

log = logging.getLogger(__name__)

HEAVY_NICE = 19
"""Niceness added to the heavy node (its giant renders take only what light files leave)."""
OFFICE_NICE = 5
"""Niceness added to the office node (LibreOffice yields to light files, yet progresses)."""
MIXED_NICE = HEAVY_NICE
"""Former name of :data:`HEAVY_NICE`."""
STATS_INTERVAL = 30.0
"""Seconds between two log lines of per-class queue depth and waits."""


@dataclass(frozen=True)
class Node:
    """One Celery worker node: its name suffix, processes and queues.

    Attributes:
        role: ``light``, ``office``, ``heavy`` or ``all`` (a single node), added to the
            node's name.
        concurrency: Its pool processes (None: Celery's default, one per CPU).
        queues: The queues it consumes, in order.
        nice: Niceness added to its processes.
    """

    role: str
    concurrency: int | None
    queues: tuple[str, ...]
    nice: int = 0
    idle: bool = False
    """Run under the kernel's idle scheduling class as well (Linux ``SCHED_IDLE``): a light
    file's process waking up then takes the core at once, not at the end of a time slice."""


def default_layout(
    concurrency: int,
    light_slots: int | None = None,
    heavy_nice: int = HEAVY_NICE,
    *,
    heavy_slots: int | None = None,
    office_slots: int | None = None,
    office_nice: int = OFFICE_NICE,
) -> list[Node]:
    """The nodes of a worker given no ``-Q``: light, office and heavy nodes from 2 processes.

    Args:
        concurrency: The worker's processes (>= 1): with one, a single node takes every class.
        light_slots: Processes of the light node (default ``concurrency``; 0: a single node
            for every class).
        heavy_nice: Niceness added to the heavy node.
        heavy_slots: Processes of the heavy node (default ``concurrency``).
        office_slots: Processes of the office node (default half ``concurrency``, at least 1).
        office_nice: Niceness added to the office node.

    Returns:
        One node consuming every class; else the light, the office and the heavy node.
    """
    every = tuple(queue_name(c) for c in (HEAVY, OFFICE, LIGHT))
    if concurrency < 2 or light_slots == 0:
        return [Node("all", concurrency, every)]
    light = concurrency if light_slots is None else light_slots
    heavy = concurrency if heavy_slots is None else max(1, heavy_slots)
    office = max(1, concurrency // 2) if office_slots is None else max(1, office_slots)
    return [
        Node("light", light, (queue_name(LIGHT),)),
        Node("office", office, (queue_name(OFFICE),), office_nice),
        Node("heavy", heavy, (queue_name(HEAVY),), heavy_nice, idle=heavy_nice >= HEAVY_NICE),
    ]


def node_name(hostname: str | None, role: str) -> str | None:
    """The node's Celery name: ``role`` added to the name part of ``hostname``."""
    if role == "all":
        return hostname
    base = hostname or "celery@%h"
    name, at, host = base.partition("@")
    return f"{name}-{role}{at}{host}"


def run_nodes(
    celery_app: Celery,
    nodes: Sequence[Node],
    argv: Sequence[str],
    *,
    hostname: str | None = None,
    stats_interval: float = STATS_INTERVAL,
) -> int:
    """Run ``nodes`` (forked from this warm process) until they exit; return the exit status.

    Args:
        celery_app: The configured app.
        nodes: The nodes to run.
        argv: Common ``celery worker`` arguments (log level, ...).
        hostname: ``-n``; each node gets its role added to it.
        stats_interval: Seconds between per-class queue statistics lines (0: none).

    Returns:
        The first node's non-zero exit status, else 0.
    """
    from previewer.confinement import die_with_parent

    parent = os.getpid()
    children: dict[int, Node] = {}
    for node in nodes:
        node_argv = [*argv, f"--queues={','.join(node.queues)}"]
        if node.concurrency is not None:
            node_argv.append(f"--concurrency={node.concurrency}")
        name = node_name(hostname, node.role)
        if name:
            node_argv.append(f"--hostname={name}")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                die_with_parent(parent)
                if node.nice:
                    os.nice(node.nice)
                if node.idle:
                    _idle_class()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                celery_app.worker_main(node_argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        children[pid] = node
        log.info("node %s: %s", node.role, " ".join(node_argv))
    return _supervise(celery_app, children, stats_interval)


def _idle_class() -> None:
    """Move this process (and the processes it forks) to the idle scheduling class."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or refused: niceness only
        log.debug("cannot use the idle scheduling class: %s", exc)


def _supervise(celery_app: Celery, children: dict[int, Any], stats_interval: float) -> int:
    """Forward stop signals, log statistics, stop every node once one exits."""
    stop = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if stats_interval > 0:
        threading.Thread(
            target=_log_stats, args=(celery_app, stats_interval, stop), daemon=True
        ).start()
    status = 0
    try:
        while children:
            pid, raw = os.wait()
            if pid not in children:
                continue
            node = children.pop(pid)
            code = os.waitstatus_to_exitcode(raw)
            if code:
                log.warning("worker node %s exited with status %s", node.role, code)
                status = status or (code if code > 0 else 128 - code)
            forward(signal.SIGTERM, None)  # the layout is incomplete without it
    finally:
        stop.set()
    return status


def _log_stats(celery_app: Celery, interval: float, stop: threading.Event) -> None:
    """Log every class's depth, oldest wait and recent waits until ``stop``."""
    while not stop.wait(interval):
        try:
            stats = queue_stats(celery_app.backend.client)
        except Exception as exc:  # noqa: BLE001 - the broker may be away for a while
            log.warning("cannot read the queues' statistics: %s", exc)
            continue
        log.info(
            "queues: %s",
            "; ".join(
                f"{cls} depth {s.depth}, oldest {s.oldest_wait:.1f} s, wait p50 {s.p50:.2f} s "
                f"p95 {s.p95:.2f} s max {s.max:.2f} s (last {s.recent})"
                for cls, s in stats.items()
                if cls in CLASSES
            ),
        )
