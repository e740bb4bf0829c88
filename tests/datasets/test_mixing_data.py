"""Tests of the solid-solution (mixing) data reader on the shared Cu-Ag-Au set and small files."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, needs
from pymatgen.core import Lattice, Structure

from softening.datasets.mixing import MixingData, read_mixing_data
from softening.errors import InputError

CU_AG_AU = DATA / "solid_solutions" / "Cu-Ag-Au"
LIFEPO4 = DATA / "vasp_outputs" / "vasprun.lifepo4.xml.gz"

_ENERGY_RE = re.compile(r'<i name="e_fr_energy">\s*(\S+)\s*</i>')


# ---------------------------------------------------------------------------------------------------
# Small files written here
# ---------------------------------------------------------------------------------------------------


def _stripped_vasprun(
    energy: str = "-7.5",
    species: tuple[str, ...] = ("Cu", "Au"),
    frac: tuple[tuple[float, float, float], ...] = ((0, 0, 0), (0.5, 0.5, 0.5)),
    a: float = 3.6,
    atoms_array: bool = True,
) -> str:
    """A vasprun.xml stripped as the Cu-Ag-Au ones are: one <calculation>, no <incar>."""

    def v(row) -> str:
        return "<v> " + " ".join(f"{x:.8f}" for x in row) + " </v>"

    basis = "\n".join(v(r) for r in np.eye(3) * a)
    positions = "\n".join(v(r) for r in frac)
    forces = "\n".join(v((0.0, 0.0, 0.0)) for _ in frac)
    energy_line = f'<i name="e_fr_energy"> {energy} </i>' if energy is not None else ""
    atoms = ""
    if atoms_array:
        rows = "".join(f"<rc><c>{s}</c><c>1</c></rc>" for s in species)
        atoms = (
            '<array name="atoms"><dimension dim="1">ion</dimension>'
            '<field type="string">element</field><field type="int">atomtype</field>'
            f"<set>{rows}</set></array>"
        )
    return f"""<?xml version="1.0" ?><modeling><calculation><energy>
   {energy_line}
   <i name="e_wo_entrp"> -7.4 </i>
  </energy>
  <varray name="forces">
{forces}
  </varray>
  <varray name="stress">
   <v> 1.0 0.0 0.0 </v>
   <v> 0.0 1.0 0.0 </v>
   <v> 0.0 0.0 1.0 </v>
  </varray>
  <structure name="finalpos"><crystal><varray name="basis">
{basis}
  </varray></crystal>
  <varray name="positions">
{positions}
  </varray></structure>
{atoms}
  </calculation></modeling>
"""


def _write_cell(root: Path, name: str, text: str | None = None, **kwargs) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "vasprun.xml").write_text(text if text is not None else _stripped_vasprun(**kwargs))
    return folder


def _poscar(species: list[str], frac: list[list[float]], a: float = 3.6) -> str:
    structure = Structure(Lattice.cubic(a), species, frac)
    from pymatgen.io.vasp import Poscar

    return Poscar(structure).get_str()


def _outcar(toten: str = "-7.51234567", nions: int = 2, finished: bool = True) -> str:
    """The parts of a VASP OUTCAR pymatgen's Outcar reads (header, one ionic step, timing)."""
    text = f""" vasp.5.4.4.18Apr17-6-g9f103f2a35 (build Sep 18 2018 16:57:57) complex

 executed on             LinuxIFC date 2024.01.01  12:00:00
 running on    4 total cores
 distrk:  each k-point on    4 cores,    1 groups
 POTCAR:    PAW_PBE Cu 22Jun2005
 POTCAR:    PAW_PBE Au 04Oct2007

 Dimension of arrays:
   k-points           NKPTS =     60   k-points in BZ     NKDIM =     60   number of bands    NBANDS=     24
   number of dos      NEDOS =    301   number of ions     NIONS =      {nions}
   total plane-waves  NPLWV =   4096

   NSW    =      0    number of steps for IOM
   IBRION =     -1    ionic relax: 0-MD 1-quasi-New 2-CG
   ISPIN  =      1    spin polarized calculation?

--------------------------------------- Iteration      1(  14)  ---------------------------------------

  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)
  ---------------------------------------------------
  alpha Z        PSCENC =         1.07421482
  Ewald energy   TEWEN  =     -1469.33082310
  free  energy   TOTEN  =        {toten} eV

  energy  without entropy=       -7.51240000  energy(sigma->0) =       -7.51237000

"""
    if finished:
        text += """ General timing and accounting informations for this job:
 ========================================================

                  Total CPU time used (sec):        1.234
                            User time (sec):        1.100
                          System time (sec):        0.134
                         Elapsed time (sec):        1.500

                   Maximum memory used (kb):       50000.
                   Average memory used (kb):          N/A
"""
    return text


def _atoms(species: str, a: float = 3.6, **info):
    from ase.build import bulk

    atoms = bulk(species, "fcc", a=a, cubic=True)[:2]
    atoms.info.update(info)
    return atoms


def _raises(path: Path, *needles: str) -> str:
    with pytest.raises(InputError) as err:
        read_mixing_data(path)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# The shared Cu-Ag-Au set (stripped vasprun.xml files)
# ---------------------------------------------------------------------------------------------------


@needs(CU_AG_AU)
def test_cu_ag_au_reads_every_cell_with_its_energy_and_species() -> None:
    data = read_mixing_data(CU_AG_AU)
    assert isinstance(data, MixingData)
    assert data.name == "Cu-Ag-Au"
    assert data.source == str(CU_AG_AU)
    folders = sorted(p.name for p in CU_AG_AU.iterdir() if p.is_dir())
    assert len(data.cells) == len(folders) == 1079
    assert [c.frame_id for c in data.cells] == folders

    cells = {c.frame_id: c for c in data.cells}
    cu = cells["1-0-0"]
    expected = float(_ENERGY_RE.search((CU_AG_AU / "1-0-0" / "vasprun.xml").read_text())[1])
    assert cu.energy == pytest.approx(expected, abs=1e-9)
    assert [s.species_string for s in cu.structure] == ["Cu"]
    assert cu.source == str(CU_AG_AU / "1-0-0" / "vasprun.xml")
    assert cu.metadata["potcar_symbols"] == ["PAW_PBE Cu 22Jun2005"]
    assert "vasp" not in cu.metadata  # no INCAR/parameters: nothing for the guard rails

    pair = cells["2-1-1"]
    poscar = Structure.from_file(CU_AG_AU / "2-1-1" / "POSCAR")
    assert pair.n_atoms == 2
    assert [s.species_string for s in pair.structure] == [s.species_string for s in poscar]
    assert sorted(pair.structure.composition.elements) == sorted(poscar.composition.elements)
    assert np.allclose(pair.structure.lattice.matrix, poscar.lattice.matrix, atol=1e-6)
    assert pair.structure.matches(poscar)

    for cell in data.cells:
        assert cell.energy is not None and np.isfinite(cell.energy)
        # PBE total energies of Cu, Ag, Au: -2.5 to -4 eV/atom
        assert -4.5 < cell.energy / cell.n_atoms < -2.0, cell.frame_id
        assert {el.symbol for el in cell.structure.composition} <= {"Cu", "Ag", "Au"}
        assert 1 <= cell.n_atoms <= 6


@needs(CU_AG_AU)
def test_truncated_copy_of_a_real_stripped_vasprun(tmp_path: Path) -> None:
    text = (CU_AG_AU / "2-1-1" / "vasprun.xml").read_bytes()
    folder = tmp_path / "set" / "2-1-1"
    folder.mkdir(parents=True)
    (folder / "vasprun.xml").write_bytes(text[: len(text) // 2])
    _raises(tmp_path / "set", "'2-1-1'", "truncated", "vasprun.xml")


# ---------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------


@needs(LIFEPO4)
def test_full_vasprun_gives_its_last_ionic_step(tmp_path: Path) -> None:
    from pymatgen.io.vasp import Vasprun

    folder = tmp_path / "set" / "cellA"
    folder.mkdir(parents=True)
    shutil.copy(LIFEPO4, folder / "vasprun.xml.gz")
    _write_cell(tmp_path / "set", "cellB")  # stripped beside full

    data = read_mixing_data(tmp_path / "set")
    assert [c.frame_id for c in data.cells] == ["cellA", "cellB"]
    cell = data.cells[0]
    run = Vasprun(str(LIFEPO4), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    assert cell.energy == pytest.approx(run.ionic_steps[-1]["e_fr_energy"], abs=1e-8)
    assert len(run.ionic_steps) > 1  # so "last" is tested
    assert cell.energy != pytest.approx(run.ionic_steps[0]["e_fr_energy"], abs=1e-6)
    assert cell.structure.matches(run.final_structure)
    assert np.allclose(cell.structure.lattice.matrix, run.final_structure.lattice.matrix)
    # the run's settings travel with the cell, for the guard rails
    assert cell.metadata["vasp"]["parameters"]["ENCUT"] == pytest.approx(500.0)
    assert cell.source.startswith(str(folder / "vasprun.xml.gz"))
    assert data.cells[1].metadata["vasprun_layout"] == "stripped"


def test_stripped_vasprun_energy_structure_and_labels(tmp_path: Path) -> None:
    _write_cell(tmp_path / "AuCu", "b", energy="-7.25", species=("Au", "Cu"))
    _write_cell(tmp_path / "AuCu", "a", energy="-7.5", species=("Cu", "Au"))
    gz = tmp_path / "AuCu" / "c"
    gz.mkdir()
    with gzip.open(gz / "vasprun.xml.gz", "wt") as handle:
        handle.write(_stripped_vasprun(energy="-3.5", species=("Cu", "Cu")))
    data = read_mixing_data(tmp_path / "AuCu")
    assert data.name == "AuCu"
    assert [c.frame_id for c in data.cells] == ["a", "b", "c"]  # sorted, not directory order
    a, b, c = data.cells
    assert (a.energy, b.energy, c.energy) == (-7.5, -7.25, -3.5)
    assert [s.species_string for s in a.structure] == ["Cu", "Au"]
    assert [s.species_string for s in b.structure] == ["Au", "Cu"]
    assert np.allclose(a.structure.frac_coords, [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert a.structure.lattice.abc == pytest.approx((3.6, 3.6, 3.6))
    assert a.forces.shape == (2, 3)
    # 1 kbar compressive (VASP sign) is -0.1 GPa in eV/Å^3, ASE sign
    assert a.stress[0, 0] == pytest.approx(-6.2415e-4, rel=1e-3)


def test_stripped_vasprun_without_atoms_array_takes_species_from_poscar(tmp_path: Path) -> None:
    folder = _write_cell(tmp_path / "set", "x", species=("Ag", "Au"), atoms_array=False)
    (folder / "POSCAR").write_text(_poscar(["Ag", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    cell = read_mixing_data(tmp_path / "set").cells[0]
    assert [s.species_string for s in cell.structure] == ["Ag", "Au"]

    (folder / "POSCAR").unlink()
    _raises(tmp_path / "set", "'x'", "no atoms array")


def test_outcar_with_contcar_else_poscar(tmp_path: Path) -> None:
    folder = tmp_path / "set" / "CuAu"
    folder.mkdir(parents=True)
    (folder / "OUTCAR").write_text(_outcar("-7.51234567"))
    (folder / "POSCAR").write_text(_poscar(["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]], a=3.5))
    cell = read_mixing_data(tmp_path / "set").cells[0]
    assert cell.frame_id == "CuAu"
    assert cell.energy == pytest.approx(-7.51234567)  # TOTEN, not energy(sigma->0)
    assert cell.structure.lattice.a == pytest.approx(3.5)
    assert cell.metadata["structure_file"] == "POSCAR"

    (folder / "CONTCAR").write_text(_poscar(["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]], a=3.7))
    cell = read_mixing_data(tmp_path / "set").cells[0]
    assert cell.structure.lattice.a == pytest.approx(3.7)
    assert cell.metadata["structure_file"] == "CONTCAR"

    # VASP 6.4 spells the line "free energy    TOTEN"
    (folder / "OUTCAR").write_text(
        _outcar("-7.6").replace("free  energy   TOTEN", "free energy    TOTEN")
    )
    assert read_mixing_data(tmp_path / "set").cells[0].energy == pytest.approx(-7.6)


def test_vasprun_wins_over_outcar(tmp_path: Path) -> None:
    folder = _write_cell(tmp_path / "set", "c", energy="-7.0")
    (folder / "OUTCAR").write_text(_outcar("-9.0"))
    assert read_mixing_data(tmp_path / "set").cells[0].energy == -7.0


# ---------------------------------------------------------------------------------------------------
# Files: extended XYZ, ASE databases
# ---------------------------------------------------------------------------------------------------


def test_extxyz_names_from_info_else_index(tmp_path: Path) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    named = _atoms("Cu", name="pure-Cu", REF_energy=-7.0)
    labelled = _atoms("Au", label="pure-Au", REF_energy=-6.0)
    plain = _atoms("Ag")
    plain.calc = SinglePointCalculator(plain, energy=-5.0)
    path = tmp_path / "cuagau.extxyz.gz"
    with gzip.open(path, "wt") as handle:
        write(handle, [named, labelled, plain], format="extxyz")
    data = read_mixing_data(path)
    assert data.name == "cuagau"
    assert [c.frame_id for c in data.cells] == ["pure-Cu", "pure-Au", "2"]
    assert [c.energy for c in data.cells] == [-7.0, -6.0, -5.0]
    assert data.cells[0].source == f"{path}@0"

    write(tmp_path / "ids.xyz", [_atoms("Cu", id=7, energy=-1.0), _atoms("Cu", energy=-2.0)])
    assert [c.frame_id for c in read_mixing_data(tmp_path / "ids.xyz").cells] == ["7", "1"]


@pytest.mark.parametrize("suffix", [".db", ".json"])
def test_ase_database(tmp_path: Path, suffix: str) -> None:
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    path = tmp_path / f"alloys{suffix}"
    db = ase.db.connect(str(path))
    cu = _atoms("Cu")
    cu.calc = SinglePointCalculator(cu, energy=-7.0, forces=np.zeros((2, 3)))
    db.write(cu, name="Cu2")
    db.write(_atoms("Au"), label="Au2", REF_energy=-6.0)
    ag = _atoms("Ag")
    ag.calc = SinglePointCalculator(ag, energy=-5.0)
    db.write(ag)
    data = read_mixing_data(path)
    assert data.name == "alloys"
    assert [c.frame_id for c in data.cells] == ["Cu2", "Au2", "3"]  # the row id
    assert [c.energy for c in data.cells] == [-7.0, -6.0, -5.0]
    assert data.cells[0].forces.shape == (2, 3)
    assert [s.species_string for s in data.cells[1].structure] == ["Au", "Au"]


def test_json_that_is_not_an_ase_database(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    path.write_text('[{"structure": {}, "outputs": {}}]')
    _raises(path, "not an ASE database", str(path))


# ---------------------------------------------------------------------------------------------------
# Bad input: one line naming the cell (and file)
# ---------------------------------------------------------------------------------------------------


def test_truncated_stripped_and_full_vasprun(tmp_path: Path) -> None:
    text = _stripped_vasprun()
    _write_cell(tmp_path / "s", "half", text=text[: len(text) // 2])
    _raises(tmp_path / "s", "'half'", "truncated", str(tmp_path / "s" / "half" / "vasprun.xml"))

    folder = tmp_path / "g" / "cutgz"
    folder.mkdir(parents=True)
    (folder / "vasprun.xml.gz").write_bytes(gzip.compress(text.encode())[:100])
    _raises(tmp_path / "g", "'cutgz'", "truncated")

    _write_cell(tmp_path / "e", "empty", text="")
    _raises(tmp_path / "e", "'empty'", "truncated")


@needs(LIFEPO4)
def test_truncated_full_vasprun(tmp_path: Path) -> None:
    with gzip.open(LIFEPO4, "rb") as handle:
        text = handle.read()
    folder = tmp_path / "set" / "LiFePO4"
    folder.mkdir(parents=True)
    (folder / "vasprun.xml").write_bytes(text[: len(text) // 2])
    _raises(tmp_path / "set", "'LiFePO4'", "truncated", "vasprun.xml")


def test_cell_without_energy(tmp_path: Path) -> None:
    _write_cell(tmp_path / "v", "noE", energy=None)
    _raises(tmp_path / "v", "'noE'", "no energy")

    from ase.io import write

    write(tmp_path / "x.extxyz", [_atoms("Cu", name="ok", REF_energy=-1.0), _atoms("Cu", name="n")])
    _raises(tmp_path / "x.extxyz", "'n'", "no energy", str(tmp_path / "x.extxyz"))


@pytest.mark.parametrize("value", ["NaN", "inf", "********"])
def test_non_finite_or_garbled_energy(tmp_path: Path, value: str) -> None:
    _write_cell(tmp_path / "set", "bad", energy=value)
    message = _raises(tmp_path / "set", "'bad'", "vasprun.xml")
    assert "non-finite" in message or "not a number" in message


def test_non_finite_energy_in_extxyz(tmp_path: Path) -> None:
    from ase.io import write

    write(tmp_path / "x.extxyz", [_atoms("Cu", name="nan-cell", REF_energy=float("nan"))])
    _raises(tmp_path / "x.extxyz", "'nan-cell'", "non-finite")


def test_atoms_too_close(tmp_path: Path) -> None:
    # 0.3 Å: more than the 0.1 Å the frame readers allow, less than the 0.5 Å for structures
    _write_cell(tmp_path / "set", "ok")
    _write_cell(tmp_path / "set", "squeezed", frac=((0, 0, 0), (0.3 / 3.6, 0, 0)))
    _raises(tmp_path / "set", "'squeezed'", "overlapping atoms", "vasprun.xml")


def test_duplicate_names(tmp_path: Path) -> None:
    from ase.io import write

    path = tmp_path / "dup.extxyz"
    write(
        path,
        [
            _atoms("Cu", name="CuAu", REF_energy=-1.0),
            _atoms("Au", name="other", REF_energy=-2.0),
            _atoms("Au", name="CuAu", REF_energy=-3.0),
        ],
    )
    _raises(path, "'CuAu'", "two cells", f"{path}@0", f"{path}@2")

    import ase.db

    db = ase.db.connect(str(tmp_path / "dup.db"))
    db.write(_atoms("Cu"), name="x", REF_energy=-1.0)
    db.write(_atoms("Ag"), label="x", REF_energy=-2.0)
    _raises(tmp_path / "dup.db", "'x'", "two cells")


def test_no_cells(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "no cells", str(tmp_path / "empty"))

    (tmp_path / "one_run").mkdir()
    (tmp_path / "one_run" / "vasprun.xml").write_text(_stripped_vasprun())
    _raises(tmp_path / "one_run", "no cells", "one calculation")

    (tmp_path / "empty.extxyz").write_text("")
    _raises(tmp_path / "empty.extxyz", "no cells")

    import ase.db

    ase.db.connect(str(tmp_path / "empty.db")).write(_atoms("Cu"), REF_energy=1.0)
    ase.db.connect(str(tmp_path / "empty.db")).delete([1])
    _raises(tmp_path / "empty.db", "no cells")


def test_sub_folder_without_any_result_file(tmp_path: Path) -> None:
    _write_cell(tmp_path / "set", "a")
    (tmp_path / "set" / "b").mkdir()
    (tmp_path / "set" / "b" / "POSCAR").write_text(_poscar(["Cu"], [[0, 0, 0]]))
    _raises(tmp_path / "set", "'b'", str(tmp_path / "set" / "b"), "no vasprun.xml")


def test_unfinished_outcar(tmp_path: Path) -> None:
    folder = tmp_path / "set" / "cut"
    folder.mkdir(parents=True)
    (folder / "OUTCAR").write_text(_outcar(finished=False))
    (folder / "POSCAR").write_text(_poscar(["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    _raises(tmp_path / "set", "'cut'", "truncated", "OUTCAR")

    (folder / "OUTCAR").write_text(_outcar(nions=3))
    _raises(tmp_path / "set", "'cut'", "3 atoms")


def test_xml_with_entity_declarations_is_refused(tmp_path: Path) -> None:
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE modeling [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
    )
    text = _stripped_vasprun(energy="&b;").replace('<?xml version="1.0" ?>', bomb)
    _write_cell(tmp_path / "set", "bomb", text=text)
    _raises(tmp_path / "set", "'bomb'", "DOCTYPE")
    # a full vasprun.xml is refused before pymatgen parses it
    full = text.replace("<modeling>", "<modeling><incar></incar>", 1)
    _write_cell(tmp_path / "full", "bomb", text=full)
    _raises(tmp_path / "full", "'bomb'", "DOCTYPE")


def test_well_formed_vasprun_pymatgen_cannot_parse_is_read_as_stripped(tmp_path: Path) -> None:
    """Full parsing is tried first; a well-formed file it fails on is read as a stripped one."""
    text = _stripped_vasprun(energy="-7.25").replace("<modeling>", "<modeling><incar></incar>", 1)
    _write_cell(tmp_path / "set", "odd", text=text)
    cell = read_mixing_data(tmp_path / "set").cells[0]
    assert cell.energy == -7.25
    assert "vasp" not in cell.metadata
    assert cell.metadata["vasprun_layout"] == "stripped"
    assert "not a readable vasprun.xml" in cell.metadata["pymatgen_error"]


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    _raises(tmp_path / "nope", "no such file", "nope")
    (tmp_path / "cells.csv").write_text("name,energy\n")
    _raises(tmp_path / "cells.csv", "cells.csv", "expected a folder")
