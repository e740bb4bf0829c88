"""Reader of finite-displacement phonon data as phonopy users keep it.

One folder per material, in one of three layouts (tried in this order):

1. ``phonopy_params.yaml`` (or ``phonopy.yaml``) holding the displacements *and* their forces (what
   ``phonopy`` writes with ``--include-all`` or ``Phonopy.save()`` after forces were set);
2. ``phonopy_disp.yaml`` + ``FORCE_SETS``;
3. ``phonopy_disp.yaml`` + one ``vasprun.xml`` per displaced supercell (``vasprun.xml``,
   ``vasprun.xml-001``..., or ``disp-001/vasprun.xml``...): each is matched to its displaced supercell
   by its positions, and judged by the VASP guard rails (:mod:`softening.datasets.guards`).

A ``BORN`` file (or NAC parameters in the yaml) is ignored, since uMLIPs have no Born charges: the
data are flagged ``nac_ignored``. The settings of the DFT run are flagged as for ``softening evaluate``
where the folder shows them (vasprun.xml files, or an ``INCAR`` beside ``FORCE_SETS``).

Bad input (no forces, forces that do not match the displacements or the supercell, a cell phonopy
cannot symmetrise) raises :class:`~softening.errors.InputError` with one line naming the file at
fault. Every YAML file is parsed by a safe loader before phonopy (whose own loader builds any Python
object a ``!!python/...`` tag names, and so runs code from the file) reads the already-checked bytes;
``FORCE_SETS`` is parsed and checked against the yaml's supercell before phonopy reads it; supercells
above the ``max_supercell_atoms`` setting are refused before phonopy's symmetry search.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from softening.datasets.checks import check_supercell_atoms
from softening.errors import InputError, one_line

__all__ = ["NAC_IGNORED", "PhonopyData", "read_phonopy_folder"]

#: Flag of data that came with Born charges: the comparison leaves the NAC term off on both sides.
NAC_IGNORED = (
    "nac_ignored: Born charges present; uMLIPs have none, so the non-analytical correction is "
    "left off on both sides (LO-TO splitting not compared)"
)
_UNVERIFIED = (
    "unverified: no INCAR or vasprun.xml beside the forces; functional and settings of the DFT run "
    "unchecked"
)
# Positions of a vasprun.xml and of phonopy's displaced supercell agree to VASP's printed digits.
_POSITION_TOL = 1e-4  # Å


@dataclass
class PhonopyData:
    """Finite-displacement data of one material.

    Attributes
    ----------
    material
        The folder name.
    layout
        ``phonopy_params``, ``force_sets`` or ``vasprun``.
    unitcell
        Unit cell (Å; ``magmom`` site property where phonopy has moments).
    supercell_matrix
        3x3 integers.
    primitive_matrix
        3x3, as phonopy resolved it (``auto`` when the yaml has none).
    symprec
        Symmetry tolerance, Å.
    displacements
        ``(supercell atom index, displacement vector Å)`` per displaced supercell.
    forces
        Reference forces ``(n_displacements, n_supercell_atoms, 3)``, eV/Å.
    supercells
        The displaced supercells as phonopy builds them (what a model must evaluate).
    perfect_supercell
        The undisplaced supercell.
    flags
        ``"<kind>: <detail>"`` warnings (nac_ignored, functional, low_precision, ...).
    sources
        Files read.
    code
        ``{"name", "version", "settings"}`` of the reference code, as far as known.
    """

    material: str
    layout: str
    unitcell: Structure
    supercell_matrix: np.ndarray
    primitive_matrix: np.ndarray
    symprec: float
    displacements: list[tuple[int, list[float]]]
    forces: np.ndarray
    supercells: list[Structure]
    perfect_supercell: Structure
    flags: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    code: dict[str, Any] = field(default_factory=dict)

    @property
    def formula(self) -> str:
        """Reduced formula of the unit cell."""
        return self.unitcell.composition.reduced_formula


def read_phonopy_folder(path: str | Path) -> PhonopyData:
    """Read one material's phonopy folder (see the module docstring for the layouts).

    Parameters
    ----------
    path
        The folder, or a ``phonopy_params.yaml`` / ``phonopy_disp.yaml`` file inside it.

    Raises
    ------
    InputError
        One line naming the folder: missing files, forces that do not match, phonopy errors.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"no such folder: {str(path)!r}")
    folder, chosen = (p.parent, p) if p.is_file() else (p, None)
    name = folder.resolve().name
    params = [
        f
        for f in ([chosen] if chosen else [folder / "phonopy_params.yaml", folder / "phonopy.yaml"])
        if f.is_file() and f.name != "phonopy_disp.yaml"
    ]
    disp = chosen if chosen and chosen.name == "phonopy_disp.yaml" else folder / "phonopy_disp.yaml"
    if params and _yaml_has_forces(params[0]):
        data = _from_params(params[0], name)
    elif disp.is_file():
        data = _from_disp(disp, folder, name)
    elif params:
        raise InputError(f"{_show(params[0])} has no forces (and there is no phonopy_disp.yaml)")
    else:
        raise InputError(
            f"{_show(folder)}: no phonopy_params.yaml with forces and no phonopy_disp.yaml"
        )
    if (folder / "BORN").is_file() and NAC_IGNORED not in data.flags:
        data.flags.append(NAC_IGNORED)
    return data


# ---- layouts ---------------------------------------------------------------------------------------


def _load(yaml_path: Path, force_sets: Path | None = None):
    """phonopy's :class:`~phonopy.Phonopy` of a yaml (and a ``FORCE_SETS``), each file checked first.

    phonopy gets the bytes that the safe loader accepted, never the path (it would parse the file
    again, with a loader that runs ``!!python/...`` tags).
    """
    import phonopy

    raw, content = _read_yaml(yaml_path)
    n_atoms = _yaml_supercell_atoms(content)
    if n_atoms is not None:
        check_supercell_atoms(n_atoms, _show(yaml_path))
    if force_sets is not None:
        _check_force_sets(force_sets, n_atoms, yaml_path)
    try:
        with warnings.catch_warnings():
            # phonopy >= 4 warns that primitive_matrix now defaults to 'auto': that is the choice.
            warnings.simplefilter("ignore")
            phonon = phonopy.load(
                io.BytesIO(raw), is_nac=False, produce_fc=False, log_level=0,
                force_sets_filename=force_sets,
            )  # fmt: skip
            if force_sets is None and Path("FORCE_SETS").is_file():
                # Without a FORCE_SETS named, phonopy reads one in the working directory: the
                # folder's own yaml holds the displacements (and forces, if any).
                from phonopy.interface.phonopy_yaml import PhonopyYaml

                phonon.dataset = PhonopyYaml().read(io.BytesIO(raw)).dataset
    except Exception as exc:
        raise InputError(
            f"phonopy cannot read {_show(yaml_path)}: {one_line(exc, limit=200)}"
        ) from exc
    return phonon


def _read_yaml(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a phonopy yaml file and their content, parsed by a safe YAML loader.

    Raises
    ------
    InputError
        A tag that builds a Python object (``!!python/object/apply:os.system``...: refused, not
        run), a file that is not YAML, or one that holds no mapping.
    """
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read {_show(path)}: {exc.strerror or type(exc).__name__}"
        ) from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        content = yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.constructor.ConstructorError as exc:
        tag = re.search(r"tag '([^']*)'", str(exc.problem))
        line = f" on line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise InputError(
            f"{_show(path)}: refused: YAML tag {tag.group(1) if tag else '?'!r}{line} (a tag that "
            "builds a Python object can run code; phonopy files need none)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"{_show(path)} is not valid YAML{line}: {problem}") from None
    if not isinstance(content, dict):
        raise InputError(f"{_show(path)} holds no phonopy data (a YAML mapping)")
    return raw, content


def _yaml_supercell_atoms(content: dict[str, Any]) -> int | None:
    """Atoms of the supercell a phonopy yaml describes (``None`` when it does not say)."""
    counts = []
    try:
        counts.append(len(content["supercell"]["points"]))
    except (KeyError, TypeError):
        pass
    try:
        matrix = np.asarray(content["supercell_matrix"], dtype=float)
        n_unit = len(content["unit_cell"]["points"])
        if matrix.shape == (3, 3) and np.all(np.isfinite(matrix)):
            counts.append(n_unit * round(abs(float(np.linalg.det(matrix)))))
    except (KeyError, TypeError, ValueError):
        pass
    return max(counts) if counts else None


def _check_force_sets(path: Path, n_atoms: int | None, yaml_path: Path) -> None:
    """Refuse a ``FORCE_SETS`` phonopy cannot parse, or whose atom count is not the supercell's.

    Parsed here (phonopy's parser, which the load uses too) so that the message names this file:
    phonopy's load reports its faults as the yaml's.
    """
    from phonopy.file_IO import parse_FORCE_SETS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = parse_FORCE_SETS(filename=str(path))
    except RecursionError:  # phonopy's reader recurses over blank lines to the end of the file
        raise InputError(
            f"cannot read {_show(path)}: it ends before the forces of every displacement "
            "(truncated?)"
        ) from None
    except Exception as exc:
        raise InputError(f"cannot read {_show(path)}: {one_line(exc, limit=200)}") from exc
    natom = dataset.get("natom")
    if n_atoms is not None and natom is not None and int(natom) != n_atoms:
        raise InputError(
            f"{_show(path)} has forces on {natom} atoms, but the supercell of {_show(yaml_path)} "
            f"has {n_atoms}"
        )
    for i, d in enumerate(dataset.get("first_atoms") or []):
        shape = np.shape(d.get("forces"))
        if natom is not None and shape != (int(natom), 3):
            raise InputError(
                f"{_show(path)}: displacement {i + 1} has forces of shape {shape}, not "
                f"({natom}, 3) (truncated or garbled?)"
            )


def _yaml_has_forces(path: Path) -> bool:
    text = path.read_text(errors="replace")
    return re.search(r"^\s*forces:", text, re.MULTILINE) is not None


def _from_params(path: Path, name: str) -> PhonopyData:
    phonon = _load(path)
    forces = _dataset_forces(phonon, path)
    # Loaded without NAC (is_nac=False): whether the file carries Born charges is read from it.
    text = path.read_text(errors="replace")
    has_born = re.search(r"^(nac|born_effective_charge):", text, re.MULTILINE) is not None
    flags = [NAC_IGNORED] if has_born else []
    data = _assemble(phonon, forces, name, "phonopy_params", [str(path)], path)
    data.flags.extend(flags)
    data.flags.extend(_incar_flags(path.parent, data.unitcell))
    return data


def _from_disp(disp: Path, folder: Path, name: str) -> PhonopyData:
    force_sets = folder / "FORCE_SETS"
    if force_sets.is_file():
        phonon = _load(disp, force_sets)
        forces = _dataset_forces(phonon, force_sets)
        data = _assemble(phonon, forces, name, "force_sets", [str(disp), str(force_sets)], disp)
        runs = _vasprun_files(folder)
        if runs:
            # FORCE_SETS made from these runs (`phonopy -f`): their settings are the DFT run's.
            flags, data.code = _vasprun_settings(runs)
            data.flags.extend(flags)
            data.sources.extend(map(str, runs))
        else:
            data.flags.extend(_incar_flags(folder, data.unitcell))
        return data
    runs = _vasprun_files(folder)
    if not runs:
        raise InputError(
            f"{_show(folder)}: phonopy_disp.yaml but no FORCE_SETS and no vasprun.xml files "
            "of the displaced supercells"
        )
    phonon = _load(disp)
    return _from_vaspruns(phonon, runs, name, disp)


def _dataset_forces(phonon, source: Path) -> np.ndarray:
    dataset = phonon.dataset or {}
    first = dataset.get("first_atoms")
    if first is None:
        raise InputError(
            f"{_show(source)}: only one-atom-at-a-time displacements are supported "
            "(not random displacements)"
        )
    if not first or any("forces" not in d for d in first):
        raise InputError(f"{_show(source)} has no forces for every displacement")
    n = len(phonon.supercell)
    forces = np.asarray([d["forces"] for d in first], dtype=float)
    if forces.shape != (len(first), n, 3):
        raise InputError(
            f"{_show(source)}: forces of shape {forces.shape} do not match {len(first)} "
            f"displacement(s) of the {n}-atom supercell"
        )
    return forces


def _vasprun_files(folder: Path) -> list[Path]:
    files = [f for f in folder.glob("vasprun*.xml*") if f.is_file()]
    files += [f for f in folder.glob("disp-*/vasprun.xml*") if f.is_file()]
    return sorted(
        files, key=lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(f))]
    )


def _from_vaspruns(phonon, runs: list[Path], name: str, disp: Path) -> PhonopyData:
    from softening.datasets.formats.vasprun import read_vasprun
    from softening.datasets.guards import apply_guard_rails

    supercells = phonon.supercells_with_displacements
    if supercells is None:
        raise InputError(f"{_show(disp)} has no displacements")
    if len(runs) != len(supercells):
        raise InputError(
            f"{_show(disp.parent)}: {len(runs)} vasprun.xml file(s) for {len(supercells)} "
            "displaced supercell(s)"
        )
    forces: list[np.ndarray | None] = [None] * len(supercells)
    flags: set[str] = set()
    code: dict[str, Any] = {"name": "vasp", "version": None, "settings": {}}
    for run in runs:
        kept, _ = apply_guard_rails(read_vasprun(run))
        frame = kept[-1]  # a static run has one step; the last one of a relaxation otherwise
        flags.update(frame.flags)
        index = _match_supercell(frame.structure, supercells, run)
        if forces[index] is not None:
            raise InputError(f"{_show(run)}: a second vasprun.xml of displacement {index + 1}")
        forces[index] = np.asarray(frame.forces, dtype=float)
        code = _vasp_code(frame)
    data = _assemble(
        phonon, np.asarray(forces), name, "vasprun", [str(disp), *map(str, runs)], disp
    )
    data.flags.extend(sorted(flags))
    data.code = code
    return data


def _vasprun_settings(runs: list[Path]) -> tuple[list[str], dict[str, Any]]:
    """Guard-rail flags and code record of the vasprun.xml files of a FORCE_SETS."""
    from softening.datasets.formats.vasprun import read_vasprun
    from softening.datasets.guards import apply_guard_rails

    flags: set[str] = set()
    code: dict[str, Any] = {"name": "vasp", "version": None, "settings": {}}
    for run in runs:
        kept, _ = apply_guard_rails(read_vasprun(run))
        flags.update(kept[-1].flags)
        code = _vasp_code(kept[-1])
    return sorted(flags), code


def _vasp_code(frame) -> dict[str, Any]:
    info = frame.metadata.get("vasp", {})
    settings = {k: v for k, v in (info.get("parameters") or {}).items() if v is not None}
    return {"name": "vasp", "version": info.get("vasp_version"), "settings": settings}


def _match_supercell(structure: Structure, supercells, run: Path) -> int:
    """Index of the displaced supercell whose cell and positions (same atom order) match."""
    frac = structure.frac_coords
    for i, cell in enumerate(supercells):
        if len(cell) != len(structure) or list(cell.symbols) != [
            s.specie.symbol for s in structure
        ]:
            continue
        if not np.allclose(cell.cell, structure.lattice.matrix, atol=_POSITION_TOL):
            continue
        d = frac - cell.scaled_positions
        d -= np.round(d)
        if np.abs(d @ cell.cell).max() < _POSITION_TOL:
            return i
    raise InputError(
        f"{_show(run)}: its structure matches none of the displaced supercells of "
        "phonopy_disp.yaml (different supercell, displacement or atom order)"
    )


def _assemble(
    phonon, forces: np.ndarray, name: str, layout: str, sources: list[str], where: Path
) -> PhonopyData:
    from pymatgen.io.phonopy import get_pmg_structure

    calculator = getattr(phonon, "calculator", None)
    if calculator not in (None, "vasp"):
        raise InputError(
            f"{_show(where)}: forces of calculator {calculator!r}; only VASP units (eV, Å) are read"
        )
    first = (phonon.dataset or {}).get("first_atoms")
    if first is None:
        raise InputError(
            f"{_show(where)}: only one-atom-at-a-time displacements are supported "
            "(not random displacements)"
        )
    n = len(phonon.supercell)
    bad = [int(d["number"]) for d in first if not 0 <= int(d["number"]) < n]
    if bad:
        raise InputError(
            f"{_show(where)}: displaced atom {bad[0] + 1} is not in the {n}-atom supercell"
        )
    try:
        # Symmetry and primitive cell: phonopy raises here for cells it cannot symmetrise.
        prim = phonon.primitive_matrix
        _ = phonon.primitive
        supercells = [get_pmg_structure(c) for c in phonon.supercells_with_displacements]
        perfect = get_pmg_structure(phonon.supercell)
        unitcell = get_pmg_structure(phonon.unitcell)
    except Exception as exc:
        raise InputError(
            f"phonopy cannot symmetrise {_show(where)}: {one_line(exc, limit=200)}"
        ) from exc
    if not np.all(np.isfinite(forces)):
        raise InputError(f"{_show(where)}: forces contain NaN or inf")
    return PhonopyData(
        material=name,
        layout=layout,
        unitcell=unitcell,
        supercell_matrix=np.asarray(phonon.supercell_matrix, dtype=int),
        primitive_matrix=np.asarray(prim if prim is not None else np.eye(3), dtype=float),
        symprec=float(phonon.symmetry.tolerance),
        displacements=[
            (int(d["number"]), np.asarray(d["displacement"], dtype=float).tolist()) for d in first
        ],
        forces=forces,
        supercells=supercells,
        perfect_supercell=perfect,
        sources=sources,
        code={"name": "vasp", "version": None, "settings": {}},
    )


def _incar_flags(folder: Path, unitcell: Structure) -> list[str]:
    """Guard-rail flags from an INCAR beside the forces, or ``unverified`` when there is none."""
    incar_path = folder / "INCAR"
    if not incar_path.is_file():
        return [_UNVERIFIED]
    from pymatgen.io.vasp import Incar

    from softening.datasets.guards import vasp_setting_flags
    from softening.datasets.vasp_metadata import vasp_run_info

    try:
        incar = dict(Incar.from_file(incar_path))
    except Exception as exc:
        raise InputError(f"cannot read {_show(incar_path)}: {one_line(exc, limit=200)}") from exc
    info = vasp_run_info(incar, {}, [], None, None, 1)
    elements = {el.symbol for el in unitcell.composition}
    return vasp_setting_flags(info, elements)


def _show(path: Path) -> str:
    return repr(str(path))
