"""Flows of materials properties computed with uMLIPs against a reference.

- :class:`PhononComparisonFlowMaker`: existing DFT phonon data (phonopy folders) against uMLIPs, no
  DFT run: one batched uMLIP job per model over every material's supercells, one comparison job per
  material and model.
- :class:`PropertiesFlowMaker` and :func:`properties_flow`: the reference computed too, per
  structure and property, with each property's maker from the registry
  (:mod:`softening.makers.properties`).

Outputs are :class:`~softening.schemas.PropertyDoc` subclasses, stored as job outputs;
:func:`query_property_docs` finds them by property, material and model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from jobflow import Flow, JobStore, Maker
from pymatgen.core import Structure

from softening import defaults
from softening.analysis.phonons import DEFAULT_IMAGINARY_TOL, DEFAULT_MESH
from softening.errors import InputError
from softening.makers.phonon_setup import phonon_frames, reference_frames, setup_from_data
from softening.makers.phonons import phonon_compare_job
from softening.makers.properties import DataComparisonFlowMaker, PreparedData
from softening.naming import unique_ids

if TYPE_CHECKING:
    from softening.datasets.phonopy import PhonopyData


@dataclass
class PhononComparisonFlowMaker(DataComparisonFlowMaker):
    """Compare uMLIP phonons with existing DFT phonons (same supercells, same displacements).

    The loop is :class:`~softening.makers.properties.DataComparisonFlowMaker`'s: one batched uMLIP
    job per model over every material's supercells, one comparison per material and model.

    Attributes
    ----------
    name, umlip_maker, models
        As :class:`~softening.makers.properties.DataComparisonFlowMaker`.
    mesh, temperature, imaginary_tol
        As :class:`~softening.makers.phonons.PhononMaker`.
    """

    name: str = "phonon comparison"
    mesh: tuple[int, int, int] = DEFAULT_MESH
    temperature: float = 300.0
    imaginary_tol: float = DEFAULT_IMAGINARY_TOL

    label: ClassVar[str] = "phonons"

    def prepare(self, datasets: Sequence[PhonopyData]) -> list[PreparedData]:
        """Each phonopy folder's set-up, supercells and DFT forces."""
        out = []
        for d in datasets:
            setup = setup_from_data(d)
            out.append(
                PreparedData(
                    key=d.material,
                    frames=phonon_frames(setup, d.material),
                    inputs=(setup, reference_frames(d), list(d.sources)),
                )
            )
        return out

    def compare(self, prepared: PreparedData, umlip: Any, parent_uuids: list[str]):
        """:func:`~softening.makers.phonons.phonon_compare_job`."""
        setup, refs, sources = prepared.inputs
        return phonon_compare_job(
            setup, refs, umlip, prepared.key, list(self.mesh), self.temperature,
            self.imaginary_tol, sources=sources, parent_uuids=parent_uuids,
        )  # fmt: skip


@dataclass
class PropertiesFlowMaker(Maker):
    """Properties of structures with a reference and uMLIPs: each maker's flow per structure.

    Attributes
    ----------
    name
        Flow name.
    makers
        Property makers (from :func:`property_maker`, or any maker whose ``make(structure,
        material_id)`` returns a Flow of property documents).
    """

    name: str = "properties"
    makers: list[Any] = field(default_factory=list)

    def make(
        self, structures: Sequence[Structure], material_ids: Sequence[str] | None = None
    ) -> Flow:
        """The flow over ``structures`` (every flow built, so every input checked, before any job
        runs); output: the property documents, per structure, then property, then model (a
        property whose jobs replace themselves resolves to its list at run time)."""
        ids = list(material_ids or unique_ids(s.composition.reduced_formula for s in structures))
        flows = [
            m.make(s, mid) for s, mid in zip(structures, ids, strict=True) for m in self.makers
        ]
        outputs = [
            r for f in flows for r in (f.output if isinstance(f.output, list) else [f.output])
        ]
        return Flow(flows, output=outputs, name=self.name)


def query_property_docs(
    store: JobStore | str | Path | None,
    property: str | None = None,  # noqa: A002 - the documents' field name
    material_id: str | None = None,
    model: str | None = None,
    formula: str | None = None,
    load_arrays: bool = False,
) -> list[dict[str, Any]]:
    """Stored property documents (newest first) matching every given filter.

    Parameters
    ----------
    store
        A JobStore or a store spec (``None``: the ``store`` setting).
    property
        ``"phonon"``, ...
    material_id
        Exact material id.
    model
        Canonical model name (``CHGNet-0.3.0``) or a spec (``chgnet``; resolved by loading it).
    formula
        Reduced formula.
    load_arrays
        Also load the large arrays from the data store.
    """
    from softening.stores.factory import get_job_store

    job_store = store if isinstance(store, JobStore) else get_job_store(store)
    job_store.connect()
    criteria: dict[str, Any] = {
        "output.property": {"$exists": True},
        "output.values": {"$exists": True},
    }
    if property:
        criteria["output.property"] = property
    if material_id:
        criteria["output.material_id"] = material_id
    if formula:
        criteria["output.formula"] = formula
    if model:
        criteria["output.model.name"] = _canonical(model)
    docs = job_store.query(
        criteria, properties=["output", "uuid", "completed_at"], load=load_arrays,
        sort={"completed_at": -1},
    )  # fmt: skip
    return [{**d["output"], "uuid": d["uuid"], "completed_at": d.get("completed_at")} for d in docs]


def _canonical(spec: str) -> str:
    """The canonical name of a model spec; a name that loads no model is taken as it is."""
    from softening.errors import ModelError
    from softening.models.factory import canonical_name

    try:
        return canonical_name(spec)
    except ModelError:
        return spec


def property_report(
    store: JobStore | str | Path | None,
    out: str | Path,
    model: str | None = None,
    material_id: str | None = None,
) -> dict[str, Any]:
    """One parity plot per stored property (reference on x, each model on y), the latest result
    per material, model and property; what ``softening report`` adds for property documents.

    Returns
    -------
    dict
        ``{"property_plots": {property: PNG path}, "property_results": count}``.
    """
    from softening.analysis.property_plots import property_parity_plot
    from softening.makers.properties import get_property, property_names, result_key

    known = set(property_names())
    docs = [
        d
        for d in query_property_docs(store, model=model, material_id=material_id)
        if d["property"] in known  # a property whose module is not loaded here is left out
    ]
    latest: dict[tuple, dict[str, Any]] = {}
    for d in docs:  # newest first
        latest.setdefault(result_key(d), d)
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for (prop, _, name, _), d in latest.items():
        ref, ml = series.setdefault(prop, {}).setdefault(name, ([], []))
        for x, y in get_property(prop).pairs(get_property(prop).validate(d)):
            ref.append(x)
            ml.append(y)
    out = Path(out)
    plots = {}
    for prop, by_model in series.items():
        by_model = {k: v for k, v in by_model.items() if v[0]}
        if not by_model:
            continue
        plots[prop] = str(
            property_parity_plot(
                by_model, out / f"property_{prop}.png", quantity=get_property(prop).axis,
                title=f"{prop}: uMLIP vs reference",
            )
        )  # fmt: skip
    return {"property_plots": plots, "property_results": len(latest)}


def properties_flow(
    structure_files: Sequence[str | Path],
    properties: Sequence[str],
    models: Sequence[str],
    reference: str = defaults.REFERENCE,
    ecut: float = defaults.ECUT,
    kspacing: float = defaults.KSPACING,
    relax: bool = False,
    local_checks: bool = True,
    **options: Any,
) -> tuple[Flow, list[str], list[Any]]:
    """The flow of ``softening properties`` (and ``submit --property``) from its options.

    Everything is checked before any job exists: the property names, the structure files, the
    reference (GPAW installed, VASP and POTCARs, EMT's elements; with ``local_checks`` only, since
    a login node need not run them), every model against every element, and each property's own
    input (its maker is built and makes its flow here).

    Parameters
    ----------
    structure_files
        Structure files (material ids: their stems).
    properties
        Registered property names (:func:`~softening.makers.properties.property_names`); default
        ``phonon``.
    models
        uMLIP specs.
    reference, ecut, kspacing
        ``gpaw``, ``emt``, ``vasp`` or ``module:Class``; GPAW's cutoff (eV) and k-spacing (1/Å).
    relax
        Relax with each method first (embedded references only), where the property can.
    local_checks
        Also check that the reference code can run here.
    options
        The property options each property takes what it knows of: phonons'
        ``supercell_matrix``, ``min_length``, ``displacement``, ``mesh``, ``temperature``;
        mixing's ``substitute``, ``max_cells``...

    Returns
    -------
    (Flow, list[str], list)
        The flow, the material ids, the loaded models.
    """
    from softening.datasets.readers import read_structure
    from softening.makers.properties import get_property
    from softening.models import load_model
    from softening.workflows.softening import reference_maker_for

    props = list(dict.fromkeys(properties)) or ["phonon"]
    specs = [get_property(p) for p in props]  # an unknown name fails here
    if reference == "vasp" and relax:
        raise InputError("--relax needs an embedded reference (gpaw, emt); relax with VASP first")
    structs = [read_structure(p) for p in structure_files]
    ids = unique_ids(Path(p).stem for p in structure_files)
    reference_maker = reference_maker_for(
        reference, structs, ecut, kspacing, local_checks=local_checks
    )
    elements = {el.symbol for s in structs for el in s.composition}
    elements |= _substituted_elements(options)
    loaded = []
    for spec in models:
        m = load_model(spec)
        m.check_elements(elements)
        loaded.append(m)
    makers = [
        property_maker(s.name, reference_maker, models, relax=relax, **options) for s in specs
    ]
    flow = PropertiesFlowMaker(makers=makers).make(structs, ids)
    return flow, ids, loaded


def _substituted_elements(options: dict[str, Any]) -> set[str]:
    """Elements a substitution option brings in (``Mg:Ca`` -> Ca), so that models are checked
    against them before anything runs."""
    text = options.get("substitute")
    if not text:
        return set()
    from softening.analysis.orderings import parse_substitution

    items = text if isinstance(text, list | tuple) else [text]
    try:
        return {parse_substitution(t)[1] for t in items}
    except ValueError as exc:
        raise InputError(f"--substitute: {exc}") from exc


def property_maker(
    name: str, reference_maker: Any, models: Sequence[str] = (), relax: bool = False,
    **options: Any,
) -> Any:  # fmt: skip
    """The maker of registered property ``name`` with the reference, models and options;
    ``relax`` where the property has the option (barriers always relax their end points).

    Raises
    ------
    InputError
        An unknown property.
    """
    from softening.makers.properties import get_property

    spec = get_property(name)
    relax = relax and spec.relaxable
    return spec.make_maker(reference_maker, list(models), {"relax": relax, **options})


def mixing_flow(
    data_paths: Sequence[str | Path],
    models: Sequence[str],
    end_members: str | Sequence[str] | None = None,
) -> tuple[Flow, list[str]]:
    """The flow of ``softening mixing``: existing solid-solution data against each model.

    Everything is read and checked before any job exists: every data set (a cell without an
    energy, a truncated vasprun, two cells with one name), the end members (a cell that is no
    combination of them, one no cell is made of alone), and each model against every cell's
    elements; each error is one line naming the cell.

    Parameters
    ----------
    data_paths
        One data set (system) each (see :func:`~softening.datasets.mixing.read_mixing_data`).
    models
        uMLIP specs.
    end_members
        ``"AlN,SiC"`` or a list: end members of every data set; ``None``: the pure elements.

    Returns
    -------
    (Flow, list[str])
        The flow (output: one :class:`~softening.schemas.MixingDoc` per system and model) and
        the models' canonical names.
    """
    from softening.datasets.mixing import read_mixing_data
    from softening.errors import ModelError
    from softening.makers.mixing import MixingComparisonFlowMaker
    from softening.makers.mixing_setup import parse_end_members
    from softening.models import load_model

    members = parse_end_members(end_members)
    datasets = [read_mixing_data(p) for p in data_paths]
    maker = MixingComparisonFlowMaker(models=list(models), end_members=members)
    loaded = [load_model(spec) for spec in models]
    for m in loaded:
        for d in datasets:
            for cell in d.cells:
                try:
                    m.check_elements({el.symbol for el in cell.structure.composition})
                except ModelError as exc:
                    raise ModelError(f"{d.name}: cell {cell.frame_id!r}: {exc}") from None
    return maker.make(datasets), [m.name for m in loaded]


def barriers_flow(folders: Sequence[str | Path], models: Sequence[str]) -> tuple[Flow, list[str]]:
    """The flow of ``softening barriers``: existing VASP NEB runs against each model.

    Every folder is read and checked before any job exists (a missing image, images with
    different atoms, an unreadable result: one line naming the image), and each model against
    every element.

    Returns
    -------
    (Flow, list[str])
        The flow (output: one :class:`~softening.schemas.MigrationDoc` per folder and model) and
        the models' canonical names.
    """
    from softening.datasets.neb import read_neb_folder
    from softening.makers.migration import MigrationComparisonFlowMaker
    from softening.workflows.inputs import load_checked_models

    datasets = [read_neb_folder(f) for f in folders]
    elements = {el.symbol for d in datasets for el in d.images[0].structure.composition}
    loaded = load_checked_models(models, elements)
    flow = MigrationComparisonFlowMaker(models=list(models)).make(datasets)
    return flow, [m.name for m in loaded]
