"""Batched single-point evaluation of many frames with one loaded uMLIP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from softening.models.factory import LoadedModel
from softening.settings import get_settings

EV_PER_A3_PER_GPA = 1.0 / 160.21766208
# CHGNet needs about 0.8 GB per 64-atom frame in a batch (measured on these machines).
GB_PER_ATOM = {"chgnet": 0.8 / 64, "m3gnet": 0.4 / 64, "mace": 0.6 / 64}


@dataclass
class Prediction:
    """One frame's uMLIP result: energy (eV), forces (n, 3) eV/Å, stress 3x3 eV/Å^3 (ASE sign)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None


def plan_batches(
    n_atoms: Sequence[int], family: str, memory_gb: float | None = None
) -> list[list[int]]:
    """Group frame indices into batches whose estimated memory stays within the budget.

    Frames keep their order; a frame larger than the budget on its own gets a batch of its own.
    """
    budget = memory_gb if memory_gb is not None else get_settings().batch_memory_gb
    max_atoms = max(1, int(budget / GB_PER_ATOM.get(family, 0.8 / 64)))
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
    if model.family == "chgnet":
        return _evaluate_chgnet(model, structures, memory_gb, progress)
    return _evaluate_ase(model, structures, progress)


def _evaluate_chgnet(model, structures, memory_gb, progress) -> list[Prediction]:
    import torch

    net = model.model
    # Graphs are built once per frame, then batched by the memory budget.
    graphs = [net.graph_converter(s) for s in structures]
    out: list[Prediction] = []
    done = 0
    for batch in plan_batches([len(s) for s in structures], "chgnet", memory_gb):
        with torch.set_grad_enabled(True):
            pred = net.forward([graphs[i].to(model.device) for i in batch], task="efs")
        for k, i in enumerate(batch):
            n = len(structures[i])
            out.append(
                Prediction(
                    energy=float(pred["e"][k].detach().cpu()) * n,
                    forces=pred["f"][k].detach().cpu().numpy().astype(np.float64),
                    stress=pred["s"][k].detach().cpu().numpy().astype(np.float64)
                    * EV_PER_A3_PER_GPA,
                )
            )
        done += len(batch)
        if progress:
            progress(done)
    return out


def _evaluate_ase(model, structures, progress) -> list[Prediction]:
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = model.calculator()
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
