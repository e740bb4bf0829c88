"""Extended XYZ (``*.extxyz``, ``*.xyz``, optionally gzipped): read whole or image by image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from softening.datasets.formats.building import ASE_VOIGT_ORDER, atoms_to_structure, make_frame
from softening.datasets.formats.files import (
    check_new,
    check_unique,
    detail,
    existing_path,
    file_error,
    jsonable,
)
from softening.datasets.frames import Frame
from softening.errors import InputError

__all__ = ["extxyz_frame", "extxyz_frames", "iter_extxyz", "read_extxyz"]

# info keys consumed into Frame fields, not copied into metadata
_EXTXYZ_USED_INFO = {"REF_energy", "REF_stress", "energy", "stress", "material_id", "mp_id"}


def read_extxyz(path: str | Path) -> list[Frame]:
    """Read an extended XYZ file (optionally gzipped).

    Labels are taken from ``REF_energy`` (eV, ``info``), ``REF_forces`` (eV/Å, ``arrays``) and
    ``REF_stress`` (eV/Å^3, ASE sign; 9 components, 3x3, or 6 in ASE Voigt order
    ``xx yy zz yz xz xy``); where a ``REF_`` key is absent, the plain ``energy`` / ``forces`` /
    ``stress`` (which ASE puts on a ``SinglePointCalculator``) are used instead.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    list of Frame
        ``frame_id`` from the ``frame_id`` info key or the index in the file; ``material_id`` from
        the ``material_id`` or ``mp_id`` info key, else ``None``; other info keys go to ``metadata``.

    Raises
    ------
    InputError
        Unreadable file, frames without a 3D cell, or labels of the wrong shape.
    """
    path = existing_path(path)
    frames = extxyz_frames(path, index=":")
    check_unique(frames, path)
    return frames


def iter_extxyz(path: Path) -> Iterator[Frame]:
    """The frames of :func:`read_extxyz`, read image by image (ASE's ``iread``)."""
    import ase.io

    seen: set[tuple[str, str]] = set()
    try:
        images = ase.io.iread(str(path), index=":", format="extxyz")
        for i, atoms in enumerate(images):
            frame = extxyz_frame(atoms, i, path)
            check_new(frame, seen, path)
            yield frame
    except InputError:
        raise
    except Exception as exc:
        raise file_error(path, f"not a valid extended XYZ file ({detail(exc)})") from exc
    if not seen:
        raise file_error(path, "contains no frames")


def extxyz_frames(path: Path, index: int | str) -> list[Frame]:
    """The images ``index`` (an ASE index: ``0``, ``":"``) of ``path`` as frames."""
    import ase.io

    try:
        images = ase.io.read(str(path), index=index, format="extxyz")
    except Exception as exc:
        raise file_error(path, f"not a valid extended XYZ file ({detail(exc)})") from exc
    if not isinstance(images, list):
        images = [images]
    return [extxyz_frame(atoms, i, path) for i, atoms in enumerate(images)]


def _first_present(*values: Any) -> Any:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def extxyz_frame(atoms: Any, i: int, path: Path) -> Frame:
    """One extended-XYZ image (the ``i``-th of ``path``) as a Frame."""
    where = f"frame {i}"
    structure = atoms_to_structure(atoms, path, where)
    info, arrays = atoms.info, atoms.arrays
    # Recent ASE moves the plain energy/forces/stress keys onto a SinglePointCalculator;
    # older files or readers leave them in info/arrays: look in both.
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = _first_present(info.get("REF_energy"), results.get("energy"), info.get("energy"))
    forces = _first_present(arrays.get("REF_forces"), results.get("forces"), arrays.get("forces"))
    stress = _first_present(info.get("REF_stress"), results.get("stress"), info.get("stress"))
    material_id = _first_present(info.get("material_id"), info.get("mp_id"))
    frame_id = info.get("frame_id", i)
    metadata = {
        k: jsonable(v) for k, v in info.items() if k not in _EXTXYZ_USED_INFO and k != "frame_id"
    }
    return make_frame(
        path,
        where,
        structure=structure,
        frame_id=str(frame_id),
        material_id=None if material_id is None else str(material_id),
        energy=energy,
        forces=forces,
        stress=stress,
        stress_voigt_order=ASE_VOIGT_ORDER,
        source=f"{path}@{i}",
        metadata=metadata,
    )
