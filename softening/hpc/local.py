"""Run a jobflow flow on this machine with several jobs at once.

jobflow's ``run_locally`` runs one job after another, and FireWorks' file-backed LaunchPad allows one
process at a time; on a workstation or inside one SLURM allocation the reference statics of different
frames and materials are independent and can run side by side. :func:`run_flow` is a small executor
for exactly that, not a general scheduler:

- jobs run in worker processes (``spawn``: no inherited torch or GPAW state) once every job they
  depend on has finished; a job whose parent failed runs only when it tolerates missing inputs
  (``OnMissing.NONE``, as the comparison job does), as with ``run_locally``;
- each worker opens the result store itself from its spec and ``Job.run`` writes the output there,
  so nothing large travels between processes and a finished job's result survives a crash of the
  others (the embedded store allows several writers on one machine);
- ``Response(replace=..., detour=..., addition=...)`` (the VASP maker replaces itself with
  atomate2's static job) is followed: the new jobs are scheduled, and the jobs that depend on the
  replaced one wait for them;
- workers x threads fit the cores of the allocation (CPU affinity, ``SLURM_CPUS_PER_TASK``) and the
  memory: every worker gets ``threads`` BLAS/OpenMP/torch threads and builds uMLIP graphs itself;
- a worker that dies (killed, out of memory) takes only the jobs in flight with it: they run
  again one at a time on a fresh worker, and a job whose worker dies twice while it runs alone is
  reported as failed; everything already finished stays in the store;
- workers end when the process that started them is killed
  (:func:`softening.processes.exit_with_parent`).

With one worker the jobs run in this process, in the same order (no pool, no serialisation).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from random import randint
from typing import Any

from softening.errors import InputError, SofteningError, one_line
from softening.processes import allocated_cores, default_workers

logger = logging.getLogger(__name__)

Key = tuple[str, int]


@dataclass
class FlowRun:
    """What :func:`run_flow` did.

    Attributes
    ----------
    completed
        uuids of the jobs whose output is in the store.
    failed
        ``"job name: message"`` of every job that failed (or was skipped because a job it needs
        failed), in the order they were found.
    not_run
        Names of jobs never started (a stopped flow, or inputs that never appeared).
    workers
        Worker processes used (1: in this process).
    wall_time
        Seconds from start to end.
    """

    completed: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    workers: int = 1
    wall_time: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every job finished."""
        return not self.failed and not self.not_run


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
def _thread_environment(threads: int, workers: int) -> Iterator[None]:
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


# ---- the work done in a worker ---------------------------------------------------------------------

_STORES: dict[str, Any] = {}


def _worker_store(store_spec: str):
    """The worker's store, opened once per process."""
    from softening.settings import get_settings

    if store_spec not in _STORES:
        from softening.stores import get_job_store

        get_settings.cache_clear()  # the parent's thread settings are in the environment
        store = get_job_store(store_spec)
        store.connect()
        _STORES[store_spec] = store
    return _STORES[store_spec]


def _execute(job: Any, store: Any, job_dir: str | None) -> dict[str, Any]:
    """Run one job against ``store``; report success or the error and any new jobs, as plain data."""
    t0 = time.perf_counter()
    if isinstance(job, dict):
        from jobflow import Job

        job = Job.from_dict(job)
    if isinstance(store, str):
        store = _worker_store(store)
    try:
        if job_dir is not None:
            with contextlib.chdir(job_dir):
                response = job.run(store=store)
        else:
            response = job.run(store=store)
    except Exception as exc:
        from jobflow import CURRENT_JOB

        CURRENT_JOB.reset()
        return {
            "ok": False,
            "error": _job_error(exc),
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - t0,
        }
    new = {}
    for kind in ("replace", "detour", "addition"):
        flow = getattr(response, kind)
        if flow is not None:
            new[kind] = flow.as_dict()
    return {
        "ok": True,
        "new": new,
        "stop_children": bool(response.stop_children),
        "stop_jobflow": bool(response.stop_jobflow),
        "seconds": time.perf_counter() - t0,
    }


def _execute_in_worker(job_dict: dict, store_spec: str, job_dir: str | None) -> dict[str, Any]:
    return _execute(job_dict, store_spec, job_dir)


def _init_worker(threads: int, log_level: int, parent: int) -> None:
    import sys
    import warnings

    from softening.processes import exit_with_parent

    # A worker whose parent is killed (kill -9, out of memory) ends too, instead of idling on.
    exit_with_parent(parent)
    warnings.filterwarnings("ignore")
    # Standard output belongs to the parent (`--json` prints one object there): whatever a job or
    # a library prints in a worker goes to standard error.
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The jobs' own progress lines (MD steps, reference timings) go to this worker's stderr.
    pkg = logging.getLogger("softening")
    pkg.setLevel(log_level)
    if not pkg.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s [worker %(process)d] %(message)s", "%H:%M:%S")
        )
        pkg.addHandler(handler)
    pkg.propagate = False
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _job_error(exc: BaseException) -> str:
    """A failed job's error, one line, credentials removed: the first line of the package's own
    errors (written for users), the type and last line of any other (a library's gist)."""
    from softening.settings import redact

    if isinstance(exc, SofteningError):
        return redact(one_line(exc, "first"))
    return redact(one_line(exc, "last", typed=True))


# ---- the scheduler ---------------------------------------------------------------------------------


class _Scheduler:
    """Dependency bookkeeping of a flow whose jobs may add new jobs as they run."""

    def __init__(self, flow: Any) -> None:
        self.jobs: dict[Key, Any] = {}
        self.parents: dict[Key, set[str]] = {}
        self.order: list[Key] = []
        self.complete: set[str] = set()
        self.failed: set[str] = set()
        self.stopped: set[str] = set()
        # A job that added jobs (replace, detour, addition) is complete only when they are.
        self.waiting: dict[Key, set[Key]] = {}
        self.owner: dict[Key, Key] = {}
        self.add(flow)

    def add(self, flow: Any, owner: Key | None = None) -> set[Key]:
        keys = set()
        for job, parents in flow.iterflow():
            key = (job.uuid, job.index)
            self.jobs[key] = job
            self.parents[key] = set(parents)
            self.order.append(key)
            keys.add(key)
            if owner is not None:
                self.owner[key] = owner
        if owner is not None:
            self.waiting.setdefault(owner, set()).update(keys)
        return keys

    def pending(self) -> list[Key]:
        return [k for k in self.order if k in self.jobs]

    def ready(self) -> list[Key]:
        settled = self.complete | self.failed | self.stopped
        return [k for k in self.pending() if self.parents[k] <= settled]

    def take(self, key: Key) -> Any:
        self.order.remove(key)
        return self.jobs.pop(key)

    def done(self, key: Key) -> None:
        """``key`` finished and everything it added has finished."""
        if self.waiting.get(key):
            return
        self.waiting.pop(key, None)
        owner = self.owner.pop(key, None)
        if owner is None:
            self.complete.add(key[0])
            return
        if key[0] != owner[0]:
            self.complete.add(key[0])
        self.waiting[owner].discard(key)
        if not self.waiting[owner]:
            self.done(owner)

    def fail(self, key: Key) -> None:
        self.failed.add(key[0])
        owner = self.owner.pop(key, None)
        if owner is not None:
            self.waiting.pop(owner, None)
            self.fail(owner)


def run_flow(
    flow: Any,
    store: Any,
    workers: int | None = None,
    threads: int | None = None,
    create_folders: bool = False,
    root_dir: str | Path | None = None,
    on_job_done: Callable[[str, bool, float], None] | None = None,
) -> FlowRun:
    """Run ``flow`` with up to ``workers`` jobs at once, outputs into ``store``.

    Parameters
    ----------
    flow
        A jobflow Flow, Job or list of jobs.
    store
        The result store: a :class:`~softening.stores.factory.SofteningJobStore` (workers open it
        again from its spec) or any JobStore (then the jobs run in this process).
    workers
        Jobs run at once; ``None``: from the allocated cores, ``threads`` and the memory.
    threads
        Threads of each job (BLAS/OpenMP, torch); default: the ``torch_threads`` setting.
    create_folders, root_dir
        As ``run_locally``: each job runs in its own new folder under ``root_dir`` (VASP jobs
        need one).
    on_job_done
        Called with ``(job name, succeeded, seconds)`` after each job (progress display).

    Returns
    -------
    FlowRun
        Which jobs finished and which failed (with a one-line reason each).
    """
    from jobflow.core.flow import get_flow
    from jobflow.core.reference import OnMissing

    t_start = time.perf_counter()
    flow = get_flow(flow)
    workers, threads = resolve_workers(workers, threads)
    spec = getattr(store, "spec", None)
    n_jobs = sum(1 for _ in flow.iterflow())
    if spec is None:
        workers = 1  # a store only this process can see (e.g. in memory)
    workers = min(workers, max(1, n_jobs))
    root = Path.cwd() if root_dir is None else Path(root_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    store.connect()
    if workers > 1 and not _shareable(store):
        workers = 1  # e.g. an in-memory (mongomock) server: other processes cannot see it

    sched = _Scheduler(flow)
    result = FlowRun(workers=workers)
    retried: set[Key] = set()  # lost with a worker: from then on they run alone
    deaths: dict[Key, int] = {}  # worker deaths charged to each job (it was running alone)
    stop = False
    running: dict[Future, tuple[Key, Any, str | None]] = {}
    pool: ProcessPoolExecutor | None = None
    logger.debug("running %d jobs with %d worker(s)", n_jobs, workers)

    def job_dir() -> str | None:
        if not create_folders:
            return None
        stamp = datetime.now(tz=UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
        path = root / f"job_{stamp}-{randint(10000, 99999)}"
        path.mkdir()
        return str(path)

    def finish(key: Key, job: Any, out: dict[str, Any]) -> None:
        nonlocal stop
        name = job.name
        if on_job_done is not None:
            on_job_done(name, out["ok"], out.get("seconds", 0.0))
        if not out["ok"]:
            logger.debug("%s failed:\n%s", name, out.get("traceback", ""))
            result.failed.append(f"{name}: {out['error']}")
            sched.fail(key)
            return
        if out.get("stop_children"):
            sched.stopped.add(key[0])
        if out.get("stop_jobflow"):
            stop = True
        added = False
        for kind in ("replace", "detour", "addition"):
            if kind in out.get("new", {}):
                from jobflow import Flow

                new = out["new"][kind]
                sched.add(Flow.from_dict(new) if isinstance(new, dict) else new, owner=key)
                added = True
        if not added:
            sched.done(key)

    def start(key: Key) -> None:
        nonlocal pool
        job = sched.take(key)
        parents = sched.parents[key]
        if parents & sched.stopped:
            sched.stopped.add(key[0])
            return
        if parents & sched.failed and job.config.on_missing_references == OnMissing.ERROR:
            result.failed.append(f"{job.name}: not run, a job it needs failed")
            sched.fail(key)
            return
        folder = job_dir()
        if workers == 1:
            finish(key, job, _execute(job, store, folder))
            return
        if pool is None:
            pool = ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(
                    threads,
                    logging.getLogger("softening").getEffectiveLevel(),
                    os.getpid(),
                ),
            )
        fut = pool.submit(_execute_in_worker, job.as_dict(), spec, folder)
        running[fut] = (key, job, folder)

    with _thread_environment(threads, workers):
        try:
            while True:
                if not stop:
                    for key in sched.ready():
                        # A job retried after its worker died runs alone: if a worker dies
                        # again, it is that job's.
                        suspect = any(k in retried for k, _, _ in running.values())
                        if len(running) >= workers or suspect or (key in retried and running):
                            break
                        start(key)
                if not running:
                    if stop or not sched.ready():
                        break
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                broken = []
                for fut in finished:
                    key, job, folder = running.pop(fut)
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        broken.append((key, job))
                        continue
                    except Exception as exc:  # the job could not be sent or its result read
                        out = {"ok": False, "error": _job_error(exc)}
                    finish(key, job, out)
                if broken:
                    # A worker died, and every job still on its pool is lost with it. A job lost
                    # alone lost its own worker: the death is charged to it. Jobs lost together
                    # cannot tell whose worker died (one may not even have started): none is
                    # charged, and each runs again alone. A job charged twice has failed.
                    settled, _ = wait(list(running), timeout=30)
                    lost = list(broken)
                    for fut in list(running):
                        key, job, _ = running.pop(fut)
                        gone = fut not in settled or fut.cancelled()
                        exc = BrokenProcessPool() if gone else fut.exception()
                        if isinstance(exc, BrokenProcessPool):
                            lost.append((key, job))
                        elif exc is not None:
                            finish(key, job, {"ok": False, "error": _job_error(exc)})
                        else:  # it finished before the pool broke
                            finish(key, job, fut.result())
                    if pool is not None:
                        pool.shutdown(wait=False, cancel_futures=True)
                    pool = None
                    for key, job in lost:
                        if len(lost) == 1:
                            deaths[key] = deaths.get(key, 0) + 1
                        if deaths.get(key, 0) >= 2:
                            finish(
                                key,
                                job,
                                {"ok": False, "error": "its worker process died twice "
                                 "(killed, or out of memory)"},
                            )  # fmt: skip
                        else:
                            logger.warning(
                                "%s: its worker process died; running it again", job.name
                            )
                            retried.add(key)
                            sched.jobs[key] = job
                            sched.order.append(key)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    result.not_run = [sched.jobs[k].name for k in sched.pending()]
    result.completed = set(sched.complete)
    result.wall_time = time.perf_counter() - t_start
    return result


def _shareable(store: Any) -> bool:
    """Whether other processes opening the store from its spec see the same data."""
    from maggma.stores import MemoryStore

    stores = [store.docs_store, *store.additional_stores.values()]
    for s in stores:
        inner = getattr(s, "store", s)  # a ChunkedStore wraps a Mongo-like store
        if isinstance(inner, MemoryStore) and type(inner).__name__ != "MontyStore":
            return False
        coll = getattr(inner, "_coll", None)
        if coll is None:
            coll = getattr(inner, "_collection", None)
        if coll is not None and "mongomock" in type(coll).__module__:
            return False
    return True


def flow_outputs(flow: Any, store: Any) -> Any:
    """The outputs of a finished flow's output references, as their pydantic documents.

    The flow's output keeps its shape: a list stays a list, a dict of lists (a
    :class:`~softening.schemas.StudyResult`-shaped output) stays a dict. A reference whose job
    failed is left out of its list. References are resolved by jobflow
    (:func:`jobflow.core.reference.find_and_resolve_references`): a replaced job's output is its
    replacement's, even when the replacing flow hands its output over by reference.
    """
    from jobflow.core.reference import OnMissing, find_and_resolve_references

    from softening import schemas

    def load(ref: Any) -> Any:
        # jobflow's resolution: the output of the job's last run (a replaced job's replacement),
        # additional stores loaded, ``None`` for a job without output (one that failed). Not
        # deserialised by jobflow: documents are validated as this package's schemas below.
        data = find_and_resolve_references(ref, store, on_missing=OnMissing.NONE, deserialize=False)
        if data is None:
            return None
        cls = getattr(schemas, str(data.get("@class")), None) if isinstance(data, dict) else None
        if cls is None:
            return data
        return cls.model_validate({k: v for k, v in data.items() if not k.startswith("@")})

    def resolve(output: Any) -> Any:
        if isinstance(output, dict):
            return {k: resolve(v) for k, v in output.items()}
        if isinstance(output, list | tuple):
            loaded = (resolve(r) for r in output if r is not None)
            return [x for x in loaded if x is not None]
        return None if output is None else load(output)

    out = resolve(flow.output)
    return out if isinstance(out, dict | list) else [x for x in [out] if x is not None]
