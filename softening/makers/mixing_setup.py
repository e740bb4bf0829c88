"""Solid-solution set-up: the end members and the cells of a substitution, as the mixing
comparison takes them (:func:`mixing_inputs`), and ``--end-members`` parsed
(:func:`parse_end_members`). The comparison and the makers are in :mod:`softening.makers.mixing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pymatgen.core import Composition, Structure

from softening.analysis.mixing import (
    end_member_amounts,
    end_member_energies,
)
from softening.errors import InputError

# ---- inputs-------------------------------------------------------------------------------------


def parse_end_members(text: str | Sequence[str] | None) -> list[str] | None:
    """``"AlN,SiC"`` (or a list) -> ``["AlN", "SiC"]``; ``None`` stays ``None`` (pure elements).

    Raises
    ------
    InputError
        A formula pymatgen cannot read, fewer than two end members, or one given twice.
    """
    if text is None or (not isinstance(text, str) and not list(text)):
        return None
    items = text.split(",") if isinstance(text, str) else [t for x in text for t in x.split(",")]
    items = [t.strip() for t in items if t.strip()]
    out = []
    for t in items:
        try:
            comp = Composition(t)
        except Exception:  # pymatgen raises several types for bad formulas
            raise InputError(f"--end-members: {t!r} is not a formula") from None
        if not comp.num_atoms:
            raise InputError(f"--end-members: {t!r} is not a formula")
        out.append(comp.reduced_formula)
    if len(out) < 2:
        raise InputError("--end-members: give at least two, e.g. AlN,SiC")
    if len(set(out)) < len(out):
        raise InputError(f"--end-members {','.join(items)}: one is given twice")
    return out


def mixing_inputs(
    system: str | None,
    cells: Sequence[tuple[str, Structure]],
    end_members: Sequence[str] | None = None,
    sources: Sequence[str | None] | None = None,
    flags: Sequence[str] = (),
) -> dict[str, Any]:
    """The comparison's inputs for ``cells`` (name, structure): end-member amounts, fractions.

    Parameters
    ----------
    system
        System name; ``None``: the end members joined by ``-``.
    cells
        ``(name, structure)`` of every cell, end members included.
    end_members
        End-member formulas; ``None``: the pure elements of the cells.
    sources
        Where each cell was read from.
    flags
        Flags of the data (``"kind: detail"``), carried into every document.

    Raises
    ------
    InputError
        Two cells with one name, a cell that is no combination of the end members (named), an
        end member no cell is made of alone, fewer than two end members.
    """
    names = [n for n, _ in cells]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(f"two cells named {n!r}: give each cell once")
        seen.add(n)
    comps = [s.composition for _, s in cells]
    if end_members is None:
        elements = sorted({el.symbol for c in comps for el in c.elements})
        end_members = elements
    members = [Composition(e) for e in end_members]
    if len(members) < 2:
        raise InputError(
            f"{system or end_members[0]}: one end member ({end_members[0]}) only: a solid "
            "solution needs at least two"
        )
    elements = sorted({el.symbol for c in [*comps, *members] for el in c.elements})
    counts = np.array([[c[el] for el in elements] for c in comps], dtype=float)
    em = np.array([[m[el] for el in elements] for m in members], dtype=float)
    label = system or "-".join(m.reduced_formula for m in members)
    try:
        amounts = end_member_amounts(counts, em)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("cell "):
            i = int(text.split(":")[0].split()[1])
            raise InputError(
                f"{label}: cell {names[i]!r} ({comps[i].reduced_formula}) is not a combination "
                f"of the end members {', '.join(m.reduced_formula for m in members)}"
            ) from None
        raise InputError(f"{label}: {text}") from None
    try:
        end_member_energies(np.zeros(len(cells)), amounts)
    except ValueError as exc:
        k = int(str(exc).split(":")[0].split()[-1])
        raise InputError(
            f"{label}: no cell is the end member {members[k].reduced_formula} alone; give one "
            "(or choose other --end-members)"
        ) from None
    return {
        "system": label,
        "end_members": [m.reduced_formula for m in members],
        "atoms_per_end_member": [float(m.num_atoms) for m in members],
        "cells": [
            {
                "cell": n,
                "formula": c.reduced_formula,
                "n_atoms": int(round(c.num_atoms)),
                "amounts": a.tolist(),
                "source": (sources[i] if sources else None),
            }
            for i, (n, c, a) in enumerate(zip(names, comps, amounts, strict=True))
        ],
        "flags": list(flags),
    }
