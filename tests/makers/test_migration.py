"""Working-ion migration (`--property migration`) and existing VASP NEB runs (`softening
barriers`): EMT references against plain ASE on the same images, the barrier's definition, bad
input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_error_line, run_cli
from vasp_emulator.neb import write_neb


def _pdh():
    """Rocksalt PdH: H on every octahedral site of fcc Pd (the sites H hops between)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(3.89), ["Pd", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def test_hop_end_points_from_the_migration_graph():
    from softening.makers.migration import host_hops

    (label, initial, final, dist) = host_hops(_pdh(), "H", "interstitial", 3.0, 4.0, 40, 1)[0]
    assert dist == pytest.approx(3.89 / np.sqrt(2), abs=1e-6)  # octahedral to octahedral
    assert initial.composition.formula == final.composition.formula
    assert initial.composition["H"] == 1 and initial.composition["Pd"] >= 4
    moved = [initial[i].distance(final[i]) for i in range(len(initial))]
    assert sorted(moved)[-1] == pytest.approx(dist, abs=1e-6) and sorted(moved)[-2] < 1e-6
    (_, vi, vf, _) = host_hops(_pdh(), "H", "vacancy", 3.0, 4.0, 70, 1)[0]
    assert vi.composition["H"] == vi.composition["Pd"] - 1  # one H site left empty
    assert [s.specie for s in vi] == [s.specie for s in vf]


def test_migration_interstitial_h_in_pd_emt_matches_plain_ase(store):
    """The model's NEB of one H hop; EMT on its stored images with plain ASE gives the same
    profile, and the barrier is the highest minus the lowest image."""
    from ase.calculators.emt import EMT
    from jobflow import run_locally
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.makers import ReferenceStaticMaker
    from softening.makers.migration import MigrationMaker
    from softening.schemas import NEBResult

    maker = MigrationMaker(reference_maker=ReferenceStaticMaker(calculator="emt"),
                           models=["chgnet"], ion="H", mode="interstitial", max_distance=3.0,
                           min_length=4.0, max_atoms=40, max_hops=1, n_images=1, fmax=0.3,
                           steps=15)  # fmt: skip
    flow = maker.make(_pdh(), "PdH")
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    doc = responses[flow.output[0].uuid][1].output
    v = doc.values
    assert doc.property == "migration" and v.ion == "H" and v.mode == "interstitial"
    (neb,) = [r[1].output for r in responses.values() if isinstance(r[1].output, NEBResult)]
    energies = []
    for f in neb.frames:
        atoms = AseAtomsAdaptor.get_atoms(f.structure)
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
    energies = np.array(energies)
    np.testing.assert_allclose(v.profile_ref, energies - energies[0], atol=1e-6)
    assert v.barrier_ref == pytest.approx(energies.max() - energies.min(), abs=1e-6)
    assert v.barrier_initial_ref == pytest.approx(energies.max() - energies[0], abs=1e-6)
    ml = np.array(neb.energies)
    assert v.barrier == pytest.approx(ml.max() - ml.min(), abs=1e-9)
    assert v.n_images == 3 and doc.ratio == pytest.approx(v.barrier / v.barrier_ref)


def test_migration_bad_input(tmp_path):
    cif = tmp_path / "PdH.cif"
    _pdh().to(filename=str(cif))
    base = ("properties", cif, "--property", "migration", "--reference", "emt", "--store",
            tmp_path / "db")  # fmt: skip
    one_error_line(run_cli(*base), "needs --ion")
    one_error_line(run_cli(*base, "--ion", "Li"), "holds no Li")
    one_error_line(run_cli(*base, "--ion", "H", "--max-hop-distance", "1.0"),
                    "no H hop shorter than 1 Å")  # fmt: skip
    one_error_line(run_cli(*base, "--ion", "H", "--hop-mode", "sideways"), "--hop-mode sideways")


def test_barriers_of_an_existing_vasp_neb(tmp_path):
    """`softening barriers`: the emulator's NEB (EMT energies written as VASP's) against CHGNet
    on the same images; barrier = highest minus lowest image."""
    import re

    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.datasets.neb import read_neb_folder
    from softening.models import load_model

    neb = write_neb(tmp_path / "cu_hop")
    res = run_cli("barriers", neb, "--json", "--store", tmp_path / "db", "--out", tmp_path / "fig")
    assert res.returncode == 0, res.stderr[-3000:]
    entry = json.loads(res.stdout)["models"]["CHGNet-0.3.0"]
    (row,) = entry["migrations"]
    e_ref = np.array([
        float(re.findall(r'<i name="e_fr_energy">\s*(\S+)\s*</i>',
                         (neb / f"{k:02d}" / "vasprun.xml").read_text())[-1])
        for k in range(5)
    ])  # fmt: skip
    assert row["barrier_ref"] == pytest.approx(e_ref.max() - e_ref.min(), abs=1e-6)
    np.testing.assert_allclose(row["profile_ref"], e_ref - e_ref[0], atol=1e-6)
    assert row["ion"] == "Cu" and row["mode"] == "existing" and row["neb_converged"] is None
    calc = load_model("chgnet").calculator()
    e_ml = []
    for image in read_neb_folder(neb).images:
        atoms = AseAtomsAdaptor.get_atoms(image.structure)
        atoms.calc = calc
        e_ml.append(atoms.get_potential_energy())
    e_ml = np.array(e_ml)
    assert row["barrier"] == pytest.approx(e_ml.max() - e_ml.min(), abs=1e-4)
    assert row["profile_mae"] == pytest.approx(
        np.mean(np.abs((e_ml - e_ml[0]) - (e_ref - e_ref[0]))), abs=1e-4
    )
    assert (tmp_path / "fig" / "migration_parity.png").exists()
    # A missing image: one line naming it, before any model runs.
    import shutil

    shutil.rmtree(neb / "02")
    one_error_line(run_cli("barriers", neb, "--store", tmp_path / "db"), "image 02 is missing")


@pytest.mark.slow  # ~1 min: GPAW single points on the images of a 7-atom cell
def test_migration_li_vacancy_hop_in_lif_gpaw(store):
    """A Li vacancy hop in rocksalt LiF (its 8-atom cubic cell less one Li) with GPAW at small
    settings on CHGNet's images."""
    pytest.importorskip("gpaw")
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from softening.makers import ReferenceStaticMaker
    from softening.makers.migration import MigrationMaker

    lif = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.03), ["Li", "F"],
                                    [[0, 0, 0], [0.5, 0.5, 0.5]])  # fmt: skip
    ref = ReferenceStaticMaker(calculator="gpaw", ecut=250.0, kspacing=0.7, compute_stress=False,
                               force_convergence=0.05)  # fmt: skip
    maker = MigrationMaker(reference_maker=ref, models=["chgnet"], ion="Li", mode="vacancy",
                           max_distance=3.0, min_length=4.0, max_atoms=40, max_hops=1,
                           n_images=1, fmax=0.3, steps=15)  # fmt: skip
    flow = maker.make(lif, "LiF")
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    v = responses[flow.output[0].uuid][1].output.values
    assert v.ion == "Li" and v.n_images == 3 and v.hop_distance == pytest.approx(4.03 / 2**0.5)
    # Both see a barrier: the middle image above the end points (the hop squeezes between F).
    assert v.profile_ref[1] > 0.05 and v.profile[1] > 0.05
    assert v.barrier_ref == pytest.approx(max(v.profile_ref) - min(v.profile_ref))
