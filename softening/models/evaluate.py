"""Batched single-point evaluation of many frames with one loaded uMLIP."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from softening.models.factory import LoadedModel
from softening.settings import get_settings

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


def plan_batches(
    n_atoms: Sequence[int], family: str, memory_gb: float | None = None, device: str = "cuda"
) -> list[list[int]]:
    """Group frame indices into batches whose estimated memory stays within the budget.

    Frames keep their order; a frame larger than the budget on its own gets a batch of its own.
    On a CPU, batches also stop at :data:`CPU_MAX_BATCH_ATOMS` atoms.
    """
    budget = memory_gb if memory_gb is not None else get_settings().batch_memory_gb
    max_atoms = max(1, int(budget / GB_PER_ATOM.get(family, 0.8 / 64)))
    if device == "cpu":
        max_atoms = min(max_atoms, CPU_MAX_BATCH_ATOMS)
    batches: list[list[int]] = []
    current: list[int] = []
    atoms = 0
    for i, n in enumerate(n_atoms):
        if current and atoms + n > max_atoms:
            batches.append(current)
            current, atoms = [], 0
        current.append(i)
        atoms += n
    if current:
        batches.append(current)
    return batches


def evaluate_structures(
    model: LoadedModel,
    structures: Sequence[Structure],
    memory_gb: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """Energies, forces and stresses of ``structures`` with ``model``, loaded once.

    Parameters
    ----------
    model
        From :func:`softening.models.load_model`.
    structures
        Frames to evaluate.
    memory_gb
        Memory budget per batch (default: the ``batch_memory_gb`` setting).
    progress
        Called with the number of frames finished after each batch.
    """
    model.check_elements({el.symbol for s in structures for el in s.composition})
    evaluators = {"chgnet": _evaluate_chgnet, "matgl": _evaluate_matgl, "mace": _evaluate_mace}
    if model.family in evaluators:
        preds = evaluators[model.family](model, structures, memory_gb, progress)
    else:
        preds = _evaluate_ase(model, structures, progress)
    if model.factor != 1.0:  # a linear correction E' = c E scales forces and stress alike
        c = model.factor
        preds = [
            Prediction(c * p.energy, c * p.forces, None if p.stress is None else c * p.stress)
            for p in preds
        ]
    return preds


# Seconds spent in graph building and in the model's forward + backward pass, accumulated over
# calls (the benchmark reads them to report how much of the time is overhead).
TIMINGS = {"graphs": 0.0, "model": 0.0}


def _run_batches(model, structures, graphs, forward, memory_gb, progress) -> list[Prediction]:
    """Evaluate prebuilt ``graphs`` in memory-bounded batches; ``forward(batch_graphs)`` returns
    per-frame (energy eV, forces eV/Å, stress eV/Å^3) tuples."""
    out: list[Prediction] = []
    done = 0
    sizes = [len(s) for s in structures]
    for batch in plan_batches(sizes, model.family, memory_gb, model.device):
        t0 = time.perf_counter()
        results = forward([graphs[i] for i in batch])
        TIMINGS["model"] += time.perf_counter() - t0
        for energy, forces, stress in results:
            out.append(Prediction(energy=energy, forces=forces, stress=stress))
        done += len(batch)
        if progress:
            progress(done)
    return out


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _evaluate_matgl(model, structures, memory_gb, progress) -> list[Prediction]:
    import torch
    from matgl.ext.ase import Atoms2Graph
    from pymatgen.io.ase import AseAtomsAdaptor
    from torch_geometric.data import Batch

    pot = model.model
    converter = Atoms2Graph(pot.model.element_types, pot.model.cutoff)
    graphs = []
    t0 = time.perf_counter()
    for s in structures:  # graphs built once per frame
        g, lat, state = converter.get_graph(AseAtomsAdaptor.get_atoms(s))
        graphs.append((g, torch.as_tensor(lat).reshape(1, 3, 3), torch.as_tensor(state)))
    TIMINGS["graphs"] += time.perf_counter() - t0
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

    return _run_batches(model, structures, graphs, forward, memory_gb, progress)


def _evaluate_mace(model, structures, memory_gb, progress) -> list[Prediction]:
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = model._calculator()  # unscaled; holds the z table, cutoff and heads of this model
    keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={"charges": "Qs"})
    graphs = []
    t0 = time.perf_counter()
    with torch_tools.default_dtype(model.dtype):
        for s in structures:
            config = mace_data.config_from_atoms(
                AseAtomsAdaptor.get_atoms(s), key_specification=keyspec, head_name=calc.head
            )
            graphs.append(
                mace_data.AtomicData.from_config(
                    config, z_table=calc.z_table, cutoff=calc.r_max, heads=calc.available_heads
                )
            )
    TIMINGS["graphs"] += time.perf_counter() - t0
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

    return _run_batches(model, structures, graphs, forward, memory_gb, progress)


def _evaluate_chgnet(model, structures, memory_gb, progress) -> list[Prediction]:
    net = model.model
    t0 = time.perf_counter()
    graphs = [net.graph_converter(s) for s in structures]  # built once per frame
    TIMINGS["graphs"] += time.perf_counter() - t0
    return _run_batches(
        model,
        structures,
        graphs,
        lambda b: chgnet_forward(net, b, model.device),
        memory_gb,
        progress,
    )


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
