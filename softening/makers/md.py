"""High-temperature NVT MD with a uMLIP, to sample off-equilibrium frames."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jobflow import JobConfig, Maker, job
from pymatgen.core import Structure

from softening import defaults
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.reuse import reuse_stored
from softening.models.batched_md import kept_trajectory, observe_step, start_atoms
from softening.schemas import MDResult, MDTrajectory, ModelInfo, content_key

logger = logging.getLogger(__name__)

THERMOSTATS = ("langevin", "nose-hoover", "berendsen")


@dataclass
class MDSamplingMaker(Maker):
    """NVT molecular dynamics with a uMLIP (the paper: CHGNet, 1000 K, 2 fs, 20 ps = 10,000 steps).

    Written on ASE's integrators with the package's cached model rather than atomate2's force-field
    MD maker, because every stored step is checked for a blow-up (non-finite values, two atoms closer
    than ``min_distance``, temperature above ``max_temperature_factor`` times the target) and the
    run fails with a clear message instead of writing garbage frames.

    Attributes
    ----------
    name
        Job name.
    model
        uMLIP spec (see :func:`softening.models.load_model`).
    temperature
        Target temperature, K.
    timestep
        Time step, fs.
    steps
        Number of MD steps (the paper: 10,000 = 20 ps at 2 fs).
    equilibration_fraction
        Leading share of the run discarded as equilibration.
    stride
        Steps between stored frames.
    thermostat
        ``langevin`` (default), ``nose-hoover`` or ``berendsen``.
    friction
        Langevin friction, 1/fs.
    taut
        Nose-Hoover / Berendsen time constant, fs.
    seed
        Seed of the Maxwell-Boltzmann velocities and Langevin noise.
    min_distance
        Blow-up threshold on interatomic distances, Å.
    max_temperature_factor
        Blow-up threshold on temperature, multiple of the target.
    """

    name: str = "md sampling"
    model: str = defaults.MD_MODEL
    temperature: float = defaults.TEMPERATURE
    timestep: float = defaults.TIMESTEP
    steps: int = defaults.STEPS
    equilibration_fraction: float = 0.2
    stride: int = defaults.STRIDE
    thermostat: str = "langevin"
    friction: float = 0.01
    taut: float = 100.0
    seed: int = defaults.SEED
    min_distance: float = 0.5
    max_temperature_factor: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.temperature <= 10_000:
            raise InputError(f"temperature must be in (0, 10000] K, got {self.temperature}")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.timestep <= 10:
            raise InputError(f"timestep must be in (0, 10] fs, got {self.timestep}")
        if not 0 <= self.equilibration_fraction < 1:
            raise InputError("equilibration_fraction must be in [0, 1)")
        if self.thermostat not in THERMOSTATS:
            raise InputError(f"thermostat must be one of {THERMOSTATS}, got {self.thermostat!r}")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1 MD step, got {self.stride}")

    @property
    def kept_frames(self) -> int:
        """How many frames the MD keeps (after equilibration, every ``stride`` steps)."""
        from softening.datasets.checks import md_kept_frames

        return md_kept_frames(self.steps, self.stride, self.equilibration_fraction)

    def settings(self) -> dict:
        """Settings that determine the trajectory (part of the content key)."""
        keys = (
            "model",
            "temperature",
            "timestep",
            "steps",
            "equilibration_fraction",
            "stride",
            "thermostat",
            "friction",
            "taut",
            "seed",
        )
        return {k: getattr(self, k) for k in keys}

    @softening_job(MDResult, store=True, replaces=True)
    def make(
        self,
        structure: Structure,
        material_id: str | None = None,
        batched: dict[str, Any] | None = None,
    ):
        """Run the MD, or reuse a stored run with the same start structure and settings.

        Returns the :class:`MDResult`, or for a reuse a ``Response`` replacing this job by one
        that outputs the stored result with its trajectory referenced, not copied (see
        :mod:`softening.makers.reuse`).

        Parameters
        ----------
        structure
            Start structure.
        material_id
            The material's id in this flow (default: the reduced formula).
        batched
            This material's entry of a :class:`BatchedMDMaker` job's output, when that job ran
            the MD: its ``error`` (the MD blew up there) fails this job with the same message;
            otherwise the result it stored is handed over.
        """

        from softening.models import load_model

        key = content_key(structure, "md", self.settings())
        # The id is this flow's (a store written before may hold the same MD under an older id).
        mid = material_id or structure.composition.reduced_formula
        if batched is not None and batched.get("error"):
            raise CalculationError(batched["error"])
        if batched is not None and batched.get("computed"):
            from jobflow import CURRENT_JOB

            from softening.makers.reuse import find_stored_output, reuse_response

            # Run by the batched job of this flow, not reused from an earlier one.
            stored = find_stored_output(CURRENT_JOB.store, key, "MDResult")
            if stored is not None:
                return reuse_response(stored[1], f"{self.name} (batched)", material_id=mid)
        reused = reuse_stored(key, "MDResult", f"MD of {structure.formula}", material_id=mid)
        if reused is not None:
            return reused
        model = load_model(self.model)
        model.check_elements({el.symbol for el in structure.composition})
        t0 = time.perf_counter()
        traj = run_md(structure, model.calculator(), self)
        return self.result(structure, mid, model.info, traj, key, time.perf_counter() - t0)

    def result(
        self,
        structure: Structure,
        material_id: str,
        model: ModelInfo,
        trajectory: MDTrajectory,
        key: str,
        wall_time: float | None,
    ) -> MDResult:
        """The :class:`MDResult` of a finished MD of ``structure`` with these settings."""
        kept_t = trajectory.temperatures
        return MDResult(
            material_id=material_id,
            formula=structure.composition.reduced_formula,
            structure=structure,
            model=model,
            temperature=self.temperature,
            timestep=self.timestep,
            n_steps=self.steps,
            n_equilibration=int(self.steps * self.equilibration_fraction),
            stride=self.stride,
            thermostat=self.thermostat,
            seed=self.seed,
            mean_temperature=float(np.mean(kept_t)) if kept_t else float("nan"),
            trajectory=trajectory,
            content_key=key,
            wall_time=wall_time,
        )


@dataclass
class BatchedMDMaker(Maker):
    """The sampling MDs of many materials in one job, advancing together: one batched model call
    per step (:func:`softening.models.batched_md.run_batched_md`) instead of one per material.

    Each material's MD is the one ``settings`` (an :class:`MDSamplingMaker`) would run, with the
    same content key: the job stores one :class:`MDResult` per material (small jobs it adds as a
    detour, each outputting one result, so trajectories are stored once and by material), and
    materials already in the store are not run again (a resumed study redoes only what is
    missing). Its own output is small: per material id, ``{"computed": bool, "error": str |
    None}``. The per-material MD jobs of the flow take their entry
    (``settings.make(structure, mid, batched=job.output[mid])``): they hand the stored result
    over, or fail with the error of a material that blew up, so everything downstream of a
    material sees what it sees after a per-material MD. A blow-up stops that material only.

    Only the Langevin thermostat is batched; with another, the per-material jobs run the MDs
    themselves.

    Why a detour and not ``Response(replace=Flow(per-material jobs))`` with the materials'
    results as the job's output: jobflow stores such an output as references to the new jobs'
    outputs and resolves all of them whenever one entry is read, so every material's selection
    job would load every material's trajectory, and one material that blew up would fail the
    others' downstream jobs too.

    Attributes
    ----------
    name
        Job name.
    settings
        The MD of each material (model, temperature, steps, seed, blow-up thresholds...).
    memory_gb
        Memory budget of one step's batch, GB (``None``: the ``batch_memory_gb`` setting; without
        one, every material runs at once). Materials beyond it wait for running ones to finish.
    """

    name: str = "md sampling batched"
    settings: MDSamplingMaker = field(default_factory=MDSamplingMaker)
    memory_gb: float | None = None

    @job(config=JobConfig(expose_store=True))
    def make(self, structures: list[Structure], material_ids: list[str] | None = None):
        """Run the MDs not yet stored, all together; store one :class:`MDResult` per material.

        Returns a ``Response`` whose output maps each material id to ``{"computed", "error"}``
        and whose detour stores the new results (one small job per material).
        """
        from jobflow import CURRENT_JOB, Flow, Response

        from softening.makers.reuse import find_stored_output
        from softening.models import load_model
        from softening.models.batched_md import run_batched_md
        from softening.settings import get_settings

        md = self.settings
        ids = material_ids or [s.composition.reduced_formula for s in structures]
        if len(ids) != len(structures):
            raise InputError(f"{len(ids)} material ids for {len(structures)} structures")
        keys = [content_key(s, "md", md.settings()) for s in structures]
        out: dict[str, dict[str, Any]] = {mid: {"computed": False, "error": None} for mid in ids}
        todo = [
            i
            for i, k in enumerate(keys)
            if find_stored_output(CURRENT_JOB.store, k, "MDResult") is None
        ]
        logger.info(
            "batched MD: %d materials, %d already stored",
            len(structures),
            len(structures) - len(todo),
        )
        if not todo or md.thermostat != "langevin":
            return Response(output=out)  # the per-material jobs reuse or run them
        model = load_model(md.model)
        t0 = time.perf_counter()
        memory_gb = self.memory_gb if self.memory_gb is not None else get_settings().batch_memory_gb
        runs = run_batched_md([structures[i] for i in todo], model, md, memory_gb=memory_gb)
        wall = time.perf_counter() - t0
        jobs = []
        for i, run in zip(todo, runs, strict=True):
            if isinstance(run, CalculationError):
                out[ids[i]]["error"] = str(run)
                continue
            doc = md.result(structures[i], ids[i], model.info, run, keys[i], wall)
            store = store_md_result(doc)
            store.name = f"{self.name} {ids[i]}"
            jobs.append(store)
            out[ids[i]]["computed"] = True
        return Response(output=out, detour=Flow(jobs, name=self.name) if jobs else None)


@softening_job(MDResult)
def store_md_result(result: MDResult) -> MDResult:
    """Output (and so store, trajectory in the ``data`` store) one MD result of a batched MD."""
    return result


def _dynamics(atoms, maker: MDSamplingMaker):
    from ase import units
    from ase.md.langevin import Langevin

    dt = maker.timestep * units.fs
    if maker.thermostat == "langevin":
        return Langevin(
            atoms,
            dt,
            temperature_K=maker.temperature,
            friction=maker.friction / units.fs,
            rng=np.random.default_rng(maker.seed),
        )
    if maker.thermostat == "nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(
            atoms, dt, temperature_K=maker.temperature, tdamp=maker.taut * units.fs
        )
    from ase.md.nvtberendsen import NVTBerendsen

    return NVTBerendsen(atoms, dt, temperature_K=maker.temperature, taut=maker.taut * units.fs)


def run_md(structure: Structure, calculator, maker: MDSamplingMaker) -> MDTrajectory:
    """Run the NVT MD described by ``maker``; return the kept, strided trajectory."""
    atoms = start_atoms(structure, maker.temperature, maker.seed)
    atoms.calc = calculator
    dyn = _dynamics(atoms, maker)
    n_equil = int(maker.steps * maker.equilibration_fraction)
    out = MDTrajectory(steps=[], positions=[], cells=[], energies=[], temperatures=[])
    report_every = max(1, maker.steps // 10)

    def observe() -> None:
        step = dyn.nsteps
        # The one observer (blow-up rule, kept frames), shared with the batched MD.
        observe_step(atoms, atoms.get_potential_energy(), step, maker, n_equil, out)
        if step % report_every == 0:
            logger.info(
                "MD %s: step %d/%d, T = %.0f K",
                structure.formula,
                step,
                maker.steps,
                atoms.get_temperature(),
            )

    dyn.attach(observe, interval=1)
    dyn.run(maker.steps)
    return kept_trajectory(out)
