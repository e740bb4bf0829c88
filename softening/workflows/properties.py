"""Flows of materials properties computed with uMLIPs against a reference (phonons so far).

- :class:`PhononComparisonFlowMaker`: existing DFT phonon data (phonopy folders) against uMLIPs, no
  DFT run: one batched uMLIP job per model over every material's supercells, one comparison job per
  material and model.
- :class:`PropertiesFlowMaker`: the reference computed too, per structure and property
  (:class:`~softening.makers.phonons.PhononMaker`).

Outputs are :class:`~softening.stores.documents.PropertyDoc` subclasses, stored as job outputs;
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
            ml.name = f"{self.umlip_maker.name} {spec} phonons"
            jobs.append(ml)
            for d in datasets:
                cmp = phonon_compare_job(
                    setups[d.material], refs[d.material], ml.output, d.material, list(self.mesh),
                    self.temperature, self.imaginary_tol, sources=d.sources,
                    parent_uuids=[ml.uuid],
                )  # fmt: skip
                cmp.name = f"phonon compare {d.material} {spec}"
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
