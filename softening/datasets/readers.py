"""Format detection and the entry points that read DFT-labelled data into
:class:`~softening.datasets.frames.Frame` lists, whole (:func:`read_frames`) or one frame at a time
(:func:`iter_frames`).

The format is detected from the file name and content:

- extended XYZ (``*.extxyz``, ``*.xyz``, optionally gzipped): labels from ``REF_energy`` /
  ``REF_forces`` / ``REF_stress``, or from plain ``energy`` / ``forces`` / ``stress``;
- the WBM high-energy-states JSON layout (``{material_id: {frame_id: {"structure", "vasp_e",
  "vasp_f", "vasp_s", "meta"}}}``);
- the mlearn JSON layout (a list of ``{"structure", "outputs", "group", "description"}``);
- ``vasprun.xml`` (optionally gzipped, or a directory holding one): one frame per ionic step;
- any structure file pymatgen or ASE understands (CIF, POSCAR, ...): one unlabelled frame.

Each format is a module of :mod:`softening.datasets.formats`, holding its whole-file read and its
streamed read. Conventions of every returned frame: energy in eV (total), forces ``(n, 3)`` float64
in eV/Å, stress ``(3, 3)`` in eV/Å^3 with the ASE sign (positive = tensile); sources in VASP's
convention (kbar, positive = compressive) are converted with
:func:`~softening.datasets.formats.building.vasp_stress_to_ase`.

:func:`iter_frames` yields the same frames as :func:`read_frames`, in the same order, but reads
extended XYZ image by image (ASE's ``iread``), the WBM layout material by material and the mlearn
layout record by record (``ijson``, a streaming JSON parser), so that a paper-sized file (the WBM
high-energy set: 9,308 frames) never sits in memory as a whole. vasprun files are read whole
(pymatgen parses them at once; one run is one calculation's size). :func:`count_frames` gives a
cheap estimate of the number of frames (for a progress bar's ETA).

Any file that cannot be read raises :class:`~softening.errors.InputError` with a one-line message
naming the file; the underlying exception is kept as ``__cause__``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from softening.datasets import checks as _checks
from softening.datasets.formats.building import VASP_VOIGT_ORDER, voigt_pairs
from softening.datasets.formats.extxyz import extxyz_frames, iter_extxyz, read_extxyz
from softening.datasets.formats.files import (
    existing_path,
    file_error,
    load_json,
    open_bytes,
    wrap_errors,
)
from softening.datasets.formats.mlearn import (
    is_mlearn,
    iter_mlearn_json,
    mlearn_frames,
    read_mlearn_json,
)
from softening.datasets.formats.structure import (
    is_structure_dict,
    read_structure_file,
    structure_frame,
)
from softening.datasets.formats.vasprun import find_vasprun, read_vasprun
from softening.datasets.formats.wbm import is_wbm, iter_wbm_json, read_wbm_json, wbm_frames
from softening.datasets.frames import Frame
from softening.errors import InputError

__all__ = [
    "FORMATS",
    "MIN_INTERATOMIC_DISTANCE",
    "check_structure",
    "count_frames",
    "detect_format",
    "iter_frames",
    "iter_labelled_frames",
    "read_frames",
    "read_structure",
]

#: Formats accepted by ``read_frames(fmt=...)``; ``"json"`` picks the WBM or mlearn layout by content.
FORMATS: tuple[str, ...] = ("extxyz", "wbm", "mlearn", "vasprun", "structure", "json")

#: Closest allowed approach of two atoms in a starting structure, in Å.
MIN_INTERATOMIC_DISTANCE: float = _checks.MIN_INTERATOMIC_DISTANCE

# Aliases users are likely to type for ``fmt``.
_FMT_ALIASES = {
    "xyz": "extxyz",
    "wbm_json": "wbm",
    "mlearn_json": "mlearn",
    "vasp": "vasprun",
    "xml": "vasprun",
    "cif": "structure",
    "poscar": "structure",
}

# Bytes read per step while counting frames.
_CHUNK = 1 << 20


def read_frames(
    path: str | Path, fmt: str | None = None, registry: _checks.FrameRegistry | None = None
) -> list[Frame]:
    """Read all frames of a dataset or structure file.

    Parameters
    ----------
    path
        File (or a directory holding ``vasprun.xml[.gz]``).
    fmt
        One of :data:`FORMATS` (or an alias such as ``"xyz"``, ``"cif"``); detected from the name and
        content when ``None`` (see :func:`detect_format`).
    registry
        The frames read before (by other files of the same command): a frame repeated inside the
        file or given before is refused. ``None``: a fresh one (repeats inside the file only).

    Returns
    -------
    list of Frame
        At least one frame. Energies in eV, forces in eV/Å, stresses in eV/Å^3 (ASE sign).

    Raises
    ------
    InputError
        Missing, unreadable or malformed file, unknown ``fmt``, a file without frames, or a frame
        given twice (:class:`~softening.datasets.checks.FrameRegistry`).
    """
    path = existing_path(path)
    kind = _normalise_fmt(fmt) if fmt is not None else detect_format(path)
    if kind == "extxyz":
        frames = read_extxyz(path)
    elif kind == "vasprun":
        frames = read_vasprun(path)
    elif kind == "wbm":
        frames = read_wbm_json(path)
    elif kind == "mlearn":
        frames = read_mlearn_json(path)
    elif kind == "json":
        frames = _json_frames(load_json(path), path)
    else:
        frames = [structure_frame(read_structure_file(path), path)]
    if not frames:
        raise file_error(path, "contains no frames")
    registry = registry if registry is not None else _checks.FrameRegistry()
    for frame in frames:
        registry.add(frame)
    return frames


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name (and, for directories, its content).

    Parameters
    ----------
    path
        File or directory.

    Returns
    -------
    str
        ``"extxyz"``, ``"vasprun"``, ``"json"`` (WBM or mlearn, decided when the content is read) or
        ``"structure"`` (anything else: handed to pymatgen, then ASE).

    Raises
    ------
    InputError
        Missing path, or a directory without ``vasprun.xml[.gz]``.
    """
    path = existing_path(path)
    if path.is_dir():
        find_vasprun(path)  # raises when the directory holds none
        return "vasprun"
    name = path.name.lower()
    base = name.removesuffix(".gz")
    if base.endswith((".extxyz", ".xyz")):
        return "extxyz"
    # atomate2 writes e.g. vasprun.xml.relax1.gz, so a "vasprun" prefix counts as much as ".xml".
    if base.endswith(".xml") or name.startswith("vasprun"):
        return "vasprun"
    if base.endswith(".json"):
        return "json"
    return "structure"


def read_structure(path: str | Path, fmt: str | None = None) -> Structure:
    """Read a starting structure (e.g. for MD) and check that it is usable.

    Parameters
    ----------
    path
        CIF, POSCAR, extended XYZ (first frame), pymatgen JSON, a dataset file (first frame), or
        anything else pymatgen's ``Structure.from_file`` or ``ase.io.read`` understands.
    fmt
        As in :func:`read_frames`; detected when ``None``.

    Returns
    -------
    Structure
        The structure (Cartesian coordinates in Å).

    Raises
    ------
    InputError
        Unreadable file, or a structure that fails :func:`check_structure` (no lattice / zero
        volume, partial occupancies, atoms closer than :data:`MIN_INTERATOMIC_DISTANCE`).
    """
    path = existing_path(path)
    kind = _normalise_fmt(fmt) if fmt is not None else detect_format(path)
    if kind == "structure":
        structure = read_structure_file(path)
    elif kind == "extxyz":
        # Only the first frame is needed: don't parse a whole trajectory.
        structure = extxyz_frames(path, index=0)[0].structure
    else:
        structure = read_frames(path, kind)[0].structure
    check_structure(structure, name=str(path))
    # Results must not depend on the periodic image an atom was given in (float32 models).
    return _checks.wrap_structure(structure)


def check_structure(structure: Structure, name: str = "structure") -> None:
    """Reject structures that no MD or single point should start from.

    Parameters
    ----------
    structure
        The structure to check.
    name
        How to name it in the error message (usually the file path).

    Raises
    ------
    InputError
        No atoms, zero or non-finite cell volume, partial occupancies, or two atoms (or an atom
        and its periodic image) closer than :data:`MIN_INTERATOMIC_DISTANCE` (0.5 Å).
    """
    _checks.check_structure(structure, name)


def iter_frames(
    path: str | Path, fmt: str | None = None, registry: _checks.FrameRegistry | None = None
) -> Iterator[Frame]:
    """Frames of ``path`` in file order, read lazily (see the module docstring).

    Parameters
    ----------
    path
        A dataset file (or a folder holding a ``vasprun.xml``).
    fmt, registry
        As :func:`read_frames`.

    Raises
    ------
    InputError
        As :func:`read_frames`, when the bad part is reached.
    """
    path = existing_path(path)
    kind = _normalise_fmt(fmt) if fmt is not None else detect_format(path)
    registry = registry if registry is not None else _checks.FrameRegistry()
    if kind == "extxyz":
        frames = iter_extxyz(path)
    elif kind in ("json", "wbm", "mlearn"):
        frames = _iter_json(path, kind)
    else:
        yield from read_frames(path, fmt, registry=registry)
        return
    for frame in frames:
        registry.add(frame)
        yield frame


def count_frames(path: str | Path) -> int | None:
    """About how many frames ``path`` holds, without parsing it (for a progress bar's ETA).

    Counts the marker every frame of the format carries (``vasp_f`` in the WBM layout,
    ``"outputs"`` in mlearn's, ``<calculation>`` in a vasprun, the ``Lattice=`` comment line of an
    extended XYZ image). ``None`` when the format has no such marker.
    """
    path = Path(path)
    try:
        kind = detect_format(path)
    except InputError:
        return None
    if path.is_dir():
        path = find_vasprun(path)
    markers = {
        "extxyz": [b"Lattice="],
        "vasprun": [b"<calculation>"],
        "json": [b'"vasp_f"', b'"outputs"'],
    }.get(kind)
    if markers is None:
        return 1
    counts = dict.fromkeys(markers, 0)
    tail = b""
    with open_bytes(path) as fh:
        reader = io.BufferedReader(fh) if not isinstance(fh, io.BufferedReader) else fh
        while True:
            block = reader.read(_CHUNK)
            if not block:
                break
            text = tail + block
            for m in markers:
                counts[m] += text.count(m)
            # Keep a marker cut in two by the block boundary (counted once: only the tail).
            keep = max(len(m) for m in markers) - 1
            tail = text[-keep:]
            for m in markers:
                counts[m] -= tail.count(m)
    return max(counts.values()) or None


def iter_labelled_frames(
    paths: Iterable[str | Path],
    strict: bool = False,
    reports: list[Any] | None = None,
) -> Iterator[Frame]:
    """Labelled frames of several datasets, after the VASP guard rails, one at a time.

    Parameters
    ----------
    paths
        Dataset files.
    strict
        Refuse VASP runs whose settings differ from the models' training data.
    reports
        When given, the guard-rail report of every VASP run read is appended to it.
    """
    from softening.datasets.guards import apply_guard_rails

    registry = (
        _checks.FrameRegistry()
    )  # a frame given twice, in one file or across files, is refused
    for path in paths:
        kind = detect_format(path)
        if kind == "vasprun":
            # Guard rails judge a run as a whole (SCF and MLFF steps, settings): read it whole.
            kept, found = apply_guard_rails(read_frames(path, registry=registry), strict=strict)
            if reports is not None:
                reports.extend(found)
            yield from (f for f in kept if f.is_labelled)
            continue
        for frame in iter_frames(path, registry=registry):
            if "vasp" in frame.metadata:  # pragma: no cover - only vasprun frames carry it
                kept, found = apply_guard_rails([frame], strict=strict)
                if reports is not None:
                    reports.extend(found)
                frame = kept[0] if kept else None
            if frame is not None and frame.is_labelled:
                yield frame


def _normalise_fmt(fmt: str) -> str:
    """Map a user-given format name to one of :data:`FORMATS`."""
    kind = _FMT_ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
    if kind not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return kind


def _json_frames(data: Any, path: Path) -> list[Frame]:
    """Dispatch a parsed JSON document on its layout."""
    if isinstance(data, list | dict) and not data:
        raise file_error(path, "contains no frames (empty JSON document)")
    if is_wbm(data):
        return wbm_frames(data, path)
    if is_mlearn(data):
        return mlearn_frames(data, path, voigt_pairs(VASP_VOIGT_ORDER))
    if is_structure_dict(data):
        with wrap_errors(path, "not a valid pymatgen structure"):
            structure = Structure.from_dict(data)
        return [structure_frame(structure, path)]
    raise file_error(
        path,
        "unknown JSON layout (expected WBM {material_id: {frame_id: {...vasp_f...}}}, "
        "mlearn [{structure, outputs}], or a pymatgen Structure)",
    )


def _iter_json(path: Path, kind: str) -> Iterator[Frame]:
    """Stream a JSON file by its first character: an array (mlearn), an object (WBM, or another
    layout read whole), anything else read whole (for its error)."""
    first = _first_char(path)
    if first == b"[":
        yield from iter_mlearn_json(path)
        return
    if first != b"{":
        yield from read_frames(path, kind)
        return
    yield from iter_wbm_json(path, otherwise=lambda: read_frames(path, kind))


def _first_char(path: Path) -> bytes:
    with open_bytes(path) as fh:
        while True:
            c = fh.read(1)
            if not c or not c.isspace():
                return c
