"""Phonons: existing DFT phonopy data against uMLIPs, and phonons computed inside the workflow.

Independent checks use plain phonopy and each calculator's own ASE interface, never this package's
code path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, ROOT, needs

PHONOPY = DATA / "phonopy_examples"
MGO, NACL, SI, CR = (PHONOPY / m for m in ("MgO", "NaCl", "Si", "Cr"))
CLI = [sys.executable, "-c", "from softening.cli import app; app()"]


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )


def _copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in skip:
            shutil.copyfile(f, dst / f.name)  # copyfile: the shared files are read-only
    return dst


def _one_error_line(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in res.stderr


def _ase_forces(cell, calc) -> np.ndarray:
    from ase import Atoms

    atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
    atoms.calc = calc
    return np.asarray(atoms.get_forces(), dtype=float)


# ---- softening phonons on phonopy's VASP examples ----------------------------------------------------


@pytest.fixture(scope="module")
def mgo_run(tmp_path_factory):
    """`softening phonons MgO --model chgnet --json` once, into its own store, with figures."""
    tmp = tmp_path_factory.mktemp("mgo")
    res = _cli(
        "phonons", MGO, "--model", "chgnet", "--json", "--store", tmp / "db", "--out", tmp / "fig"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), tmp


@needs(MGO)
def test_phonons_cli_json_contract_and_figures(mgo_run):
    out, tmp = mgo_run
    mats = out["models"]["CHGNet-0.3.0"]["materials"]
    assert len(mats) == 1
    m = mats[0]
    assert m["material"] == "MgO" and m["formula"] == "MgO"
    for key in ("omega_max_ref", "omega_max", "omega_max_ratio", "freq_mae", "freq_max_abs_error",
                "scale", "mae", "imaginary_fraction_ref", "imaginary_fraction", "flags",
                "free_energy", "entropy", "heat_capacity", "free_energy_ref"):  # fmt: skip
        assert key in m, key
    # The figures for CHGNet 0.3.0 on this data: omega_max ratio 0.90, force slope 0.78.
    assert m["omega_max_ratio"] == pytest.approx(0.90, abs=0.01)
    assert m["scale"] == pytest.approx(0.78, abs=0.01)
    assert m["omega_max_ref"] == pytest.approx(18.0, abs=0.1)  # THz
    assert m["imaginary_fraction_ref"] == 0 and m["imaginary_fraction"] == 0
    assert 0 < m["freq_mae"] < m["freq_max_abs_error"]
    assert any(f.startswith("nac_ignored") for f in m["flags"])  # MgO has a BORN file
    assert any(f.startswith("unverified") for f in m["flags"])  # no INCAR, no vasprun.xml
    for kind in ("bands", "parity"):
        path = Path(out["plots"]["MgO"][kind])
        assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


@needs(MGO)
def test_phonons_omega_max_ratio_matches_plain_phonopy_and_ase(mgo_run):
    """Plain phonopy + CHGNet's own ASE calculator (not this package's batched path)."""
    import phonopy

    from softening.models import load_model

    out, _ = mgo_run
    ratio = out["models"]["CHGNet-0.3.0"]["materials"][0]["omega_max_ratio"]
    calc = load_model("chgnet").calculator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dft = phonopy.load(
            MGO / "phonopy_disp.yaml", force_sets_filename=MGO / "FORCE_SETS", is_nac=False
        )
        dft.run_mesh([16, 16, 16])
        w_dft = dft.mesh.frequencies.max()
        ml = phonopy.load(MGO / "phonopy_disp.yaml", is_nac=False, produce_fc=False)
        residual = _ase_forces(ml.supercell, calc)
        ml.forces = [_ase_forces(c, calc) - residual for c in ml.supercells_with_displacements]
        ml.produce_force_constants()
        ml.symmetrize_force_constants()
        ml.run_mesh([16, 16, 16])
        w_ml = ml.mesh.frequencies.max()
    assert ratio == pytest.approx(w_ml / w_dft, abs=0.01)


@needs(MGO)
def test_phonon_documents_in_the_store(mgo_run):
    from softening.workflows.properties import query_property_docs

    _, tmp = mgo_run
    docs = query_property_docs(tmp / "db", property="phonon", material_id="MgO", model="chgnet")
    assert len(docs) == 1
    d = docs[0]
    assert d["property"] == "phonon" and d["model"]["name"] == "CHGNet-0.3.0"
    assert d["ratio"] == pytest.approx(d["values"]["omega_max_ratio"])
    assert d["reference"]["name"] == "vasp"
    assert query_property_docs(tmp / "db", property="phonon", material_id="NaCl") == []
    # Big arrays live in the data store: loaded on request only.
    full = query_property_docs(tmp / "db", material_id="MgO", load_arrays=True)[0]
    freq = np.asarray(full["arrays"]["frequencies_ref"])
    assert freq.shape[1] == 6 and freq.max() == pytest.approx(d["values"]["omega_max_ref"])
    assert np.asarray(full["arrays"]["forces"]).shape == (2, 64, 3)


# ---- input layouts ------------------------------------------------------------------------------------


@needs(NACL)
def test_layouts_force_sets_vaspruns_and_params_agree(tmp_path):
    import phonopy

    from softening.datasets.phonopy import read_phonopy_folder

    from_sets = read_phonopy_folder(NACL)
    assert from_sets.layout == "force_sets"
    # The vasprun.xml beside FORCE_SETS give the DFT settings: ENCUT 300 eV is flagged.
    assert any(f.startswith("low_precision") for f in from_sets.flags)
    assert not any(f.startswith("unverified") for f in from_sets.flags)
    runs = read_phonopy_folder(_copy(NACL, tmp_path / "NaCl", skip=("FORCE_SETS",)))
    assert runs.layout == "vasprun" and runs.material == "NaCl"
    assert runs.forces.shape == (2, 64, 3)
    np.testing.assert_allclose(runs.forces, from_sets.forces, atol=1e-6)
    assert runs.code["version"] and runs.code["name"] == "vasp"
    # phonopy_params.yaml as phonopy writes it (displacements and forces in one file).
    params = tmp_path / "params" / "NaCl"
    params.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph = phonopy.load(
            NACL / "phonopy_disp.yaml",
            force_sets_filename=NACL / "FORCE_SETS",
            born_filename=NACL / "BORN",
        )
    ph.save(params / "phonopy_params.yaml")
    from_params = read_phonopy_folder(params)
    assert from_params.layout == "phonopy_params" and from_params.material == "NaCl"
    np.testing.assert_allclose(from_params.forces, from_sets.forces, atol=1e-8)
    assert from_params.displacements == from_sets.displacements
    assert any(f.startswith("nac_ignored") for f in from_params.flags)  # BORN saved in the yaml


@needs(SI)
def test_si_vasprun_layout(tmp_path):
    from softening.datasets.phonopy import read_phonopy_folder

    d = read_phonopy_folder(SI)
    assert d.layout == "vasprun" and d.forces.shape == (1, 16, 3)
    assert d.formula == "Si" and len(d.supercells) == 1
    assert not any(f.startswith("nac_ignored") for f in d.flags)
    # The displaced atom feels the largest force, opposing the displacement.
    atom, vec = d.displacements[0]
    assert np.argmax(np.linalg.norm(d.forces[0], axis=1)) == atom
    assert np.dot(d.forces[0][atom], vec) < 0


@needs(CR)
def test_incar_settings_flagged(tmp_path):
    from softening.datasets.phonopy import read_phonopy_folder

    folder = _copy(CR, tmp_path / "Cr")
    (folder / "INCAR").write_text("GGA = PS\nISPIN = 1\nENCUT = 350\nPREC = Accurate\n")
    d = read_phonopy_folder(folder)
    kinds = {f.split(":")[0] for f in d.flags}
    assert {"functional", "spin", "low_precision"} <= kinds
    assert "PBEsol" in next(f for f in d.flags if f.startswith("functional"))
    assert "nac_ignored" not in kinds  # no BORN for Cr
    assert d.unitcell.site_properties["magmom"] == [1.0, -1.0]


# ---- bad input: one line, nothing written -------------------------------------------------------------


@needs(MGO)
def test_missing_force_sets_one_line(tmp_path):
    folder = _copy(MGO, tmp_path / "MgO", skip=("FORCE_SETS",))
    res = _cli("phonons", folder, "--json", "--store", tmp_path / "db", "--out", tmp_path / "fig")
    _one_error_line(res, "no FORCE_SETS")
    assert not (tmp_path / "db").exists() and not (tmp_path / "fig").exists()
    res = _cli("phonons", tmp_path / "nowhere", "--store", tmp_path / "db")
    _one_error_line(res, "no such folder")


@needs(MGO)
def test_forces_that_do_not_match_the_supercell(tmp_path):
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.errors import InputError

    folder = _copy(MGO, tmp_path / "MgO")
    # ZnO's FORCE_SETS: 32 atoms and 6 displacements for MgO's 64-atom supercell.
    shutil.copyfile(PHONOPY / "ZnO" / "FORCE_SETS", folder / "FORCE_SETS")
    with pytest.raises(InputError) as err:
        read_phonopy_folder(folder)
    assert "\n" not in str(err.value) and "FORCE_SETS" in str(err.value)


@needs(NACL)
def test_vaspruns_that_do_not_match_the_displacements(tmp_path):
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.errors import InputError

    folder = _copy(NACL, tmp_path / "NaCl", skip=("FORCE_SETS",))
    text = (folder / "phonopy_disp.yaml").read_text()
    # Displace along y instead of x: the vasprun.xml positions match no displaced supercell.
    changed = re.sub(
        r"\[\s+0\.0100000000000000,\s+0\.0000000000000000,",
        "[ 0.0000000000000000, 0.0100000000000000,",
        text,
    )
    assert changed != text
    (folder / "phonopy_disp.yaml").write_text(changed)
    with pytest.raises(InputError, match="matches none of the displaced supercells"):
        read_phonopy_folder(folder)
    (folder / "vasprun.xml-002").unlink()
    with pytest.raises(InputError, match="1 vasprun.xml file"):
        read_phonopy_folder(folder)


@needs(CR)
def test_cell_phonopy_cannot_symmetrise_one_line(tmp_path):
    folder = _copy(CR, tmp_path / "Cr")
    text = (folder / "phonopy_disp.yaml").read_text()
    i = text.index("unit_cell:")
    # Move the second atom of the bcc cell: the yaml's body-centred primitive matrix no longer fits.
    bad = text[i:].replace("[  0.500000000000000,  0.500000000000000,  0.500000000000000 ]",
                           "[  0.300000000000000,  0.500000000000000,  0.500000000000000 ]", 1)  # fmt: skip
    (folder / "phonopy_disp.yaml").write_text(text[:i] + bad)
    res = _cli("phonons", folder, "--store", tmp_path / "db")
    _one_error_line(res, "phonopy cannot")


# ---- a linear correction scales frequencies by sqrt(c) ------------------------------------------------


@needs(MGO)
def test_linearly_corrected_model_frequencies_scale_with_sqrt_c():
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.makers.phonon_setup import phonon_frames, reference_frames, setup_from_data
    from softening.makers.phonons import compare_phonon_results
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures
    from softening.schemas import CodeInfo, FrameResult, UMLIPResults

    data = read_phonopy_folder(MGO)
    setup = setup_from_data(data)
    frames = phonon_frames(setup, "MgO")
    refs = reference_frames(data)
    base = load_model("chgnet")
    c = 1.3
    docs = []
    for model in (base, replace(base, factor=c)):
        preds = evaluate_structures(model, [f.structure for f in frames])
        results = [
            FrameResult(
                frame_id=f.frame_id,
                material_id="MgO",
                formula="MgO",
                structure=f.structure,
                energy=p.energy,
                forces=p.forces.tolist(),
                code=CodeInfo(name=model.name),
            )  # fmt: skip
            for f, p in zip(frames, preds, strict=True)
        ]
        umlip = UMLIPResults(model=model.info, frames=results)
        docs.append(compare_phonon_results(setup, refs, umlip, "MgO", mesh=(8, 8, 8)))
    raw, corrected = docs
    np.testing.assert_allclose(
        np.asarray(corrected.arrays.frequencies),
        np.sqrt(c) * np.asarray(raw.arrays.frequencies),
        rtol=1e-6,
        atol=1e-6,
    )
    assert corrected.values.omega_max_ratio == pytest.approx(
        np.sqrt(c) * raw.values.omega_max_ratio, rel=1e-6
    )
    assert corrected.values.scale == pytest.approx(c * raw.values.scale, rel=1e-6)
    # The reference side does not change.
    assert corrected.values.omega_max_ref == raw.values.omega_max_ref


@needs(MGO)
def test_identical_forces_give_ratio_one_and_missing_references_are_named():
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.errors import CalculationError
    from softening.makers.phonon_setup import reference_frames, setup_from_data
    from softening.makers.phonons import compare_phonon_results
    from softening.schemas import FrameResult, ModelInfo, UMLIPResults

    data = read_phonopy_folder(MGO)
    setup = setup_from_data(data)
    refs = reference_frames(data)
    perfect = refs[0].model_copy(update={"frame_id": "perfect", "forces": [[0.0] * 3] * 64})
    same = UMLIPResults(model=ModelInfo(name="copy", family="test"), frames=[perfect, *refs])
    doc = compare_phonon_results(setup, refs, same, "MgO", mesh=(4, 4, 4))
    assert doc.values.omega_max_ratio == pytest.approx(1.0, abs=1e-12)
    assert doc.values.freq_mae == pytest.approx(0.0, abs=1e-12)
    assert doc.values.scale == pytest.approx(1.0) and doc.values.mae == 0.0
    assert isinstance(refs[0], FrameResult)
    with pytest.raises(CalculationError, match="reference missing for disp-001; rerun"):
        compare_phonon_results(setup, [None, refs[1]], same, "MgO", mesh=(4, 4, 4))


# ---- analysis --------------------------------------------------------------------------------------


def test_compare_phonons_numbers():
    from softening.analysis.phonons import compare_phonons, imaginary_fraction

    ref = np.array([[0.0, 1.0, 10.0], [-0.01, 2.0, 8.0]])
    ml = np.array([[0.0, 0.8, 9.0], [-0.2, 1.5, 7.0]])
    c = compare_phonons(ref, ml, weights=[1, 3])
    assert c.omega_max_ref == 10.0 and c.omega_max == 9.0 and c.omega_max_ratio == 0.9
    # Weighted: point 1 errors (0, 0.2, 1.0) x1, point 2 (0.19, 0.5, 1.0) x3, over 4 x 3 modes.
    assert c.freq_mae == pytest.approx((1.2 + 3 * 1.69) / 12)
    assert c.freq_max_abs_error == pytest.approx(1.0)
    assert c.imaginary_fraction_ref == 0.0  # -0.01 THz is within the tolerance
    assert c.imaginary_fraction == pytest.approx(3 / 12)
    assert imaginary_fraction(ml, tol=0.5) == 0.0
    with pytest.raises(ValueError, match="do not match"):
        compare_phonons(ref, ml[:1])


# ---- computed inside the workflow ------------------------------------------------------------------


def _plain_phonopy_frequencies(structure, supercell, calc, mesh, distance=0.01, symprec=1e-3):
    """Plain phonopy + an ASE calculator: the independent reference of the workflow tests.

    ``calc``: a calculator, or a function returning a fresh one per supercell (GPAW keeps the
    symmetry of the first structure it saw).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    cell = PhonopyAtoms(
        symbols=[s.specie.symbol for s in structure],
        cell=structure.lattice.matrix,
        scaled_positions=structure.frac_coords,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph = Phonopy(cell, supercell, primitive_matrix="auto", symprec=symprec)
        ph.generate_displacements(distance=distance)
        fresh = calc if callable(calc) and not hasattr(calc, "get_forces") else lambda: calc
        residual = _ase_forces(ph.supercell, fresh())
        ph.forces = [_ase_forces(c, fresh()) - residual for c in ph.supercells_with_displacements]
        ph.produce_force_constants()
        ph.symmetrize_force_constants()
        ph.run_mesh(list(mesh), is_gamma_center=True)
    return ph.mesh.frequencies


def test_workflow_emt_cu_matches_plain_phonopy_and_reuses_references(store):
    from ase.calculators.emt import EMT
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from softening.makers import ReferenceStaticMaker
    from softening.makers.phonons import PhononMaker
    from softening.schemas import FrameResult
    from softening.workflows.properties import PropertiesFlowMaker, query_property_docs

    cu = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])  # fmt: skip
    maker = PhononMaker(
        reference_maker=ReferenceStaticMaker(calculator="emt"),
        models=["chgnet"],
        supercell_matrix=[2, 2, 2],
        mesh=(8, 8, 8),
    )
    flow = PropertiesFlowMaker(makers=[maker]).make([cu], ["Cu"])
    run_locally(flow, store=store, log=False, ensure_success=True)
    doc = query_property_docs(store, property="phonon", material_id="Cu", load_arrays=True)[0]
    expected = _plain_phonopy_frequencies(cu, np.diag([2, 2, 2]), EMT(), (8, 8, 8))
    np.testing.assert_allclose(np.asarray(doc["arrays"]["frequencies_ref"]), expected, atol=1e-3)
    v = doc["values"]
    assert v["n_displacements"] == 1 and v["n_supercell_atoms"] == 32
    assert v["residual_force_max_ref"] < 1e-8  # fcc: no force on the undisplaced supercell
    assert v["omega_max_ref"] == pytest.approx(expected.max(), abs=1e-3)
    assert 0.5 < v["omega_max_ratio"] < 1.5
    for key in ("free_energy", "entropy", "heat_capacity"):
        assert np.isfinite(v[key]) and np.isfinite(v[f"{key}_ref"])
    # Classical limit check of C_v: below 3R per atom (24.94 J/K/mol), and close at 300 K for Cu.
    assert 20 < v["heat_capacity_ref"] < 24.95
    # Run again: each reference job finds its stored result by content key.
    flow2 = PropertiesFlowMaker(makers=[maker]).make([cu], ["Cu"])
    responses = run_locally(flow2, store=store, log=False, ensure_success=True)
    refs = [
        r[max(r)].output for r in responses.values() if isinstance(r[max(r)].output, FrameResult)
    ]
    assert len(refs) == 2 and all(r.reused for r in refs)


def test_workflow_relax_with_each_method(store):
    """--relax: the reference and the model each relax the (strained) input and take their phonons
    on their own structure."""
    from ase.calculators.emt import EMT
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from softening.makers import ReferenceStaticMaker
    from softening.makers.phonons import PhononMaker
    from softening.workflows.properties import query_property_docs

    cu = Structure(Lattice.cubic(3.75), ["Cu"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])  # fmt: skip
    maker = PhononMaker(
        reference_maker=ReferenceStaticMaker(calculator="emt"),
        models=["chgnet"],
        supercell_matrix=[2, 2, 2],
        mesh=(6, 6, 6),
        relax=True,
    )
    run_locally(maker.make(cu, "Cu"), store=store, log=False, ensure_success=True)
    doc = query_property_docs(store, property="phonon", material_id="Cu", load_arrays=True)[0]
    assert any(f["kind"] == "relaxed" for f in doc["flags"])
    relaxed = Structure.from_dict(doc["setup"]["unitcell"])
    assert relaxed.lattice.a == pytest.approx(3.59, abs=0.02)  # EMT's copper, not the input's 3.75
    # The reference's frequencies are plain phonopy + EMT's on the EMT-relaxed structure.
    expected = _plain_phonopy_frequencies(relaxed, np.diag([2, 2, 2]), EMT(), (6, 6, 6))
    np.testing.assert_allclose(np.asarray(doc["arrays"]["frequencies_ref"]), expected, atol=1e-3)
    assert doc["values"]["residual_force_max"] < 0.05  # the model's own minimum


def test_properties_cli_emt(tmp_path):
    from pymatgen.core import Lattice, Structure

    cif = tmp_path / "Al.cif"
    Structure(Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]).to(filename=str(cif))  # fmt: skip
    res = _cli("properties", cif, "--property", "phonon", "--reference", "emt", "--supercell",
               "2 2 2", "--mesh", "6", "6", "6", "--json", "--store", tmp_path / "db")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads(res.stdout)["models"]["CHGNet-0.3.0"]["materials"][0]
    assert m["material"] == "Al" and m["formula"] == "Al" and m["reference"] == "emt"
    assert m["omega_max_ref"] > 0 and m["omega_max"] > 0
    res = _cli("properties", cif, "--property", "elastic", "--reference", "emt")
    _one_error_line(res, "--property elastic")
    res = _cli("properties", cif, "--reference", "emt", "--supercell", "2 2")
    _one_error_line(res, "--supercell")


@pytest.mark.slow
def test_workflow_gpaw_si_matches_plain_phonopy_and_gpaw(store):
    pytest.importorskip("gpaw")
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from softening.makers import ReferenceStaticMaker
    from softening.makers.phonons import PhononMaker
    from softening.workflows.properties import query_property_docs

    a = 5.466
    si = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]),
                   ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])  # fmt: skip
    ref_maker = ReferenceStaticMaker(calculator="gpaw", ecut=220.0, kspacing=0.6)
    maker = PhononMaker(
        reference_maker=ref_maker, models=["chgnet"], supercell_matrix=[2, 2, 2], mesh=(6, 6, 6)
    )
    run_locally(maker.make(si, "Si"), store=store, log=False, ensure_success=True)
    doc = query_property_docs(store, property="phonon", material_id="Si", load_arrays=True)[0]
    # Plain GPAW with the same settings (the reference maker's calculator is not used).
    from gpaw import GPAW, PW, FermiDirac

    from softening.mp_rules import mp_kpoint_mesh

    supercell = si.make_supercell([2, 2, 2], in_place=False)

    def calc():
        return GPAW(
            mode=PW(220.0), xc="PBE", occupations=FermiDirac(0.05), txt=None,
            kpts={"size": mp_kpoint_mesh(supercell.lattice.matrix, 0.6), "gamma": True},
            convergence={"energy": 1e-6, "density": 1e-5, "forces": 1e-3},
        )  # fmt: skip

    expected = _plain_phonopy_frequencies(si, np.diag([2, 2, 2]), calc, (6, 6, 6))
    np.testing.assert_allclose(np.asarray(doc["arrays"]["frequencies_ref"]), expected, atol=0.01)
    assert doc["values"]["omega_max_ref"] == pytest.approx(expected.max(), abs=0.01)
    assert 14 < doc["values"]["omega_max_ref"] < 17  # Si's optical mode, about 15.5 THz in PBE


@pytest.fixture
def vasp_env(tmp_path, monkeypatch):
    """tests/vasp_emulator (EMT behind VASP's files) as atomate2's VASP command, fake POTCARs."""
    import atomate2
    from pymatgen.core import SETTINGS as PMG_SETTINGS
    from vasp_emulator import vasp_command, write_fake_potcars

    psp = write_fake_potcars(tmp_path / "potcars")
    monkeypatch.setitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", str(psp))
    monkeypatch.setattr(atomate2.SETTINGS, "VASP_CMD", vasp_command())
    monkeypatch.setattr(atomate2.SETTINGS, "VASP_GAMMA_CMD", vasp_command())
    monkeypatch.setenv("VASP_EMULATOR_LOG", str(tmp_path / "emulator.log"))
    monkeypatch.delenv("VASP_EMULATOR_FAIL", raising=False)
    monkeypatch.delenv("VASP_EMULATOR_CALC", raising=False)


@pytest.mark.filterwarnings("ignore:POTCAR data with symbol")
def test_workflow_vasp_references_through_atomate2(vasp_env, store, tmp_path):
    """VaspReferenceMaker (atomate2 + custodian; the emulator computes EMT) as the reference."""
    from ase.calculators.emt import EMT
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from softening.makers.phonons import PhononMaker
    from softening.makers.vasp import VaspReferenceMaker
    from softening.workflows.properties import query_property_docs

    cu = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])  # fmt: skip
    fast = {"custodian_kwargs": {"polling_time_step": 0.1}}  # the emulator takes about a second
    maker = PhononMaker(
        reference_maker=VaspReferenceMaker(run_vasp_kwargs=fast),
        models=["chgnet"],
        supercell_matrix=[2, 2, 2],
        mesh=(6, 6, 6),
    )
    run_locally(maker.make(cu, "Cu"), store=store, create_folders=True, root_dir=tmp_path / "runs",
                log=False, ensure_success=True)  # fmt: skip
    doc = query_property_docs(store, property="phonon", material_id="Cu", load_arrays=True)[0]
    assert doc["reference"]["name"] == "vasp"
    expected = _plain_phonopy_frequencies(cu, np.diag([2, 2, 2]), EMT(), (6, 6, 6))
    np.testing.assert_allclose(np.asarray(doc["arrays"]["frequencies_ref"]), expected, atol=1e-3)


def test_run_finetune_then_phonons_of_raw_and_corrected_model(tmp_path):
    """`run --finetune scale --property phonon`: one flow samples, labels, corrects, then computes
    phonons with the reference, the raw model and the corrected model (sqrt(c) times the raw)."""
    from pymatgen.core import Lattice, Structure

    from softening.stores import get_job_store

    cif = tmp_path / "Cu8.cif"
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    cu.to(filename=str(cif))
    res = _cli(
        "run", cif, "--reference", "emt", "--steps", "40", "--stride", "2", "--frames", "4",
        "--strained", "1", "--finetune", "scale", "--property", "phonon", "--store",
        tmp_path / "db", "--out", tmp_path / "out", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert not summary["failed_jobs"]
    by_model = {p["model"]: p for p in summary["properties"]}
    assert len(by_model) == 2
    raw = by_model["CHGNet-0.3.0"]
    (corrected,) = [p for name, p in by_model.items() if name != "CHGNet-0.3.0"]
    assert corrected["model_path"] == summary["corrections"][0]["model_path"]
    store = get_job_store(tmp_path / "db")
    store.connect()
    check = store.query_one({"output.@class": "VerificationDoc"})["output"]
    c = check["correction"]["factor"]
    assert corrected["ratio"] == pytest.approx(np.sqrt(c) * raw["ratio"], rel=1e-5)
