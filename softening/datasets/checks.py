"""Checks of inputs before any model runs or MD starts, and the one place positions are wrapped.

Every reader of :mod:`softening.datasets.formats` passes its frames through :func:`check_frame`
and its structures through :func:`check_structure`, so that a bad frame is refused with a
one-line :class:`~softening.errors.InputError` naming it, instead of a NaN or a crash after an
expensive step.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Structure

from softening.errors import InputError

if TYPE_CHECKING:
    from softening.datasets.frames import Frame

#: Closest two atoms (or an atom and its periodic image) may be, Å.
MIN_INTERATOMIC_DISTANCE = 0.5

#: Dataset frames are judged only for atoms at one position (a model's output is NaN there):
#: closer than this, Å. Starting structures use the stricter MIN_INTERATOMIC_DISTANCE.
COINCIDENT_DISTANCE = 0.1

#: Two sites listed in a CIF closer than this (fractional, after wrapping) are the same site.
CIF_SITE_TOLERANCE = 1e-4

#: Largest reference force component a dataset frame may carry, eV/Å. DFT forces of sampled
#: structures stay below about 50 eV/Å (the WBM high-energy frames and mlearn's AIMD: below 10);
#: beyond this a label is a unit error or a broken calculation, and one such component decides
#: the through-origin slope of every fit it enters.
MAX_REFERENCE_FORCE = 1000.0

#: Empty space a frame needs along a direction it declares non-periodic (extended XYZ ``pbc``),
#: Å: the models always compute a periodic cell, which is the same as an open boundary only when
#: the atoms are further from their images than the models' cutoffs (5-6 Å).
MIN_OPEN_BOUNDARY_VACUUM = 8.0


def check_structure(
    structure: Structure,
    where: str = "structure",
    min_distance: float = MIN_INTERATOMIC_DISTANCE,
) -> None:
    """Refuse a structure that no MD or single point should use.

    Parameters
    ----------
    structure
        The structure to check.
    where
        How to name it in the message (a file path, ``"file frame 3"``...).
    min_distance
        Closest two atoms may be, Å.

    Raises
    ------
    InputError
        No atoms, zero or non-finite cell volume, non-finite positions, partial occupancies,
        or two atoms (or an atom and its periodic image) closer than ``min_distance``; the
        message names the atoms.
    """
    prefix = f"cannot use {where!r} as a structure"
    if len(structure) == 0:
        raise InputError(f"{prefix}: it has no atoms")
    volume = float(structure.lattice.volume)
    if not math.isfinite(volume) or abs(volume) < 1e-6:
        raise InputError(f"{prefix}: it has no lattice (cell volume {volume:.3g} Å^3)")
    if not np.isfinite(structure.cart_coords).all():
        raise InputError(f"{prefix}: it has non-finite atomic positions")
    if not structure.is_ordered:
        raise InputError(f"{prefix}: it is disordered (partial occupancies); order it first")
    centers, neighbors, _, distances = structure.get_neighbor_list(r=min_distance)
    if len(distances):
        k = int(np.argmin(distances))
        i, j, d = int(centers[k]), int(neighbors[k]), float(distances[k])
        si, sj = structure[i].species_string, structure[j].species_string
        pair = (
            f"atom {i} ({si}) and its periodic image"
            if i == j
            else f"atoms {i} ({si}) and {j} ({sj})"
        )
        raise InputError(
            f"{prefix}: {pair} are {d:.3f} Å apart (< {min_distance} Å): overlapping atoms"
        )


def check_frame(frame: Frame, where: str | None = None) -> None:
    """Refuse a dataset frame before any model evaluates it.

    Parameters
    ----------
    frame
        The frame (its structure and reference labels).
    where
        How to name it; default: its source and frame id.

    Raises
    ------
    InputError
        A structure :func:`check_structure` refuses (no atoms, atoms closer than
        :data:`COINCIDENT_DISTANCE`...), or non-finite reference energy, forces or stress.
    """
    where = where or f"{frame.source or 'dataset'} frame {frame.material_key}/{frame.frame_id}"
    check_structure(frame.structure, where, min_distance=COINCIDENT_DISTANCE)
    bad = []
    if frame.energy is not None and not math.isfinite(float(frame.energy)):
        bad.append("energy")
    for name in ("forces", "stress"):
        value = getattr(frame, name)
        if value is not None and not np.isfinite(np.asarray(value, dtype=float)).all():
            bad.append(name)
    if bad:
        raise InputError(f"{where}: non-finite reference {' and '.join(bad)} (NaN or inf)")
    if frame.forces is not None and np.size(frame.forces):
        forces = np.abs(np.asarray(frame.forces, dtype=float))
        if forces.max() > MAX_REFERENCE_FORCE:
            # Overlapping atoms are the usual cause of such forces: name the cause when it is so.
            check_structure(frame.structure, where, min_distance=MIN_INTERATOMIC_DISTANCE)
            atom = int(np.unravel_index(int(np.argmax(forces)), forces.shape)[0])
            raise InputError(
                f"{where}: reference force component {forces.max():.3g} eV/Å on atom {atom} "
                f"(above {MAX_REFERENCE_FORCE:g} eV/Å no DFT force is usable: a unit error or a "
                "broken calculation); fix or remove the frame"
            )


def check_periodic(pbc: Any, lattice: Any, frac_coords: Any, where: str) -> None:
    """Refuse a frame declared non-periodic along a direction where it has no vacuum.

    The models compute every frame as a periodic crystal; along a direction the file declares
    open (``pbc="F ..."``, e.g. a molecule or a slab from ASE) that is the same thing only when
    the atoms leave at least :data:`MIN_OPEN_BOUNDARY_VACUUM` Å of empty space there.

    Parameters
    ----------
    pbc
        Periodicity along the three cell vectors (three booleans).
    lattice, frac_coords
        The cell (3x3, Å) and the atoms' fractional coordinates.
    where
        How to name the frame in the message.

    Raises
    ------
    InputError
        Naming the open directions, their largest gap and what to do.
    """
    from softening.analysis.surfaces import largest_gaps

    flags = [bool(x) for x in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))]
    if all(flags) or len(frac_coords) == 0:
        return
    gaps = largest_gaps(lattice, frac_coords)
    tight = [i for i in range(3) if not flags[i] and gaps[i] < MIN_OPEN_BOUNDARY_VACUUM]
    if tight:
        text = " ".join("T" if f else "F" for f in flags)
        axes = ", ".join("abc"[i] for i in tight)
        raise InputError(
            f'{where}: declared non-periodic (pbc="{text}") but only '
            f"{min(gaps[i] for i in tight):.1f} Å of empty space along {axes}: the models treat "
            'every frame as a periodic crystal; give pbc="T T T" if it is one, or a cell with at '
            f"least {MIN_OPEN_BOUNDARY_VACUUM:g} Å of vacuum around a molecule or slab"
        )


def frame_digest(frame: Frame) -> str:
    """Hash of a frame's content: structure (lattice, species, wrapped positions) and labels.

    Rounded (lattice 1e-6 Å, fractional coordinates 1e-7, energy 1e-6 eV, forces 1e-5 eV/Å), so
    that a frame written twice, or into two files of different formats, gives one digest.
    """
    s = frame.structure

    def rounded(x: Any, decimals: int) -> bytes:
        return (np.round(np.asarray(x, dtype=np.float64), decimals) + 0.0).tobytes()

    frac = np.asarray(s.frac_coords, dtype=np.float64)
    frac = np.round(frac - np.floor(frac), 7) % 1.0
    parts = [
        rounded(s.lattice.matrix, 6),
        " ".join(site.species_string for site in s).encode(),
        rounded(frac, 7),
        b"-" if frame.energy is None else rounded(frame.energy, 6),
        b"-" if frame.forces is None else rounded(frame.forces, 5),
    ]
    return hashlib.sha256(b"|".join(parts)).hexdigest()


def frame_place(frame: Frame) -> str:
    """Where a frame was read, in words: ``'file' frame 3`` (or its source, or its id)."""
    source = frame.source or ""
    path, sep, index = source.rpartition("@")
    if sep and index.isdigit():
        return f"{path!r} frame {index}"
    return repr(source) if source else f"frame {frame.material_key}/{frame.frame_id}"


class FrameRegistry:
    """The frames read so far, by content: a frame given twice is refused naming both places.

    One registry spans what one command reads (every file of ``evaluate``, ``surfaces``,
    ``finetune``), so a frame repeated inside a file, the same slab in two files, or one file given
    twice is caught before any model runs, instead of counting twice in every fit and mean.
    """

    def __init__(self) -> None:
        self._first: dict[str, str] = {}

    def add(self, frame: Frame) -> None:
        """Record ``frame``.

        Raises
        ------
        InputError
            When a frame with the same structure, energy and forces was recorded before.
        """
        where = frame_place(frame)
        first = self._first.setdefault(frame_digest(frame), where)
        if first is where:
            return
        same = f"is the same frame as {first} (same structure, energy and forces)"
        if first == where:
            same = "was read twice (a file given twice)"
        raise InputError(f"{where} {same}: it would count twice; give each frame once")


def wrap_structure(structure: Structure) -> Structure:
    """``structure`` with every atom moved into the cell (fractional coordinates in [0, 1)).

    uMLIPs that compute in float32 lose precision on positions far from the origin (an atom
    1e5 Å away keeps about 0.01 Å): results must not depend on the periodic image chosen. The
    wrap is done in float64, so positions are exact to about 1e-11 of their magnitude. Returns the
    same object when every atom is already inside (no copy, content keys unchanged).

    Parameters
    ----------
    structure
        Any periodic structure.

    Returns
    -------
    Structure
        The wrapped structure (a copy when anything moved).
    """
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    if ((frac >= 0.0) & (frac < 1.0)).all():
        return structure
    wrapped = frac - np.floor(frac)
    wrapped[wrapped >= 1.0] = 0.0  # -1e-17 - floor(-1e-17) rounds to 1.0
    return Structure(
        structure.lattice,
        structure.species_and_occu,
        wrapped,
        site_properties=structure.site_properties or None,
        properties=getattr(structure, "properties", None),
    )


def structure_digest(structure: Structure, length: int = 6) -> str:
    """A short hash of a structure: lattice, species and wrapped fractional coordinates.

    Rounded (lattice to 1e-4 Å, fractional coordinates to 1e-5) so that a structure read again from
    its file, or moved by a lattice vector, gives the same digest.

    Parameters
    ----------
    structure
        The structure.
    length
        Hex characters kept (6: one in 16 million).

    Returns
    -------
    str
        ``length`` lowercase hex characters.
    """
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    frac = np.round(frac - np.floor(frac), 5) % 1.0
    payload = {
        "lattice": np.round(structure.lattice.matrix, 4).tolist(),
        "species": [site.species_string for site in structure],
        "frac": frac.tolist(),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def duplicate_cif_sites(path: str | Path) -> list[tuple[str, str]]:
    """Pairs of sites listed twice at the same position in a CIF (pymatgen merges them silently).

    Parameters
    ----------
    path
        A CIF file.

    Returns
    -------
    list of (str, str)
        Labels (or ``element #row``) of each pair of rows at one position; empty when none or
        when the file is not a readable CIF (the structure reader then reports it).
    """
    from pymatgen.io.cif import CifFile, str2float

    try:
        cif = CifFile.from_file(str(path))
    except Exception:
        return []
    pairs = []
    for block in cif.data.values():
        data = block.data
        xs = data.get("_atom_site_fract_x")
        if not isinstance(xs, list):
            continue
        try:
            frac = np.array(
                [[str2float(v) for v in data[f"_atom_site_fract_{c}"]] for c in ("x", "y", "z")],
                dtype=float,
            ).T
        except (KeyError, ValueError):
            continue
        labels = data.get("_atom_site_label") or data.get("_atom_site_type_symbol") or []
        symbols = data.get("_atom_site_type_symbol") or labels
        names = [str(labels[i]) if i < len(labels) else f"site #{i + 1}" for i in range(len(frac))]
        for i in range(len(frac)):
            for j in range(i + 1, len(frac)):
                same_element = i >= len(symbols) or j >= len(symbols) or symbols[i] == symbols[j]
                d = frac[i] - frac[j]
                d -= np.round(d)
                if same_element and np.all(np.abs(d) < CIF_SITE_TOLERANCE):
                    pairs.append((names[i], names[j]))
    return pairs


def check_cif_sites(path: str | Path) -> None:
    """Refuse a CIF that lists one site twice (read, it would silently lose an atom).

    Raises
    ------
    InputError
        Naming the file and the duplicated sites.
    """
    pairs = duplicate_cif_sites(path)
    if pairs:
        shown = ", ".join(f"{a} = {b}" for a, b in pairs[:5])
        more = f" and {len(pairs) - 5} more" if len(pairs) > 5 else ""
        raise InputError(
            f"cannot read {str(path)!r}: it lists sites at the same position ({shown}{more}); "
            "they would be merged into one atom: remove the duplicate lines"
        )


def md_kept_frames(steps: int, stride: int, equilibration_fraction: float) -> int:
    """How many frames an MD of ``steps`` keeps (see :func:`softening.makers.md.run_md`).

    Frames are stored every ``stride`` steps and at the last step, after the first
    ``int(steps * equilibration_fraction)`` steps.
    """
    n_equil = int(steps * equilibration_fraction)
    kept = steps // stride - n_equil // stride
    if steps % stride and steps > n_equil:
        kept += 1
    return kept


def check_sampling(md_maker: Any, select_maker: Any) -> None:
    """Refuse MD and selection settings that would fail only after the MD ran.

    Parameters
    ----------
    md_maker
        An :class:`~softening.makers.md.MDSamplingMaker` (``steps``, ``stride``,
        ``equilibration_fraction``).
    select_maker
        A :class:`~softening.makers.select.FrameSelectionMaker` (``n_frames``).

    Raises
    ------
    InputError
        ``stride < 1``, or fewer kept MD frames than frames to select.
    """
    if md_maker.stride < 1:
        raise InputError(f"--stride must be >= 1 MD step, got {md_maker.stride}")
    kept = md_kept_frames(md_maker.steps, md_maker.stride, md_maker.equilibration_fraction)
    if kept < select_maker.n_frames:
        raise InputError(
            f"the MD keeps {kept} frame(s) ({md_maker.steps} steps, stride {md_maker.stride}, "
            f"first {md_maker.equilibration_fraction:.0%} discarded), fewer than the "
            f"{select_maker.n_frames} frames requested: run more --steps, lower --stride or "
            "ask for fewer --frames"
        )


def check_supercell_atoms(n_atoms: int, where: str) -> None:
    """Refuse a phonon supercell larger than the ``max_supercell_atoms`` setting.

    Checked before phonopy sees the cell: its symmetry search on the supercell takes minutes at a
    few thousand atoms (a 10x10x10 supercell of a one-atom cell: about a minute on 2 cores) and
    prints nothing meanwhile.

    Parameters
    ----------
    n_atoms
        Atoms of the supercell.
    where
        What the supercell is of (a material, a file), for the message.

    Raises
    ------
    InputError
        ``n_atoms`` above the limit; the message says how to raise it.
    """
    from softening.settings import get_settings

    limit = get_settings().max_supercell_atoms
    if n_atoms > limit:
        raise InputError(
            f"{where}: supercell of {n_atoms} atoms is larger than the limit of {limit} atoms "
            "(set SOFTENING_MAX_SUPERCELL_ATOMS to raise it)"
        )
