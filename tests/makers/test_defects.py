"""Vacancy formation energies and vacancy migration barriers.

The science is checked on numbers worked by hand; the flows with ``--reference emt`` against plain ASE
computations (EMT energies of the same supercells, an ASE NEB with the model's own calculator on the
same end points), never this package's code path. GPAW-backed flows are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import ROOT

CLI = [sys.executable, "-c", "from softening.cli import app; app()"]


def _cu(a: float = 3.6):
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=a))


def _run(flow, store):
    from jobflow import run_locally

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_locally(flow, store=store, ensure_success=True, log=False)
    return [out[o.uuid][max(out[o.uuid])].output for o in flow.output], out


# ---- pure science ----------------------------------------------------------------------------------


def test_vacancy_formation_energy():
    from softening.analysis.defects import vacancy_formation_energy

    # 4 atoms at -3 eV each; the defect cell (3 atoms) at -8 eV: -8 - (3/4)(-12) = 1 eV.
    assert vacancy_formation_energy(-8.0, -12.0, 4) == pytest.approx(1.0)
    assert vacancy_formation_energy(-8.0, -12.0, 4, mu=-3.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        vacancy_formation_energy(0.0, -3.0, 1)


def test_barrier_and_profile():
    from softening.analysis.defects import (
        barrier_from_initial,
        energy_profile,
        migration_barrier,
        reaction_coordinate,
    )

    e = [-10.0, -9.7, -9.2, -9.6, -10.1]
    assert energy_profile(e).tolist() == pytest.approx([0, 0.3, 0.8, 0.4, -0.1])
    # The paper's (and emmet's) barrier: highest minus lowest image; the old one, from the
    # initial image, kept as a second number.
    assert migration_barrier(e) == pytest.approx(0.9)
    assert barrier_from_initial(e) == pytest.approx(0.8)
    assert migration_barrier([-1.0, -1.5]) == pytest.approx(0.5)  # downhill: range 0.5 eV
    assert barrier_from_initial([-1.0, -1.5]) == 0.0  # nothing above the start
    with pytest.raises(ValueError):
        migration_barrier([1.0])
    # An atom moving 1 Å per image across the boundary of a 10 Å cell (wrapped positions).
    lattice = np.eye(3) * 10.0
    pos = [np.array([[9.0, 0, 0]]), np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]])]
    assert reaction_coordinate(pos, lattice).tolist() == pytest.approx([0.0, 1.0, 2.0])


def test_min_image_distance_and_supercell_growth():
    from softening.analysis.defects import min_image_distance, supercell_for_min_distance

    cu = _cu(3.6)
    nn = 3.6 / np.sqrt(2)
    assert min_image_distance(cu.lattice.matrix) == pytest.approx(nn)
    assert min_image_distance(np.diag([3.0, 4.0, 5.0])) == pytest.approx(3.0)
    n = supercell_for_min_distance(cu.lattice.matrix, 7.0)
    assert n == [3, 3, 3]  # 2 * 2.55 Å < 7 Å <= 3 * 2.55 Å
    assert min_image_distance(np.diag(n) @ cu.lattice.matrix) >= 7.0
    assert supercell_for_min_distance(np.diag([3.0, 4.0, 8.0]), 7.9) == [3, 2, 1]


def test_distinct_sites():
    from pymatgen.core import Lattice, Structure

    from softening.analysis.defects import distinct_sites, nearest_equivalent_neighbour

    assert distinct_sites(_cu()) == [(0, 1)]
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    sites = distinct_sites(rutile)
    assert sorted(m for _, m in sites) == [2, 4]
    assert {rutile[i].specie.symbol for i, _ in sites} == {"Ti", "O"}
    j, d = nearest_equivalent_neighbour(_cu() * 3, 0)
    assert d == pytest.approx(3.6 / np.sqrt(2))


def test_vacancy_input_errors():
    from pymatgen.core import Lattice, Structure

    from softening.errors import InputError
    from softening.makers.vacancy import vacancy_inputs

    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    with pytest.raises(InputError, match="elemental solids only"):
        vacancy_inputs(nacl, "NaCl")
    with pytest.raises(InputError, match="choose a larger one"):
        vacancy_inputs(_cu(), "Cu", min_distance=7.0, supercell_matrix=[1, 1, 1])
    inputs, frames = vacancy_inputs(_cu(), "Cu", min_distance=7.0)  # 1 atom: grown to 27
    assert inputs["n_bulk"] == 27 and [len(f.structure) for f in frames] == [27, 26]


# ---- flows with EMT --------------------------------------------------------------------------------


def test_vacancy_flow_emt_matches_plain_ase_and_resumes(store):
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.optimize import BFGS

    from softening.makers import ReferenceStaticMaker
    from softening.makers.vacancy import VacancyMaker

    maker = VacancyMaker(
        reference_maker=ReferenceStaticMaker(calculator="emt"), min_image_distance=7.0, relax=True
    )
    flow = maker.make(_cu(), "Cu")
    (doc,), _ = _run(flow, store)
    (row,) = doc.values.rows
    # Plain ASE: 3x3x3 primitive fcc cells, one atom removed, EMT before and after relaxing.
    sc = bulk("Cu", "fcc", a=3.6) * (3, 3, 3)
    sc.calc = EMT()
    e_bulk = sc.get_potential_energy()
    vac = sc.copy()
    del vac[0]
    vac.calc = EMT()
    e_unrelaxed = vac.get_potential_energy() - 26 / 27 * e_bulk
    BFGS(vac, logfile=None).run(fmax=0.05, steps=200)
    e_relaxed = vac.get_potential_energy() - 26 / 27 * e_bulk
    assert row.e_vac_unrelaxed_ref == pytest.approx(e_unrelaxed, abs=1e-8)
    assert row.e_vac_ref == pytest.approx(e_relaxed, abs=2e-3)
    assert row.e_vac_ref < row.e_vac_unrelaxed_ref
    assert row.relaxed and row.converged and row.multiplicity == 1
    assert doc.values.chemical_potential == "bulk"
    assert doc.property == "vacancy" and doc.model.name == "CHGNet-0.3.0"
    # CHGNet (batched) against its own ASE calculator on the same unrelaxed cells.
    from softening.models import load_model

    calc = load_model("chgnet").calculator()
    sc.calc = calc
    vac0 = sc.copy()
    del vac0[0]
    vac0.calc = calc
    e_ml = vac0.get_potential_energy() - 26 / 27 * sc.get_potential_energy()
    assert row.e_vac_unrelaxed == pytest.approx(e_ml, abs=2e-3)
    # A second run reuses every reference single point (content key).
    flow2 = maker.make(_cu(), "Cu")
    (doc2,), out2 = _run(flow2, store)
    refs = [r[1].output for r in out2.values() if type(r[1].output).__name__ == "FrameResult"]
    assert refs and all(r.reused for r in refs)
    assert doc2.values.rows[0].e_vac_ref == pytest.approx(row.e_vac_ref)


def test_barrier_flow_emt_matches_plain_ase_neb(store):
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.makers import ReferenceStaticMaker
    from softening.makers.barrier import BarrierMaker, hop_endpoints, neb_path
    from softening.models import load_model

    maker = BarrierMaker(
        reference_maker=ReferenceStaticMaker(calculator="emt"), min_image_distance=7.0,
        n_images=1, fmax=0.1, steps=150,
    )  # fmt: skip
    flow = maker.make(_cu(), "Cu")
    (doc,), _ = _run(flow, store)
    v = doc.values
    assert v.n_images == 3 and len(v.profile) == len(v.profile_ref) == 3
    assert v.hop_distance == pytest.approx(3.6 / np.sqrt(2))
    assert v.neb_converged and v.neb_fmax <= 0.1
    # The reference on the model's images, by plain ASE EMT.
    neb_out = next(j for j in flow.jobs if j.name.startswith("neb "))
    stored = store.query_one({"uuid": neb_out.uuid}, load=True)["output"]
    energies = []
    for f in stored["frames"]:
        from pymatgen.core import Structure

        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(f["structure"]))
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
    # The paper's barrier (highest minus lowest image) and the one from the initial image.
    assert v.barrier_ref == pytest.approx(max(energies) - min(energies), abs=1e-8)
    assert v.barrier_initial_ref == pytest.approx(max(energies) - energies[0], abs=1e-8)
    assert v.profile_ref == pytest.approx(list(np.array(energies) - energies[0]), abs=1e-8)
    # The model's barrier against a plain ASE NEB with the same end points and settings.
    initial, final, _, _ = hop_endpoints(_cu(), 7.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = neb_path(initial, final, load_model("chgnet").calculator, 1, 0.1, 150)
    e = np.array(plain["energies"])
    assert v.barrier == pytest.approx(e.max() - e.min(), abs=5e-3)
    # Softening: CHGNet's barrier lies below EMT's on the same path (measured with 3 images: 0.54 vs 0.69 eV).
    assert 0 < v.barrier < v.barrier_ref


def test_unconverged_neb_is_flagged_and_kept(store):
    from softening.makers import ReferenceStaticMaker
    from softening.makers.barrier import BarrierMaker

    maker = BarrierMaker(
        reference_maker=ReferenceStaticMaker(calculator="emt"), min_image_distance=7.0,
        n_images=1, fmax=0.001, steps=2, relax_endpoints=False,
    )  # fmt: skip
    (doc,), _ = _run(maker.make(_cu(), "Cu"), store)
    assert not doc.values.neb_converged and doc.values.neb_steps == 2
    assert any(f.kind == "unconverged" for f in doc.flags)
    assert len(doc.values.profile) == 3 and np.isfinite(doc.values.barrier_ref)
    # A rerun reuses the stored NEB path and, on its images, every reference single point.
    (again,), out = _run(maker.make(_cu(), "Cu"), store)
    outputs = [r[max(r)].output for r in out.values()]
    neb = [o for o in outputs if type(o).__name__ == "NEBResult"]
    refs = [o for o in outputs if type(o).__name__ == "FrameResult"]
    assert neb[0].reused and len(refs) == 3 and all(r.reused for r in refs)
    assert again.values.profile_ref == doc.values.profile_ref


def test_cli_properties_vacancy_emt(tmp_path):
    cif = tmp_path / "Cu.cif"
    _cu().to(filename=str(cif))
    res = subprocess.run(
        [*CLI, "properties", str(cif), "--property", "vacancy", "--property", "phonon",
         "--supercell", "2 2 2", "--mesh", "4", "4", "4", "--reference", "emt", "--json",
         "--store", str(tmp_path / "db"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    entry = out["models"]["CHGNet-0.3.0"]
    (row,) = entry["vacancies"]
    assert row["material"] == "Cu" and row["site"] == 0
    assert row["e_vac_ref"] > 0 and np.isfinite(row["e_vac"])
    assert (tmp_path / "out" / "vacancy_parity.png").exists()
    # Two properties in one command (one registry, one document query): a record each.
    records = {r["property"] if "property" in r else "phonon": r for r in entry["materials"]}
    assert set(records) == {"vacancy", "phonon"} and records["phonon"]["omega_max_ref"] > 0
    assert set(entry["summary"]) == {"vacancy"}
    bad = subprocess.run(
        [*CLI, "properties", str(cif), "--property", "elastic", "--reference", "emt",
         "--store", str(tmp_path / "db")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "--property elastic: choose from phonon, surface" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---- GPAW (slow) -----------------------------------------------------------------------------------


def _al_gpaw():
    pytest.importorskip("gpaw")
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.makers import ReferenceStaticMaker

    al = AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.05))
    ref = ReferenceStaticMaker(
        calculator="gpaw", ecut=200.0, kspacing=0.6, compute_stress=False, force_convergence=0.05
    )
    return al, ref


@pytest.mark.slow
def test_vacancy_flow_gpaw_al(store):
    from softening.makers.vacancy import VacancyMaker

    al, ref = _al_gpaw()
    maker = VacancyMaker(reference_maker=ref, supercell_matrix=[2, 2, 2], min_image_distance=5.0)
    (doc,), _ = _run(maker.make(al, "Al"), store)
    (row,) = doc.values.rows
    assert row.n_atoms == 7 and doc.reference.name == "gpaw"
    assert 0.0 < row.e_vac_ref < 2.0 and np.isfinite(row.e_vac)


@pytest.mark.slow
def test_barrier_flow_gpaw_al(store):
    from softening.makers.barrier import BarrierMaker

    al, ref = _al_gpaw()
    maker = BarrierMaker(
        reference_maker=ref, supercell_matrix=[2, 2, 2], min_image_distance=5.0, n_images=1,
        fmax=0.1, steps=100,
    )  # fmt: skip
    (doc,), _ = _run(maker.make(al, "Al"), store)
    v = doc.values
    assert v.n_images == 3 and v.n_atoms == 7 and doc.reference.name == "gpaw"
    assert v.barrier_ref > 0 and np.isfinite(v.barrier)
