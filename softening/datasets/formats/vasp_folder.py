"""One VASP calculation folder's result as a frame, without needing a full vasprun.xml.

A full ``vasprun.xml`` (with ``<incar>``/``<parameters>``) goes to pymatgen
(:func:`~softening.datasets.formats.vasprun.read_vasprun`, last ionic step); a stripped one (only
``<calculation>`` blocks, e.g. pyclupan's examples) is read here with expat, a DTD refused; else
``OUTCAR`` with ``CONTCAR``/``POSCAR``. Used by the solid-solution (:mod:`softening.datasets.mixing`)
and NEB (:mod:`softening.datasets.neb`) readers.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Any
from xml.parsers import expat

import numpy as np
from pymatgen.core import Lattice, Structure

from softening.datasets.formats.building import (
    make_frame,
    vasp_stress_to_ase,
)
from softening.datasets.formats.files import detail, open_bytes
from softening.datasets.formats.vasprun import read_vasprun
from softening.datasets.frames import Frame
from softening.errors import InputError

__all__ = [
    "first_file",
    "is_full_vasprun",
    "read_cell_outcar",
    "read_cell_vasprun",
    "read_stripped_vasprun",
]

# The start of a vasprun.xml read to tell a full one from a stripped one: VASP writes <incar> right
# after the ~10-line <generator>, so a full file shows it within the first few kB.
_SNIFF_BYTES = 64 * 1024

_DTD_REFUSED = "it declares a DTD (<!DOCTYPE>), which VASP never writes: refused as unsafe"


def first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def is_full_vasprun(path: Path) -> bool:
    """Whether the file has the run's settings (``<incar>``/``<parameters>``), pymatgen's need.

    A full file declaring a DTD is refused here, before pymatgen parses it: a DTD can only come
    before the root element, which a full vasprun.xml opens within its first lines.
    """
    try:
        with open_bytes(path) as handle:
            head = handle.read(_SNIFF_BYTES)
    except (OSError, EOFError):
        return False  # a broken gzip stream: the XML parser reports it as truncated
    full = b"<incar" in head or b"<parameters" in head
    if full and b"<!DOCTYPE" in head:
        raise InputError(f"{str(path)!r}: {_DTD_REFUSED}")
    return full


def read_cell_vasprun(path: Path, folder: Path) -> Frame:
    """The last ionic step of a full vasprun.xml, else the last <calculation> of a stripped one."""
    full_error = None
    # pymatgen takes ~50 ms per file and fails on stripped files anyway: try it only on full ones.
    if is_full_vasprun(path):
        try:
            frames = read_vasprun(path)
        except InputError as exc:
            full_error = exc
        else:
            frame = frames[-1]
            if frame.energy is None:
                raise InputError(f"{str(path)!r}: no energy (e_fr_energy) in its last ionic step")
            return frame
    return read_stripped_vasprun(path, folder, full_error)


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


def read_stripped_vasprun(path: Path, folder: Path, full_error: InputError | None) -> Frame:
    try:
        with open_bytes(path) as handle:
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


def read_cell_outcar(path: Path, folder: Path) -> Frame:
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
        structure_file = first_file(folder, ("POSCAR",))
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
