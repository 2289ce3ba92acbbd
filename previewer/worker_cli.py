"""The ``previewer worker`` command: a Celery queue worker with previewer's settings."""

from __future__ import annotations

import click

__all__ = ["worker"]


@click.command("worker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: the number of CPUs). Without -Q, the light and the "
    "heavy node get this many each and the office node half: idle nodes cost memory only.",
)
@click.option(
    "-Q",
    "--queues",
    multiple=True,
    help="Queues to consume, repeatable or comma-separated: light, heavy, office (the class "
    "queues previewer.light, ...) or any queue name (default: every class, split as below).",
)
@click.option(
    "--light-slots",
    type=click.IntRange(min=0),
    default=None,
    help="Without -Q and with 2 or more processes: processes of the node that takes light "
    "files (default: --concurrency). 0: one node takes every class.",
)
@click.option(
    "--heavy-slots",
    type=click.IntRange(min=1),
    default=None,
    help="Processes of the node that takes heavy files (default: --concurrency).",
)
@click.option(
    "--office-slots",
    type=click.IntRange(min=1),
    default=None,
    help="Processes of the node that takes LibreOffice documents (default: half "
    "--concurrency, at least 1).",
)
@click.option(
    "--heavy-nice",
    "--mixed-nice",
    "heavy_nice",
    type=click.IntRange(min=0, max=19),
    default=19,
    show_default=True,
    help="Niceness added to the heavy node, so that light files keep the cores while giant "
    "files take what is left.",
)
@click.option(
    "--office-nice",
    type=click.IntRange(min=0, max=19),
    default=5,
    show_default=True,
    help="Niceness added to the office node.",
)
@click.option(
    "--stats-interval",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between log lines of each class's queue depth and waits (0: none).",
)
@click.option(
    "--broker",
    envvar="PREVIEWER_BROKER_URL",
    default=None,
    help="Redis URL of the broker and result backend  [default: redis://127.0.0.1:6379/0].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds one file may take: the soft time limit; the hard limit and the Redis "
    "visibility timeout follow just above it.",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Replace a worker process after this many tasks (a bundle of light files is one; "
    "a process is also replaced when it grows past --max-memory-per-child).",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    default=2 * 1024 * 1024,
    show_default=True,
    help="Replace a worker process after a file leaves it above this resident memory (KiB).",
)
@click.option("-n", "--hostname", default=None, help="Worker node name (default: celery@HOSTNAME).")
@click.option(
    "-l",
    "--loglevel",
    default="INFO",
    show_default=True,
    help='Celery log level (a task\'s "succeeded" line, with its result, appears at DEBUG only).',
)
def worker(
    concurrency: int | None,
    queues: tuple[str, ...],
    broker: str | None,
    timeout: float,
    max_tasks_per_child: int,
    max_memory_per_child: int,
    hostname: str | None,
    loglevel: str,
    light_slots: int | None,
    heavy_slots: int | None,
    office_slots: int | None,
    heavy_nice: int,
    office_nice: int,
    stats_interval: float,
) -> None:
    """Run a queue worker that converts files sent by `previewer convert --broker`.

    Start one per machine (inputs and the output directory on storage every machine sees
    under the same paths). Needs the queue extra: pip install 'previewer[queue]'.

    \b
    Examples:
      previewer worker --broker redis://queue-host:6379/0
      previewer worker --concurrency 4 --timeout 60
      previewer worker -Q heavy,office --concurrency 2
      previewer worker -Q previews,big

    \b
    Without -Q, 2 or more processes run three nodes: one for light files (every
    process, normal priority), one for LibreOffice documents (half of them, nice 5)
    and one for heavy files (every process, nice 19), so giant files only take the CPU
    small previews leave, and get all of it when nothing else waits.
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    try:
        from previewer import queue
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise click.UsageError(
            f"the queue worker needs Celery ({exc}); install it with pip install 'previewer[queue]'"
        ) from exc

    queue.configure(
        queue.app,
        broker=broker,
        timeout=timeout,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
    )
    if loglevel.upper() != "DEBUG":
        # One "succeeded" line per file with the whole result is noise on a busy queue (the
        # submitter reports every file); "received" lines stay, task crashes are ERRORs.
        import logging

        for name in ("celery.app.trace",):
            logging.getLogger(name).setLevel(logging.WARNING)
    queue.preload()
    import logging
    import os

    from previewer.queue.nodes import Node, default_layout, run_nodes
    from previewer.queue.routing import worker_queues

    handler = logging.StreamHandler()  # the supervisor's lines (layout, queue statistics)
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/supervisor] %(message)s"))
    supervisor_log = logging.getLogger("previewer.queue.nodes")
    supervisor_log.addHandler(handler)
    supervisor_log.setLevel(logging.INFO)
    supervisor_log.propagate = False
    argv = ["worker", f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    names = [q.strip() for item in queues for q in item.split(",") if q.strip()]
    processes = concurrency or os.cpu_count() or 1
    if names:
        nodes = [Node("all", concurrency, tuple(worker_queues(names)))]
    else:
        nodes = default_layout(
            processes,
            light_slots,
            heavy_nice,
            heavy_slots=heavy_slots,
            office_slots=office_slots,
            office_nice=office_nice,
        )
    raise SystemExit(
        run_nodes(queue.app, nodes, argv, hostname=hostname, stats_interval=stats_interval)
    )
