"""The Materials Project's calculation rules, in one place: U values, magnetic moments, k-points.

Both the reference makers (which *apply* MP-compatible settings) and the dataset guards (which
*check* that a run used them) read these functions, so a rule can never differ between the two.
The tables are pymatgen's ``MPRelaxSet`` configuration, not copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["mp_config", "mp_hubbard_u", "mp_kpoint_mesh", "mp_magmoms"]


@cache
def mp_config() -> dict[str, Any]:
    """pymatgen's ``MPRelaxSet`` configuration (INCAR tags, U tables, MAGMOM table, POTCARs)."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    return MPRelaxSet.CONFIG


def mp_hubbard_u(elements: Iterable[str]) -> dict[str, float]:
    """MP's U values (eV, on d states) for a compound of ``elements``.

    As pymatgen's ``MPRelaxSet``: the table of the most electronegative element is used, and only
    oxides and fluorides have one (so an oxyfluoride takes F's table).
    """
    from pymatgen.core import Element

    elements = set(elements)
    if not elements:
        return {}
    anion = max(elements, key=lambda el: Element(el).X)
    table = mp_config()["INCAR"]["LDAUU"].get(anion, {})
    return {el: float(u) for el, u in table.items() if el in elements and u}


def mp_magmoms(structure: Structure) -> list[float] | None:
    """MP initial magnetic moments (μB), or ``None`` when no magnetic element occurs."""
    table = mp_config()["INCAR"]["MAGMOM"]
    symbols = [site.specie.symbol for site in structure]
    # Only elements MP starts with a large moment make the run spin-polarised: spin doubles the cost.
    if not any(table.get(s, 0) > 1 for s in symbols):
        return None
    return [float(table.get(s, 0.6)) for s in symbols]


def mp_kpoint_mesh(lattice: np.ndarray, kspacing: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh with at most ``kspacing`` (1/Å, 2π included, as VASP's KSPACING).

    ``n_i = max(1, ceil(2π |b_i| / kspacing))`` with ``b_i`` the reciprocal vectors without 2π.
    """
    recip = np.linalg.inv(np.asarray(lattice, dtype=float)).T
    return tuple(
        max(1, math.ceil(2 * math.pi * float(np.linalg.norm(b)) / kspacing)) for b in recip
    )
