"""Read solid-solution data sets: ordered cells with DFT total energies, as users keep them.

A mixing data set is the input of a formation-energy comparison with ML potentials: one relaxed
cell per arrangement (e.g. every ordering of Cu, Ag and Au on fcc sites up to 6 atoms) with its
DFT total energy. :func:`read_mixing_data` reads it from

- a folder of one sub-folder per cell (the sub-folder's name is the cell's name), each holding

  - ``vasprun.xml`` or ``vasprun.xml.gz``: a full one is read with
    :func:`~softening.datasets.formats.vasprun.read_vasprun` and its last ionic step kept; a
    stripped one (only ``<calculation>`` blocks, no ``<incar>``/``<parameters>``, which pymatgen
    cannot parse, e.g. pyclupan's examples) is read by :mod:`~softening.datasets.formats.vasp_folder`: the last ``<calculation>``'s ``e_fr_energy``, its
    ``finalpos`` structure and the species of the ``atoms`` array (else of the sub-folder's
    ``CONTCAR``/``POSCAR``);
  - or else ``OUTCAR`` / ``OUTCAR.gz``: pymatgen's free energy TOTEN, the structure from
    ``CONTCAR`` (else ``POSCAR``: in some layouts, such as pyclupan's, the final structure);

- an extended XYZ file (``*.extxyz``, ``*.xyz``, optionally ``.gz``), read as
  :func:`~softening.datasets.formats.extxyz.read_extxyz` does (``REF_energy``, else ``energy``);
- an ASE database: ``*.db`` (SQLite), or ``*.json`` when its content is ASE's JSON layout (it
  ends with ``"nextid": N}``); the energy is the ``REF_energy`` key, else the row's energy.

Every cell is checked before :func:`read_mixing_data` returns (so before any model runs): it needs
a finite energy, a structure that :func:`~softening.datasets.checks.check_structure` accepts
(no atoms closer than 0.5 Å) and a name no other cell of the set has. A refusal is an
:class:`~softening.errors.InputError` with a one-line message naming the cell and its file.
Elements are not checked against a model here: the caller does that.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softening.datasets.checks import check_structure
from softening.datasets.formats.building import (
    ASE_VOIGT_ORDER,
    atoms_to_structure,
    make_frame,
)
from softening.datasets.formats.extxyz import extxyz_frame
from softening.datasets.formats.files import detail
from softening.datasets.formats.vasp_folder import first_file, read_cell_outcar, read_cell_vasprun
from softening.datasets.frames import Frame
from softening.errors import InputError, one_line

__all__ = ["MixingData", "read_mixing_data"]

# Info / key-value keys naming a cell, in order of preference.
_NAME_KEYS = ("name", "id", "label")

# ASE's JSON database ends with the next free row id: `..., "nextid": 3}`.
_ASE_JSON_TAIL = re.compile(rb'"nextid"\s*:\s*\d+\s*\}\s*$')


@dataclass
class MixingData:
    """A solid-solution data set: ordered cells with DFT total energies.

    Attributes
    ----------
    name
        The data set's name: the folder's name, or the file's name without its suffixes.
    cells
        One frame per cell: ``frame_id`` = the cell's name (sub-folder name; in a file, the
        ``name``/``id``/``label`` key, else the 0-based index as text), ``energy`` = total energy
        in eV (always set, finite), ``structure`` = the final structure, ``source`` = the file read
        (``"path@index"`` for a frame of a multi-frame file or step of a full vasprun),
        ``flags``/``metadata`` as the package's readers set them (``metadata["vasp"]`` from
        :func:`~softening.datasets.vasp_metadata.vasp_run_info` for a full vasprun, so the guard
        rails can judge it). Folder cells are in sorted name order, file cells in file order.
    source
        The path given.
    """

    name: str
    cells: list[Frame]
    source: str


def read_mixing_data(path: str | Path) -> MixingData:
    """Read a solid-solution data set (see the module docstring for the formats).

    Parameters
    ----------
    path
        A folder of one sub-folder per cell, an extended XYZ file, or an ASE database
        (``.db``, or ``.json`` in ASE's layout).

    Returns
    -------
    MixingData
        At least one cell, each with a finite total energy (eV) and a checked final structure.

    Raises
    ------
    InputError
        One line naming the cell (and file): a cell without an energy or with a non-finite one,
        a truncated or unreadable file, a sub-folder with no vasprun.xml(.gz) or OUTCAR, two cells
        of the same name, atoms closer than 0.5 Å; or naming the path: no cells, unknown format.
    """
    source = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"no such file or folder: {source!r}")
    if root.is_dir():
        name, cells = root.name or root.resolve().name, _read_folder(root)
    else:
        name, cells = _stem(root), _read_file(root)
    if not cells:
        raise InputError(f"mixing data {source!r} has no cells")
    seen: dict[str, str] = {}
    for cell in cells:
        if cell.energy is None:
            raise _cell_error(cell.frame_id, f"{cell.source}: no energy")
        if not math.isfinite(cell.energy):
            raise _cell_error(cell.frame_id, f"{cell.source}: non-finite energy {cell.energy}")
        if cell.frame_id in seen:
            raise _cell_error(
                cell.frame_id,
                f"two cells have this name ({seen[cell.frame_id]} and {cell.source}); "
                "names must be unique within a data set",
            )
        seen[cell.frame_id] = str(cell.source)
        # Relaxed cells: the strict distance of starting structures, not the 0.1 Å the readers
        # apply to MD frames; a cell this squeezed is a broken file, not a data point.
        with _naming_cell(cell.frame_id):
            check_structure(cell.structure, str(cell.source))
    return MixingData(name=name, cells=cells, source=source)


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


def _cell_error(cell: str, what: str) -> InputError:
    return InputError(f"cell {cell!r}: {what}")


@contextmanager
def _naming_cell(cell: str) -> Iterator[None]:
    """Prefix the name of the cell to any InputError (the readers name only the file)."""
    try:
        yield
    except InputError as exc:
        raise _cell_error(cell, one_line(exc)) from exc


def _stem(path: Path) -> str:
    """``data.extxyz.gz`` -> ``data``."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


# ----------------------------------------------------------------------------------------------------
# A folder of one sub-folder per cell
# ----------------------------------------------------------------------------------------------------


def _read_folder(root: Path) -> list[Frame]:
    # Hidden folders (.git, .ipynb_checkpoints) are not cells; files beside the cells are ignored.
    cell_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not cell_dirs:
        hint = ""
        if any((root / n).exists() for n in ("vasprun.xml", "vasprun.xml.gz", "OUTCAR")):
            hint = " (it is one calculation; a data set is a folder of one sub-folder per cell)"
        raise InputError(f"mixing data {str(root)!r} has no cells: no sub-folders{hint}")
    cells = []
    for cell_dir in cell_dirs:
        with _naming_cell(cell_dir.name):
            cells.append(_read_cell_folder(cell_dir))
    return cells


def _read_cell_folder(folder: Path) -> Frame:
    vasprun = first_file(folder, ("vasprun.xml", "vasprun.xml.gz"))
    if vasprun is not None:
        frame = read_cell_vasprun(vasprun, folder)
    else:
        outcar = first_file(folder, ("OUTCAR", "OUTCAR.gz"))
        if outcar is None:
            raise InputError(
                f"sub-folder {str(folder)!r} has no vasprun.xml, vasprun.xml.gz or OUTCAR"
            )
        frame = read_cell_outcar(outcar, folder)
    return dataclasses.replace(frame, frame_id=folder.name)


# ----------------------------------------------------------------------------------------------------
# Files: extended XYZ and ASE databases
# ----------------------------------------------------------------------------------------------------


def _read_file(path: Path) -> list[Frame]:
    lower = path.name.lower()
    base = lower.removesuffix(".gz")
    if base.endswith((".extxyz", ".xyz")):
        return _read_extxyz_cells(path)
    if lower.endswith(".db"):
        return _read_ase_db(path)
    if lower.endswith(".json"):
        if _is_ase_json_db(path):
            return _read_ase_db(path)
        raise InputError(
            f"cannot read {str(path)!r} as mixing data: not an ASE database (JSON written by "
            "ase.db ends with '\"nextid\": N}')"
        )
    raise InputError(
        f"cannot read {str(path)!r} as mixing data: expected a folder of one sub-folder per cell, "
        "an extended XYZ file (.extxyz, .xyz, optionally .gz) or an ASE database (.db, .json)"
    )


def _cell_name(values: dict[str, Any], index: int) -> str:
    for key in _NAME_KEYS:
        value = values.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return str(index)


def _read_extxyz_cells(path: Path) -> list[Frame]:
    import ase.io

    try:
        images = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:
        raise InputError(
            f"cannot read {str(path)!r}: not a valid extended XYZ file ({detail(exc)})"
        ) from exc
    cells = []
    for i, atoms in enumerate(images):
        name = _cell_name(atoms.info, i)
        with _naming_cell(name):
            frame = extxyz_frame(atoms, i, path)
        cells.append(dataclasses.replace(frame, frame_id=name))
    return cells


def _is_ase_json_db(path: Path) -> bool:
    """Whether a .json file is ASE's JSON database: only its last bytes are read."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 256))
        return bool(_ASE_JSON_TAIL.search(handle.read()))


def _read_ase_db(path: Path) -> list[Frame]:
    import ase.db

    try:
        rows = list(ase.db.connect(str(path), create_indices=False).select())
    except Exception as exc:
        raise InputError(f"cannot read {str(path)!r}: not an ASE database ({detail(exc)})") from exc
    cells = []
    for row in rows:
        kvp = dict(row.key_value_pairs)
        name = _cell_name(kvp, row.id)
        where = f"row {row.id}"
        with _naming_cell(name):
            try:
                atoms = row.toatoms()
            except Exception as exc:
                raise InputError(f"cannot read {str(path)!r}: {where}: {detail(exc)}") from exc
            structure = atoms_to_structure(atoms, path, where)
            # An explicit reference label wins over a calculator's energy, as in extended XYZ;
            # the calculator's forces and stress are kept only along with its energy.
            from_calc = kvp.get("REF_energy") is None
            frame = make_frame(
                path,
                where,
                structure=structure,
                frame_id=name,
                energy=row.get("energy") if from_calc else kvp["REF_energy"],
                forces=row.get("forces") if from_calc else None,
                stress=row.get("stress") if from_calc else None,
                stress_voigt_order=ASE_VOIGT_ORDER,
                source=f"{path}@{row.id}",
                metadata={
                    k: v.item() if isinstance(v, np.generic) else v
                    for k, v in kvp.items()
                    if k != "REF_energy"
                },
            )
        cells.append(frame)
    return cells
