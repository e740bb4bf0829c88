"""The softening flow: sample -> select -> pair (reference + uMLIP) -> compare."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jobflow import Flow, Maker
from pymatgen.core import Structure

from softening import defaults
from softening.makers.correction import CorrectionMaker, property_after_correction, verify_job
from softening.makers.evaluate import DatasetEvaluationMaker
from softening.makers.force_comparison import compare_job
from softening.makers.md import BatchedMDMaker, MDSamplingMaker
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.select import FrameSelectionMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.makers.vasp import VaspReferenceMaker
from softening.schemas import StudyResult


@dataclass
class SofteningFlowMaker(Maker):
    """Measure the softening of uMLIPs on materials, from MD sampling to the softening scale.

    Per material: one MD job, one selection job, one reference job per frame, one uMLIP job per
    model (all frames, model loaded once) and one comparison job per model. Rerunning the same
    flow into the same store reuses finished MD and reference results (content keys).

    The flow's output is a dict shaped as :class:`~softening.schemas.StudyResult`
    (``{"softening": [...], "verification": [...]}``): once run,
    ``StudyResult.model_validate(flow_outputs(flow, store))`` is the typed container.

    Attributes
    ----------
    name
        Flow name.
    md_maker, select_maker, reference_maker, umlip_maker
        The makers of each role. The reference is an embedded calculator
        (:class:`ReferenceStaticMaker`) or VASP (:class:`VaspReferenceMaker`);
        ``ReferenceStaticMaker(calculator="vasp")`` selects VASP with its default settings.
        VASP jobs need a folder each: ``run_locally(flow, create_folders=True)``.
    models
        uMLIP specs to evaluate; each gets a copy of ``umlip_maker`` with its ``model`` set.
    n_bootstrap, seed
        Bootstrap resamples and seed of the scale's confidence interval.
    correction_maker
        When set, each model is also corrected on the labelled frames of each material and the
        correction verified on the held-out frames (a VerificationDoc per model).
    property_maker
        A registered property's maker (:func:`~softening.workflows.properties.property_maker`:
        phonons, surfaces, defects, migration, mixing...): the property of each material with the
        reference and each model; with ``correction_maker``, also with each corrected model, once
        it is written (property documents, found by ``query_property_docs``; not in the flow's
        output).
    """

    name: str = "softening"
    md_maker: MDSamplingMaker = field(default_factory=MDSamplingMaker)
    select_maker: FrameSelectionMaker = field(default_factory=FrameSelectionMaker)
    reference_maker: ReferenceStaticMaker | VaspReferenceMaker = field(
        default_factory=ReferenceStaticMaker
    )
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    n_bootstrap: int = 1000
    seed: int = 0
    correction_maker: CorrectionMaker | None = None
    property_maker: Any | None = None
    batch_md: bool = False

    def __post_init__(self) -> None:
        # The reference is chosen by settings: calculator="vasp" means the VASP maker.
        ref = self.reference_maker
        if isinstance(ref, ReferenceStaticMaker) and ref.calculator == "vasp":
            self.reference_maker = VaspReferenceMaker()

    def make(self, structures: list[Structure], material_ids: list[str] | None = None) -> Flow:
        """The flow for ``structures`` (material ids default to formula plus structure hash)."""
        if isinstance(structures, Structure):
            structures = [structures]
        ids = material_ids or _default_ids(structures)
        batched = None
        if self.batch_md and len(structures) > 1:
            batched = BatchedMDMaker(settings=self.md_maker).make(list(structures), list(ids))
            batched.append_name(f" ({len(structures)} materials)", dynamic=False)
        subflows = [
            self.make_material(s, mid, None if batched is None else batched.output[mid])
            for s, mid in zip(structures, ids, strict=True)
        ]
        output = {
            role: [doc for sub in subflows for doc in sub.output[role]]
            for role in StudyResult.model_fields
        }
        jobs = subflows if batched is None else [batched, *subflows]
        return Flow(jobs, output=output, name=self.name)

    def make_material(self, structure: Structure, material_id: str, batched: Any = None) -> Flow:
        """The sub-flow of one material; its output is a dict shaped as :class:`StudyResult`
        (one SofteningDoc per model, and one VerificationDoc per model when correcting).
        ``batched``: the material's entry of a batched MD job's output (the MD ran there)."""
        extra = {} if batched is None else {"batched": batched}
        md = self.md_maker.make(structure, material_id=material_id, **extra)
        md.append_name(f" {material_id}")
        select = self.select_maker.make(md.output)
        select.append_name(f" {material_id}")
        jobs = [md, select]
        references = []
        for i in range(self.select_maker.n_frames):
            ref = self.reference_maker.make(select.output.frames[i])
            ref.append_name(f" {material_id} {i}")
            jobs.append(ref)
            references.append(ref.output)
        n_refs = len(jobs)
        frame_ids = [str(i) for i in range(self.select_maker.n_frames)]
        docs, checks = [], []
        for model in self.models:
            umlip = replace(self.umlip_maker, model=model).make(select.output.frames)
            umlip.append_name(f" {material_id} {model}")
            parents = [*(j.uuid for j in jobs[2:n_refs]), umlip.uuid]  # references and uMLIP
            compare = compare_job(
                references, umlip.output, material_id, self.n_bootstrap, self.seed, frame_ids,
                parents,
            )  # fmt: skip
            compare.append_name(f" {material_id} {model}")
            jobs += [umlip, compare]
            docs.append(compare.output)
            if self.correction_maker is not None:
                correct = replace(self.correction_maker, model=model).make(references)
                correct.append_name(f" {material_id} {model}")
                verify = verify_job(references, correct.output)
                verify.append_name(f" {material_id} {model}")
                jobs += [correct, verify]
                checks.append(verify.output)
                if self.property_maker is not None:
                    prop = property_after_correction(
                        structure, material_id, correct.output, self.property_maker, model
                    )
                    prop.name = f"{self.property_maker.name} {material_id} {model} corrected"
                    jobs.append(prop)
        if self.property_maker is not None and self.correction_maker is None:
            maker = replace(self.property_maker, models=list(self.models))
            jobs.append(maker.make(structure, material_id))
        output = {"softening": docs, "verification": checks}
        return Flow(jobs, output=output, name=f"{self.name} {material_id}")


@dataclass
class EvaluateFlowMaker(Maker):
    """Evaluate uMLIPs on dataset files that already carry reference labels (no MD, no DFT).

    One job streams the files once, evaluates every model in batches and writes one
    :class:`SofteningDoc` per material and model (and a pooled one per model) into the store as
    soon as each material's frames are complete (see :mod:`softening.makers.evaluate`): a study of
    thousands of materials is a few large jobs, not one small job per material.
    """

    name: str = "evaluate"
    evaluation_maker: DatasetEvaluationMaker = field(default_factory=DatasetEvaluationMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    n_bootstrap: int = 1000
    seed: int = 0

    def make(self, datasets: list[str | Path]) -> Flow:
        """The flow over ``datasets`` (paths readable where the job runs); its output is the
        ``softening evaluate --json`` summary."""
        maker = replace(
            self.evaluation_maker, models=list(self.models), n_bootstrap=self.n_bootstrap,
            seed=self.seed,
        )  # fmt: skip
        evaluate = maker.make([str(Path(p).resolve()) for p in datasets])
        return Flow([evaluate], output=evaluate.output, name=self.name)


def _default_ids(structures: list[Structure]) -> list[str]:
    """Reduced formula plus a short hash of the structure (``Si-3f9a2c``), one id per structure.

    The hash covers lattice, species and wrapped fractional coordinates
    (:func:`softening.datasets.checks.structure_digest`), so different structures with one
    formula never share an id across runs, and the same structure always gets the same id. The
    same structure given twice in one run gets a ``-2`` suffix the second time
    (:func:`softening.naming.unique_ids`).
    """
    from softening.datasets.checks import structure_digest
    from softening.naming import unique_ids

    return unique_ids(f"{s.composition.reduced_formula}-{structure_digest(s)}" for s in structures)


def reference_maker_for(
    reference: str,
    structures: list[Structure],
    ecut: float = defaults.ECUT,
    kspacing: float = defaults.KSPACING,
    strict: bool = False,
    local_checks: bool = True,
) -> ReferenceStaticMaker | VaspReferenceMaker:
    """The reference maker that ``--reference`` names, checked against ``structures``.

    ``gpaw``, ``emt`` or ``module:Class`` give a :class:`ReferenceStaticMaker` (GPAW's cutoff and
    k-spacing from ``ecut`` and ``kspacing``; EMT's elements checked at once), ``vasp`` a
    :class:`VaspReferenceMaker`. With ``local_checks`` the code must be usable here too (GPAW
    installed; the VASP command and every POTCAR): not on a login node whose jobs run elsewhere.

    Raises
    ------
    SofteningError
        GPAW missing, VASP or a POTCAR missing, an element EMT lacks.
    """
    import importlib.util

    from softening.errors import SofteningError

    if local_checks and reference == "gpaw" and importlib.util.find_spec("gpaw") is None:
        raise SofteningError(
            'GPAW is not installed: pip install "softening[gpaw]", or use --reference emt'
        )
    if reference == "vasp":
        maker = VaspReferenceMaker(strict=strict)
        if local_checks:
            maker.check_environment(structures)  # VASP and POTCARs, before any job runs
        return maker
    maker = ReferenceStaticMaker(calculator=reference, ecut=ecut, kspacing=kspacing)
    if reference == "emt":
        for s in structures:
            maker.get_calculator(s)  # refuses non-EMT elements up front
    return maker
