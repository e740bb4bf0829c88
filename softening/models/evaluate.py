"""Batched single-point evaluation of many frames with one loaded uMLIP.

The model is loaded once; each frame's graph is built once, in worker processes when there are
spare cores (so that graph building, which is CPU work, overlaps the model's evaluation); frames are
evaluated in batches whose size follows a memory budget, recalibrated from the measured peak on a
GPU; a batch that runs out of memory is split in two and retried, so no batch exhausts the card.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from pymatgen.core import Structure

from softening.errors import ModelError
from softening.models.factory import LoadedModel
from softening.settings import get_settings

logger = logging.getLogger(__name__)

EV_PER_A3_PER_GPA = 1.0 / 160.21766208
# CHGNet needs about 0.8 GB per 64-atom frame in a batch (measured on these machines).
GB_PER_ATOM = {"chgnet": 0.8 / 64, "matgl": 0.4 / 64, "mace": 0.6 / 64}


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
    families = {"chgnet": _chgnet_parts, "matgl": _matgl_parts, "mace": _mace_parts}
    if model.family in families:
        build, forward = families[model.family](model)
        workers = resolve_graph_workers(graph_workers, model.device, len(structures))
        graphs = iter_graphs(build, structures, workers)
        try:
            preds = run_batches(model, structures, graphs, forward, memory_gb, progress)
        finally:
            graphs.close()
    else:
        preds = _evaluate_ase(model, structures, progress)
    if model.factor != 1.0:  # a linear correction E' = c E scales forces and stress alike
        c = model.factor
        preds = [
            Prediction(c * p.energy, c * p.forces, None if p.stress is None else c * p.stress)
            for p in preds
        ]
    return preds


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
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = 0 if device == "cuda" else get_settings().torch_threads
        requested = max(0, min(8, (cores or 1) - threads))
    return max(0, min(requested, n_frames // MIN_FRAMES_PER_WORKER))


def _inside_mpi() -> bool:
    """Whether this process is an MPI rank (mpi4py initialised, or GPAW's parallel world)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized():
        return True
    gpaw_mpi = sys.modules.get("gpaw.mpi")
    return gpaw_mpi is not None and getattr(getattr(gpaw_mpi, "world", None), "size", 1) > 1


_BUILD: Callable | None = None


def _init_worker(build: Callable) -> None:
    import torch

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
        workers, mp_context=get_context("fork"), initializer=_init_worker, initargs=(build,)
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
    Batches are planned from the estimate in :data:`GB_PER_ATOM`; on a GPU, the peak memory of
    each batch is measured and later batches are sized by the largest bytes-per-atom seen so far.
    A batch that runs out of memory is split in two and retried; a single frame that does not fit
    is an error naming its size.
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
    """Most atoms in one batch within ``memory_gb`` (and :data:`CPU_MAX_BATCH_ATOMS` on a CPU)."""
    max_atoms = max(1, int(memory_gb / GB_PER_ATOM.get(family, 0.8 / 64)))
    return min(max_atoms, CPU_MAX_BATCH_ATOMS) if device == "cpu" else max_atoms


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


class MatglGraphBuilder:
    """Structure -> (graph, lattice, state) for a matgl potential (picklable, runs in workers)."""

    def __init__(self, element_types, cutoff: float) -> None:
        from matgl.ext.ase import Atoms2Graph

        self.converter = Atoms2Graph(element_types, cutoff)

    def __call__(self, structure: Structure):
        import torch
        from pymatgen.io.ase import AseAtomsAdaptor

        g, lat, state = self.converter.get_graph(AseAtomsAdaptor.get_atoms(structure))
        return g, torch.as_tensor(lat).reshape(1, 3, 3), torch.as_tensor(state)


def _matgl_parts(model):
    import torch
    from torch_geometric.data import Batch

    pot = model.model
    dtype = next(pot.parameters()).dtype

    def forward(batch):
        g = Batch.from_data_list([b[0] for b in batch]).to(model.device)
        for key in ("frac_coords", "pbc_offset"):
            if key in g and torch.is_floating_point(g[key]):
                g[key] = g[key].to(dtype)
        lat = torch.cat([b[1] for b in batch]).to(model.device, dtype)
        state = torch.cat([b[2].reshape(1, -1) for b in batch]).to(model.device, dtype)
        e, f, st = pot(g, lat, state)[:3]
        e = e.reshape(-1)  # a batch of one comes back 0-dim
        sizes = [b[0].num_nodes for b in batch]
        forces = torch.split(f, sizes)
        if st.numel() != 9 * len(batch):  # a potential built without stresses returns a stub
            return [(float(e[i].detach()), _np(forces[i]), None) for i in range(len(batch))]
        st = st.reshape(len(batch), 3, 3)
        return [
            (float(e[i].detach()), _np(forces[i]), _np(st[i]) * EV_PER_A3_PER_GPA)
            for i in range(len(batch))
        ]

    return MatglGraphBuilder(pot.model.element_types, pot.model.cutoff), forward


class MaceGraphBuilder:
    """Structure -> MACE ``AtomicData`` (picklable, runs in workers)."""

    def __init__(self, z_table, cutoff: float, head: str, heads, dtype: str) -> None:
        from mace import data as mace_data

        self.z_table, self.cutoff, self.head, self.heads = z_table, cutoff, head, heads
        self.dtype = dtype
        self.keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={"charges": "Qs"})

    def __call__(self, structure: Structure):
        from mace import data as mace_data
        from mace.tools import torch_tools
        from pymatgen.io.ase import AseAtomsAdaptor

        with torch_tools.default_dtype(self.dtype):
            config = mace_data.config_from_atoms(
                AseAtomsAdaptor.get_atoms(structure),
                key_specification=self.keyspec,
                head_name=self.head,
            )
            return mace_data.AtomicData.from_config(
                config, z_table=self.z_table, cutoff=self.cutoff, heads=self.heads
            )


def _mace_parts(model):
    import torch
    from mace.tools import torch_geometric

    calc = model._calculator()  # unscaled; holds the z table, cutoff and heads of this model
    net = model.model
    dtype = next(net.parameters()).dtype

    def forward(batch):
        b = torch_geometric.Batch.from_data_list(batch).to(model.device)
        for key in b.keys:
            if torch.is_tensor(b[key]) and torch.is_floating_point(b[key]):
                b[key] = b[key].to(dtype)
        out = net(b.to_dict(), compute_stress=True, training=False)
        sizes = (b["ptr"][1:] - b["ptr"][:-1]).tolist()
        forces = torch.split(out["forces"], sizes)
        return [
            (float(out["energy"][i].detach()), _np(forces[i]), _np(out["stress"][i]))
            for i in range(len(batch))
        ]

    build = MaceGraphBuilder(calc.z_table, calc.r_max, calc.head, calc.available_heads, model.dtype)
    return build, forward


def _chgnet_parts(model):
    net = model.model
    # The graph converter holds no parameters: a CPU copy builds graphs in workers.
    return net.graph_converter, lambda b: chgnet_forward(net, b, model.device)


def chgnet_forward(net, graphs, device: str = "cpu") -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE sign) of CHGNet graphs, for inference.

    ``CHGNet.forward`` is written for training: it takes forces and stress in two separate
    ``autograd.grad`` calls, each with ``create_graph=True`` (a double-backward graph). Inference
    needs one backward pass without a graph, on positions and strains together: the same
    derivatives at about half the cost.
    """
    import torch
    from chgnet.model.model import BatchedGraph

    graphs = [g.to(device) for g in graphs]
    comp_energy = 0 if net.composition_model is None else net.composition_model(graphs)
    bg = BatchedGraph.from_graphs(
        graphs,
        bond_basis_expansion=net.bond_basis_expansion,
        angle_basis_expansion=net.angle_basis_expansion,
        compute_stress=True,
    )
    pred = net._compute(bg, compute_force=False, compute_stress=False)
    n_atoms = torch.tensor([g.atomic_number.shape[0] for g in graphs], device=pred["e"].device)
    # CHGNet predicts energy per atom (intensive); forces derive from the total energy.
    e_total = (pred["e"] + comp_energy) * (n_atoms if net.is_intensive else 1)
    grads = torch.autograd.grad(e_total.sum(), [*bg.atom_positions, *bg.strains])
    forces, strain_grads = grads[: len(graphs)], grads[len(graphs) :]
    return [
        (
            float(e_total[k].detach()),
            -_np(forces[k]),
            _np(strain_grads[k]) / float(bg.volumes[k]),
        )
        for k in range(len(graphs))
    ]


def _evaluate_ase(model, structures, progress) -> list[Prediction]:
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = model._calculator()  # unscaled: evaluate_structures applies the factor once
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
