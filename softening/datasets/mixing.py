"""Read solid-solution data sets: ordered cells with DFT total energies, as users keep them.

A mixing data set is the input of a formation-energy comparison with ML potentials: one relaxed
cell per arrangement (e.g. every ordering of Cu, Ag and Au on fcc sites up to 6 atoms) with its
DFT total energy. :func:`read_mixing_data` reads it from

- a folder of one sub-folder per cell (the sub-folder's name is the cell's name), each holding

  - ``vasprun.xml`` or ``vasprun.xml.gz``: a full one is read with
    :func:`~softening.datasets.formats.vasprun.read_vasprun` and its last ionic step kept; a
    stripped one (only ``<calculation>`` blocks, no ``<incar>``/``<parameters>``, which pymatgen
    cannot parse, e.g. pyclupan's examples) is read here: the last ``<calculation>``'s ``e_fr_energy``, its
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
import gzip
import math
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from xml.parsers import expat

import numpy as np
from pymatgen.core import Lattice, Structure

from softening.datasets.checks import check_structure
from softening.datasets.formats.building import (
    ASE_VOIGT_ORDER,
    atoms_to_structure,
    make_frame,
    vasp_stress_to_ase,
)
from softening.datasets.formats.extxyz import extxyz_frame
from softening.datasets.formats.files import detail
from softening.datasets.formats.vasprun import read_vasprun
from softening.datasets.frames import Frame
from softening.errors import InputError, one_line

__all__ = ["MixingData", "read_mixing_data"]

# The start of a vasprun.xml read to tell a full one from a stripped one: VASP writes <incar> right
# after the ~10-line <generator>, so a full file shows it within the first few kB.
_SNIFF_BYTES = 64 * 1024

_DTD_REFUSED = "it declares a DTD (<!DOCTYPE>), which VASP never writes: refused as unsafe"

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


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_cell_folder(folder: Path) -> Frame:
    vasprun = _first_file(folder, ("vasprun.xml", "vasprun.xml.gz"))
    if vasprun is not None:
        frame = _read_cell_vasprun(vasprun, folder)
    else:
        outcar = _first_file(folder, ("OUTCAR", "OUTCAR.gz"))
        if outcar is None:
            raise InputError(
                f"sub-folder {str(folder)!r} has no vasprun.xml, vasprun.xml.gz or OUTCAR"
            )
        frame = _read_cell_outcar(outcar, folder)
    return dataclasses.replace(frame, frame_id=folder.name)


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it is gzipped (recognised by content, not name)."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _is_full_vasprun(path: Path) -> bool:
    """Whether the file has the run's settings (``<incar>``/``<parameters>``), pymatgen's need.

    A full file declaring a DTD is refused here, before pymatgen parses it: a DTD can only come
    before the root element, which a full vasprun.xml opens within its first lines.
    """
    try:
        with _open_binary(path) as handle:
            head = handle.read(_SNIFF_BYTES)
    except (OSError, EOFError):
        return False  # a broken gzip stream: the XML parser reports it as truncated
    full = b"<incar" in head or b"<parameters" in head
    if full and b"<!DOCTYPE" in head:
        raise InputError(f"{str(path)!r}: {_DTD_REFUSED}")
    return full


def _read_cell_vasprun(path: Path, folder: Path) -> Frame:
    """The last ionic step of a full vasprun.xml, else the last <calculation> of a stripped one."""
    full_error = None
    # pymatgen takes ~50 ms per file and fails on stripped files anyway: try it only on full ones.
    if _is_full_vasprun(path):
        try:
            frames = read_vasprun(path)
        except InputError as exc:
            full_error = exc
        else:
            frame = frames[-1]
            if frame.energy is None:
                raise InputError(f"{str(path)!r}: no energy (e_fr_energy) in its last ionic step")
            return frame
    return _read_stripped_vasprun(path, folder, full_error)


# ---- stripped vasprun.xml ---------------------------------------------------------------------------


class _UnsafeXMLError(ValueError):
    """A vasprun.xml that declares a DTD (entities could expand without bound or read files)."""


def _refuse_dtd(*_: Any) -> None:
    raise _UnsafeXMLError(_DTD_REFUSED)


def _parse_vasprun_xml(handle: IO[bytes]) -> ET.Element:
    """Parse vasprun.xml safely, keeping only its last ``<calculation>``.

    The package has no XML-entity guard elsewhere (pymatgen parses full files), and defusedxml is
    not a dependency: expat is driven directly and refuses any ``<!DOCTYPE>``, so no entity can be
    declared (no "billion laughs", no external entities). Earlier ``<calculation>`` blocks are
    dropped as soon as the next one closes, so a long full file does not fill memory.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    open_elements: list[ET.Element] = []
    kept: list[tuple[ET.Element, ET.Element]] = []  # (parent, latest closed <calculation>)

    def start(tag: str, attrs: dict[str, str]) -> None:
        open_elements.append(builder.start(tag, attrs))

    def end(tag: str) -> None:
        element = builder.end(tag)
        open_elements.pop()
        if tag == "calculation" and open_elements:
            if kept:
                parent, previous = kept.pop()
                parent.remove(previous)
            kept.append((open_elements[-1], element))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.ParseFile(handle)
    return builder.close()


def _varray(element: ET.Element | None, what: str) -> np.ndarray:
    if element is None:
        raise ValueError(f"no {what}")
    return np.array([[float(x) for x in (v.text or "").split()] for v in element.findall("v")])


def _xml_array_column(root: ET.Element, name: str, field: str) -> list[str] | None:
    """Column ``field`` of the first ``<array name=name>`` (e.g. the element of each atom)."""
    for array in root.iter("array"):
        if array.get("name") != name:
            continue
        fields = [(f.text or "").strip() for f in array.findall("field")]
        if field not in fields:
            return None
        column = fields.index(field)
        rows = [[(c.text or "").strip() for c in rc.findall("c")] for rc in array.iter("rc")]
        return [row[column] for row in rows]
    return None


def _folder_species(folder: Path) -> list[str]:
    """Species of the cell's CONTCAR or POSCAR, for a stripped vasprun without an atoms array."""
    from pymatgen.io.vasp import Poscar

    for name in ("CONTCAR", "POSCAR"):
        path = folder / name
        if path.is_file() and path.stat().st_size:
            poscar = Poscar.from_file(str(path), check_for_potcar=False, read_velocities=False)
            return [site.species_string for site in poscar.structure]
    raise ValueError("no atoms array, and no CONTCAR or POSCAR beside it to take species from")


def _read_stripped_vasprun(path: Path, folder: Path, full_error: InputError | None) -> Frame:
    try:
        with _open_binary(path) as handle:
            root = _parse_vasprun_xml(handle)
    except _UnsafeXMLError as exc:
        raise InputError(f"{str(path)!r}: {exc}") from exc
    except Exception as exc:  # ExpatError, EOFError (gzip cut short), OSError...
        before = f"pymatgen: {full_error}; " if full_error is not None else ""
        raise InputError(
            f"{str(path)!r} is truncated or unreadable ({before}XML: {detail(exc)})"
        ) from exc

    calculations = list(root.iter("calculation"))
    if not calculations:
        raise InputError(f"{str(path)!r}: no <calculation> block, so no energy")
    calc = calculations[-1]
    energy = calc.find("energy/i[@name='e_fr_energy']")
    if energy is None or not (energy.text or "").strip():
        raise InputError(f"{str(path)!r}: no energy (e_fr_energy) in its last <calculation>")
    try:
        finalpos = calc.find("structure[@name='finalpos']")
        if finalpos is None:
            structures = calc.findall("structure")
            finalpos = structures[-1] if structures else root.find("structure[@name='finalpos']")
        if finalpos is None:
            raise ValueError("no <structure> in the last <calculation>")
        lattice = _varray(finalpos.find("crystal/varray[@name='basis']"), "lattice (basis)")
        frac = _varray(finalpos.find("varray[@name='positions']"), "positions")
        species = _xml_array_column(root, "atoms", "element") or _folder_species(folder)
        if len(species) != len(frac):
            raise ValueError(f"{len(species)} species for {len(frac)} positions")
        structure = Structure(Lattice(lattice), species, frac)
        forces = calc.find("varray[@name='forces']")
        stress = calc.find("varray[@name='stress']")
        potcars = _xml_array_column(root, "atomtypes", "pseudopotential")
    except Exception as exc:
        raise InputError(f"{str(path)!r}: unreadable last <calculation> ({detail(exc)})") from exc

    metadata: dict[str, Any] = {"code": "vasp", "vasprun_layout": "stripped"}
    if potcars:
        metadata["potcar_symbols"] = potcars
    if full_error is not None:
        # Well-formed but not what pymatgen expects: say so, as the run's settings are unknown.
        metadata["pymatgen_error"] = str(full_error)
    # No <parameters>: PSTRESS is unknown, so e_fr_energy is taken as is (VASP adds p*V to it).
    return make_frame(
        path,
        "last <calculation>",
        structure=structure,
        frame_id=folder.name,
        energy=energy.text.strip(),
        forces=_varray(forces, "forces") if forces is not None else None,
        stress=vasp_stress_to_ase(_varray(stress, "stress")) if stress is not None else None,
        source=str(path),
        metadata=metadata,
    )


# ---- OUTCAR -----------------------------------------------------------------------------------------


def _read_cell_outcar(path: Path, folder: Path) -> Frame:
    from pymatgen.io.vasp import Outcar, Poscar

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcar = Outcar(str(path))
        outcar.read_pattern({"nions": r"NIONS\s*=\s*(\d+)"}, terminate_on_match=True)
        # The free energy TOTEN, as e_fr_energy of vasprun.xml (not the sigma->0 `final_energy`).
        # pymatgen's `final_fr_energy` wants VASP 5's spacing ("free  energy   TOTEN"); VASP 6.4
        # writes "free energy    TOTEN": match both.
        outcar.read_pattern({"toten": r"free\s+energy\s+TOTEN\s*=\s*(\S+)"})
    except Exception as exc:
        raise InputError(f"{str(path)!r} is truncated or unreadable ({detail(exc)})") from exc
    if not any(key.startswith("Elapsed time") for key in outcar.run_stats):
        # A run killed before its end (walltime): its last energy is that of an unfinished step.
        raise InputError(
            f"{str(path)!r} is truncated: no final timing block (the run did not finish)"
        )
    totens = outcar.data.get("toten")
    if not totens:
        raise InputError(f"{str(path)!r}: no energy ('free  energy   TOTEN' line)")
    structure_file = next(
        (folder / n for n in ("CONTCAR", "POSCAR") if (folder / n).is_file()),
        None,
    )
    # VASP leaves an empty CONTCAR when it stops before the first ionic step.
    if structure_file is not None and not structure_file.stat().st_size:
        structure_file = _first_file(folder, ("POSCAR",))
    if structure_file is None:
        raise InputError(f"{str(path)!r}: no CONTCAR or POSCAR beside it for the structure")
    try:
        poscar = Poscar.from_file(str(structure_file), check_for_potcar=False)
    except Exception as exc:
        raise InputError(f"cannot read {str(structure_file)!r} ({detail(exc)})") from exc
    structure = poscar.structure
    nions = outcar.data.get("nions")
    if nions and int(nions[0][0]) != len(structure):
        raise InputError(
            f"{str(path)!r} has {nions[0][0]} atoms but {structure_file.name} {len(structure)}"
        )
    return make_frame(
        path,
        "final energy",
        structure=structure,
        frame_id=folder.name,
        energy=totens[-1][0],
        source=str(path),
        metadata={"code": "vasp", "structure_file": structure_file.name},
    )


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
