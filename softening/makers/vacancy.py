"""Vacancy formation energies of uMLIPs against a reference (elemental solids).

:class:`VacancyMaker`: a supercell of the bulk structure (grown until a vacancy is at least
``min_image_distance`` from its images), one vacancy per symmetry-distinct site; one reference job
per frame (:class:`~softening.makers.reference.ReferenceStaticMaker`: reused by content key, so a
rerun computes only what is missing), one uMLIP job per model, one comparison job per model. With
``relax``, each method also relaxes the defect positions with its own forces (cell fixed) and both
unrelaxed and relaxed formation energies are reported. The removed atom's chemical potential is
the bulk energy per atom of the same method.

Output: :class:`~softening.schemas.VacancyDoc` (a :class:`PropertyDoc`). The supercell rule and
the frame-results lookup here are shared with the barrier and point-defect properties.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pymatgen.core import Structure

from softening.analysis.defects import (
    distinct_sites,
    min_image_distance,
    supercell_for_min_distance,
    vacancy_formation_energy,
)
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.properties import (
    BULK,
    PropertyFlowMaker,
    PropertySpec,
    default_record,
    register_property,
)
from softening.schemas import (
    FrameResult,
    FrameSpec,
    UMLIPResults,
    VacancyDoc,
    VacancyRow,
    VacancyValues,
)

logger = logging.getLogger(__name__)


def vacancy_id(site: int) -> str:
    """Frame id of the supercell without site ``site``: ``vac-007``."""
    return f"vac-{site:03d}"


# ---- set-up (shared with barrier and point_defects) ----------------------------------------------------------------------------------------


def check_elemental(structure: Structure, what: str) -> None:
    if len(structure.composition.elements) != 1:
        raise InputError(
            f"{what}: elemental solids only (the removed atom's chemical potential is the bulk "
            f"energy per atom); {structure.composition.reduced_formula} is a compound"
        )


def defect_supercell(
    structure: Structure,
    min_distance: float = 8.0,
    supercell_matrix: Sequence[int] | None = None,
) -> tuple[Structure, list[int], float]:
    """The supercell a vacancy goes into, its diagonal matrix and the vacancy-image distance (Å).

    Without ``supercell_matrix`` the smallest diagonal supercell whose images are at least
    ``min_distance`` Å apart (a cell too small is grown); an explicit one that falls short is refused.
    """
    if supercell_matrix is None:
        try:
            matrix = supercell_for_min_distance(structure.lattice.matrix, min_distance)
        except ValueError as exc:
            raise InputError(f"{structure.composition.reduced_formula}: {exc}") from exc
    else:
        matrix = [int(x) for x in supercell_matrix]
        if len(matrix) != 3 or min(matrix) < 1:
            raise InputError(f"supercell {matrix}: give 3 positive integers")
    supercell = structure * matrix
    dist = min_image_distance(supercell.lattice.matrix)
    if dist + 1e-6 < min_distance:
        raise InputError(
            f"supercell {matrix} of {structure.composition.reduced_formula} puts a vacancy "
            f"{dist:.2f} Å from its image, below {min_distance:g} Å: choose a larger one"
        )
    if len(supercell) < 2:
        raise InputError(f"supercell {matrix} has {len(supercell)} atom: too small for a vacancy")
    return supercell, matrix, dist


def site_in_supercell(unit: Structure, index: int, supercell: Structure) -> int:
    """Index in ``supercell`` of the copy of unit-cell site ``index`` in the first cell."""
    target = unit[index].coords
    frac = supercell.lattice.get_fractional_coords(target)
    d = supercell.lattice.get_all_distances(frac[None], supercell.frac_coords)[0]
    return int(np.argmin(d))


def vacancy_inputs(
    structure: Structure,
    material_id: str,
    min_distance: float = 8.0,
    supercell_matrix: Sequence[int] | None = None,
    symprec: float = 0.01,
) -> tuple[dict[str, Any], list[FrameSpec]]:
    """Comparison inputs (sites, supercell) and frames (``bulk`` + one ``vac-NNN`` per distinct
    site) of the vacancies of ``structure``."""
    check_elemental(structure, "vacancy")
    supercell, matrix, dist = defect_supercell(structure, min_distance, supercell_matrix)
    formula = structure.composition.reduced_formula
    frames = [
        FrameSpec(frame_id=BULK, material_id=material_id, formula=formula, structure=supercell)
    ]
    sites = []
    for index, mult in distinct_sites(structure, symprec):
        k = site_in_supercell(structure, index, supercell)
        defect = supercell.copy()
        defect.remove_sites([k])
        frames.append(
            FrameSpec(
                frame_id=vacancy_id(k), material_id=material_id, formula=formula, structure=defect
            )
        )
        sites.append({"site": k, "species": supercell[k].specie.symbol, "multiplicity": mult})
    inputs = {
        "material": material_id,
        "n_bulk": len(supercell),
        "supercell_matrix": np.diag(matrix).tolist(),
        "min_image_distance": dist,
        "sites": sites,
    }
    return inputs, frames


# ---- vacancies -------------------------------------------------------------------------------------


def results_by_id(
    results: Sequence[FrameResult | dict | None] | UMLIPResults | dict | None, material: str
):
    if results is None:
        return {}
    if isinstance(results, dict) and "frames" in results and "model" not in results:
        results = results["frames"]
    if isinstance(results, UMLIPResults | dict):
        results = UMLIPResults.model_validate(results).frames
    out = {}
    for r in results:
        if r is None:
            continue
        r = FrameResult.model_validate(r)
        if r.material_id == material and r.energy is not None:
            out[r.frame_id] = r
    return out


def compare_vacancy_results(
    inputs: dict[str, Any],
    references: Sequence[FrameResult | dict | None],
    umlip: UMLIPResults | dict,
    relaxed_references: Any = None,
    relaxed_umlip: UMLIPResults | dict | None = None,
    parent_uuids: Sequence[str] = (),
) -> VacancyDoc:
    """Vacancy formation energies of the reference and the model (each against its own bulk
    energy), unrelaxed, and relaxed when relaxed results are given.

    Raises
    ------
    CalculationError
        A frame without a reference or model energy (a rerun computes it).
    """
    umlip = UMLIPResults.model_validate(umlip)
    material = inputs["material"]
    refs, mls = results_by_id(references, material), results_by_id(umlip, material)
    relaxed = relaxed_references is not None and relaxed_umlip is not None
    refs_r = results_by_id(relaxed_references, material) if relaxed else {}
    mls_r = results_by_id(relaxed_umlip, material) if relaxed else {}
    ids = [BULK, *(vacancy_id(s["site"]) for s in inputs["sites"])]
    for side, got in (("reference", refs), (umlip.model.name, mls)) + (
        (("relaxed reference", refs_r), (f"relaxed {umlip.model.name}", mls_r)) if relaxed else ()
    ):
        missing = [i for i in ids if i not in got]
        if missing:
            raise CalculationError(
                f"{material}: {side} energy missing for {', '.join(missing)}; rerun to compute them"
            )
    n = inputs["n_bulk"]
    rows, flags = [], []
    for s in inputs["sites"]:
        fid = vacancy_id(s["site"])
        e_ref = vacancy_formation_energy(refs[fid].energy, refs[BULK].energy, n)
        e_ml = vacancy_formation_energy(mls[fid].energy, mls[BULK].energy, n)
        row = {"e_vac_ref": e_ref, "e_vac": e_ml, "relaxed": False, "converged": True}
        if relaxed:
            row = {
                "e_vac_unrelaxed_ref": e_ref,
                "e_vac_unrelaxed": e_ml,
                "e_vac_ref": vacancy_formation_energy(refs_r[fid].energy, refs_r[BULK].energy, n),
                "e_vac": vacancy_formation_energy(mls_r[fid].energy, mls_r[BULK].energy, n),
                "relaxed": True,
                "converged": refs_r[fid].converged and mls_r[fid].converged,
            }
            if not row["converged"]:
                flags.append(f"unconverged: relaxation of {fid} did not reach its fmax")
        rows.append(VacancyRow(**s, n_atoms=n - 1, **row))
    mae = float(np.mean([abs(r.e_vac - r.e_vac_ref) for r in rows]))
    ref_doc = refs[BULK]
    values = VacancyValues(
        rows=rows,
        supercell_matrix=inputs["supercell_matrix"],
        min_image_distance=inputs["min_image_distance"],
        chemical_potential="bulk",
        e_bulk_ref=ref_doc.energy / n,
        e_bulk=mls[BULK].energy / n,
        mae=mae,
    )
    ratio = float(np.mean([r.e_vac / r.e_vac_ref for r in rows if r.e_vac_ref != 0] or [np.nan]))
    return VacancyDoc.create(
        material_id=material,
        composition=ref_doc.structure,
        model=umlip.model,
        reference=ref_doc.code,
        ratio=None if np.isnan(ratio) else ratio,
        flags=flags,
        parent_uuids=list(parent_uuids),
        values=values,
    )


@softening_job(VacancyDoc, tolerant=True, name="vacancy compare")
def vacancy_compare_job(
    inputs: dict[str, Any],
    references: list[FrameResult | None],
    umlip: UMLIPResults,
    relaxed_references: Any = None,
    relaxed_umlip: UMLIPResults | None = None,
    parent_uuids: Sequence[str] = (),
) -> VacancyDoc:
    """jobflow job around :func:`compare_vacancy_results`."""
    doc = compare_vacancy_results(
        inputs, references, umlip, relaxed_references, relaxed_umlip, parent_uuids
    )
    for r in doc.values.rows:
        logger.info(
            "%s / %s vacancy %d: %.3f eV (reference %.3f eV)",
            doc.material_id, doc.model.name, r.site, r.e_vac, r.e_vac_ref,
        )  # fmt: skip
    return doc


@dataclass
class VacancyMaker(PropertyFlowMaker):
    """Vacancy formation energies of one elemental structure with a reference and uMLIPs.

    The loop is :class:`~softening.makers.properties.PropertyFlowMaker`'s; with ``relax``, each
    method also relaxes the defect positions (cell fixed) and both unrelaxed and relaxed formation
    energies are reported.

    Attributes
    ----------
    name
        Flow name.
    reference_maker, umlip_maker, models, relax, relax_fmax, relax_steps
        As :class:`~softening.makers.properties.PropertyFlowMaker`.
    min_image_distance
        Smallest distance between a vacancy and its periodic images, Å (picks the supercell).
    supercell_matrix
        Diagonal supercell ``[n1, n2, n3]`` instead of the choice by ``min_image_distance``.
    symprec
        Symmetry tolerance of the distinct sites, Å.
    """

    name: str = "vacancy"
    min_image_distance: float = 8.0
    supercell_matrix: list[int] | None = None
    symprec: float = 0.01

    def inputs(self, structure: Structure, material_id: str) -> tuple[dict, list[FrameSpec]]:
        """The bulk supercell and one frame per symmetry-distinct vacancy."""
        return vacancy_inputs(
            structure, material_id, self.min_image_distance, self.supercell_matrix, self.symprec
        )

    compare_job: ClassVar[Any] = vacancy_compare_job


# ---- the registry entry ---------------------------------------------------------------------------


def vacancy_rows(doc: VacancyDoc) -> list[dict[str, Any]]:
    """Per-site JSON records of a :class:`VacancyDoc` (energies in eV)."""
    v = doc.values
    return [
        {
            "material": doc.material_id,
            **r.model_dump(),
            "supercell_matrix": v.supercell_matrix,
            "min_image_distance": v.min_image_distance,
            "chemical_potential": v.chemical_potential,
        }
        for r in v.rows
    ]


def _vacancy_maker(reference_maker: Any, models: list[str], options: Any) -> VacancyMaker:
    return VacancyMaker(
        reference_maker=reference_maker, models=list(models), relax=bool(options.get("relax"))
    )


VACANCY = register_property(
    PropertySpec(
        name="vacancy",
        doc_class=VacancyDoc,
        make_maker=_vacancy_maker,
        pairs=lambda doc: [(r.e_vac_ref, r.e_vac) for r in doc.values.rows],
        axis="vacancy formation energy (eV)",
        json_key="vacancies",
        rows=vacancy_rows,
        record=lambda doc: (
            default_record(doc)
            | {
                "mae": doc.values.mae,
                "e_bulk_ref": doc.values.e_bulk_ref,
                "e_bulk": doc.values.e_bulk,
            }
        ),
        items=lambda doc: [
            (f"site {r.site} {r.species}", r.e_vac_ref, r.e_vac, "eV") for r in doc.values.rows
        ],
        description="vacancy formation energies (elemental solids)",
    )
)
