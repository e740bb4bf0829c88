"""Surface set-up: the slabs of a bulk structure (distinct Miller indices, pymatgen's
``SlabGenerator``, symmetric terminations) and their frames, as the surface comparison takes them
(:func:`slab_inputs`). The comparison and the makers are in :mod:`softening.makers.surfaces`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymatgen.core import Structure

from softening.analysis.surfaces import (
    MIN_VACUUM,
    bulk_units,
    surface_area,
    vacuum_axis,
)
from softening.makers.properties import (
    BULK,
)
from softening.schemas import (
    FrameSpec,
)


def miller_indices(structure: Structure, max_index: int) -> list[tuple[int, int, int]]:
    """Symmetrically distinct Miller indices up to ``max_index`` (pymatgen), lowest first."""
    from pymatgen.core.surface import get_symmetrically_distinct_miller_indices

    found = get_symmetrically_distinct_miller_indices(structure, max_index)
    return sorted((tuple(int(x) for x in m) for m in found), key=lambda m: (sum(map(abs, m)), m))


def generate_slabs(
    structure: Structure,
    max_index: int = 1,
    min_slab_size: float = 8.0,
    min_vacuum_size: float = 12.0,
    miller: Sequence[Sequence[int]] | None = None,
) -> tuple[list[tuple[tuple[int, int, int], Structure]], list[str]]:
    """One slab per facet: the first termination that is symmetric (two equal faces), non-polar and
    stoichiometric; facets without one are skipped with the reason.

    Returns
    -------
    (slabs, skipped)
        ``[(miller, slab structure)]`` (orthogonal c, vacuum along c, centred) and
        ``["(h k l): reason"]``.
    """
    from pymatgen.core.surface import SlabGenerator

    conventional = _conventional(structure)
    facets = (
        [tuple(int(x) for x in m) for m in miller]
        if miller
        else miller_indices(conventional, max_index)
    )
    slabs, skipped = [], []
    bulk_counts = conventional.composition.get_el_amt_dict()
    # Slab.is_polar counts dipoles from oxidation states: without them every slab looks non-polar.
    charged = conventional.copy()
    try:
        charged.add_oxidation_state_by_guess()
    except Exception:  # noqa: BLE001 - no guess (e.g. an intermetallic): treated as neutral
        charged = conventional
    for hkl in facets:
        label = f"({' '.join(map(str, hkl))})"
        try:
            gen = SlabGenerator(
                charged, hkl, min_slab_size, min_vacuum_size, center_slab=True, primitive=True,
                lll_reduce=True, in_unit_planes=False,
            )  # fmt: skip
            candidates = gen.get_slabs(symmetrize=False)
        except Exception as exc:  # noqa: BLE001 - pymatgen's own failure: this facet only
            skipped.append(f"{label}: pymatgen could not cut it ({type(exc).__name__}: {exc})")
            continue
        reasons = []
        chosen = None
        for slab in candidates:
            if slab.is_polar():
                reasons.append("polar")
                continue
            if not slab.is_symmetric():
                reasons.append("asymmetric faces")
                continue
            try:
                bulk_units(slab.composition.get_el_amt_dict(), bulk_counts)
            except ValueError:
                reasons.append("non-stoichiometric")
                continue
            chosen = Structure.from_sites(slab.get_sorted_structure(), to_unit_cell=True)
            chosen.remove_oxidation_states()
            break
        if chosen is None:
            why = ", ".join(sorted(set(reasons))) or "no termination"
            skipped.append(f"{label}: every termination is {why}")
        else:
            slabs.append((hkl, chosen))
    return slabs, skipped


def _conventional(structure: Structure) -> Structure:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure).get_conventional_standard_structure()
    except Exception:  # noqa: BLE001 - symmetry search failed: the structure as given
        return structure


def slab_inputs(
    material_id: str,
    bulk: Structure,
    slabs: Sequence[tuple[tuple[int, int, int], Structure]],
    skipped: Sequence[str],
) -> tuple[dict[str, Any], list[FrameSpec]]:
    """Comparison inputs and frames of generated slabs (the bulk frame is ``bulk`` as given)."""
    formula = bulk.composition.reduced_formula
    rows, frames = [], [FrameSpec(frame_id=BULK, material_id=material_id, formula=formula,
                                  structure=bulk)]  # fmt: skip
    for hkl, s in slabs:
        axis, vac = vacuum_axis(s.lattice.matrix, s.frac_coords, MIN_VACUUM)
        fid = "slab-" + "".join(str(x) for x in hkl).replace("-", "m")
        rows.append(
            {
                "frame_id": fid,
                "description": f"{formula} ({' '.join(map(str, hkl))})",
                "facet": list(hkl),
                "reconstructed": False,
                "n_atoms": len(s),
                "area": surface_area(s.lattice.matrix, axis),
                "vacuum": vac,
                "source": None,
            }
        )
        frames.append(
            FrameSpec(frame_id=fid, material_id=material_id, formula=formula, structure=s)
        )
    inputs = {
        "material": material_id,
        "bulk": {"frame_id": BULK, "description": "input structure", "n_atoms": len(bulk),
                 "choice": "computed", "source": None},
        "slabs": rows,
        "skipped": list(skipped),
        "sources": [],
    }  # fmt: skip
    return inputs, frames
