"""A softening study from options: the flow of ``softening run`` and ``submit``, and its summary.

:class:`StudyOptions` holds the options of the workflow (MD, frames, reference, models, correction,
property), checks them against the structures and builds the flow (:meth:`StudyOptions.build`);
:func:`collect_study` turns the finished flow's outputs into the ``run --json`` summary, and
:meth:`StudyOutcome.save` writes ``summary.json`` and ``parity.png``. The command line, the
``--single-job`` runner (:mod:`softening.hpc.run_serialized`) and Python users share them::

    study = StudyOptions(reference="emt", steps=2000, frames=4, strained=1).build(["Cu.cif"])
    run_flow(study.flow, store)
    outcome = collect_study(study.flow, store, flow_outputs(study.flow, store), [], study.options)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softening import defaults
from softening.jsonio import write_json

if TYPE_CHECKING:
    from jobflow import Flow, JobStore
    from pymatgen.core import Structure

    from softening.workflows.softening import SofteningFlowMaker

__all__ = ["Study", "StudyOptions", "StudyOutcome", "collect_study", "study_parity_plot"]


@dataclass
class StudyOptions:
    """The options of a softening study (``softening run`` / ``submit``), with their defaults
    (:mod:`softening.defaults`, which the makers and the command line read too).

    Attributes
    ----------
    md_model
        uMLIP that drives the MD.
    models
        uMLIPs compared with the reference (``None``: the ``models`` setting).
    reference
        ``gpaw``, ``emt``, ``vasp`` or ``module:Class``.
    temperature, steps, timestep, stride
        MD: K, steps, fs, steps between stored frames.
    frames, strained
        Frames labelled per material; of them, strained by +3 % and as many by -3 %.
    frame_selection
        How frames are picked from the MD: ``stratified-energy`` (the paper: one per energy bin) or
        ``diverse`` (DIRECT on the MD model's structure features).
    ecut, kspacing
        GPAW plane-wave cutoff (eV) and k-point spacing (1/Å, 2π included).
    seed
        Seed of MD, frame choice and bootstrap.
    strict
        Refuse VASP references whose settings differ from the models' training data.
    finetune, train_frames
        Also correct each model (``scale``, ``head`` or ``full``) on this many frames per material
        and verify it on the others.
    prop
        Also compute this registered property (``phonon``, ``surface``, ``vacancy``, ``barrier``,
        ``mixing``...) with the reference and each (corrected) model.
    substitute, max_cells, ion, mu
        The property's options: substitution ``HOST:GUEST`` (``mixing``, ``defect``), largest
        supercell of the orderings (``mixing``), migrating ion (``migration``), chemical
        potentials (``defect``).
    batch_md
        With several materials, run their MDs together in one batched job (one model call per
        MD step for all; :class:`~softening.makers.md.BatchedMDMaker`); ``False``: one MD job
        per material.
    """

    md_model: str = defaults.MD_MODEL
    models: list[str] | None = None
    reference: str = defaults.REFERENCE
    temperature: float = defaults.TEMPERATURE
    steps: int = defaults.STEPS
    timestep: float = defaults.TIMESTEP
    stride: int = defaults.STRIDE
    frames: int = defaults.FRAMES
    strained: int = defaults.STRAINED
    frame_selection: str = defaults.FRAME_SELECTION
    ecut: float = defaults.ECUT
    kspacing: float = defaults.KSPACING
    seed: int = defaults.SEED
    strict: bool = False
    finetune: str | None = None
    train_frames: int = defaults.TRAIN_FRAMES
    prop: str | None = None
    substitute: str | None = None
    max_cells: int = defaults.MAX_CELLS
    ion: str | None = None
    mu: list[str] | None = None
    batch_md: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **overrides: Any) -> StudyOptions:
        """The options from a mapping named as the command line's (``model`` for ``models``);
        keys that are no option (``store``, ``out``...) are ignored, ``overrides`` win."""
        names = {f.name for f in fields(cls)}
        given = {"models" if k == "model" else k: v for k, v in {**options, **overrides}.items()}
        return cls(**{k: v for k, v in given.items() if k in names})

    def flow_maker(
        self, structures: Sequence[Structure], store: str | None = None, local_checks: bool = True
    ) -> SofteningFlowMaker:
        """The flow maker of these options, checked against ``structures`` before any job exists.

        Parameters
        ----------
        structures
            The materials (their elements are checked against every model and the reference).
        store
            Store spec the results go to (where a correction writes its models).
        local_checks
            Also check that GPAW / VASP can run here (not on a login node whose jobs run
            elsewhere).

        Raises
        ------
        InputError
            Too few frames for the strained ones or for the held-out ones, an MD that keeps too few
            frames, an out-of-range MD setting, an unknown property.
        ModelError, SofteningError
            A model or reference that cannot run these elements; GPAW, VASP or a POTCAR missing.
        """
        from softening.errors import InputError
        from softening.makers import FrameSelectionMaker, MDSamplingMaker, UMLIPStaticMaker
        from softening.makers.correction import CorrectionMaker, models_folder
        from softening.stores.factory import resolve_store_spec
        from softening.workflows.inputs import default_models, load_checked_models
        from softening.workflows.softening import SofteningFlowMaker, reference_maker_for

        models = default_models(self.models)
        if self.frames < 2 * self.strained:
            raise InputError(
                f"--frames {self.frames} is fewer than the {2 * self.strained} strained frames"
            )
        elements = {el.symbol for s in structures for el in s.composition}
        load_checked_models([self.md_model, *models], elements)
        reference_maker = reference_maker_for(
            self.reference, list(structures), self.ecut, self.kspacing, strict=self.strict,
            local_checks=local_checks,
        )  # fmt: skip
        fm = SofteningFlowMaker(
            md_maker=MDSamplingMaker(
                model=self.md_model,
                temperature=self.temperature,
                steps=self.steps,
                timestep=self.timestep,
                stride=self.stride,
                seed=self.seed,
            ),  # fmt: skip
            select_maker=FrameSelectionMaker(
                n_frames=self.frames,
                n_strained_plus=self.strained,
                n_strained_minus=self.strained,
                seed=self.seed,
                method=self.frame_selection,
                model=self.md_model,
            ),  # fmt: skip
            reference_maker=reference_maker,
            umlip_maker=UMLIPStaticMaker(),
            models=models,
            seed=self.seed,
            batch_md=self.batch_md,
            correction_maker=None
            if self.finetune is None
            else CorrectionMaker(
                mode=self.finetune,
                train_frames=self.train_frames,
                seed=self.seed,
                models_dir=str(models_folder(resolve_store_spec(store))),
            ),  # fmt: skip
        )
        if self.finetune is not None and self.train_frames >= self.frames:
            raise InputError(
                f"--train-frames {self.train_frames} leaves none of {self.frames} frames held out"
            )
        fm.select_maker.check_md(fm.md_maker)  # enough MD frames for --frames, before the MD runs
        if self.prop is not None:
            from softening.workflows.properties import property_maker

            # The property with the same reference, for each model (and each corrected model);
            # its flow is made once here, so that its input is checked before anything runs.
            fm.property_maker = property_maker(
                self.prop, fm.reference_maker, models, substitute=self.substitute,
                max_cells=self.max_cells, ion=self.ion, mu=self.mu,
            )  # fmt: skip
            for s in structures:
                fm.property_maker.make(s, s.composition.reduced_formula)
        return fm

    def build(
        self, structure_files: Sequence[str | Path], store: str | None = None,
        local_checks: bool = True,
    ) -> Study:  # fmt: skip
        """Read the structure files, check everything (see :meth:`flow_maker`), make the flow.

        Raises
        ------
        InputError
            An unreadable structure file, and everything :meth:`flow_maker` refuses.
        """
        from softening.datasets.readers import read_structure

        structures = [read_structure(p) for p in structure_files]
        maker = self.flow_maker(structures, store=store, local_checks=local_checks)
        return Study(options=self, structures=structures, maker=maker, flow=maker.make(structures))


@dataclass
class Study:
    """A study ready to run: its options, structures, flow maker and flow."""

    options: StudyOptions
    structures: list[Structure]
    maker: SofteningFlowMaker
    flow: Flow


@dataclass
class StudyOutcome:
    """What a finished study gave.

    Attributes
    ----------
    summary
        The ``softening run --json`` object: ``store``, ``materials`` (one entry per material and
        model), ``failed_jobs``; ``corrections`` with a correction, ``properties`` with a property.
    docs
        The softening results (:class:`~softening.schemas.SofteningDoc`).
    checks
        The verifications of the corrections (:class:`~softening.schemas.VerificationDoc`).
    failures
        One line per failed or unrun job.
    """

    summary: dict[str, Any]
    docs: list[Any] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def save(self, out: str | Path) -> Path | None:
        """Write ``summary.json`` and the parity plot ``parity.png`` into ``out`` (created).

        Returns
        -------
        Path or None
            The parity plot, or ``None`` when no result carries forces.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "summary.json", self.summary, indent=2)  # strict: NaN as null
        return study_parity_plot(self.docs, out / "parity.png")


def collect_study(
    flow: Flow,
    job_store: JobStore,
    outputs: Any,
    failures: Sequence[str],
    options: StudyOptions,
) -> StudyOutcome:
    """The outcome of a finished study flow: its documents and the ``run --json`` summary.

    Parameters
    ----------
    flow
        The study's flow (its uuid finds the property documents).
    job_store
        The store it ran into.
    outputs
        The flow's resolved outputs (:func:`softening.execution.local.flow_outputs`).
    failures
        One line per failed job.
    options
        The study's options (whether it corrected models, computed a property).
    """
    from softening.makers.evaluate import material_summary
    from softening.schemas import StudyResult
    from softening.stores import describe_store
    from softening.workflows.correction import verification_summary

    result = StudyResult.model_validate(outputs)
    docs, checks = result.softening, result.verification
    summary: dict[str, Any] = {
        "store": describe_store(job_store),
        "materials": [{**material_summary(d), "model": d.model.name} for d in docs],
        "failed_jobs": list(failures),
    }
    if options.finetune is not None:
        keys = ("model", "model_path", "train_frames", "before", "after", "warnings")
        summary["corrections"] = [{k: verification_summary(c)[k] for k in keys} for c in checks]
    if options.prop is not None:
        # Found by the flow's uuid among the jobs' hosts (property jobs replace themselves).
        stored = job_store.query(
            {"hosts": flow.uuid, "output.property": options.prop}, properties=["output"]
        )
        summary["properties"] = [
            {
                "property": d["output"]["property"],
                "material_id": d["output"]["material_id"],
                "model": d["output"]["model"]["name"],
                "model_path": d["output"]["model"].get("path"),
                "ratio": d["output"].get("ratio"),
            }
            for d in stored
        ]
    return StudyOutcome(summary=summary, docs=docs, checks=checks, failures=list(failures))


def study_parity_plot(docs: Sequence[Any], path: str | Path) -> Path | None:
    """One parity plot of every result's forces (uMLIP against reference, eV/Å), or ``None``."""
    import numpy as np

    from softening.analysis.plots import parity_plot

    series = {
        f"{d.material_id} {d.model.name}": (np.asarray(d.forces_ref), np.asarray(d.forces_ml))
        for d in docs
        if d.forces_ref is not None
    }
    if not series:
        return None
    scales = {f"{d.material_id} {d.model.name}": d.scale for d in docs}
    return parity_plot(series, path=path, scale=scales, title="uMLIP vs reference forces")
