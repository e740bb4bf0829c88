"""Tests of softening.analysis.orderings: derivative-superstructure counts against the literature
and an independent brute force, the structures themselves, bad inputs, and stable labels."""

from __future__ import annotations

import collections
import functools
import itertools

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from softening.analysis.orderings import Ordering, enumerate_orderings, parse_substitution
from softening.errors import InputError

#: fcc binary derivative superstructures per size, guest and host distinct (enumlib/icet counts).
FCC_COUNTS = {1: 2, 2: 2, 3: 6, 4: 19, 5: 28, 6: 80}

#: Hart & Forcade (PRB 77, 224115, 2008), Table IV, fcc binary: the same with each structure
#: merged with its A<->B swap (n >= 2; at n = 1 the two end members stay apart here).
HART_FORCADE_FCC = {2: 2, 3: 3, 4: 12, 5: 14, 6: 50}


@functools.cache
def _rocksalt_cell() -> Structure:
    conventional = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return conventional.get_primitive_structure()


def _rocksalt() -> Structure:
    """Primitive MgO (a fresh copy: from_spacegroup takes about a second here)."""
    return _rocksalt_cell().copy()


def _fcc_cu() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]
    ).get_primitive_structure()


def _counts(orderings: list[Ordering]) -> dict[int, int]:
    return dict(sorted(collections.Counter(o.n_cells for o in orderings).items()))


def _matcher() -> StructureMatcher:
    return StructureMatcher(
        ltol=0.05, stol=0.05, angle_tol=1, primitive_cell=True, attempt_supercell=True, scale=False
    )


# --------------------------------------------------------------------------------------------------
# Independent brute force: every supercell, every decoration, pymatgen's matcher
# --------------------------------------------------------------------------------------------------


def _all_superlattices(n: int) -> list[list[list[int]]]:
    """Every sublattice of index n: upper-triangular HNFs (rows), another convention than the
    module's lower-triangular ones."""
    out = []
    for a in range(1, n + 1):
        for c in range(1, n + 1):
            if n % (a * c):
                continue
            f = n // (a * c)
            for b, d, e in itertools.product(range(c), range(f), range(f)):
                out.append([[a, b, d], [0, c, e], [0, 0, f]])
    return out


def _brute_force_counts(prim: Structure, host: str, guest: str, max_cells: int) -> dict[int, int]:
    """Distinct decorated structures per true cell size, by StructureMatcher alone."""
    per_prim = len(prim)
    buckets: dict[tuple[str, int], list[Structure]] = collections.defaultdict(list)
    for n in range(1, max_cells + 1):
        for matrix in _all_superlattices(n):
            supercell = prim.copy()
            supercell.make_supercell(matrix)
            hosts = [i for i, site in enumerate(supercell) if site.specie.symbol == host]
            for choice in itertools.product([False, True], repeat=len(hosts)):
                s = supercell.copy()
                for i, on in zip(hosts, choice, strict=True):
                    if on:
                        s.replace(i, guest)
                # Reduce first: a decoration with a smaller true cell belongs to that size.
                reduced = s.get_primitive_structure(tolerance=0.01)
                buckets[(reduced.composition.formula, len(reduced))].append(reduced)
    counts: collections.Counter[int] = collections.Counter()
    matcher = _matcher()
    for (_, natoms), group in buckets.items():
        counts[natoms // per_prim] += len(matcher.group_structures(group))
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------------


def test_rocksalt_counts_are_the_fcc_derivative_superstructures():
    orderings = enumerate_orderings(_rocksalt(), "Mg", "Ca", 4)
    assert _counts(orderings) == {n: FCC_COUNTS[n] for n in range(1, 5)}
    assert len(orderings) == 29


def test_rocksalt_counts_agree_with_brute_force():
    assert _counts(enumerate_orderings(_rocksalt(), "Mg", "Ca", 4)) == _brute_force_counts(
        _rocksalt(), "Mg", "Ca", 4
    )


def test_fcc_counts_agree_with_brute_force_and_literature():
    cu = _fcc_cu()
    orderings = enumerate_orderings(cu, "Cu", "Au", 4)
    assert _counts(orderings) == _brute_force_counts(cu, "Cu", "Au", 4)
    assert _counts(orderings) == {n: FCC_COUNTS[n] for n in range(1, 5)}


def test_merging_guest_host_swaps_gives_hart_forcade_table():
    """Each ordering and its Cu<->Au swap counted once: Hart & Forcade's fcc column."""
    orderings = enumerate_orderings(_fcc_cu(), "Cu", "Au", 6)
    matcher = _matcher()
    merged = collections.Counter()
    for n in range(2, 7):
        left = [o.structure for o in orderings if o.n_cells == n]
        classes: list[Structure] = []
        for s in left:
            swapped = s.copy()
            swapped.replace_species({"Cu": "Au", "Au": "Cu"})
            if not any(matcher.fit(swapped, c) for c in classes):
                classes.append(s)
        merged[n] = len(classes)
    assert dict(merged) == HART_FORCADE_FCC


def test_hcp_two_site_sublattice_agrees_with_brute_force():
    """A sublattice of two sites per primitive cell, related by a screw axis, not a translation."""
    hcp = Structure.from_spacegroup(
        "P6_3/mmc", Lattice.hexagonal(3.2, 5.2), ["Mg"], [[1 / 3, 2 / 3, 0.25]]
    )
    assert _counts(enumerate_orderings(hcp, "Mg", "Zn", 2)) == _brute_force_counts(
        hcp, "Mg", "Zn", 2
    )


@pytest.mark.parametrize(
    ("name", "max_cells"),
    [("rocksalt", 6), ("wurtzite", 3), ("perovskite", 4)],
)
def test_counts_per_composition_agree_with_icet(name, max_cells):
    """icet's enumeration (Hart-Forcade, C++), where installed: the same counts per size and
    guest fraction."""
    enumerate_structures = pytest.importorskip("icet.tools").enumerate_structures
    from pymatgen.io.ase import AseAtomsAdaptor

    prim, host, guest = {
        "rocksalt": (_rocksalt(), "Mg", "Ca"),
        "wurtzite": (
            Structure.from_spacegroup(
                "P6_3mc",
                Lattice.hexagonal(3.25, 5.2),
                ["Zn", "O"],
                [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]],
            ),
            "Zn",
            "Cd",
        ),
        "perovskite": (
            Structure.from_spacegroup(
                "Pm-3m",
                Lattice.cubic(3.9),
                ["Sr", "Ti", "O"],
                [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]],
            ),
            "Sr",
            "Ba",
        ),
    }[name]
    n_host = sum(site.specie.symbol == host for site in prim)
    mine = collections.Counter(
        (o.n_cells, round(o.fraction * o.n_cells * n_host))
        for o in enumerate_orderings(prim, host, guest, max_cells)
    )
    sublattices = [
        [host, guest] if site.specie.symbol == host else [site.specie.symbol] for site in prim
    ]
    theirs = collections.Counter()
    for atoms in enumerate_structures(
        AseAtomsAdaptor.get_atoms(prim), range(1, max_cells + 1), sublattices
    ):
        theirs[(len(atoms) // len(prim), atoms.get_chemical_symbols().count(guest))] += 1
    assert mine == theirs


def test_a_conventional_cell_gives_the_primitive_counts():
    conventional = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    orderings = enumerate_orderings(conventional, "Mg", "Ca", 3)
    assert _counts(orderings) == {n: FCC_COUNTS[n] for n in range(1, 4)}
    assert len(orderings[0].structure) == 2


# --------------------------------------------------------------------------------------------------
# The structures
# --------------------------------------------------------------------------------------------------


def test_rocksalt_structures_are_right_and_all_distinct():
    orderings = enumerate_orderings(_rocksalt(), "Mg", "Ca", 4)
    prim_volume = _rocksalt().volume
    for o in orderings:
        s = o.structure
        comp = s.composition
        assert len(s) == 2 * o.n_cells
        assert comp["O"] == o.n_cells  # one O per primitive cell
        assert comp["Mg"] + comp["Ca"] == o.n_cells
        assert o.fraction == pytest.approx(comp["Ca"] / o.n_cells)
        assert s.volume == pytest.approx(o.n_cells * prim_volume)
        assert np.all(s.frac_coords >= 0.0) and np.all(s.frac_coords < 1.0)
        # Sites on the rocksalt positions: nearest neighbours at a/2.
        assert np.min(s.distance_matrix + 100 * np.eye(len(s))) == pytest.approx(4.21 / 2, abs=1e-6)
    # Each reduced to its primitive cell by the matcher, so that a duplicate in a larger cell
    # would be caught too; only structures of the same composition can match.
    matcher = _matcher()
    same_formula = collections.defaultdict(list)
    for o in orderings:
        same_formula[o.structure.composition.reduced_formula].append(o.structure)
    for group in same_formula.values():
        assert all(len(g) == 1 for g in matcher.group_structures(group))


def test_end_members_come_once_at_one_cell():
    orderings = enumerate_orderings(_rocksalt(), "Mg", "Ca", 4)
    pure = [o for o in orderings if o.fraction in (0.0, 1.0)]
    assert [(o.n_cells, o.fraction, o.structure.composition.reduced_formula) for o in pure] == [
        (1, 0.0, "MgO"),
        (1, 1.0, "CaO"),
    ]
    without = enumerate_orderings(_rocksalt(), "Mg", "Ca", 4, include_end_members=False)
    assert len(without) == len(orderings) - 2
    assert all(0.0 < o.fraction < 1.0 for o in without)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_parse_substitution():
    assert parse_substitution("Mg:Ca") == ("Mg", "Ca")
    assert parse_substitution(" Mg : Ca ") == ("Mg", "Ca")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("MgCa", "HOST:GUEST"),
        ("Mg:Ca:Sr", "HOST:GUEST"),
        ("Mg:Xx", "'Xx' is not an element"),
        ("Mg:Mg", "itself"),
    ],
)
def test_parse_substitution_rejects_bad_text(text, words):
    with pytest.raises(ValueError, match=words) as info:
        parse_substitution(text)
    assert "\n" not in str(info.value)


def test_bad_inputs_raise_input_error():
    cao = _rocksalt()
    cao.replace_species({"Mg": "Ca"})
    with pytest.raises(InputError, match="Mg is not in CaO: nothing to substitute"):
        enumerate_orderings(cao, "Mg", "Sr", 2)
    with pytest.raises(InputError, match="at least 1"):
        enumerate_orderings(_rocksalt(), "Mg", "Ca", 0)
    with pytest.raises(InputError, match=r"more than 10 orderings.*smaller --max-cells") as info:
        enumerate_orderings(_rocksalt(), "Mg", "Ca", 4, max_structures=10)
    assert "\n" not in str(info.value)
    assert len(enumerate_orderings(_rocksalt(), "Mg", "Ca", 4, max_structures=29)) == 29


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------


def test_labels_are_stable_and_ordered():
    first = enumerate_orderings(_rocksalt(), "Mg", "Ca", 4)
    second = enumerate_orderings(_rocksalt(), "Mg", "Ca", 4)
    labels = [o.label for o in first]
    assert labels == [o.label for o in second]
    assert len(set(labels)) == len(labels)
    assert [o.structure for o in first] == [o.structure for o in second]
    keys = [(o.n_cells, round(o.fraction * o.n_cells)) for o in first]
    assert keys == sorted(keys)
    assert labels[:10] == [
        "1-0-0",
        "1-1-0",
        "2-1-0",
        "2-1-1",
        "3-1-0",
        "3-1-1",
        "3-1-2",
        "3-2-0",
        "3-2-1",
        "3-2-2",
    ]
