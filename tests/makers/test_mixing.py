"""Solid-solution energetics: existing data (`softening mixing`), computed orderings
(`properties --property mixing`), after a correction (`run --finetune --property mixing`)."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import DATA, needs, one_error_line, run_cli

CUAGAU = DATA / "solid_solutions" / "Cu-Ag-Au"


# ---- existing data against an independent computation ---------------------------------------------


def _plain_cell(folder):
    """A stripped vasprun read with nothing but ElementTree: species, cell, positions, energy."""
    root = ET.parse(folder / "vasprun.xml").getroot()
    calc = root.findall("calculation")[-1]
    energy = float(calc.find("energy/i[@name='e_fr_energy']").text)
    final = calc.find("structure[@name='finalpos']")
    basis = [
        [float(v) for v in x.text.split()] for x in final.find("crystal/varray[@name='basis']")
    ]
    frac = [[float(v) for v in x.text.split()] for x in final.find("varray[@name='positions']")]
    atoms = root.find(".//array[@name='atoms']/set")
    species = [rc.find("c").text.strip() for rc in atoms]
    return species, np.array(basis), np.array(frac), energy


def _independent_summary(folders, energies_ml):
    """Formation energies per atom against each method's own lowest pure-element cells; the
    slope, std ratio and MAE over the mixed cells, with numpy alone."""
    species = [c[0] for c in folders]
    e_ref = np.array([c[3] for c in folders])
    e_ml = np.asarray(energies_ml)
    n = np.array([len(s) for s in species])
    elements = sorted({e for s in species for e in s})
    pure = {el: [i for i, s in enumerate(species) if set(s) == {el}] for el in elements}

    def form(e):
        mu = {el: min(e[i] / n[i] for i in idx) for el, idx in pure.items()}
        return np.array([(e[i] - sum(mu[x] for x in s)) / n[i] for i, s in enumerate(species)])

    mixed = np.array([len(set(s)) > 1 for s in species])
    fr, fm = form(e_ref)[mixed], form(e_ml)[mixed]
    return {
        "slope": float(fr @ fm / (fr @ fr)),
        "std_ratio": float(fm.std() / fr.std()),
        "mae": float(np.abs(fm - fr).mean()),
        "fraction_closer_to_zero": float(np.mean(np.abs(fm) < np.abs(fr))),
        "n_mixed": int(mixed.sum()),
    }


@pytest.mark.slow  # ~2 min: CHGNet on 1,079 cells twice (batched, and its own calculator)
@needs(CUAGAU)
def test_mixing_cu_ag_au_matches_plain_xml_and_chgnet_calculator(tmp_path):
    res = run_cli("mixing", CUAGAU, "--model", "chgnet", "--json", "--store", tmp_path / "db",
               "--out", tmp_path / "fig")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    entry = out["models"]["CHGNet-0.3.0"]
    (system,) = entry["systems"]
    assert system["system"] == "Ag-Au-Cu" and system["end_members"] == ["Ag", "Au", "Cu"]
    assert len(entry["cells"]) == 1079 and system["n_mixed"] == 1076
    assert system["omega"] is None and system["tc"] is None  # a ternary: no regular solution
    cell = next(c for c in entry["cells"] if c["cell"] == "2-1-1")
    assert set(cell) >= {"cell", "formula", "fractions", "e_form_ref", "e_form"}
    assert sum(cell["fractions"].values()) == pytest.approx(1.0)
    assert (tmp_path / "fig" / "mixing_Ag-Au-Cu.png").stat().st_size > 10_000

    # The same numbers from plain XML parsing, CHGNet's own ASE calculator, and numpy.
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    names = sorted(p.name for p in CUAGAU.iterdir() if p.is_dir())
    cells = [_plain_cell(CUAGAU / n) for n in names]
    calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    e_ml = []
    for species, basis, frac, _ in cells:
        atoms = AseAtomsAdaptor.get_atoms(Structure(Lattice(basis), species, frac))
        atoms.calc = calc
        e_ml.append(atoms.get_potential_energy())
    expected = _independent_summary(cells, e_ml)
    for key in ("slope", "std_ratio", "mae", "fraction_closer_to_zero"):
        assert system[key] == pytest.approx(expected[key], abs=1e-4), key
    assert system["n_mixed"] == expected["n_mixed"]
    # The independent figures: slope 0.697, std ratio 0.79, MAE 15.8 meV/atom.
    assert system["slope"] == pytest.approx(0.697, abs=2e-3)
    assert system["mae"] == pytest.approx(0.0158, abs=3e-4)
    # Both hulls hold the three pure elements; the reference's also some ordered cells.
    for hull in (system["hull_ref"], system["hull"]):
        assert {"1-0-0", "1-0-1", "1-0-2"} <= set(hull)
    assert len(system["hull_ref"]) > 3


@needs(CUAGAU)
def test_mixing_bad_end_members_and_missing_end_member(tmp_path):
    res = run_cli("mixing", CUAGAU, "--end-members", "CuAg,Au", "--store", tmp_path / "db")
    one_error_line(res, "cell '1-0-0' (Cu) is not a combination of the end members CuAg, Au")
    # A binary without its pure Au cell: no end member to measure against.
    sub = tmp_path / "Cu-Au"
    cu_au = [
        f.name
        for f in sorted(CUAGAU.iterdir())
        if f.name.startswith(("2-", "3-")) and set(_plain_cell(f)[0]) == {"Cu", "Au"}
    ]
    assert len(cu_au) >= 2
    for name in ("1-0-0", *cu_au[:2]):  # Cu, and two Cu-Au cells
        shutil.copytree(CUAGAU / name, sub / name)
    res = run_cli("mixing", sub, "--store", tmp_path / "db")
    one_error_line(res, "no cell is the end member Au alone")
    # Two cells with one name (an extended XYZ file): named, before any model runs.
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k, el in enumerate(["Cu", "Au", "Cu"]):
        a = bulk(el, "fcc", a=3.8)
        a.info["name"] = "pure" if k else "dup"
        a.calc = SinglePointCalculator(a, energy=-3.0 - k)
        frames.append(a)
    frames[2].info["name"] = "pure"
    write(tmp_path / "dup.extxyz", frames)
    res = run_cli("mixing", tmp_path / "dup.extxyz", "--store", tmp_path / "db")
    one_error_line(res, "pure")


# ---- computed orderings -----------------------------------------------------------------------------


def _cu_prim():
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.7))


def test_properties_mixing_emt_matches_plain_ase(tmp_path):
    """Cu:Au orderings of fcc up to 3 cells with EMT and CHGNet: the enumeration's count, and
    every formation energy against plain ASE on the same cells."""
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.analysis.orderings import enumerate_orderings

    cif = tmp_path / "Cu.cif"
    _cu_prim().to(filename=str(cif))
    res = run_cli("properties", cif, "--property", "mixing", "--substitute", "Cu:Au",
               "--max-cells", "3", "--reference", "emt", "--json", "--store", tmp_path / "db",
               "--out", tmp_path / "fig")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    entry = out["models"]["CHGNet-0.3.0"]
    (system,) = entry["systems"]
    orderings = enumerate_orderings(_cu_prim(), "Cu", "Au", 3)
    assert len(entry["cells"]) == len(orderings) == 10  # 2 + 2 + 6: Cu, Au and 8 orderings
    assert system["end_members"] == ["Cu", "Au"] and system["n_mixed"] == 8
    energies = {}
    for o in orderings:
        atoms = AseAtomsAdaptor.get_atoms(o.structure)
        atoms.calc = EMT()
        energies[o.label] = (atoms.get_potential_energy(), len(atoms), o.fraction)
    mu_cu = energies[next(o.label for o in orderings if o.fraction == 0)][0]
    mu_au = energies[next(o.label for o in orderings if o.fraction == 1)][0]
    for c in entry["cells"]:
        e, n, x = energies[c["cell"]]
        expected = (e - n * (1 - x) * mu_cu - n * x * mu_au) / n
        assert c["e_form_ref"] == pytest.approx(expected, abs=1e-6)
        assert c["fractions"]["Au"] == pytest.approx(x)
    # A binary: a regular-solution fit on both sides, and a T_c where Omega > 0.
    assert system["omega_ref"] is not None and system["omega"] is not None
    assert (system["tc_ref"] is None) == (system["omega_ref"] <= 0)
    assert (tmp_path / "fig" / "mixing_parity.png").exists()
    # Stored, and queryable like every property.
    from softening.workflows.properties import query_property_docs

    (doc,) = query_property_docs(tmp_path / "db", property="mixing")
    assert doc["values"]["system"] == system["system"] and doc["elements"] == ["Au", "Cu"]

    missing = run_cli("properties", cif, "--property", "mixing", "--reference", "emt",
                   "--store", tmp_path / "db")  # fmt: skip
    one_error_line(missing, "--substitute")
    absent = run_cli("properties", cif, "--property", "mixing", "--substitute", "Mg:Ca",
                  "--reference", "emt", "--model", "chgnet", "--store", tmp_path / "db")  # fmt: skip
    one_error_line(absent, "Mg is not in")


def test_mixing_relaxed_with_each_method_emt(store):
    """--relax: each method relaxes positions and cell of every ordering (Cu and Au differ by
    12 % in lattice parameter), and the relaxed energies are compared."""
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from jobflow import run_locally
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.makers import ReferenceStaticMaker
    from softening.makers.mixing import MixingMaker

    maker = MixingMaker(reference_maker=ReferenceStaticMaker(calculator="emt"),
                        models=["chgnet"], substitute="Cu:Au", max_cells=2, relax=True,
                        relax_fmax=0.01)  # fmt: skip
    flow = maker.make(_cu_prim(), "Cu")
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    doc = responses[flow.output[0].uuid][1].output
    v = doc.values
    assert v.relaxed and all(c.relaxed and c.converged for c in v.cells) and len(v.cells) == 4
    # The pure Au cell relaxed to EMT's own lattice: its energy below the unrelaxed one.
    au = next(c for c in v.cells if c.fractions["Au"] == 1.0)
    atoms = AseAtomsAdaptor.get_atoms(_cu_prim())
    atoms.symbols[:] = "Au"
    atoms.calc = EMT()
    e_unrelaxed = atoms.get_potential_energy()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01)
    assert au.energy_ref == pytest.approx(atoms.get_potential_energy(), abs=1e-3)
    assert au.energy_ref < e_unrelaxed - 0.1


@pytest.mark.slow  # ~1-2 min: 4 GPAW single points
def test_properties_mixing_gpaw_small(tmp_path):
    pytest.importorskip("gpaw")
    cif = tmp_path / "Cu.cif"
    _cu_prim().to(filename=str(cif))
    res = run_cli("properties", cif, "--property", "mixing", "--substitute", "Cu:Au",
               "--max-cells", "2", "--reference", "gpaw", "--ecut", "300", "--kspacing", "0.6",
               "--json", "--store", tmp_path / "db")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (system,) = json.loads(res.stdout)["models"]["CHGNet-0.3.0"]["systems"]
    assert system["n_mixed"] == 2 and system["reference"] == "gpaw"
    assert system["slope"] is not None and np.isfinite(system["slope"])


@pytest.mark.slow  # ~1-2 min: a short MD, EMT labels, a scale correction
def test_run_finetune_then_mixing_of_raw_and_corrected_model(tmp_path):
    """`run --finetune scale --property mixing`: the corrected model's energies are c times the
    raw model's, so its formation-energy slope is exactly c times the raw one."""
    from pymatgen.core import Lattice, Structure

    from softening.stores import get_job_store

    cif = tmp_path / "Cu8.cif"
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    cu.to(filename=str(cif))
    res = run_cli(
        "run", cif, "--reference", "emt", "--steps", "40", "--stride", "2", "--frames", "4",
        "--strained", "1", "--finetune", "scale", "--property", "mixing", "--substitute",
        "Cu:Au", "--max-cells", "2", "--store", tmp_path / "db", "--out", tmp_path / "out",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert not summary["failed_jobs"]
    by_model = {p["model"]: p for p in summary["properties"]}
    assert len(by_model) == 2 and all(p["property"] == "mixing" for p in by_model.values())
    raw = by_model["CHGNet-0.3.0"]
    (corrected,) = [p for name, p in by_model.items() if name != "CHGNet-0.3.0"]
    store = get_job_store(tmp_path / "db")
    store.connect()
    c = store.query_one({"output.@class": "VerificationDoc"})["output"]["correction"]["factor"]
    assert corrected["ratio"] == pytest.approx(c * raw["ratio"], rel=1e-4)
    bad = run_cli("run", cif, "--reference", "emt", "--steps", "40", "--stride", "2", "--frames",
               "4", "--strained", "1", "--property", "mixing", "--store", tmp_path / "db")  # fmt: skip
    one_error_line(bad, "--substitute")


def test_registry_lists_mixing():
    from softening.makers.properties import get_property, property_names

    assert property_names()[:7] == [
        "phonon",
        "surface",
        "vacancy",
        "barrier",
        "mixing",
        "defect",
        "migration",
    ]
    spec = get_property("mixing")
    assert spec.json_key == "cells" and spec.records_key == "systems"
    assert re.search("formation energy", spec.axis)
