"""Langevin NVT MD of many materials together: one batched model call per step.

The sampling MD of a study runs one small cell per material; driven one by one through an ASE
calculator, every step pays the model's per-call overhead (a forward and a backward pass on a few
dozen atoms). Here the materials advance in lockstep and each step evaluates all of them in one
batched forward (:meth:`~softening.models.backends.Backend.batch_parts`), so the overhead is paid
once per step for the whole batch.

The physics is ASE's, step for step: the same Maxwell-Boltzmann start (``rng =
np.random.default_rng(seed)``, then ``Stationary``), the same Langevin propagator with ASE's
coefficients and its centre-of-mass correction (``fixcm=True``, ASE's default), its own
``default_rng(seed)`` drawing the same normal deviates in the same order, the same observer
schedule (blow-up check every ``stride`` steps and at the last step, frames kept after the
equilibration). With the same forces it gives the same trajectory as
:func:`softening.makers.md.run_md` to the last bit (a model without batched parts is driven by its
calculator in this same loop, and tests compare the two).

Only the Langevin thermostat is batched; the makers run other thermostats per material.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from softening.errors import CalculationError
from softening.schemas import MDTrajectory

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

    from softening.models.backends import LoadedModel

__all__ = [
    "LangevinSettings",
    "check_blowup",
    "kept_trajectory",
    "observe_step",
    "run_batched_md",
    "start_atoms",
]

logger = logging.getLogger(__name__)


class LangevinSettings(Protocol):
    """What a batched MD reads of its settings (an ``MDSamplingMaker`` has all of it)."""

    temperature: float  # K
    timestep: float  # fs
    steps: int
    equilibration_fraction: float
    stride: int
    friction: float  # 1/fs
    seed: int
    min_distance: float  # Å
    max_temperature_factor: float


def check_blowup(atoms: Atoms, energy: float, step: int, settings: Any) -> None:
    """Raise :class:`CalculationError` when the MD state at ``step`` has blown up.

    The one blow-up rule of every MD of the package (per material or batched): non-finite
    positions or energy; two atoms closer than ``settings.min_distance`` (Å); a temperature above
    ``settings.max_temperature_factor`` times the target ``settings.temperature``.

    Parameters
    ----------
    atoms
        The MD's atoms (positions, momenta, cell).
    energy
        Their potential energy, eV.
    step
        The MD step, for the message.
    settings
        Any object with ``min_distance``, ``max_temperature_factor`` and ``temperature``.
    """
    from ase.neighborlist import neighbor_list

    pos = atoms.get_positions()
    if not (np.all(np.isfinite(pos)) and np.isfinite(energy)):
        raise CalculationError(f"MD blew up at step {step}: non-finite positions or energy")
    d = neighbor_list("d", atoms, settings.min_distance)
    if len(d):
        raise CalculationError(
            f"MD blew up at step {step}: two atoms {d.min():.2f} Å apart "
            f"(< {settings.min_distance} Å); lower the temperature or the time step"
        )
    temp = atoms.get_temperature()
    if temp > settings.max_temperature_factor * settings.temperature:
        raise CalculationError(
            f"MD blew up at step {step}: temperature {temp:.0f} K is over "
            f"{settings.max_temperature_factor:g}x the target {settings.temperature:g} K"
        )


@dataclass
class _Walker:
    """One material's MD state: ASE's ``Langevin`` attributes, kept as arrays."""

    index: int
    atoms: Atoms
    rng: np.random.Generator
    masses: np.ndarray  # (n, 1), as ``MolecularDynamics.masses``
    c: tuple[float | np.ndarray, ...]  # ASE's c1..c5
    forces: np.ndarray | None = None
    energy: float = float("nan")
    nsteps: int = 0
    out: MDTrajectory = field(
        default_factory=lambda: MDTrajectory(
            steps=[], positions=[], cells=[], energies=[], temperatures=[]
        )
    )
    v: np.ndarray | None = None
    rnd_pos: np.ndarray | None = None
    rnd_vel: np.ndarray | None = None


def _start(index: int, structure: Structure, settings: LangevinSettings, seed: int) -> _Walker:
    """ASE's start of :func:`~softening.makers.md.run_md`: velocities, then the Langevin setup."""
    from ase import units

    atoms = start_atoms(structure, settings.temperature, seed)
    # Langevin.__init__ / updatevars (ase/md/langevin.py), in ASE units.
    dt = settings.timestep * units.fs
    temp = units.kB * settings.temperature
    fr = settings.friction / units.fs
    masses = atoms.get_masses()
    masses.shape = (-1, 1)
    sigma = np.sqrt(2 * temp * fr / masses)
    c1 = dt / 2.0 - dt * dt * fr / 8.0
    c2 = dt * fr / 2 - dt * dt * fr * fr / 8.0
    c3 = np.sqrt(dt) * sigma / 2.0 - dt**1.5 * fr * sigma / 8.0
    c5 = dt**1.5 * sigma / (2 * np.sqrt(3))
    c4 = fr / 2.0 * c5
    return _Walker(
        index=index,
        atoms=atoms,
        rng=np.random.default_rng(seed),
        masses=masses,
        c=(dt, c1, c2, c3, c4, c5),
    )


def _first_half(w: _Walker) -> None:
    """``Langevin.step`` up to the new positions (the forces at them come next, batched)."""
    dt, c1, c2, c3, c4, c5 = w.c
    atoms, masses = w.atoms, w.masses
    natoms = len(atoms)
    w.v = atoms.get_velocities()
    xi = w.rng.standard_normal(size=(natoms, 3))
    eta = w.rng.standard_normal(size=(natoms, 3))
    w.rnd_pos = c5 * eta
    w.rnd_vel = c3 * xi - c4 * eta
    # fixcm=True, ASE's default (and run_md's): the centre of mass stays where it is.
    factor = np.sqrt(natoms / (natoms - 1.0))
    w.rnd_pos -= w.rnd_pos.sum(axis=0) / natoms
    w.rnd_vel -= (w.rnd_vel * masses).sum(axis=0) / (masses * natoms)
    w.rnd_pos *= factor
    w.rnd_vel *= factor
    w.v += c1 * w.forces / masses - c2 * w.v + w.rnd_vel
    x = atoms.get_positions()
    atoms.set_positions(x + dt * w.v + w.rnd_pos)
    w.v = (atoms.get_positions() - x - w.rnd_pos) / dt


def _second_half(w: _Walker) -> None:
    """``Langevin.step`` after the forces at the new positions (``w.forces``)."""
    _, c1, c2, _, _, _ = w.c
    w.v += c1 * w.forces / w.masses - c2 * w.v + w.rnd_vel
    w.atoms.set_momenta(w.v * w.masses)
    w.nsteps += 1


def start_atoms(structure: Structure, temperature: float, seed: int) -> Atoms:
    """The MD's start: ``structure`` wrapped into its cell, Maxwell-Boltzmann velocities at
    ``temperature`` (K) drawn with ``default_rng(seed)``, centre-of-mass motion removed.

    Every MD of the package starts here (per material and batched), so both give the same start.
    """
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.datasets.checks import wrap_structure

    # The float32 models must not see positions far from the cell (the image chosen matters).
    atoms = AseAtomsAdaptor.get_atoms(wrap_structure(structure))
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def observe_step(
    atoms: Atoms, energy: float, step: int, settings: Any, n_equil: int, out: MDTrajectory
) -> None:
    """Every MD's observer after ``step``: on the stride (and at the last step) the blow-up check
    (:func:`check_blowup`, raises), then the frame kept in ``out`` once past ``n_equil`` steps."""
    if step % settings.stride == 0 or step == settings.steps:
        check_blowup(atoms, energy, step, settings)
        if step > n_equil:
            out.steps.append(int(step))
            out.positions.append(atoms.get_positions().tolist())
            out.cells.append(atoms.cell.array.tolist())
            out.energies.append(float(energy))
            out.temperatures.append(float(atoms.get_temperature()))


def kept_trajectory(out: MDTrajectory) -> MDTrajectory:
    """``out`` of a finished MD; :class:`CalculationError` when it kept no frame."""
    if not out.steps:
        raise CalculationError("MD kept no frames: increase steps or lower stride")
    return out


class _Forces:
    """Energies and forces of many walkers' current positions: batched, or by calculators."""

    def __init__(self, model: LoadedModel, max_atoms: int | None) -> None:
        self.model = model
        self.parts = model.backend.batch_parts(model)
        self.max_atoms = max_atoms
        self.calculators: dict[int, Any] = {}

    def __call__(self, walkers: Sequence[_Walker]) -> None:
        if self.parts is None:
            for w in walkers:
                # A model without batched parts: its ASE calculator, one material at a time.
                if w.atoms.calc is None:
                    w.atoms.calc = self.calculators.setdefault(w.index, self.model.calculator())
                w.forces = w.atoms.get_forces(md=True)
                w.energy = float(w.atoms.get_potential_energy())
            return
        from pymatgen.core import Lattice, Structure

        build, forward = self.parts
        graphs = []
        for w in walkers:
            a = w.atoms
            # As the calculators do: the positions as they are (not wrapped), in the MD's cell.
            s = Structure(
                Lattice(a.cell.array),
                a.get_chemical_symbols(),
                a.get_positions(),
                coords_are_cartesian=True,
            )
            graphs.append(build(s))
        i = 0
        while i < len(walkers):
            # On a CPU, batches beyond a few dozen atoms are slower per atom (evaluate.py):
            # one step's forward is split into chunks of at most ``max_atoms``.
            j, atoms = i + 1, len(walkers[i].atoms)
            while (
                j < len(walkers)
                and self.max_atoms is not None
                and atoms + len(walkers[j].atoms) <= self.max_atoms
            ):
                atoms += len(walkers[j].atoms)
                j += 1
            if self.max_atoms is None:
                j = len(walkers)
            for w, (energy, forces, _) in zip(walkers[i:j], forward(graphs[i:j]), strict=True):
                w.energy = float(energy)
                w.forces = np.asarray(forces, dtype=np.float64)
            i = j


def run_batched_md(
    structures: Sequence[Structure],
    model: LoadedModel,
    settings: LangevinSettings,
    memory_gb: float | None = None,
    seeds: Sequence[int] | None = None,
) -> list[MDTrajectory | CalculationError]:
    """Langevin NVT MD of every structure with ``model``, all advancing together.

    Each step evaluates the running materials in one batched call of the model (a model whose
    backend has no batched parts is driven by its ASE calculator, material by material, in the
    same loop). A material that blows up (:func:`check_blowup`) stops alone: its entry is the
    :class:`CalculationError`, with the message a per-material MD gives, and the others go on.

    Parameters
    ----------
    structures
        Start structures.
    model
        From :func:`softening.models.load_model`.
    settings
        Temperature, time step, steps, equilibration, stride, friction, seed and blow-up
        thresholds (an ``MDSamplingMaker``); Langevin only.
    memory_gb
        Memory budget of a step's batch, GB: as many materials run at once as fit by the
        backend's memory per atom (:func:`~softening.models.evaluate.plan_max_atoms`), the rest
        wait and start as running ones finish. ``None``: all run at once.
    seeds
        One seed per structure (default: ``settings.seed`` for each, as per-material MDs).

    Returns
    -------
    list
        Per structure, in order: its kept, strided :class:`MDTrajectory`, or the
        :class:`CalculationError` that stopped it.
    """
    from softening.models.evaluate import CPU_MAX_BATCH_ATOMS, plan_max_atoms

    model.check_elements({el.symbol for s in structures for el in s.composition})
    seeds = [settings.seed] * len(structures) if seeds is None else list(seeds)
    n_equil = int(settings.steps * settings.equilibration_fraction)
    budget = None if memory_gb is None else plan_max_atoms(model.family, memory_gb, model.device)
    chunk = CPU_MAX_BATCH_ATOMS if model.device == "cpu" else None
    forces = _Forces(model, chunk if budget is None else min(budget, chunk or budget))
    results: list[MDTrajectory | CalculationError | None] = [None] * len(structures)
    queue = list(range(len(structures)))
    running: list[_Walker] = []
    report_every = max(1, settings.steps // 10)
    t0 = time.perf_counter()

    def admit() -> None:
        """Start queued materials while they fit the budget (at least one runs)."""
        started = []
        while queue:
            atoms = sum(len(w.atoms) for w in running + started)
            size = len(structures[queue[0]])
            if budget is not None and (running or started) and atoms + size > budget:
                break
            k = queue.pop(0)
            started.append(_start(k, structures[k], settings, seeds[k]))
        if started:
            forces(started)  # step 0: ASE's run computes the forces and calls the observers
            for w in started:
                running.append(w)
                settle(w, step_zero=True)

    def settle(w: _Walker, step_zero: bool = False) -> None:
        """Observe ``w`` after its step; retire it when finished or blown up."""
        try:
            observe_step(w.atoms, w.energy, w.nsteps, settings, n_equil, w.out)
        except CalculationError as exc:
            logger.info("MD %s stopped: %s", w.atoms.get_chemical_formula(), exc)
            results[w.index] = exc
            running.remove(w)
            return
        if w.nsteps >= settings.steps and not step_zero:
            try:
                results[w.index] = kept_trajectory(w.out)
            except CalculationError as exc:
                results[w.index] = exc
            running.remove(w)

    admit()
    while running or queue:
        if not running:
            admit()
            continue
        batch = list(running)
        for w in batch:
            _first_half(w)
        forces(batch)
        for w in batch:
            _second_half(w)
            settle(w)
        step = max(w.nsteps for w in batch)
        if step % report_every == 0:
            logger.info(
                "batched MD: step %d/%d, %d running, %d waiting, %d done",
                step, settings.steps, len(running), len(queue),
                sum(r is not None for r in results),
            )  # fmt: skip
        if queue:
            admit()
    logger.info("batched MD of %d materials: %.1f s", len(structures), time.perf_counter() - t0)
    return results  # type: ignore[return-value]
