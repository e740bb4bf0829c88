"""Working-ion migration barriers of uMLIPs against a reference, in compounds.

The paper's barrier benchmark: Mg-ion hops in cathode hosts (ApproxNEB), the barrier being the
highest minus the lowest image energy. Two ways in:

- Computed (:class:`MigrationMaker`, ``--property migration --ion Li``): the distinct hops of the
  ion in the host from pymatgen-analysis-diffusion (``MigrationGraph``; its hops' supercells in
  vacancy or interstitial mode), end points relaxed with the model, the model's climbing-image NEB
  (:func:`~softening.makers.barrier.neb_job`, stored and reused), then reference single points on
  the model's images (ApproxNEB-like: the reference does not move them).
- Existing DFT NEB runs (:class:`MigrationComparisonFlowMaker`, ``softening barriers``): the images
  of a VASP NEB folder (:func:`~softening.datasets.neb.read_neb_folder`), each uMLIP on the same
  images (one batched job per model), no DFT run.

Both give :class:`~softening.schemas.MigrationDoc` (``property: "migration"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pymatgen.core import Structure

from softening.errors import InputError
from softening.makers.barrier import (
    PathFlowMaker,
    barrier_profiles,
    compare_path_results,
    path_values,
)
from softening.makers.job import softening_job
from softening.makers.properties import (
    DataComparisonFlowMaker,
    PreparedData,
    PropertySpec,
    default_record,
    register_property,
)
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
    """Barrier and profile of the model's NEB and of the reference on its images
    (:func:`~softening.makers.barrier.compare_path_results`).

    Raises
    ------
    CalculationError
        An image without a reference energy (a rerun computes it).
    """
    return compare_path_results(neb, references, MigrationDoc, parent_uuids, ion=ion, mode=mode)


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
class MigrationMaker(PathFlowMaker):
    """Migration barriers of a working ion in a host: the uMLIP's NEB, the reference on its images
    (the loop is :class:`~softening.makers.barrier.PathFlowMaker`'s).

    Attributes
    ----------
    name, reference_maker, models, n_images, fmax, steps, climb, optimizer, relax_endpoints
        As :class:`~softening.makers.barrier.PathFlowMaker`.
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
    """

    name: str = "migration"
    ion: str | None = None
    mode: str = "vacancy"
    max_distance: float = 4.0
    max_hops: int = 3
    min_length: float = 8.0
    max_atoms: int = 200

    def paths(self, structure: Structure, material_id: str):
        """The distinct hops of :attr:`ion` (:func:`host_hops`)."""
        if not self.ion:
            raise InputError("--property migration needs --ion (e.g. --ion Li)")
        return host_hops(
            structure, self.ion, self.mode, self.max_distance, self.min_length, self.max_atoms,
            self.max_hops,
        )  # fmt: skip

    def compare(self, neb: Any, references: list[Any], parent_uuids: list[str]):
        """:func:`migration_compare_job`."""
        return migration_compare_job(neb, references, self.ion, self.mode, parent_uuids)


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


@dataclass
class MigrationComparisonFlowMaker(DataComparisonFlowMaker):
    """uMLIPs on the images of existing DFT NEB runs (the same images; no DFT run).

    The loop is :class:`~softening.makers.properties.DataComparisonFlowMaker`'s: every image of
    every run in one job per model, one comparison per run and model.
    """

    name: str = "barrier comparison"

    label: ClassVar[str] = "NEB images"

    def prepare(self, datasets: Sequence[Any]) -> list[PreparedData]:
        """Each run's images (from :func:`~softening.datasets.neb.read_neb_folder`)."""
        return [
            PreparedData(key=d.name, frames=neb_data_frames(d), inputs=neb_data_input(d))
            for d in datasets
        ]

    def compare(self, prepared: PreparedData, umlip: Any, parent_uuids: list[str]):
        """:func:`neb_data_compare_job`."""
        return neb_data_compare_job(prepared.inputs, umlip, parent_uuids)


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
        item_key=lambda d: d["values"]["path"],
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
