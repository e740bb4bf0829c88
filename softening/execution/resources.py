"""How many jobs a machine or an allocation can run at once, and with how many threads each.

The local executor (:func:`softening.execution.local.run_flow`) sizes its worker processes here:
workers x threads fit the cores of the allocation (CPU affinity, ``SLURM_CPUS_PER_TASK``) and the
memory, and the thread counts reach the workers through the environment they inherit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from softening.errors import InputError

logger = logging.getLogger(__name__)

#: Memory one worker may need (torch + a uMLIP + GPAW on a few dozen atoms), GB. Used only to cap
#: the default number of workers on small machines.
GB_PER_WORKER = 3.0


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


def resolve_workers(workers: int | None, threads: int | None = None) -> tuple[int, int]:
    """``(workers, threads)`` from the options (``None``: chosen from cores and memory).

    Raises
    ------
    InputError
        On a non-positive count, or workers x threads above the allocated cores.
    """
    from softening.settings import get_settings

    threads = threads if threads is not None else get_settings().torch_threads
    if threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    if workers is None:
        return default_workers(threads), threads
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    cores = allocated_cores()
    if workers * threads > cores:
        logger.warning(
            "%d workers x %d threads is more than the %d cores allocated: jobs will compete",
            workers,
            threads,
            cores,
        )
    return workers, threads


@contextmanager
def thread_environment(threads: int, workers: int) -> Iterator[None]:
    """Thread settings inherited by the worker processes (set before they import numpy)."""
    values = {
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "SOFTENING_TORCH_THREADS": str(threads),
    }
    if workers > 1:
        # The cores are busy with other jobs: graphs are built in the job's own process.
        values["SOFTENING_GRAPH_WORKERS"] = "0"
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
