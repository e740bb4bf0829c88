"""Worker processes: how many fit the allocation, and ending them with their parent.

:func:`default_workers` is the one rule for how many worker processes fit this allocation's cores and
memory (the jobs of :func:`softening.execution.local.run_flow`, the frame workers of
:func:`softening.models.evaluate.evaluate_in_workers`).

A worker process (a job of :func:`softening.execution.local.run_flow`, a graph builder of
:func:`softening.models.evaluate.iter_graphs`) is re-parented to init when its parent is killed
(``kill -9``, the out-of-memory killer, a lost SLURM step): nothing would ever send it more work,
yet it would keep its memory, its GPU and any job it was running. :func:`exit_with_parent`, called
from a pool's initializer, ends the worker when its parent ends.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["allocated_cores", "available_memory_gb", "default_workers", "exit_with_parent"]

#: Memory one worker may need (torch + a uMLIP + GPAW on a few dozen atoms), GB. Used only to cap
#: the default number of workers on small machines.
GB_PER_WORKER = 3.0

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1

#: Seconds between two looks of the watchdog thread at the parent.
POLL_SECONDS = 0.5


def allocated_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by ``SLURM_CPUS_PER_TASK``.

    The machine's total is the wrong number inside a SLURM allocation or a container: affinity is
    what the scheduler gave this process, and ``SLURM_CPUS_PER_TASK`` says the same where affinity
    is not enforced.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def available_memory_gb() -> float | None:
    """Memory available to new processes (``MemAvailable``), GB, or ``None`` where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return None


def default_workers(threads: int = 1, n_jobs: int | None = None) -> int:
    """Workers so that workers x threads fit the allocated cores and the memory.

    Parameters
    ----------
    threads
        Threads each job uses (BLAS/OpenMP for GPAW, torch's intra-op threads).
    n_jobs
        Most jobs that could ever run at once (no more workers than that).
    """
    n = max(1, allocated_cores() // max(1, threads))
    mem = available_memory_gb()
    if mem is not None:
        n = min(n, max(1, int(mem // GB_PER_WORKER)))
    if n_jobs is not None:
        n = min(n, max(1, n_jobs))
    return n


def exit_with_parent(parent: int, poll: float = POLL_SECONDS) -> None:
    """End this process when process ``parent`` (the one that started it) ends.

    On Linux the kernel sends ``SIGTERM`` the moment the parent dies (``prctl(PR_SET_PDEATHSIG)``).
    Everywhere, a daemon thread also checks every ``poll`` seconds that the parent is still this
    process's parent, and exits the process when not: this covers systems without ``prctl``, a
    ``SIGTERM`` that a library catches, and a parent that died before this call (the kernel's
    signal would then never come).

    Parameters
    ----------
    parent
        Process id of the parent, as the parent saw it (``os.getpid()`` there, passed in the
        pool's ``initargs``).
    poll
        Seconds between two checks of the watchdog thread.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl (an unusual libc)
            pass
    if os.getppid() != parent:
        os._exit(1)  # the parent is already gone
    threading.Thread(
        target=_watch, args=(parent, poll), name="softening-parent-watchdog", daemon=True
    ).start()


def _watch(parent: int, poll: float) -> None:
    while True:
        time.sleep(poll)
        if os.getppid() != parent:
            # No cleanup: the parent that would read this worker's results is gone.
            os._exit(1)
