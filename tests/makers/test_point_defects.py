"""Neutral point defects in compounds (`--property defect`): EMT on ordered NiAl against plain
pymatgen-analysis-defects + ASE, combinations, chemical potentials, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_error_line, run_cli

MU = {"Ni": -0.5, "Al": -0.3}  # eV/atom, given: the same on both sides


def _nial():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _plain_emt(structure, sc):
    """Vacancy and antisite energies with pymatgen-analysis-defects' own supercells and ASE EMT."""
    from ase.calculators.emt import EMT
    from pymatgen.analysis.defects.generators import AntiSiteGenerator, VacancyGenerator
    from pymatgen.io.ase import AseAtomsAdaptor

    def energy(s):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    e_bulk = energy(structure * sc)
    out = {}
    for d in [*VacancyGenerator().generate(structure), *AntiSiteGenerator().generate(structure)]:
        s = d.get_supercell_structure(sc_mat=np.diag(sc))
        s.remove_oxidation_states()
        out[d.name] = (energy(s), {el.symbol: int(n) for el, n in d.element_changes.items()})
    return e_bulk, out


def test_defects_nial_emt_match_plain_pymatgen_and_ase(tmp_path):
    cif = tmp_path / "NiAl.cif"
    _nial().to(filename=str(cif))
    res = run_cli("properties", cif, "--property", "defect", "--reference", "emt", "--mu", "Ni=-0.5",
               "--mu", "Al=-0.3", "--json", "--store", tmp_path / "db", "--out", tmp_path / "fig")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    entry = json.loads(res.stdout)["models"]["CHGNet-0.3.0"]
    rows = {r["defect"]: r for r in entry["defects"]}
    (sc,) = {tuple(np.diag(r["supercell"])) for r in entry["defects"]}
    e_bulk, plain = _plain_emt(_nial(), sc)
    assert {"v_Ni", "v_Al", "Ni_Al", "Al_Ni"} <= set(rows)
    for name, (e, changes) in plain.items():
        expected = e - e_bulk - sum(n * MU[el] for el, n in changes.items())
        assert rows[name]["e_ref"] == pytest.approx(expected, abs=1e-6), name
        assert rows[name]["kind"] == ("vacancy" if name.startswith("v_") else "antisite")
    # Combinations: no chemical potential enters (each defect in its own supercell).
    units = len(_nial()) / 2 * np.prod(sc)  # formula units NiAl in the bulk supercell
    schottky = (plain["v_Ni"][0] - e_bulk) + (plain["v_Al"][0] - e_bulk) + e_bulk / units
    assert rows["schottky"]["e_ref"] == pytest.approx(schottky, abs=1e-6)
    pair = rows["antisite pair Al_Ni+Ni_Al"]
    assert pair["e_ref"] == pytest.approx(
        plain["Al_Ni"][0] + plain["Ni_Al"][0] - 2 * e_bulk, abs=1e-6
    )
    assert any(r["kind"] == "interstitial" for r in rows.values())
    (record,) = entry["materials"]
    assert record["mu_source"] == "given" and record["chemical_potentials_ref"] == MU
    assert any("charged defects" in n for n in record["notes"])
    assert (tmp_path / "fig" / "defect_parity.png").exists()


def test_defects_without_mu_give_combinations_only_and_elemental_mu(store):
    from jobflow import run_locally

    from softening.makers import ReferenceStaticMaker
    from softening.makers.point_defects import DefectMaker, elemental_ground_state

    maker = DefectMaker(reference_maker=ReferenceStaticMaker(calculator="emt"), models=["chgnet"],
                        min_image_distance=5.0, interstitials=False)  # fmt: skip
    flow = maker.make(_nial(), "NiAl")
    doc = run_locally(flow, store=store, log=False, ensure_success=True)[flow.output[0].uuid][1]
    rows = {r.defect: r for r in doc.output.values.rows}
    assert rows["v_Ni"].e_ref is None and rows["schottky"].e_ref is not None
    assert doc.output.values.mu_source is None

    # Each method's own elemental ground states: EMT's relaxed fcc Ni and Al on the reference side.
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    maker.mu = "elemental"
    flow = maker.make(_nial(), "NiAl")
    doc = run_locally(flow, store=store, log=False, ensure_success=True)[flow.output[0].uuid][1]
    v = doc.output.values
    assert v.mu_source == "elemental"
    for el in ("Ni", "Al"):
        s, cell, note = elemental_ground_state(el)
        assert cell and note is None
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=300)
        assert v.chemical_potentials_ref[el] == pytest.approx(
            atoms.get_potential_energy() / len(atoms), abs=2e-3
        )
    assert set(v.chemical_potentials) == {"Ni", "Al"}
    assert v.chemical_potentials != v.chemical_potentials_ref  # the model's own
    v_ni = {r.defect: r for r in v.rows}["v_Ni"]
    assert v_ni.e_ref is not None and v_ni.e is not None
    # Oxygen's ground state is a molecule: noted.
    _, cell, note = elemental_ground_state("O")
    assert not cell and "molecule" in note


def test_defect_bad_input(tmp_path):
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.errors import InputError
    from softening.makers.point_defects import DefectMaker

    cif = tmp_path / "NiAl.cif"
    _nial().to(filename=str(cif))
    res = run_cli("properties", cif, "--property", "defect", "--reference", "emt", "--mu", "Ni=-0.5",
               "--store", tmp_path / "db")  # fmt: skip
    one_error_line(res, "no chemical potential for Al")
    res = run_cli("properties", cif, "--property", "defect", "--reference", "emt", "--mu", "Ni=abc",
               "--store", tmp_path / "db")  # fmt: skip
    one_error_line(res, "--mu Ni=abc")
    cu = tmp_path / "Cu.cif"
    AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6)).to(filename=str(cu))
    one_error_line(run_cli("properties", cu, "--property", "defect", "--reference", "emt",
                         "--store", tmp_path / "db"), "use --property vacancy")  # fmt: skip
    with pytest.raises(InputError, match="over the limit of 10"):
        DefectMaker(max_atoms=10).make(_nial(), "NiAl")
    with pytest.raises(InputError, match="holds no Li"):
        DefectMaker(substitutions=["Li:Na"]).make(_nial(), "NiAl")
