"""Serving first: the Celery worker trains on what chat leaves of the CPU.

Training and the inference worker share the cores of one machine. Every thread of the Celery
worker goes to SCHED_IDLE (the kernel runs it only when no normal thread wants the core) or nice 19,
and torch gets its own thread budget. Threads inherit their creator's policy, so this runs when
the worker starts, before torch spins up its pools, and again at each task for threads born since.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import conf

log = logging.getLogger(__name__)

NICEST = 19


def thread_ids() -> list[int]:
    tasks = Path("/proc/self/task")
    return sorted(int(entry.name) for entry in tasks.iterdir()) if tasks.is_dir() else [0]


def _lower(tid: int, policy: str) -> None:
    if policy == "idle" and hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    # Also nice 19: under SCHED_IDLE it changes nothing, but it stays if a library resets the policy.
    os.setpriority(os.PRIO_PROCESS, tid, NICEST)


def training_priority_apply() -> str:
    """Lower every thread of this process and size torch's pools; returns the policy applied."""
    policy = conf.cpu_priority()
    if policy != "normal":
        for tid in thread_ids():
            try:
                _lower(tid, policy)
            except (OSError, AttributeError) as error:  # a thread that just ended, or no such call here
                log.debug("could not lower thread %s: %s", tid, error)
    threads_apply(conf.training_threads())
    return policy


def threads_apply(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only possible before torch's first parallel work; then it stays
        pass


def thread_policy(tid: int) -> tuple[int, int]:
    """(scheduling policy, nice) of a thread of this process: what tests and the bench check."""
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)
