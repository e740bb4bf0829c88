"""Working-ion migration barriers of uMLIPs against a reference, in compounds.

The paper's barrier benchmark: Mg-ion hops in cathode hosts (ApproxNEB), the barrier being the
highest minus the lowest image energy. Two ways in:

- Computed (:class:`MigrationMaker`, ``--property migration --ion Li``): the distinct hops of the
  ion in the host from pymatgen-analysis-diffusion (``MigrationGraph``; its hops' supercells in
  vacancy or interstitial mode), end points relaxed with the model, the model's climbing-image NEB
  (:func:`~softening.makers.defects.neb_job`, stored and reused), then reference single points on
  the model's images (ApproxNEB-like: the reference does not move them).
- Existing DFT NEB runs (:class:`MigrationComparisonFlowMaker`, ``softening barriers``): the images
  of a VASP NEB folder (:func:`~softening.datasets.neb.read_neb_folder`), each uMLIP on the same
  images (one batched job per model), no DFT run.

Both give :class:`~softening.schemas.MigrationDoc` (``property: "migration"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from jobflow import Flow, Maker
from pymatgen.core import Structure

from softening.errors import InputError
from softening.makers.base import softening_job
from softening.makers.defects import (
    barrier_profiles,
    neb_flags,
    neb_job,
    neb_references,
    path_values,
)
from softening.makers.properties import PropertySpec, default_record, register_property
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    MigrationDoc,
    MigrationValues,
    NEBResult,
    UMLIPResults,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MigrationComparisonFlowMaker",
    "MigrationMaker",
    "align_endpoints",
    "compare_migration_results",
    "host_hops",
]

#: Modes of a hop: the ion moves into a vacant site of its sublattice, or between interstitials.
MODES = ("vacancy", "interstitial")


# ---- hops ------------------------------------------------------------------------------------------


def align_endpoints(start: Structure, end: Structure, tol: float = 0.1) -> tuple[Structure, int]:
    """``end`` with its sites in ``start``'s order (NEB images need one order), and the index of
    the atom that moves.

    Every site of ``end`` but one is matched to a site of ``start`` of the same species within
    ``tol`` Å (minimum image); the unmatched ones are the moving atom.

    Raises
    ------
    InputError
        The end points differ in more than one atom, or in composition.
    """
    if start.composition != end.composition or len(start) != len(end):
        raise InputError("hop end points differ in composition")
    d = start.lattice.get_all_distances(start.frac_coords, end.frac_coords)
    same = np.array([[a.species == b.species for b in end] for a in start])
    d = np.where(same, d, np.inf)
    order = np.full(len(start), -1)
    used: set[int] = set()
    for i in np.argsort(d.min(axis=1)):
        j = int(np.argmin(d[i]))
        if d[i, j] < tol and j not in used:
            order[i] = j
            used.add(j)
    free_start = [i for i in range(len(start)) if order[i] < 0]
    free_end = [j for j in range(len(end)) if j not in used]
    if len(free_start) != 1 or len(free_end) != 1:
        raise InputError(f"hop end points differ in {len(free_start)} atoms, not 1")
    order[free_start[0]] = free_end[0]
    aligned = Structure.from_sites([end[j] for j in order])
    return aligned, free_start[0]


def host_hops(
    structure: Structure,
    ion: str,
    mode: str = "vacancy",
    max_distance: float = 4.0,
    min_length: float = 8.0,
    max_atoms: int = 200,
    max_hops: int = 3,
) -> list[tuple[str, Structure, Structure, float]]:
    """The distinct hops of ``ion`` in ``structure`` (shortest first), as NEB end points.

    Returns
    -------
    list
        ``(label, initial, final, hop distance Å)`` per hop: ``Li hop 0 (2.83 Å)``; the end points
        hold the same atoms in the same order.

    Raises
    ------
    InputError
        An ion absent from the host, an unknown mode, no hop shorter than ``max_distance``, a
        supercell that would pass ``max_atoms``.
    """
    from pymatgen.analysis.diffusion.neb.full_path_mapper import MigrationGraph

    formula = structure.composition.reduced_formula
    if mode not in MODES:
        raise InputError(f"--hop-mode {mode}: choose from {', '.join(MODES)}")
    if ion not in {el.symbol for el in structure.composition}:
        raise InputError(f"--ion {ion}: {formula} holds no {ion}")
    host = structure.copy()
    host.remove_oxidation_states()
    try:
        graph = MigrationGraph.with_distance(host, ion, max_distance)
    except Exception as exc:  # pymatgen-analysis-diffusion raises several types on odd hosts
        raise InputError(f"{formula}: no migration graph for {ion} ({exc})") from None
    hops = sorted((h["hop"] for h in graph.unique_hops.values()), key=lambda h: h.length)
    if not hops:
        raise InputError(
            f"{formula}: no {ion} hop shorter than {max_distance:g} Å: raise --max-hop-distance"
        )
    out = []
    for k, hop in enumerate(hops[:max_hops]):
        try:
            start, end, _ = hop.get_sc_structures(
                vac_mode=mode == "vacancy",
                min_length=min_length,
                min_atoms=1,
                max_atoms=max_atoms,
            )
        except Exception as exc:
            raise InputError(
                f"{formula}: no supercell for the {ion} hop of {hop.length:.2f} Å with at most "
                f"{max_atoms} atoms and sides of {min_length:g} Å ({exc})"
            ) from None
        if len(start) > max_atoms:
            raise InputError(
                f"{formula}: the {ion} hop's supercell has {len(start)} atoms, over the limit "
                f"of {max_atoms}"
            )
        end, _ = align_endpoints(start, end)
        out.append((f"{ion} hop {k} ({hop.length:.2f} Å)", start, end, float(hop.length)))
    return out


# ---- comparison ------------------------------------------------------------------------------------


def compare_migration_results(
    neb: NEBResult | dict,
    references: Sequence[FrameResult | dict | None],
    ion: str,
    mode: str,
    parent_uuids: Sequence[str] = (),
) -> MigrationDoc:
    """Barrier and profile of the model's NEB and of the reference on its images.

    Raises
    ------
    CalculationError
        An image without a reference energy (a rerun computes it).
    """
    neb = NEBResult.model_validate(neb)
    refs = neb_references(neb, references)
    structures = [f.structure for f in neb.frames]
    values = MigrationValues(
        path=neb.path,
        hop_distance=neb.hop_distance,
        ion=ion,
        mode=mode,
        neb_converged=neb.converged,
        neb_steps=neb.steps,
        neb_fmax=neb.fmax,
        climb=neb.climb,
        **path_values(structures, [r.energy for r in refs], neb.energies),
    )
    return MigrationDoc.create(
        material_id=neb.material_id,
        composition=structures[0],
        model=neb.model,
        reference=refs[0].code,
        ratio=values.barrier / values.barrier_ref if values.barrier_ref > 0 else None,
        flags=neb_flags(neb),
        parent_uuids=list(parent_uuids),
        values=values,
    )


@softening_job(MigrationDoc, tolerant=True, name="migration compare")
def migration_compare_job(
    neb: NEBResult,
    references: list[FrameResult | None],
    ion: str,
    mode: str,
    parent_uuids: Sequence[str] = (),
) -> MigrationDoc:
    """jobflow job around :func:`compare_migration_results`."""
    doc = compare_migration_results(neb, references, ion, mode, parent_uuids)
    logger.info(
        "%s / %s %s: %.3f eV (reference %.3f eV)",
        doc.material_id, doc.model.name, doc.values.path, doc.values.barrier,
        doc.values.barrier_ref,
    )  # fmt: skip
    return doc


@dataclass
class MigrationMaker(Maker):
    """Migration barriers of a working ion in a host: the uMLIP's NEB, the reference on its images.

    Attributes
    ----------
    name
        Flow name.
    reference_maker
        :class:`ReferenceStaticMaker` (GPAW; EMT for tests) or a VASP reference maker.
    models
        uMLIP specs; each makes its own path.
    ion
        The migrating species (``Li``, ``Mg``, ``Na``...).
    mode
        ``vacancy`` (the ion hops into a vacant site of its sublattice) or ``interstitial``.
    max_distance
        Longest hop considered, Å.
    max_hops
        Most distinct hops computed (shortest first).
    min_length, max_atoms
        Smallest supercell side (Å) and largest supercell (atoms) of each hop.
    n_images, fmax, steps, climb, optimizer, relax_endpoints
        The NEB (as :class:`~softening.makers.defects.BarrierMaker`).
    """

    name: str = "migration"
    reference_maker: Any = field(default_factory=ReferenceStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    ion: str | None = None
    mode: str = "vacancy"
    max_distance: float = 4.0
    max_hops: int = 3
    min_length: float = 8.0
    max_atoms: int = 200
    n_images: int = 5
    fmax: float = 0.05
    steps: int = 200
    climb: bool = True
    optimizer: str = "FIRE"
    relax_endpoints: bool = True

    def settings(self) -> dict[str, Any]:
        """The NEB settings (part of the NEB's content key)."""
        return {
            "n_images": self.n_images,
            "fmax": self.fmax,
            "steps": self.steps,
            "climb": self.climb,
            "optimizer": self.optimizer,
            "relax_endpoints": self.relax_endpoints,
        }

    def make(self, structure: Structure, material_id: str | None = None) -> Flow:
        """The flow for ``structure``; output: one :class:`MigrationDoc` per hop and model."""
        if not self.ion:
            raise InputError("--property migration needs --ion (e.g. --ion Li)")
        mid = material_id or structure.composition.reduced_formula
        hops = host_hops(
            structure, self.ion, self.mode, self.max_distance, self.min_length, self.max_atoms,
            self.max_hops,
        )  # fmt: skip
        jobs, outputs = [], []
        for label, initial, final, dist in hops:
            for spec in self.models:
                neb = neb_job(initial, final, mid, label, dist, spec, self.settings())
                neb.append_name(f" {spec} {mid} {label}")
                refs = []
                for k in range(self.n_images + 2):
                    # The images exist once the NEB ran: each reference job takes its frame from
                    # the NEB's output (and is reused by content key on a rerun).
                    r = self.reference_maker.make(neb.output.frames[k])
                    r.append_name(f" {mid} {spec} {label} image-{k:02d}")
                    refs.append(r)
                cmp = migration_compare_job(
                    neb.output, [r.output for r in refs], self.ion, self.mode,
                    [neb.uuid, *(r.uuid for r in refs)],
                )  # fmt: skip
                cmp.append_name(f" {mid} {spec} {label}")
                jobs += [neb, *refs, cmp]
                outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {mid}")


# ---- existing DFT NEB runs -------------------------------------------------------------------------


def neb_data_frames(data: Any) -> list[FrameSpec]:
    """The images of a :class:`~softening.datasets.neb.NEBData` as frames."""
    return [
        FrameSpec(frame_id=f.frame_id, material_id=data.name, formula=f.formula,
                  structure=f.structure)
        for f in data.images
    ]  # fmt: skip


def compare_neb_data(
    data: dict[str, Any], umlip: UMLIPResults | dict, parent_uuids: Sequence[str] = ()
) -> MigrationDoc:
    """A DFT NEB's barrier and profile (:func:`neb_data_input`) against the model's energies on
    the same images."""
    from softening.errors import CalculationError

    umlip = UMLIPResults.model_validate(umlip)
    name = data["name"]
    images = [FrameResult.model_validate(f) for f in data["images"]]
    mine = {f.frame_id: f for f in umlip.frames if f.material_id == name}
    ids = [f.frame_id for f in images]
    missing = [i for i in ids if i not in mine or mine[i].energy is None]
    if missing:
        raise CalculationError(f"{name}: model energy missing for images {', '.join(missing)}")
    structures = [f.structure for f in images]
    ion = data.get("ion") or "?"
    values = MigrationValues(
        path=f"{ion} {ids[0]}->{ids[-1]}",
        hop_distance=data["hop_distance"],
        ion=ion,
        mode="existing",
        neb_converged=None,
        **path_values(structures, [f.energy for f in images], [mine[i].energy for i in ids]),
    )
    return MigrationDoc.create(
        material_id=name,
        composition=structures[0],
        model=umlip.model,
        reference=CodeInfo(name="vasp", settings={"source": data["source"]}),
        ratio=values.barrier / values.barrier_ref if values.barrier_ref > 0 else None,
        flags=sorted({str(f) for im in images for f in im.flags}),
        sources=[data["source"]],
        parent_uuids=list(parent_uuids),
        values=values,
    )


@softening_job(MigrationDoc, name="neb compare")
def neb_data_compare_job(data: Any, umlip: UMLIPResults, parent_uuids: Sequence[str] = ()):
    """jobflow job around :func:`compare_neb_data`."""
    return compare_neb_data(data, umlip, parent_uuids)


@dataclass
class MigrationComparisonFlowMaker(Maker):
    """uMLIPs on the images of existing DFT NEB runs (the same images; no DFT run).

    Attributes
    ----------
    name
        Flow name.
    umlip_maker
        Template of the uMLIP jobs; one copy per model.
    models
        uMLIP specs.
    """

    name: str = "barrier comparison"
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])

    def make(self, datasets: Sequence[Any]) -> Flow:
        """The flow over ``datasets`` (from :func:`read_neb_folder`); output: one
        :class:`MigrationDoc` per folder and model."""
        names = [d.name for d in datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"two NEB folders named {dupes[0]!r}: give each once")
        frames = [f for d in datasets for f in neb_data_frames(d)]
        jobs, outputs = [], {}
        for spec in self.models:
            ml = replace(self.umlip_maker, model=spec).make(frames)
            ml.append_name(f" {spec} NEB images")
            jobs.append(ml)
            for d in datasets:
                cmp = neb_data_compare_job(neb_data_input(d), ml.output, [ml.uuid])
                cmp.append_name(f" {d.name} {spec}")
                jobs.append(cmp)
                outputs[(d.name, spec)] = cmp.output
        return Flow(jobs, output=[outputs[(n, s)] for n in names for s in self.models],
                    name=self.name)  # fmt: skip


def neb_data_input(data: Any) -> dict[str, Any]:
    """A :class:`~softening.datasets.neb.NEBData` as a job input (the images as reference
    results, which jobflow serialises)."""
    return {
        "name": data.name,
        "source": str(data.source),
        "ion": data.ion,
        "hop_distance": float(data.hop_distance),
        "images": [
            FrameResult(
                frame_id=f.frame_id, material_id=data.name, formula=f.formula,
                structure=f.structure, energy=float(f.energy),
                code=CodeInfo(name="vasp", settings={"source": str(f.source)}),
                flags=list(f.flags),
            )
            for f in data.images
        ],
    }  # fmt: skip


# ---- the registry entry ------------------------------------------------------------------------


def migration_rows(doc: MigrationDoc) -> list[dict[str, Any]]:
    """The ``--json`` row of a migration document (eV, Å)."""
    v = doc.values
    return [
        {
            "material": doc.material_id,
            "ion": v.ion,
            "hop": v.path,
            "mode": v.mode,
            **v.model_dump(exclude={"path", "ion", "mode"}),
            "flags": [str(f) for f in doc.flags],
        }
    ]


def _migration_maker(reference_maker: Any, models: list[str], options: Any) -> MigrationMaker:
    settings = {
        key: options[opt]
        for key, opt in (("ion", "ion"), ("mode", "hop_mode"), ("max_distance", "max_hop_distance"))
        if options.get(opt) is not None
    }
    return MigrationMaker(reference_maker=reference_maker, models=list(models), **settings)


SPEC = register_property(
    PropertySpec(
        name="migration",
        doc_class=MigrationDoc,
        make_maker=_migration_maker,
        pairs=lambda doc: [(doc.values.barrier_ref, doc.values.barrier)],
        axis="migration barrier (eV)",
        json_key="migrations",
        rows=migration_rows,
        record=lambda doc: default_record(doc) | {"hop": doc.values.path},
        items=lambda doc: [(doc.values.path, doc.values.barrier_ref, doc.values.barrier, "eV")],
        figures=barrier_profiles,
        relaxable=False,
        description="working-ion migration barriers in a host (--ion; the model's NEB)",
    )
)
