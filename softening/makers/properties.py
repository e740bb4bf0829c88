"""Properties as plug-ins: one registry entry per property, one base maker for the shared loop.

A property is one module (``makers/phonons.py``, ``surfaces.py``, ``vacancy.py``, ``barrier.py``,
``mixing.py``, ``migration.py``, ``point_defects.py``,
or any module of a user's) that defines its maker, its comparison and a :class:`PropertySpec`
registered with :func:`register_property`. Everything that shows or runs properties reads the
registry, never a property's name: ``softening properties --property NAME``, ``submit
--property``, ``run --finetune --property``, ``report``'s parity plots, the ``--json`` records
(:mod:`softening.workflows.property_results`) and the tables of the command line.

The built-in properties are imported lazily, on first use of the registry, as the model backends
are (:mod:`softening.models.backends`)::

    from softening.makers.properties import PropertySpec, register_property

    register_property(PropertySpec(name="bulk_modulus", doc_class=BulkModulusDoc,
                                   make_maker=make_bulk_modulus_maker, pairs=bulk_pairs,
                                   axis="bulk modulus (GPa)", json_key="bulk_moduli",
                                   rows=bulk_rows))

:class:`PropertyFlowMaker` holds the loop most properties share: frames from the structure ->
one reference job per frame (reused by content key) -> one batched uMLIP job per model -> one
comparison job per model; with ``relax``, each method relaxes the frames' positions itself first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from jobflow import Flow, Job, Maker, job
from pymatgen.core import Structure

from softening.errors import InputError
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    PropertyDoc,
    UMLIPResults,
    flag_texts,
)

__all__ = [
    "ITEM_COLUMNS",
    "DataComparisonFlowMaker",
    "PreparedData",
    "PropertyFlowMaker",
    "PropertySpec",
    "get_property",
    "property_names",
    "property_specs",
    "register_property",
    "result_key",
]

#: Frame id of the perfect bulk cell a property compares against (surfaces, vacancies): relaxations
#: give it a single point, never move it.
BULK = "bulk"

#: Columns of the item-style property table (surfaces, vacancies, barriers, mixing...).
ITEM_COLUMNS = ("material", "model", "property", "item", "reference", "uMLIP", "ratio", "flags")


def _no_rows(doc: Any) -> list[dict[str, Any]]:
    return []


def default_record(doc: Any) -> dict[str, Any]:
    """The per-material JSON record every property shares: identity, headline ratio, flags."""
    return {
        "material": doc.material_id,
        "property": doc.property,
        "ratio": doc.ratio,
        "reference": doc.reference.name,
        "flags": flag_texts(doc.flags),
    }


@dataclass(frozen=True)
class PropertySpec:
    """What the package needs to know of one property.

    Attributes
    ----------
    name
        The property's name (``--property NAME``; the documents' ``property`` field).
    doc_class
        Its :class:`~softening.schemas.PropertyDoc` subclass.
    make_maker
        ``make_maker(reference_maker, models, options) -> Maker`` whose ``make(structure,
        material_id)`` returns a Flow of the property's jobs; ``options`` holds the command's
        property options (``relax``, ``supercell_matrix``, ``substitute``...), each property taking
        those it knows.
    pairs
        ``pairs(doc) -> [(reference, model), ...]``: the values of its parity plots and summaries.
    axis
        Label of those values, with unit (a matplotlib string).
    json_key
        Key of its rows in the ``--json`` object (``None``: no rows, as phonons).
    rows
        ``rows(doc) -> [dict, ...]``: its ``--json`` rows.
    record
        ``record(doc) -> dict``: its per-material (or per-system) ``--json`` record.
    records_key
        Key of those records in the ``--json`` object.
    summarize
        Add the MAE, mean ratio and fraction underestimated of ``pairs`` to the ``--json``
        ``summary`` and the terminal.
    items
        ``items(doc) -> [(item, reference, model, unit), ...]``: the rows of the item-style table
        (:data:`ITEM_COLUMNS`); ignored when ``table_cells`` is given.
    table_title, table_columns, table_cells, table_caption
        The terminal table: one per title; ``table_cells(doc) -> [[str, ...], ...]`` for a table
        of its own columns (every column but the last, ``flags``, which the table adds).
    summary_line
        ``summary_line(model_name, record) -> str | None``: a line printed per record below the
        table (``None``: none).
    figures
        ``figures(docs, out) -> {name: path or dict}``: figures beyond the parity plot.
    parity_figure
        Draw the parity plot of ``pairs`` among a command's figures.
    relaxable
        Whether ``--relax`` applies.
    description
        One line for ``--help``.
    item_key
        ``item_key(stored document dict) -> str`` where one material and model may hold several
        results (a host's hops): what tells them apart, so that the newest of each is kept.
    """

    name: str
    doc_class: type[PropertyDoc]
    make_maker: Callable[[Any, list[str], Mapping[str, Any]], Maker]
    pairs: Callable[[Any], list[tuple[float, float]]]
    axis: str
    json_key: str | None = None
    rows: Callable[[Any], list[dict[str, Any]]] = _no_rows
    record: Callable[[Any], dict[str, Any]] = default_record
    records_key: str = "materials"
    summarize: bool = True
    items: Callable[[Any], list[tuple[str, float, float, str]]] | None = None
    table_title: str = "Properties: uMLIP against reference"
    table_columns: tuple[str, ...] = ITEM_COLUMNS
    table_cells: Callable[[Any], list[list[str]]] | None = None
    table_caption: str = "ratio = uMLIP / reference; < 1: underestimated (softened)"
    summary_line: Callable[[str, dict[str, Any]], str | None] | None = None
    figures: Callable[[Sequence[Any], Any], dict[str, Any]] | None = None
    parity_figure: bool = True
    relaxable: bool = True
    description: str = ""
    item_key: Callable[[dict[str, Any]], str] | None = None

    def validate(self, document: Any) -> PropertyDoc:
        """A stored document (dict, ``@`` keys allowed) as this property's document class."""
        if isinstance(document, self.doc_class):
            return document
        return self.doc_class.model_validate(
            {k: v for k, v in dict(document).items() if not str(k).startswith("@")}
        )


_REGISTRY: dict[str, PropertySpec] = {}

#: Built-in property modules, imported on first use; each registers its specs when imported.
_BUILTIN = (
    "softening.makers.phonons",
    "softening.makers.surfaces",
    "softening.makers.vacancy",
    "softening.makers.barrier",
    "softening.makers.mixing",
    "softening.makers.migration",
    "softening.makers.point_defects",
)
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN:
            importlib.import_module(module)


def register_property(spec: PropertySpec, replace_existing: bool = False) -> PropertySpec:
    """Register ``spec`` (a property name registered twice is refused unless
    ``replace_existing``); returns it."""
    if not replace_existing and spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"property {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_property(name: str) -> None:
    """Remove a registered property (tests that register their own)."""
    _REGISTRY.pop(name, None)


#: The order built-in properties are listed in (whatever order their modules were imported in).
_BUILTIN_ORDER = ("phonon", "surface", "vacancy", "barrier", "mixing", "defect", "migration")


def property_specs() -> list[PropertySpec]:
    """Every registered property: the built-ins, then the others in registration order."""
    _load_builtins()
    rank = {name: k for k, name in enumerate(_BUILTIN_ORDER)}
    return sorted(_REGISTRY.values(), key=lambda s: rank.get(s.name, len(rank)))


def property_names() -> list[str]:
    """The names of every registered property."""
    return [s.name for s in property_specs()]


def result_key(document: Mapping[str, Any]) -> tuple:
    """What makes a stored property document one result: property, material, model, and the
    property's ``item_key`` where it has one (the newest document of each key is the result)."""
    _load_builtins()
    spec = _REGISTRY.get(document["property"])
    item = spec.item_key(document) if spec is not None and spec.item_key is not None else None
    return (document["property"], document["material_id"], document["model"]["name"], item)


def get_property(name: str) -> PropertySpec:
    """The spec of property ``name``.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones).
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"--property {name}: choose from {', '.join(property_names())}") from None


# ---- relaxation with each method's own forces ----


def relax_positions(
    structure: Structure, calc, fmax: float, steps: int, cell: bool = False
) -> tuple[Structure, float, bool]:
    """``structure`` with positions relaxed (cell fixed, or with ``cell`` also the cell through
    ASE's FrechetCellFilter; BFGS), its energy (eV) and whether the largest force (and stress)
    fell below ``fmax`` eV/Å within ``steps``."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calc
    target = FrechetCellFilter(atoms) if cell else atoms
    converged = bool(BFGS(target, logfile=None).run(fmax=fmax, steps=steps))
    return AseAtomsAdaptor.get_structure(atoms), float(atoms.get_potential_energy()), converged


@job(data=["frames"])
def relax_frames_job(
    frames: list[FrameSpec],
    reference_maker: ReferenceStaticMaker | None,
    model: str | None,
    fmax: float = 0.05,
    steps: int = 200,
    cell: bool = False,
) -> UMLIPResults | dict[str, Any]:
    """Relax the positions of every frame but the bulk one with the reference's embedded calculator
    or with ``model``; the bulk frame gets a single point. A model returns a
    :class:`UMLIPResults`, the reference ``{"frames": [FrameResult, ...]}``; frames that did not
    reach ``fmax`` are flagged ``unconverged``."""
    results = []
    if model is not None:
        from softening.models import load_model

        loaded = load_model(model)
        calc = loaded.calculator()
        code = CodeInfo(name=loaded.name, version=loaded.version, settings={"relax_fmax": fmax})
    for f in frames:
        if model is None:
            calc, version = reference_maker.get_calculator(f.structure)
            code = CodeInfo(
                name=reference_maker.calculator,
                version=version,
                settings={**reference_maker.code_settings(f.structure), "relax_fmax": fmax},
            )
        if f.frame_id == BULK:
            s, e, ok = f.structure, None, True
            from softening.makers.reference import single_point

            e = single_point(f.structure, calc, compute_stress=False)["energy"]
        else:
            s, e, ok = relax_positions(f.structure, calc, fmax, steps, cell)
        results.append(
            FrameResult(
                frame_id=f.frame_id,
                material_id=f.material_id,
                formula=f.formula,
                structure=s,
                energy=e,
                code=code,
                converged=ok,
                flags=[] if ok else ["unconverged"],
            )  # fmt: skip
        )
    if model is not None:
        return UMLIPResults(model=loaded.info, frames=results)
    return {"frames": results}


# ---- the shared loop ----------------------------------------------------------------------------


def check_relaxing_reference(reference_maker: Any) -> None:
    """Relaxation runs the reference's calculator here: only embedded references can."""
    if not isinstance(reference_maker, ReferenceStaticMaker) or (
        reference_maker.calculator == "vasp"
    ):
        raise InputError("relax: only embedded references (gpaw, emt) relax here")


@dataclass
class PropertyFlowMaker(Maker):
    """The loop of a property computed on frames made from one structure.

    Subclasses give :meth:`inputs` (the comparison's inputs and the frames to label) and
    :meth:`compare` (the comparison job of one model); the loop is here: one reference job per
    frame (reused by content key, so a rerun computes only what is missing), one batched uMLIP
    job per model, one comparison job per model. With ``relax``, each method relaxes the
    frames' positions with its own forces (cell fixed; embedded references only) and the
    comparison gets the relaxed results too.

    Attributes
    ----------
    name
        Flow name (the property's name).
    reference_maker
        :class:`ReferenceStaticMaker` (GPAW; EMT for tests) or a VASP reference maker.
    umlip_maker
        Template of the uMLIP jobs; each model gets a copy with its ``model`` set.
    models
        uMLIP specs.
    relax
        Also relax with each method (see above).
    relax_fmax
        Force threshold of that relaxation, eV/Å.
    relax_steps
        Most optimiser steps of that relaxation.
    """

    name: str = "property"
    reference_maker: Any = field(default_factory=ReferenceStaticMaker)
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    relax: bool = False
    relax_fmax: float = 0.05
    relax_steps: int = 200

    #: Whether the relaxed comparison also needs the unrelaxed single points (vacancies report
    #: both; surfaces report the relaxed ones only).
    unrelaxed_with_relaxed: ClassVar[bool] = True
    #: Whether relaxations also relax the cell (mixing: orderings of different composition).
    relax_cell: ClassVar[bool] = False

    def inputs(self, structure: Structure, material_id: str) -> tuple[Any, list[FrameSpec]]:
        """The comparison's inputs and the frames both sides label (checked: bad input raises
        :class:`InputError` before any job exists)."""
        raise NotImplementedError

    def extra_jobs(self, inputs: Any, material_id: str) -> list[Job]:
        """Jobs the comparisons need besides the frames' single points (e.g. each method's own
        elemental references); they may put their outputs (references) into ``inputs``."""
        return []

    #: The comparison job: called as ``compare_job(inputs, references, umlip,
    #: relaxed_references, relaxed_umlip, parent_uuids)`` unless :meth:`compare` is overridden.
    compare_job: ClassVar[Callable[..., Job] | None] = None

    def compare(
        self,
        inputs: Any,
        references: Any,
        umlip: Any,
        relaxed_references: Any,
        relaxed_umlip: Any,
        parent_uuids: list[str],
    ) -> Job:
        """The comparison job of one model (its output: the property's document)."""
        job_function = type(self).compare_job
        if job_function is None:
            raise NotImplementedError(f"{type(self).__name__} gives no compare_job")
        return job_function(
            inputs, references, umlip, relaxed_references, relaxed_umlip, parent_uuids
        )

    def make(self, structure: Structure, material_id: str | None = None) -> Flow:
        """The flow for ``structure``; output: one document per model."""
        mid = material_id or structure.composition.reduced_formula
        inputs, frames = self.inputs(structure, mid)
        if self.relax:
            check_relaxing_reference(self.reference_maker)
        jobs: list[Job] = list(self.extra_jobs(inputs, mid))
        refs = None
        if not self.relax or self.unrelaxed_with_relaxed:
            ref_jobs = []
            for frame in frames:
                j = self.reference_maker.make(frame)
                j.append_name(f" {mid} {frame.frame_id}")
                ref_jobs.append(j)
            jobs += ref_jobs
            refs = [j.output for j in ref_jobs]
        ref_relaxed = None
        if self.relax:
            rr = relax_frames_job(
                frames, self.reference_maker, None, self.relax_fmax, self.relax_steps,
                self.relax_cell,
            )  # fmt: skip
            rr.name = f"relax {self.name} {self.reference_maker.calculator} {mid}"
            jobs.append(rr)
            ref_relaxed = rr.output["frames"]
        outputs = []
        for spec in self.models:
            parents = [j.uuid for j in jobs]
            ml_out, ml_relaxed = None, None
            if not self.relax or self.unrelaxed_with_relaxed:
                ml = replace(self.umlip_maker, model=spec).make(frames)
                ml.append_name(f" {spec} {mid} {self.name}")
                jobs.append(ml)
                parents.append(ml.uuid)
                ml_out = ml.output
            if self.relax:
                mr = relax_frames_job(
                    frames, None, spec, self.relax_fmax, self.relax_steps, self.relax_cell
                )
                mr.name = f"relax {self.name} {spec} {mid}"
                jobs.append(mr)
                parents.append(mr.uuid)
                ml_relaxed = mr.output
            cmp = self.compare(inputs, refs, ml_out, ref_relaxed, ml_relaxed, parents)
            cmp.append_name(f" {mid} {spec}" + (" relaxed" if self.relax else ""))
            jobs.append(cmp)
            outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {mid}")


# ---- the shared loop over existing data ----------------------------------------------------------


@dataclass
class PreparedData:
    """One data set ready to compare: its name, the frames every model labels, and what its
    comparison needs besides the models' results (reference energies, set-up...)."""

    key: str
    frames: list[FrameSpec]
    inputs: Any = None


@dataclass
class DataComparisonFlowMaker(Maker):
    """The loop of a property compared on existing reference data (no reference run).

    Subclasses give :meth:`prepare` (every data set checked and turned into frames before any
    job exists) and :meth:`compare` (the comparison job of one data set and model); the loop is
    here: one batched uMLIP job per model over every frame of every data set (the model loads
    once and evaluates them in memory-bounded batches), one comparison job per data set and model.

    Attributes
    ----------
    name
        Flow name.
    umlip_maker
        Template of the uMLIP jobs (device, dtype, memory budget); one copy per model.
    models
        uMLIP specs.
    """

    name: str = "comparison"
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])

    #: What the uMLIP jobs are named after (``umlip static chgnet <label>``).
    label: ClassVar[str] = "frames"

    def prepare(self, datasets: Sequence[Any]) -> list[PreparedData]:
        """The data sets as frames and comparison inputs (checked)."""
        raise NotImplementedError

    def compare(self, prepared: PreparedData, umlip: Any, parent_uuids: list[str]) -> Job:
        """The comparison job of one data set with one model's results."""
        raise NotImplementedError

    def make(self, datasets: Sequence[Any]) -> Flow:
        """The flow over ``datasets``; output: one document per data set and model, data sets
        first.

        Raises
        ------
        InputError
            Two data sets with one name, and whatever :meth:`prepare` refuses.
        """
        prepared = self.prepare(datasets)
        keys = [p.key for p in prepared]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise InputError(f"two data sets named {dupes[0]!r}: give each once")
        frames = [f for p in prepared for f in p.frames]
        jobs, outputs = [], {}
        for spec in self.models:
            ml = replace(self.umlip_maker, model=spec).make(frames)
            ml.append_name(f" {spec} {self.label}")
            jobs.append(ml)
            for p in prepared:
                cmp = self.compare(p, ml.output, [ml.uuid])
                cmp.append_name(f" {p.key} {spec}")
                jobs.append(cmp)
                outputs[(p.key, spec)] = cmp.output
        ordered = [outputs[(k, s)] for k in keys for s in self.models]
        return Flow(jobs, output=ordered, name=self.name)
