"""A plain structure file (CIF, POSCAR, a pymatgen structure's JSON...): one unlabelled frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from softening.datasets import checks as _checks
from softening.datasets.formats.building import atoms_to_structure
from softening.datasets.formats.files import detail, file_error
from softening.datasets.frames import Frame

__all__ = ["is_structure_dict", "read_structure_file", "structure_frame"]


def is_structure_dict(data: Any) -> bool:
    """Whether parsed JSON ``data`` is a pymatgen ``Structure.as_dict()``."""
    return isinstance(data, dict) and "lattice" in data and "sites" in data


def read_structure_file(path: Path) -> Structure:
    """A plain structure file: pymatgen first (CIF, POSCAR, ...), then ASE."""
    if path.is_dir():
        raise file_error(path, "is a directory without vasprun.xml")
    if path.suffix.lower() in (".cif", ".mcif"):
        _checks.check_cif_sites(path)  # pymatgen would merge duplicated sites silently
    problems = []
    try:
        return Structure.from_file(str(path))
    except Exception as exc:
        problems.append(f"pymatgen: {detail(exc)}")
    import ase.io

    try:
        atoms = ase.io.read(str(path), index=0)
    except Exception as exc:
        problems.append(f"ase: {detail(exc)}")
        raise file_error(path, f"not a structure or dataset file ({'; '.join(problems)})") from exc
    return atoms_to_structure(atoms, path, "structure")


def structure_frame(structure: Structure, path: Path) -> Frame:
    """One unlabelled frame for a plain structure file."""
    frame = Frame(structure=_checks.wrap_structure(structure), frame_id="0", source=str(path))
    _checks.check_frame(frame, str(path))
    return frame
