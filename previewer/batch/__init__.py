"""The batch engine: walk the inputs, plan, run each file in an executor, report to a sink.

A batch turns files and directory trees into jobs (:mod:`~previewer.batch.jobs`; directories
are walked recursively and mirrored under the output directory), settles the jobs whose previews
are up to date (:mod:`~previewer.batch.journal`) or would overwrite another's, and runs the rest
with a task (:mod:`~previewer.batch.tasks`: convert; the thumbnail cache has its own) in an
executor (:mod:`~previewer.batch.executors`: in this process one file at a time, a worker pool;
the queue's submitter is another). Every result goes through the report sink
(:mod:`~previewer.batch.report`). Workers give every file its limits: a wall-clock deadline, an
address-space cap, and isolation, so a hang, a crash or the out-of-memory killer fails only that
file. Stopping the batch (Ctrl-C, SIGTERM) stops the workers and their engines, and removes
partial outputs and temporary directories.
"""

from __future__ import annotations

from previewer.batch.engine import local_executor, plan, run, run_batch
from previewer.batch.executors import Executor, InlineExecutor, PoolExecutor
from previewer.batch.jobs import (
    Job,
    Stat,
    Work,
    collect,
    job_options,
    overwrite_error,
    skip_if_unsupported,
)
from previewer.batch.journal import JOURNAL_NAME, Journal
from previewer.batch.report import ReportSink
from previewer.batch.tasks import BatchTask, ConvertTask

__all__ = [
    "JOURNAL_NAME",
    "BatchTask",
    "ConvertTask",
    "Executor",
    "InlineExecutor",
    "Job",
    "Journal",
    "PoolExecutor",
    "ReportSink",
    "Stat",
    "Work",
    "collect",
    "job_options",
    "local_executor",
    "overwrite_error",
    "plan",
    "run",
    "run_batch",
    "skip_if_unsupported",
]
