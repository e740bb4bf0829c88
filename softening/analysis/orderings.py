"""Symmetry-distinct orderings of a substitution on one sublattice (derivative superstructures).

Given a primitive cell, a host element and a guest element, every ordered arrangement of guest and
host on the host sublattice in supercells of 1..N primitive cells, one per symmetry class, as
cluster-expansion codes enumerate them (Hart & Forcade, Phys. Rev. B 77, 224115 (2008)):

1. Superlattices: the Hermite normal forms (HNF) of determinant ``n`` list every sublattice of
   index ``n`` of the parent lattice exactly once; those related by a rotation of the parent's
   space group give equivalent structures, so one per orbit is kept.
2. Decorations: each of the ``2**m`` guest/host arrangements on the ``m`` host sites of a
   superlattice, up to the operations that map the superlattice onto itself (the space-group
   operations that stabilise it combined with its internal translations). These act as
   permutations of the host sites, so the canonical representative of a class is found by integer
   arithmetic alone (the smallest bit code of its orbit), without any StructureMatcher.
3. Arrangements invariant under an internal translation have a smaller true cell: they are found
   at that smaller size already and are dropped (the pure end members come only at ``n = 1``).

Two arrangements on non-equivalent superlattices are never equivalent: their true lattices are
the superlattices themselves (step 3), and any isometry between the two structures is a symmetry
of the parent that would map one superlattice onto the other. So no comparison across
superlattices is needed.

Counts are those of enumlib/icet with guest and host distinct (no label exchange): 2, 2, 6, 19,
28, 80 for n = 1..6 on an fcc sublattice (Hart & Forcade's 2, 2, 3, 12, 14, 50 merge each
arrangement with its guest/host swap).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from softening.errors import InputError

#: Decorations whose orbit representatives are looked for at once (memory: chunk x group size).
_CHUNK = 1 << 14

#: Host sites in one supercell beyond which bit codes no longer fit in an int64.
_MAX_SITES = 62


@dataclass(frozen=True)
class Ordering:
    """One symmetry-distinct ordering of the guest on the host sublattice.

    Attributes
    ----------
    structure
        The ordered cell: a Niggli-reduced supercell of the primitive cell, fractional
        coordinates wrapped to [0, 1).
    n_cells
        Supercell size in primitive cells (the index of its superlattice).
    fraction
        Fraction of the host sublattice occupied by the guest, 0..1.
    label
        Stable id ``f"{n_cells}-{k}-{index}"``, with ``k`` the number of guest atoms and
        ``index`` the rank of this ordering among those with the same ``n_cells`` and ``k``.
    """

    structure: Structure
    n_cells: int
    fraction: float
    label: str


def parse_substitution(text: str) -> tuple[str, str]:
    """Host and guest elements of a substitution written ``"HOST:GUEST"``.

    Parameters
    ----------
    text
        E.g. ``"Mg:Ca"`` (Ca on the Mg sites); spaces around the symbols are ignored.

    Returns
    -------
    tuple[str, str]
        ``(host, guest)``, e.g. ``("Mg", "Ca")``.

    Raises
    ------
    ValueError
        Not two element symbols separated by one colon, or the same element twice.
    """
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"substitution {text!r} is not HOST:GUEST (e.g. Mg:Ca)")
    host, guest = (p.strip() for p in parts)
    for symbol in (host, guest):
        if not Element.is_valid_symbol(symbol):
            raise ValueError(f"substitution {text!r}: {symbol!r} is not an element symbol")
    if host == guest:
        raise ValueError(f"substitution {text!r} replaces {host} with itself")
    return host, guest


def enumerate_orderings(
    prim: Structure,
    host: str,
    guest: str,
    max_cells: int,
    symprec: float = 0.01,
    include_end_members: bool = True,
    max_structures: int | None = 5000,
) -> list[Ordering]:
    """Symmetry-distinct orderings of guest on the host sublattice of prim, supercells of
    1..max_cells primitive cells.

    Parameters
    ----------
    prim
        The parent cell, ordered. A cell that is not primitive is first reduced to its primitive
        cell (``n_cells`` counts primitive cells); sites of other elements stay as they are.
    host
        Element whose sites form the sublattice (all sites of that element).
    guest
        Element that substitutes for ``host``. Should it sit on other sites of ``prim`` already,
        orderings are told apart by sublattice (as in a cluster expansion), and two of them may
        then be the same crystal with guest atoms swapped between sublattices.
    max_cells
        Largest supercell, in primitive cells (at least 1).
    symprec
        Symmetry tolerance of spglib, Å.
    include_end_members
        Keep the pure host and pure guest primitive cells (fractions 0 and 1).
    max_structures
        Refuse to return more orderings than this (the count grows about exponentially with
        ``max_cells``); ``None``: no limit.

    Returns
    -------
    list[Ordering]
        Sorted by ``n_cells``, then number of guest atoms, then a canonical key (superlattice, then
        arrangement), so that labels are the same from run to run.

    Raises
    ------
    InputError
        ``host`` not in ``prim``, ``max_cells < 1``, a disordered ``prim``, or more orderings than
        ``max_structures``.
    """
    if max_cells < 1:
        raise InputError(f"max_cells must be at least 1, not {max_cells}")
    if not prim.is_ordered:
        raise InputError(
            f"{prim.composition.reduced_formula} has partial occupancies: give an ordered cell"
        )
    if not any(site.specie.symbol == host for site in prim):
        raise InputError(
            f"{host} is not in {prim.composition.reduced_formula}: nothing to substitute"
        )
    prim = _primitive(prim, symprec)
    rotations, sites = _site_actions(prim, symprec)
    host_idx = [i for i, site in enumerate(prim) if site.specie.symbol == host]
    n_host = len(host_idx)
    # Integer image (site, cell offset) of each host site under each operation: ops map host
    # sites onto host sites, so a supercell permutation needs only these.
    host_pos = {s: j for j, s in enumerate(host_idx)}
    host_sites = [
        [(host_pos[s], h) for s, h in (sites[o][i] for i in host_idx)]
        for o in range(len(rotations))
    ]

    # Phase 1: canonical codes only (cheap), so that a too-large request fails before any
    # structure is built.
    found: list[tuple[int, int, int, np.ndarray, int]] = []  # (n, k, superlattice rank, hnf, code)
    for n in range(1, max_cells + 1):
        m = n * n_host
        if m > _MAX_SITES:
            raise InputError(
                f"{n} cells hold {m} {host} sites, more than {_MAX_SITES}: use a smaller --max-cells"
            )
        for rank, hnf in enumerate(_distinct_superlattices(n, rotations)):
            perms, translations = _site_permutations(hnf, rotations, host_sites, n_host)
            if max_structures is not None:
                # Fail before looping over 2**m decorations when even a lower bound on the
                # classes is too many: at most (n - 1) * 2**(m/2) decorations are invariant
                # under an internal translation, and an orbit holds at most len(perms).
                least = (2**m - (n - 1) * 2 ** (m // 2)) // len(perms)
                if len(found) + least > max_structures:
                    raise InputError(
                        f"more than {max_structures} orderings (at least {len(found) + least} "
                        f"with up to {n} cells): use a smaller --max-cells than {max_cells}"
                    )
            for code in _representatives(perms, translations, m):
                k = int(code).bit_count()
                if n == 1 and k in (0, m) and not include_end_members:
                    continue
                found.append((n, k, rank, hnf, int(code)))
            if max_structures is not None and len(found) > max_structures:
                raise InputError(
                    f"more than {max_structures} orderings (at least {len(found)} with up to {n} "
                    f"cells): use a smaller --max-cells than {max_cells}"
                )

    # Phase 2: the structures, in a deterministic order.
    found.sort(key=lambda f: (f[0], f[1], f[2], f[4]))
    out = []
    for (n, k), group in itertools.groupby(found, key=lambda f: (f[0], f[1])):
        for index, (_, _, _, hnf, code) in enumerate(group):
            structure = _decorated(prim, hnf, host_idx, code, guest)
            out.append(Ordering(structure, n, k / (n * n_host), f"{n}-{k}-{index}"))
    return out


# --------------------------------------------------------------------------------------------------
# Symmetry of the parent
# --------------------------------------------------------------------------------------------------


def _primitive(prim: Structure, symprec: float) -> Structure:
    """``prim`` itself when primitive, else its primitive cell.

    A pure translation among the space-group operations would map supercell arrangements onto
    one another without being counted, so the enumeration needs a primitive cell.
    """
    if not _pure_translations(prim, symprec):
        return prim
    reduced = prim.get_primitive_structure(tolerance=symprec)
    if _pure_translations(reduced, symprec):
        raise InputError(
            f"cannot reduce {prim.composition.reduced_formula} to its primitive cell at "
            f"symprec={symprec}: give a primitive cell"
        )
    return reduced


def _pure_translations(structure: Structure, symprec: float) -> bool:
    ops = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_operations(cartesian=False)
    return any(
        np.array_equal(op.rotation_matrix, np.eye(3))
        and not np.allclose(op.translation_vector - np.round(op.translation_vector), 0.0, atol=1e-6)
        for op in ops
    )


def _site_actions(
    prim: Structure, symprec: float
) -> tuple[list[np.ndarray], list[list[tuple[int, tuple[int, int, int]]]]]:
    """Integer rotations of the space group and the site map of each operation.

    Returns
    -------
    rotations
        One integer 3x3 matrix per operation, acting on fractional column vectors.
    sites
        ``sites[o][i] = (j, h)``: operation ``o`` takes site ``i`` of the primitive cell to site
        ``j`` shifted by the lattice vector ``h`` (fractional, integers).
    """
    ops = SpacegroupAnalyzer(prim, symprec=symprec).get_symmetry_operations(cartesian=False)
    frac = prim.frac_coords
    species = [site.specie for site in prim]
    matrix = prim.lattice.matrix
    rotations, sites = [], []
    for op in ops:
        rot = np.round(op.rotation_matrix).astype(int)
        images = frac @ op.rotation_matrix.T + op.translation_vector
        mapping = []
        for i, x in enumerate(images):
            # Nearest site of the same species, through the periodic boundary: spglib found the
            # operation within symprec, so the images sit within symprec of the sites.
            delta = x - frac
            shift = np.round(delta)
            dist = np.linalg.norm((delta - shift) @ matrix, axis=1)
            dist[[sp != species[i] for sp in species]] = np.inf
            j = int(np.argmin(dist))
            mapping.append((j, tuple(int(v) for v in shift[j])))
        if sorted(j for j, _ in mapping) != list(range(len(prim))):
            raise InputError(f"inconsistent symmetry at symprec={symprec}: try another symprec")
        rotations.append(rot)
        sites.append(mapping)
    return rotations, sites


# --------------------------------------------------------------------------------------------------
# Superlattices
# --------------------------------------------------------------------------------------------------


def _hnfs(n: int) -> list[np.ndarray]:
    """All lower-triangular Hermite normal forms of determinant ``n``.

    The rows are the superlattice vectors in the primitive basis; ``[[a,0,0],[b,c,0],[d,e,f]]``
    with ``a*c*f = n``, ``0 <= b, d < a`` and ``0 <= e < c`` lists each sublattice of index ``n``
    once (row operations that keep the triangle can only shift b, d by a and e by c).
    """
    out = []
    for a in range(1, n + 1):
        if n % a:
            continue
        for c in range(1, n // a + 1):
            if (n // a) % c:
                continue
            f = n // (a * c)
            for b, d, e in itertools.product(range(a), range(a), range(c)):
                out.append(np.array([[a, 0, 0], [b, c, 0], [d, e, f]]))
    return out


def _same_lattice(rows: np.ndarray, hnf: np.ndarray) -> bool:
    """Whether the integer ``rows`` span the lattice of ``hnf`` (same determinant in magnitude)."""
    n = round(abs(np.linalg.det(hnf)))
    coeff = rows @ _adjugate(hnf)  # n * rows @ inv(hnf), exact in integers
    return abs(round(np.linalg.det(rows))) == n and not np.any(coeff % n)


def _adjugate(hnf: np.ndarray) -> np.ndarray:
    """``det(hnf) * inv(hnf)`` in integers (for a positive determinant)."""
    n = round(np.linalg.det(hnf))
    return np.round(n * np.linalg.inv(hnf)).astype(int)


def _distinct_superlattices(n: int, rotations: list[np.ndarray]) -> list[np.ndarray]:
    """One HNF per orbit of the index-``n`` superlattices under the parent's rotations, the first
    of each orbit in :func:`_hnfs` order (which makes the choice independent of the order of the
    operations)."""
    kept: list[np.ndarray] = []
    seen: set[tuple[int, ...]] = set()
    for hnf in _hnfs(n):
        if _key(hnf) in seen:
            continue
        kept.append(hnf)
        # A fractional row vector v goes to v @ R.T under the rotation R; the HNF of the rotated
        # rows names the rotated superlattice.
        seen.update(_key(_row_hnf(hnf @ rot.T)) for rot in rotations)
    return kept


def _key(hnf: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in hnf.ravel())


def _row_hnf(rows: np.ndarray) -> np.ndarray:
    """The lower-triangular HNF (as in :func:`_hnfs`) of the lattice spanned by integer ``rows``.

    Integer row operations only (Euclid on each column, last column first), so the lattice is
    unchanged and the result is the unique form that :func:`_hnfs` lists.
    """
    work = [[int(v) for v in row] for row in rows]
    out: list[list[int]] = []
    for col in (2, 1):
        # Gather the gcd of this column in one row, zeros in the others.
        while sum(1 for row in work if row[col]) > 1:
            pivot = min((row for row in work if row[col]), key=lambda row: abs(row[col]))
            for row in work:
                if row is not pivot and row[col]:
                    q = row[col] // pivot[col]
                    row[:] = [x - q * y for x, y in zip(row, pivot, strict=True)]
        pivot = next(row for row in work if row[col])
        work.remove(pivot)
        out.insert(0, pivot if pivot[col] > 0 else [-x for x in pivot])
    last = work[0]
    out.insert(0, last if last[0] > 0 else [-x for x in last])
    (a, _, _), (b, c, _), (_, e, _) = out
    out[1] = [x - (b // a) * y for x, y in zip(out[1], out[0], strict=True)]
    out[2] = [x - (e // c) * y for x, y in zip(out[2], out[1], strict=True)]
    d = out[2][0]
    out[2] = [x - (d // a) * y for x, y in zip(out[2], out[0], strict=True)]
    return np.array(out, dtype=int)


def _site_permutations(
    hnf: np.ndarray,
    rotations: list[np.ndarray],
    host_sites: list[list[tuple[int, tuple[int, int, int]]]],
    n_host: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Permutations of the supercell's host sites by its symmetry group.

    Host site ``(s, g)`` (site ``s`` of the primitive cell shifted by the lattice point ``g``) has
    index ``s * n + rank(g)``. The group is every stabilising space-group operation followed by
    every internal translation.

    Returns
    -------
    perms
        ``(n_ops, m)``: ``perms[p, i]`` is where site ``i`` goes.
    translations
        Row indices of ``perms`` that are non-trivial internal translations.
    """
    n = int(np.prod(np.diag(hnf)))
    adj = _adjugate(hnf)
    points = _lattice_points(hnf)
    rank = {_coset(g, adj, n): r for r, g in enumerate(points)}
    stabiliser = [o for o, rot in enumerate(rotations) if _same_lattice(hnf @ rot.T, hnf)]
    perms, is_translation = [], []
    for o in stabiliser:
        rot = rotations[o]
        moved = points @ rot.T  # R g for each lattice point g (row vectors)
        for shift in points:
            perm = np.empty(n * n_host, dtype=np.int64)
            for s in range(n_host):
                target, h = host_sites[o][s]
                for r in range(n):
                    coset = _coset(moved[r] + np.asarray(h) + shift, adj, n)
                    perm[s * n + r] = target * n + rank[coset]
            perms.append(perm)
            # In a primitive cell the only operation with the identity rotation is the identity.
            is_translation.append(np.array_equal(rot, np.eye(3, dtype=int)) and bool(np.any(shift)))
    perms_arr = np.unique(np.array(perms), axis=0)  # operations that act alike on the host sites
    translation_rows = {tuple(p) for p, flag in zip(perms, is_translation, strict=True) if flag}
    translations = np.array(
        [i for i, p in enumerate(perms_arr) if tuple(p) in translation_rows], dtype=int
    )
    return perms_arr, translations


def _lattice_points(hnf: np.ndarray) -> np.ndarray:
    """One lattice vector per coset of the superlattice (``det`` of them): the box
    ``[0, a) x [0, c) x [0, f)`` of the lower-triangular HNF."""
    a, c, f = np.diag(hnf)
    return np.array(list(itertools.product(range(a), range(c), range(f))), dtype=int)


def _coset(g: np.ndarray, adj: np.ndarray, n: int) -> tuple[int, ...]:
    """Key of the coset of ``g`` modulo the superlattice: ``n`` times its fractional coordinates
    in the supercell basis, modulo ``n`` (integers, so no tolerance)."""
    return tuple(int(v) for v in np.asarray(g) @ adj % n)


# --------------------------------------------------------------------------------------------------
# Decorations
# --------------------------------------------------------------------------------------------------


def _representatives(perms: np.ndarray, translations: np.ndarray, m: int) -> list[int]:
    """Bit codes of the canonical decorations of one superlattice.

    Bit ``i`` of a code is 1 when host site ``i`` holds the guest. A decoration is kept when its
    code is the smallest of its orbit (one per class) and no internal translation leaves it
    unchanged (else its true cell is smaller).
    """
    weights = np.left_shift(np.int64(1), perms.T)  # (m, n_ops): site i moved to perms[p, i]
    bits = np.arange(m, dtype=np.int64)
    out = []
    for start in range(0, 1 << m, _CHUNK):
        codes = np.arange(start, min(start + _CHUNK, 1 << m), dtype=np.int64)
        decoration = (codes[:, None] >> bits) & 1
        images = decoration @ weights
        keep = images.min(axis=1) == codes
        if len(translations):
            keep &= ~np.any(images[:, translations] == codes[:, None], axis=1)
        out.extend(int(c) for c in codes[keep])
    return out


def _decorated(
    prim: Structure, hnf: np.ndarray, host_idx: list[int], code: int, guest: str
) -> Structure:
    """The supercell of ``hnf`` with the guest on the host sites set in ``code``.

    The cell is Niggli-reduced (HNF supercells can be needle-like), and fractional coordinates are
    computed in integers over ``n`` before wrapping, so that they land exactly in [0, 1).
    """
    n = int(np.prod(np.diag(hnf)))
    matrix = _niggli_rows(prim.lattice, hnf)
    inv = np.linalg.inv(matrix)
    points = _lattice_points(hnf)
    host_rank = {s: j for j, s in enumerate(host_idx)}
    species, coords = [], []
    for i, site in enumerate(prim):
        for r, g in enumerate(points):
            x = (site.frac_coords + g) @ inv
            x -= np.floor(x)
            x[np.isclose(x, 1.0, rtol=0.0, atol=1e-10)] = 0.0
            coords.append(x)
            j = host_rank.get(i)
            species.append(guest if j is not None and code >> (j * n + r) & 1 else site.specie)
    return Structure(Lattice(matrix @ prim.lattice.matrix), species, coords)


def _niggli_rows(lattice: Lattice, hnf: np.ndarray) -> np.ndarray:
    """Integer rows (primitive basis) of the Niggli-reduced, right-handed basis of the superlattice
    of ``hnf``."""
    reduced = Lattice(hnf @ lattice.matrix).get_niggli_reduced_lattice()
    rows = np.round(reduced.matrix @ np.linalg.inv(lattice.matrix)).astype(int)
    if np.linalg.det(rows) < 0:
        rows = -rows  # all three vectors reversed: same lengths and angles, right-handed
    if not _same_lattice(rows, hnf):  # a reduction that left the lattice would be a bug
        return hnf
    return rows
