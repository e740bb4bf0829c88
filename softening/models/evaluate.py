"""Batched single-point evaluation of many frames with one loaded uMLIP.

The model is loaded once; each frame's graph is built once, in worker processes when there are
spare cores (so that graph building, which is CPU work, overlaps the model's evaluation); frames are
evaluated in batches whose size follows a memory budget, recalibrated from the measured peak on a
GPU; a batch that runs out of memory is split in two and retried, so no batch exhausts the card.
Each family's graph builder, batched forward and memory per atom come from its backend
(:mod:`softening.models.backends`); a family without batched parts is evaluated frame by frame.

On a CPU the model's forward pass, not graph building, is most of the time (measured with CHGNet
0.3.0, M3GNet and TensorNet on WBM frames: graphs 12, 7 and 2 % of one process's time), so graph
workers leave the other cores idle; there :class:`FrameWorkers` splits the frames themselves across
processes, each evaluating whole frames with its own copy of the models
(:func:`resolve_frame_workers` chooses how many).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from pymatgen.core import Structure

from softening.errors import InputError, ModelError
from softening.models.backends import Backend, LoadedModel, get_backend
from softening.processes import allocated_cores, default_workers
from softening.settings import get_settings

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One frame's uMLIP result: energy (eV), forces (n, 3) eV/Å, stress 3x3 eV/Å^3 (ASE sign)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None


# On a CPU, batches beyond ~100 atoms are slower per frame (cache misses in larger tensors; measured
# with benchmarks/bench_models.py: CHGNet 10 frames/s at <= 80 atoms, 4 frames/s at 320); on a GPU,
# the memory budget alone limits the batch.
CPU_MAX_BATCH_ATOMS = 96


def evaluate_structures(
    model: LoadedModel,
    structures: Sequence[Structure],
    memory_gb: float | None = None,
    progress: Callable[[int], None] | None = None,
    graph_workers: int | None = None,
) -> list[Prediction]:
    """Energies, forces and stresses of ``structures`` with ``model``, loaded once.

    Parameters
    ----------
    model
        From :func:`softening.models.load_model`.
    structures
        Frames to evaluate.
    memory_gb
        Memory budget per batch, GB (default: the ``batch_memory_gb`` setting; on a GPU without
        a setting, 70 % of the card's free memory).
    progress
        Called with the number of frames finished after each batch.
    graph_workers
        Worker processes that build graphs while the model evaluates (default: the
        ``graph_workers`` setting, or the spare cores; 0 builds them in this process).
    """
    from softening.datasets.checks import wrap_structure

    model.check_elements({el.symbol for s in structures for el in s.composition})
    # float32 models lose precision far from the origin: results must not depend on the image.
    structures = [wrap_structure(s) for s in structures]
    # The model's backend gives the parts (a corrected model's apply its correction factor).
    parts = model.backend.batch_parts(model)
    if parts is None:
        return _evaluate_ase(model, structures, progress)
    build, forward = parts
    workers = resolve_graph_workers(graph_workers, model.device, len(structures))
    graphs = iter_graphs(build, structures, workers)
    try:
        return run_batches(model, structures, graphs, forward, memory_gb, progress)
    finally:
        graphs.close()


# Seconds spent waiting for graphs (all of graph building when it runs in this process) and in the
# model's forward + backward pass, accumulated over calls (the benchmark reads them to report how
# much of the time is overhead).
TIMINGS = {"graphs": 0.0, "model": 0.0}

# Below this many frames per worker, starting workers costs more than building graphs here.
MIN_FRAMES_PER_WORKER = 4


def resolve_graph_workers(requested: int | None, device: str, n_frames: int) -> int:
    """Number of graph-building worker processes for ``n_frames`` frames.

    ``requested`` (or the ``graph_workers`` setting) wins when given. Otherwise: the cores this
    process may use beyond torch's own threads, up to 8 (the model's evaluation keeps its
    threads; on a GPU node the CPU cores would otherwise idle while the GPU waits for graphs).
    """
    if requested is None:
        requested = get_settings().graph_workers
    if requested is None and _inside_mpi():
        requested = 0  # forking an MPI rank can break its transport; each rank builds its own
    if requested is None:
        threads = 0 if device == "cuda" else get_settings().torch_threads
        requested = max(0, min(8, allocated_cores() - threads))
    return max(0, min(requested, n_frames // MIN_FRAMES_PER_WORKER))


def _inside_mpi() -> bool:
    """Whether this process is an MPI rank (mpi4py initialised, or GPAW's parallel world)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized():
        return True
    gpaw_mpi = sys.modules.get("gpaw.mpi")
    return gpaw_mpi is not None and getattr(getattr(gpaw_mpi, "world", None), "size", 1) > 1


_BUILD: Callable | None = None


def _init_worker(build: Callable, parent: int) -> None:
    import torch

    from softening.processes import exit_with_parent

    exit_with_parent(parent)  # a graph builder whose parent is killed ends too
    global _BUILD
    _BUILD = build
    torch.set_num_threads(1)  # the parent's threads belong to the model


def _build_pickled(structure: Structure) -> bytes:
    # Plain pickle copies tensors by value; multiprocessing's own pickler would pass each tensor
    # as a shared-memory file descriptor, and thousands of those exhaust the open-file limit.
    return pickle.dumps(_BUILD(structure), protocol=pickle.HIGHEST_PROTOCOL)


def iter_graphs(build: Callable, structures: Sequence[Structure], workers: int) -> Iterator:
    """Graphs of ``structures`` in order, built by ``workers`` processes (0: here, lazily).

    Workers are forked (no re-import of the model libraries) and build ahead of the consumer,
    so the model evaluates one batch while the next batch's graphs are being built.
    """
    if workers <= 0:
        for s in structures:
            t0 = time.perf_counter()
            g = build(s)
            TIMINGS["graphs"] += time.perf_counter() - t0
            yield g
        return
    chunk = max(1, min(8, len(structures) // (4 * workers)))
    pool = ProcessPoolExecutor(
        workers,
        mp_context=get_context("fork"),
        initializer=_init_worker,
        initargs=(build, os.getpid()),
    )
    try:
        results = pool.map(_build_pickled, structures, chunksize=chunk)
        while True:
            t0 = time.perf_counter()
            try:
                blob = next(results)
            except StopIteration:
                return
            finally:
                TIMINGS["graphs"] += time.perf_counter() - t0
            yield pickle.loads(blob)
    finally:  # also when the consumer stops early: drop the graphs nobody will read
        pool.shutdown(wait=True, cancel_futures=True)


# ---- frame workers: whole frames split across processes, each with its own models ----------------

#: Frames per task handed to a frame worker, at least: fewer would leave its batches part-empty.
MIN_FRAMES_PER_TASK = 8


def resolve_frame_workers(
    requested: int | None, models: Sequence[LoadedModel], n_frames: int | None = None
) -> int:
    """Number of frame-evaluating worker processes for ``models`` (1: evaluate in this process).

    ``requested`` (``--workers``) wins, except on a GPU. Otherwise (automatic): one per allocated
    core, capped by memory (:func:`softening.processes.default_workers` with one torch thread
    each), and at most one per :data:`MIN_FRAMES_PER_WORKER` of ``n_frames`` when that is known;
    but 1 when a model is on a GPU (the card is the one fast part: graph workers feed it instead),
    inside an MPI rank (forking one can break its transport), or when the ``graph_workers``
    setting is 0 (no worker processes: :func:`softening.execution.local.run_flow` sets it when several
    jobs share the cores).

    Raises
    ------
    InputError
        ``requested`` below 1.
    """
    if requested is not None and requested < 1:
        raise InputError(f"--workers must be >= 1, got {requested}")
    if any(m.device != "cpu" for m in models):
        if requested is not None and requested > 1:
            logger.warning(
                "--workers %d ignored: models on %s are evaluated in one process (graphs are "
                "built in worker processes)", requested, models[0].device,
            )  # fmt: skip
        return 1
    if requested is not None:
        return requested
    if _inside_mpi() or get_settings().graph_workers == 0:
        return 1
    n = default_workers(threads=1)
    if n_frames is not None:
        n = min(n, n_frames // MIN_FRAMES_PER_WORKER)
    return max(1, n)


_MODELS: list[LoadedModel] = []


def _init_frame_worker(models: list[LoadedModel], parent: int) -> None:
    import warnings

    import torch

    from softening.processes import exit_with_parent

    exit_with_parent(parent)  # a frame worker whose parent is killed ends too
    warnings.filterwarnings("ignore")  # the parent has shown the models' warnings once
    _MODELS[:] = models  # inherited through fork: nothing re-read, nothing unpickled
    # One thread: a forked child's OpenMP pool hangs with more once the parent has used its own.
    torch.set_num_threads(1)


def _evaluate_task(index: int, structures: list[Structure]) -> list[Prediction]:
    return evaluate_structures(_MODELS[index], structures, graph_workers=0)


class FrameWorkers:
    """Worker processes that each evaluate whole frames with their own copy of the models.

    The workers are forked once the models are loaded here, so they inherit them: no model file is
    read again and nothing is unpickled but the frames sent and the predictions returned, both
    pickled by this package. Each runs torch with one thread (see :func:`resolve_frame_workers`).
    Tasks are contiguous slices of the frames; :meth:`submit` returns a function that gives the
    predictions in the frames' order, so results are those of one process, batch boundaries aside
    (float32 round-off). A worker that dies (killed, out of memory) is a :class:`ModelError`, not
    a hang; an error raised in a worker is raised here.

    Parameters
    ----------
    models
        Loaded models (on the CPU); tasks name one by its index.
    workers
        Processes to start.
    """

    def __init__(self, models: Sequence[LoadedModel], workers: int) -> None:
        self.workers = workers
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=get_context("fork"),
            initializer=_init_frame_worker,
            initargs=(list(models), os.getpid()),
        )

    def submit(self, index: int, structures: Sequence[Structure]) -> Callable[[], list[Prediction]]:
        """Queue ``structures`` for model ``index``; the returned function waits for the
        predictions and gives them in order."""
        # Four tasks per worker, so that a worker with small frames takes another slice while
        # one with large frames finishes (the next call's tasks queue behind these).
        size = max(MIN_FRAMES_PER_TASK, -(-len(structures) // (4 * self.workers)))
        futures = [
            self.pool.submit(_evaluate_task, index, list(structures[i : i + size]))
            for i in range(0, len(structures), size)
        ]
        return lambda: _collect(futures)

    def close(self) -> None:
        """Stop the workers, dropping queued tasks (also after an error)."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FrameWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _collect(futures: list[Future]) -> list[Prediction]:
    out: list[Prediction] = []
    try:
        for f in futures:
            out.extend(f.result())
    except BrokenProcessPool:
        raise ModelError(
            "a frame-evaluation worker process died (killed, or out of memory); "
            "rerun with fewer --workers"
        ) from None
    return out


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class MemoryMeter:
    """Peak memory of one batch on a CUDA device, and the device's free memory (bytes)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = torch.cuda.memory_allocated(self.device)

    def free(self) -> int:
        return int(self.torch.cuda.mem_get_info(self.device)[0])

    def start(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = self.torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return int(self.torch.cuda.max_memory_allocated(self.device) - self.baseline)

    def release(self) -> None:
        self.torch.cuda.empty_cache()


def run_batches(
    model,
    structures: Sequence[Structure],
    graphs: Iterator,
    forward: Callable,
    memory_gb: float | None,
    progress: Callable[[int], None] | None,
    meter: MemoryMeter | None = None,
) -> list[Prediction]:
    """Evaluate ``graphs`` (one per structure, in order) in memory-bounded batches.

    ``forward(batch_graphs)`` returns per-frame (energy eV, forces eV/Å, stress eV/Å^3) tuples.
    Batches are planned from the backend's estimate (:attr:`Backend.gb_per_atom`); on a GPU, the
    peak memory of each batch is measured and later batches are sized by the largest
    bytes-per-atom seen so far. A batch that runs out of memory is split in two and retried; a
    single frame that does not fit is an error naming its size.
    """
    sizes = [len(s) for s in structures]
    budget_gb = memory_gb if memory_gb is not None else get_settings().batch_memory_gb
    if meter is None and model.device == "cuda":
        meter = MemoryMeter(model.device)
    if budget_gb is None:
        budget_gb = 0.7 * meter.free() / 1e9 if meter is not None else 4.0
    max_atoms = plan_max_atoms(model.family, budget_gb, model.device)
    ceiling = sys.maxsize  # below the smallest batch that ran out of memory, whatever is measured
    bytes_per_atom = 0.0
    out: list[Prediction] = []
    pending: list = []  # graphs built but not yet evaluated, in order
    i = 0
    while i < len(sizes):
        j, atoms = i + 1, sizes[i]
        while j < len(sizes) and atoms + sizes[j] <= max_atoms:
            atoms += sizes[j]
            j += 1
        while len(pending) < j - i:
            pending.append(next(graphs))
        t0 = time.perf_counter()
        if meter is not None:
            meter.start()
        try:
            results = forward(pending[: j - i])
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            if meter is not None:
                meter.release()
            if j - i == 1:
                raise ModelError(
                    f"one frame of {atoms} atoms does not fit in {model.device} memory with "
                    f"{model.name}; evaluate it on a larger device or with --device cpu"
                ) from None
            max_atoms = ceiling = max(1, atoms // 2)
            logger.warning("batch of %d atoms ran out of memory; retrying in halves", atoms)
            continue
        finally:
            TIMINGS["model"] += time.perf_counter() - t0
        if meter is not None:
            bytes_per_atom = max(bytes_per_atom, meter.peak() / atoms)
            if bytes_per_atom > 0:
                max_atoms = min(ceiling, max(1, int(budget_gb * 1e9 / bytes_per_atom)))
        for energy, forces, stress in results:
            out.append(Prediction(energy=energy, forces=forces, stress=stress))
        del pending[: j - i]
        i = j
        if progress:
            progress(i)
    return out


def plan_max_atoms(family: str, memory_gb: float, device: str = "cuda") -> int:
    """Most atoms in one batch within ``memory_gb`` by the memory per atom of ``family``'s backend
    (and :data:`CPU_MAX_BATCH_ATOMS` on a CPU)."""
    try:
        gb_per_atom = get_backend(family).gb_per_atom
    except ModelError:  # not a registered family: the default estimate
        gb_per_atom = Backend.gb_per_atom
    max_atoms = max(1, int(memory_gb / gb_per_atom))
    return min(max_atoms, CPU_MAX_BATCH_ATOMS) if device == "cpu" else max_atoms


def _evaluate_ase(model, structures, progress) -> list[Prediction]:
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = model.calculator()  # a corrected model's applies its correction factor
    out = []
    for i, s in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
        try:
            stress = np.asarray(atoms.get_stress(voigt=False), dtype=np.float64)
        except Exception:  # some calculators have no stress
            stress = None
        out.append(Prediction(energy=energy, forces=forces, stress=stress))
        if progress:
            progress(i + 1)
    return out
