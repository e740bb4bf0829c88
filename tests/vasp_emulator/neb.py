"""NEB folders in VASP's layout (00 .. NN) computed by the emulator: a vacancy hop in fcc Cu."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Kpoints, Poscar

from vasp_emulator import fake_potcar
from vasp_emulator.emulator import run as run_vasp

A = 3.61  # Å, fcc Cu lattice parameter (near EMT's minimum)
N_FOLDERS = 5  # 00 .. 04: three images between the end points
POTCARS = {"Cu": "Cu_pv", "Ag": "Ag"}  # MP's choices: no potcar flag from the guard rails

# The final (ionic-step) energy is the last e_fr_energy of the emulator's vasprun.xml.
_ENERGY_RE = re.compile(r'<i name="e_fr_energy">\s*(\S+)\s*</i>')

_INCAR = {
    "SYSTEM": "Cu vacancy hop",
    "PREC": "Accurate",
    "ENCUT": 520,
    "EDIFF": 1e-5,
    "NSW": 0,
    "IBRION": -1,
    "ISMEAR": 1,
    "SIGMA": 0.2,
    "LWAVE": False,
    "LCHARG": False,
}


# ---------------------------------------------------------------------------------------------------
# Building NEB folders with the emulator
# ---------------------------------------------------------------------------------------------------


def hop_start() -> np.ndarray:
    """Fractional position (2x2x2 supercell) of the atom that hops into the vacancy at 0,0,0."""
    return np.array([0.25, 0.25, 0.0])


def image_structure(k: int, n_folders: int = N_FOLDERS) -> Structure:
    """Image ``k``: 2x2x2 conventional Cu cell (32 sites) without the atom at the origin, its
    neighbour at (a/2, a/2, 0) moved linearly into the vacancy; the hopping atom is atom 0."""
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = [(b + np.array(cell)) / 2 for cell in np.ndindex(2, 2, 2) for b in basis]
    hop = hop_start()
    others = [f for f in frac if np.abs(f).sum() > 1e-9 and np.abs(f - hop).sum() > 1e-9]
    t = k / (n_folders - 1)
    moving = hop * (1.0 - t)  # into the vacancy at the origin
    return Structure(Lattice.cubic(2 * A), ["Cu"] * (1 + len(others)), [moving, *others])


def write_and_run(folder: Path, structure: Structure, **incar: object) -> None:
    """Write INCAR, POSCAR, KPOINTS and a fake POTCAR in ``folder``, run the emulator there."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vasprun.xml", "OUTCAR", "CONTCAR", "OSZICAR"):
        (folder / name).unlink(missing_ok=True)
    settings = {**_INCAR, **incar}
    lines = [f"{key} = {value}" for key, value in settings.items()]
    (folder / "INCAR").write_text("\n".join(lines) + "\n")
    poscar = Poscar(structure)
    poscar.write_file(folder / "POSCAR")
    Kpoints.gamma_automatic((1, 1, 1)).write_file(folder / "KPOINTS")
    (folder / "POTCAR").write_text("".join(fake_potcar(POTCARS[el]) for el in poscar.site_symbols))
    assert run_vasp(folder) == 0


def write_neb(root: Path, n_folders: int = N_FOLDERS) -> Path:
    """A finished NEB in ``root``: folders 00 .. NN, end points included."""
    for k in range(n_folders):
        write_and_run(root / f"{k:02d}", image_structure(k, n_folders))
    return root
