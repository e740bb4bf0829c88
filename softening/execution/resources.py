"""How many jobs a machine or an allocation can run at once, and with how many threads each.

The local executor (:func:`softening.execution.local.run_flow`) sizes its worker processes here:
workers x threads fit the cores of the allocation and the memory (the counting itself,
:func:`~softening.processes.allocated_cores` and :func:`~softening.processes.default_workers`, is
in :mod:`softening.processes`, which the models' frame workers use too), and the thread counts
reach the workers through the environment they inherit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from softening.errors import InputError
from softening.processes import allocated_cores, default_workers

logger = logging.getLogger(__name__)


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
