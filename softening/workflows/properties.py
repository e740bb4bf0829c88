"""Flows of materials properties computed with uMLIPs against a reference (phonons so far).

- :class:`PhononComparisonFlowMaker`: existing DFT phonon data (phonopy folders) against uMLIPs, no
  DFT run: one batched uMLIP job per model over every material's supercells, one comparison job per
  material and model.
- :class:`PropertiesFlowMaker`: the reference computed too, per structure and property
  (:class:`~softening.makers.phonons.PhononMaker`).

Outputs are :class:`~softening.schemas.PropertyDoc` subclasses, stored as job outputs;
:func:`query_property_docs` finds them by property, material and model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Flow, JobStore, Maker
from pymatgen.core import Structure

from softening.analysis.phonons import DEFAULT_IMAGINARY_TOL, DEFAULT_MESH
from softening.errors import InputError
from softening.makers.phonons import (
    PhononMaker,
    phonon_compare_job,
    phonon_frames,
    reference_frames,
    setup_from_data,
)
from softening.makers.umlip import UMLIPStaticMaker

if TYPE_CHECKING:
    from softening.datasets.phonopy import PhonopyData

#: Properties :class:`PropertiesFlowMaker` computes.
PROPERTIES = ("phonon",)


@dataclass
class PhononComparisonFlowMaker(Maker):
    """Compare uMLIP phonons with existing DFT phonons (same supercells, same displacements).

    Attributes
    ----------
    name
        Flow name.
    umlip_maker
        Template of the uMLIP jobs (device, dtype, memory budget); one copy per model.
    models
        uMLIP specs.
    mesh, temperature, imaginary_tol
        As :class:`~softening.makers.phonons.PhononMaker`.
    """

    name: str = "phonon comparison"
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    mesh: tuple[int, int, int] = DEFAULT_MESH
    temperature: float = 300.0
    imaginary_tol: float = DEFAULT_IMAGINARY_TOL

    def make(self, datasets: Sequence[PhonopyData]) -> Flow:
        """The flow over ``datasets`` (from :func:`~softening.datasets.phonopy.read_phonopy_folder`);
        its output: one :class:`PhononDoc` per material and model, materials first."""
        names = [d.material for d in datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"two folders named {dupes[0]!r}: give each material once")
        setups = {d.material: setup_from_data(d) for d in datasets}
        refs = {d.material: reference_frames(d) for d in datasets}
        # All supercells of all materials in one job per model: the model is loaded once and
        # evaluates them in memory-bounded batches.
        frames = [f for d in datasets for f in phonon_frames(setups[d.material], d.material)]
        jobs, outputs = [], {}
        for spec in self.models:
            ml = replace(self.umlip_maker, model=spec).make(frames)
            ml.append_name(f" {spec} phonons")
            jobs.append(ml)
            for d in datasets:
                cmp = phonon_compare_job(
                    setups[d.material], refs[d.material], ml.output, d.material, list(self.mesh),
                    self.temperature, self.imaginary_tol, sources=d.sources,
                    parent_uuids=[ml.uuid],
                )  # fmt: skip
                cmp.append_name(f" {d.material} {spec}")
                jobs.append(cmp)
                outputs[(d.material, spec)] = cmp.output
        ordered = [outputs[(d.material, s)] for d in datasets for s in self.models]
        return Flow(jobs, output=ordered, name=self.name)


@dataclass
class PropertiesFlowMaker(Maker):
    """Properties of structures with a reference and uMLIPs (``phonon`` so far).

    Attributes
    ----------
    name
        Flow name.
    properties
        Property names (see :data:`PROPERTIES`).
    phonon_maker
        The phonon maker (reference maker, models, supercell, displacement...).
    """

    name: str = "properties"
    properties: list[str] = field(default_factory=lambda: ["phonon"])
    phonon_maker: PhononMaker = field(default_factory=PhononMaker)

    def make(
        self, structures: Sequence[Structure], material_ids: Sequence[str] | None = None
    ) -> Flow:
        """The flow over ``structures``; output: the property documents, per structure."""
        unknown = sorted(set(self.properties) - set(PROPERTIES))
        if unknown:
            raise InputError(
                f"unknown property {unknown[0]!r}; choose from {', '.join(PROPERTIES)}"
            )
        ids = list(material_ids) if material_ids else _unique_ids(structures)
        flows = [self.phonon_maker.make(s, mid) for s, mid in zip(structures, ids, strict=True)]
        # One flat list of references (one per structure and model; one per structure with
        # relaxation, which resolves to that structure's list at run time).
        outputs = [
            r for f in flows for r in (f.output if isinstance(f.output, list) else [f.output])
        ]
        return Flow(flows, output=outputs, name=self.name)


def _unique_ids(structures: Sequence[Structure]) -> list[str]:
    ids: list[str] = []
    for s in structures:
        base = s.composition.reduced_formula
        mid, k = base, 2
        while mid in ids:
            mid, k = f"{base}-{k}", k + 1
        ids.append(mid)
    return ids


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


#: Per property: (axis label, rows of (reference, model) values in a stored document's ``values``).
def _property_points(doc: dict[str, Any]) -> list[tuple[float, float]]:
    v = doc.get("values") or {}
    prop = doc.get("property")
    if prop == "phonon":
        return [(v["omega_max_ref"], v["omega_max"])]
    if prop == "surface":
        return [(r["gamma_ref"], r["gamma"]) for r in v.get("rows", [])]
    if prop == "vacancy":
        return [(r["e_vac_ref"], r["e_vac"]) for r in v.get("rows", [])]
    if prop == "barrier":
        return [(v["barrier_ref"], v["barrier"])]
    return []


PROPERTY_AXES = {
    "phonon": "highest phonon frequency (THz)",
    "surface": "surface energy (J/m$^2$)",
    "vacancy": "vacancy formation energy (eV)",
    "barrier": "migration barrier (eV)",
}


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
    from softening.analysis.plots import property_parity_plot

    docs = query_property_docs(store, model=model, material_id=material_id)
    latest: dict[tuple, dict[str, Any]] = {}
    for d in docs:  # newest first
        latest.setdefault((d["property"], d["material_id"], d["model"]["name"]), d)
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for (prop, _, name), d in latest.items():
        ref, ml = series.setdefault(prop, {}).setdefault(name, ([], []))
        for x, y in _property_points(d):
            ref.append(x)
            ml.append(y)
    out = Path(out)
    plots = {}
    for prop, by_model in series.items():
        by_model = {k: v for k, v in by_model.items() if v[0]}
        if not by_model or prop not in PROPERTY_AXES:
            continue
        plots[prop] = str(
            property_parity_plot(
                by_model, out / f"property_{prop}.png", quantity=PROPERTY_AXES[prop],
                title=f"{prop}: uMLIP vs reference",
            )
        )  # fmt: skip
    return {"property_plots": plots, "property_results": len(latest)}


#: Properties of :mod:`softening.makers.surfaces` / :mod:`softening.makers.defects`.
DEFECT_PROPERTIES = ("surface", "vacancy", "barrier")


def material_ids_from_paths(paths: Sequence[str | Path]) -> list[str]:
    """Material ids of structure files: their stems, made unique with ``-2``, ``-3``..."""
    ids: list[str] = []
    for p in paths:
        base = Path(p).stem
        mid, k = base, 2
        while mid in ids:
            mid, k = f"{base}-{k}", k + 1
        ids.append(mid)
    return ids


def properties_flow(
    structure_files: Sequence[str | Path],
    properties: Sequence[str],
    models: Sequence[str],
    reference: str = "gpaw",
    ecut: float = 500.0,
    kspacing: float = 0.25,
    relax: bool = False,
    supercell_matrix: list[list[int]] | None = None,
    min_length: float = 20.0,
    displacement: float = 0.01,
    mesh: tuple[int, int, int] = DEFAULT_MESH,
    temperature: float = 300.0,
    local_checks: bool = True,
) -> tuple[Flow, list[str], list[Any]]:
    """The flow of ``softening properties`` (and ``submit --property``) from its options.

    Everything is checked before any job exists: the property names, the structure files, the
    reference (GPAW installed, VASP and POTCARs, EMT's elements; with ``local_checks`` only, since
    a login node need not run them), and every model against every element.

    Parameters
    ----------
    structure_files
        Structure files (material ids: their stems).
    properties
        ``phonon``, or any of ``surface``, ``vacancy``, ``barrier`` (not mixed with phonon).
    models
        uMLIP specs.
    reference, ecut, kspacing
        ``gpaw``, ``emt``, ``vasp`` or ``module:Class``; GPAW's cutoff (eV) and k-spacing (1/Å).
    relax
        Relax with each method first (embedded references only).
    supercell_matrix, min_length, displacement, mesh, temperature
        Phonon settings (see :class:`~softening.makers.phonons.PhononMaker`).
    local_checks
        Also check that the reference code can run here.

    Returns
    -------
    (Flow, list[str], list)
        The flow, the material ids, the loaded models.
    """
    from softening.datasets.readers import read_structure
    from softening.models import load_model
    from softening.workflows.softening import reference_maker_for

    props = list(properties) or ["phonon"]
    known = (*PROPERTIES, *DEFECT_PROPERTIES)
    unknown = sorted(set(props) - set(known))
    if unknown:
        raise InputError(f"--property {unknown[0]}: choose from {', '.join(known)}")
    defects = set(props) & set(DEFECT_PROPERTIES)
    if defects and set(props) - set(DEFECT_PROPERTIES):
        raise InputError(
            f"--property phonon cannot run with {'/'.join(sorted(defects))} in one command: "
            "run it separately"
        )
    if reference == "vasp" and relax:
        raise InputError("--relax needs an embedded reference (gpaw, emt); relax with VASP first")
    structs = [read_structure(p) for p in structure_files]
    ids = material_ids_from_paths(structure_files)
    reference_maker = reference_maker_for(
        reference, structs, ecut, kspacing, local_checks=local_checks
    )
    elements = {el.symbol for s in structs for el in s.composition}
    loaded = []
    for spec in models:
        m = load_model(spec)
        m.check_elements(elements)
        loaded.append(m)
    if not defects:
        phonon_maker = PhononMaker(
            reference_maker=reference_maker,
            models=list(models),
            supercell_matrix=supercell_matrix,
            min_length=min_length,
            displacement=displacement,
            mesh=tuple(mesh),
            temperature=temperature,
            relax=relax,
        )
        flow = PropertiesFlowMaker(properties=props, phonon_maker=phonon_maker).make(structs, ids)
        return flow, ids, loaded
    makers = {p: property_maker(p, reference_maker, models, relax=relax) for p in props}
    # Every flow is built (and its input checked) before any job runs.
    flows = [makers[p].make(s, mid) for s, mid in zip(structs, ids, strict=True) for p in props]
    outputs = [o for f in flows for o in f.output]
    return Flow(flows, output=outputs, name="properties"), ids, loaded


def property_maker(
    name: str, reference_maker: Any, models: Sequence[str] = (), relax: bool = False
) -> Any:
    """The maker of property ``name`` (phonon, surface, vacancy, barrier) with its defaults;
    ``relax`` where the property has the option (all but barrier, whose end points always relax).

    Raises
    ------
    InputError
        On an unknown property.
    """
    if name == "phonon":
        return PhononMaker(reference_maker=reference_maker, models=list(models), relax=relax)
    if name in DEFECT_PROPERTIES:
        from softening.makers.defects import BarrierMaker, VacancyMaker
        from softening.makers.surfaces import SurfaceMaker

        if name == "barrier":
            return BarrierMaker(reference_maker=reference_maker, models=list(models))
        cls = SurfaceMaker if name == "surface" else VacancyMaker
        return cls(reference_maker=reference_maker, models=list(models), relax=relax)
    known = ", ".join((*PROPERTIES, *DEFECT_PROPERTIES))
    raise InputError(f"--property {name}: choose from {known}")
