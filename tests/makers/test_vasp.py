"""The VASP reference path: guard rails on real VASP outputs, MP inputs, and atomate2 -> custodian ->
TaskDoc -> FrameResult runs through the VASP emulator (tests/vasp_emulator, EMT-backed)."""

from __future__ import annotations

import gzip
import json
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, ROOT, needs
from jobflow import run_locally
from pymatgen.core import Lattice, Structure
from vasp_emulator import vasp_command, write_fake_potcars

from softening.datasets.guards import apply_guard_rails
from softening.datasets.readers import read_frames
from softening.errors import InputError, SofteningError
from softening.makers import FrameSelectionMaker, MDSamplingMaker, UMLIPStaticMaker
from softening.makers.vasp import VaspReferenceMaker
from softening.schemas import FrameResult, FrameSpec
from softening.workflows import SofteningFlowMaker

VASP_OUTPUTS = DATA / "vasp_outputs"

pytestmark = [
    # pymatgen does not know the fake POTCARs' hashes, and custodian reads the emulated
    # unconverged runs: both warn, as expected here.
    pytest.mark.filterwarnings("ignore:POTCAR data with symbol"),
    pytest.mark.filterwarnings("ignore:.*is an unconverged VASP run"),
]

# custodian polls a running VASP every polling_time_step seconds (default 10): the emulator
# finishes in about a second.
FAST_CUSTODIAN = {"custodian_kwargs": {"polling_time_step": 0.1}}


@pytest.fixture
def vasp_env(tmp_path, monkeypatch):
    """The emulator as atomate2's VASP command, fake POTCARs as pymatgen's PMG_VASP_PSP_DIR."""
    import atomate2
    from pymatgen.core import SETTINGS as PMG_SETTINGS

    psp = write_fake_potcars(tmp_path / "potcars")
    monkeypatch.setitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", str(psp))
    monkeypatch.setattr(atomate2.SETTINGS, "VASP_CMD", vasp_command())
    monkeypatch.setattr(atomate2.SETTINGS, "VASP_GAMMA_CMD", vasp_command())
    log = tmp_path / "emulator.log"
    monkeypatch.setenv("VASP_EMULATOR_LOG", str(log))
    monkeypatch.delenv("VASP_EMULATOR_FAIL", raising=False)
    monkeypatch.delenv("VASP_EMULATOR_CALC", raising=False)
    return log


def _runs(log: Path) -> list[dict]:
    """The emulator's log: one dict per VASP run."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _cu_al() -> Structure:
    """8-atom Cu cell with one Al, the Al not first: the input set reorders the sites."""
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    s.replace(3, "Al")
    return s


def _frame(structure: Structure, rattle: float = 0.08, seed: int = 0) -> FrameSpec:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, rattle, (len(structure), 3))
    s = Structure(
        structure.lattice,
        structure.species,
        structure.cart_coords + noise,
        coords_are_cartesian=True,
    )
    return FrameSpec(frame_id="0", material_id="m", formula=s.reduced_formula, structure=s)


def _emt(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = EMT()
    return atoms.get_forces(), atoms.get_stress(voigt=False)


def _run_one(maker: VaspReferenceMaker, frame: FrameSpec, store, root: Path):
    """Run one reference job; its stored FrameResult (None when it failed) and the job folders."""
    job = maker.make(frame)
    run_locally(job, store=store, create_folders=True, root_dir=root, log=False)
    from jobflow.core.reference import OnMissing

    try:
        out = store.get_output(job.uuid, load=True, on_missing=OnMissing.NONE)
    except ValueError:  # the job itself failed: nothing stored under its uuid
        out = None
    return (FrameResult.model_validate(out) if out else None), sorted(root.glob("job_*"))


def _vasp_folder(folders: list[Path]) -> Path:
    return next(f for f in folders if (f / "vasprun.xml.gz").exists())


# ---------------------------------------------------------------------------------------------------
# Guard rails on real VASP outputs
# ---------------------------------------------------------------------------------------------------


def _kinds(flags: list[str]) -> set[str]:
    return {f.split(":")[0] for f in flags}


@needs(VASP_OUTPUTS)
@pytest.mark.parametrize(
    ("name", "kept", "kinds", "detail"),
    [
        ("md", 10, {"low_precision"}, "PREC=Low"),
        ("bad_random_seed", 264, {"functional", "potcar"}, "PBEsol"),
        ("lifepo4", 11, {"hubbard_u", "potcar"}, "U(Fe) = 4.3 eV, MP: 5.3 eV"),
        ("magmom_ldau", 3, set(), None),
        ("ml_md", 20, set(), None),
    ],
)
def test_guard_rails_accept_and_flag_real_outputs(name, kept, kinds, detail):
    path = VASP_OUTPUTS / f"vasprun.{name}.xml.gz"
    frames, reports = apply_guard_rails(read_frames(path))
    (report,) = reports
    assert len(frames) == report.kept == kept
    assert _kinds(report.flags) == kinds
    if detail:
        assert any(detail in f for f in report.flags), report.flags
    # The flags travel with every kept frame (into FrameResult.flags -> the per-material JSON).
    assert all(set(f.flags) == set(report.flags) for f in frames)
    if kinds:
        with pytest.raises(InputError, match=rf"refused .*{name}.*--strict"):
            apply_guard_rails(read_frames(path), strict=True)
    else:
        assert len(apply_guard_rails(read_frames(path), strict=True)[0]) == kept


@needs(VASP_OUTPUTS)
def test_ml_md_keeps_only_dft_steps():
    """The 80 MLFF steps are written outside <calculation> blocks; the 20 DFT ones are kept."""
    frames, (report,) = apply_guard_rails(read_frames(VASP_OUTPUTS / "vasprun.ml_md.xml.gz"))
    assert (report.n_steps, report.kept, report.dropped_mlff) == (100, 20, 80)
    assert all(f.metadata["electronic_steps"] >= 6 for f in frames)
    # The first 10 MD steps are DFT (training start), then DFT only where the MLFF is unsure.
    steps = [f.metadata["md_step"] for f in frames]
    assert steps[:10] == list(range(10)) and steps[-1] == 91


@needs(VASP_OUTPUTS)
def test_unconverged_output_is_refused():
    with pytest.raises(InputError, match=r"refused .*unconverged.*no ionic step with a converged"):
        apply_guard_rails(read_frames(VASP_OUTPUTS / "vasprun.unconverged.xml.gz"))


def test_unconverged_steps_are_dropped_and_counted():
    """Step-level: a run with one converged and one unconverged step keeps one."""
    from softening.datasets.guards import judge_vasp_run
    from softening.datasets.vasp_metadata import vasp_run_info, vasp_step_metadata

    info = vasp_run_info(
        {"NELM": 3, "EDIFF": 1e-5, "ENCUT": 520, "PREC": "Accurate", "ISPIN": 2},
        {},
        ["PAW_PBE Cu_pv 06Sep2000"],
        "6.4.2",
        "GGA",
        2,
    )
    converged = [{"e_fr_energy": e} for e in (-1.0, -1.1, -1.100001)]
    stuck = [{"e_fr_energy": e} for e in (-1.0, -1.1, -1.2)]
    steps = [vasp_step_metadata(converged, info), vasp_step_metadata(stuck, info)]
    keep, report = judge_vasp_run(info, steps, {"Cu"}, "x")
    assert keep == [True, False] and report.dropped_unconverged == 1 and not report.flags


# ---------------------------------------------------------------------------------------------------
# Inputs: MP settings, without POTCARs
# ---------------------------------------------------------------------------------------------------


def _fe2o3() -> Structure:
    return Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(5.035, 13.747), ["Fe", "O"], [[0, 0, 0.3553], [0.3059, 0, 0.25]]
    )


def test_fe_oxide_incar_has_mp_u_and_magmoms(tmp_path):
    """Write the inputs only (POTCAR.spec, no POTCARs needed) and check them with atomate2's own
    input checker against a hand-written reference INCAR."""
    from contextlib import chdir

    from atomate2.utils.testing.vasp import fake_run_vasp
    from pymatgen.io.vasp import Incar, Kpoints
    from pymatgen.io.vasp.sets import MPRelaxSet

    s = _fe2o3()
    folder = VaspReferenceMaker(potcar_spec=True).write_inputs(s, tmp_path / "run")
    incar = Incar.from_file(folder / "INCAR")
    fe = [
        i for i, sp in enumerate(Structure.from_file(folder / "POSCAR")) if sp.specie.symbol == "Fe"
    ]
    assert incar["LDAU"] is True and incar["LDAUU"] == [5.3, 0] and incar["LDAUL"] == [2, 0]
    assert [incar["MAGMOM"][i] for i in fe] == [5] * 12
    # atomate2's checker: the keys of a reference INCAR must match.
    ref = tmp_path / "reference"
    (ref / "inputs").mkdir(parents=True)
    (ref / "outputs").mkdir()
    expected = {
        "LDAU": True,
        "LDAUU": [5.3, 0],
        "LDAUL": [2, 0],
        "LDAUJ": [0, 0],
        "LDAUTYPE": 2,
        "ENCUT": 520,
        "EDIFF": 1e-5,
        "NSW": 0,
        "IBRION": -1,
        "ISMEAR": 0,
        "SIGMA": 0.05,
        "ISPIN": 2,
        "PREC": "Accurate",
        "MAGMOM": incar["MAGMOM"],
    }
    Incar(expected).write_file(ref / "inputs" / "INCAR")
    (ref / "inputs" / "POTCAR.spec").write_text("Fe_pv\nO\n")
    with chdir(folder):
        fake_run_vasp(
            ref, incar_settings=list(expected), check_inputs=("incar", "potcar"), clear_inputs=False
        )
    # k-points as MPRelaxSet's (reciprocal density 64): the static changes the INCAR only.
    mp = MPRelaxSet(s).kpoints
    assert Kpoints.from_file(folder / "KPOINTS").kpts == mp.kpts


def test_matpes_set_and_user_overrides(tmp_path, monkeypatch):
    from pymatgen.core import SETTINGS as PMG_SETTINGS
    from pymatgen.io.vasp import Incar

    s = _fe2o3()
    matpes = VaspReferenceMaker(input_set="matpes", potcar_spec=True)
    incar = Incar.from_file(matpes.write_inputs(s, tmp_path / "matpes") / "INCAR")
    assert incar["ENCUT"] == 680 and incar["EDIFF"] == 1e-5 and not incar.get("LDAU")
    monkeypatch.delitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", raising=False)
    with pytest.raises(SofteningError, match="cannot write the POTCAR"):
        VaspReferenceMaker().write_inputs(s, tmp_path / "no-potcars")
    custom = VaspReferenceMaker(
        user_incar_settings={"ENCUT": 600, "ALGO": "Normal"}, potcar_spec=True
    )
    incar = Incar.from_file(custom.write_inputs(s, tmp_path / "custom") / "INCAR")
    assert incar["ENCUT"] == 600 and incar["ALGO"] == "Normal" and incar["NSW"] == 0
    # The content key follows the settings.
    assert custom.code_settings(s) != VaspReferenceMaker().code_settings(s)
    with pytest.raises(InputError, match="input set"):
        VaspReferenceMaker(input_set="scan")


def test_missing_vasp_or_potcars_is_a_one_line_error(tmp_path, monkeypatch):
    from pymatgen.core import SETTINGS as PMG_SETTINGS

    s = _cu_al()
    with pytest.raises(SofteningError, match="VASP not found.*ATOMATE2_VASP_CMD") as err:
        VaspReferenceMaker(vasp_cmd="srun no-such-vasp_std").check_environment([s])
    assert "\n" not in str(err.value)
    ok = VaspReferenceMaker(vasp_cmd=vasp_command())
    monkeypatch.delitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", raising=False)
    with pytest.raises(SofteningError, match="PMG_VASP_PSP_DIR is not set"):
        ok.check_environment([s])
    psp = write_fake_potcars(tmp_path / "psp", symbols=["Al"])
    monkeypatch.setitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", str(psp))
    with pytest.raises(SofteningError, match="POTCAR Cu_pv"):
        ok.check_environment([s])
    write_fake_potcars(psp, symbols=["Cu_pv"])
    ok.check_environment([s])


# ---------------------------------------------------------------------------------------------------
# Runs through atomate2 -> custodian -> the emulator
# ---------------------------------------------------------------------------------------------------


def test_static_matches_the_embedded_calculator(vasp_env, store, tmp_path):
    """One frame: forces, stress and energy back in the frame's site order, units and sign."""
    frame = _frame(_cu_al())
    maker = VaspReferenceMaker(run_vasp_kwargs=FAST_CUSTODIAN)
    result, folders = _run_one(maker, frame, store, tmp_path / "runs")
    forces, stress = _emt(frame.structure)
    np.testing.assert_allclose(result.forces, forces, atol=1e-6)
    np.testing.assert_allclose(result.stress, stress, atol=1e-7)  # kbar, VASP sign -> eV/Å^3
    code = result.code
    assert (code.name, code.version) == ("vasp", "6.4.2")
    assert code.settings["functional"] == "PBE" and code.settings["potcar_symbols"] == [
        "Al",
        "Cu_pv",
    ]
    assert code.settings["incar"]["ENCUT"] == 520 and code.settings["incar"]["EDIFF"] == 1e-5
    assert result.converged and not result.flags and result.content_key
    # The calculation folder reads back through the same reader and guard rails.
    frames, (report,) = apply_guard_rails(read_frames(_vasp_folder(folders)))
    assert report.kept == 1 and not report.flags
    assert frames[0].energy == pytest.approx(result.energy)
    assert len(_runs(vasp_env)) == 1


def test_unconverged_scf_is_corrected_by_custodian(vasp_env, store, tmp_path, monkeypatch):
    """The emulator does not converge with ALGO=Fast: custodian's UnconvergedErrorHandler switches
    to ALGO=Normal and reruns; the frame is labelled by the converged rerun."""
    monkeypatch.setenv("VASP_EMULATOR_FAIL", "unconverged-fast")
    maker = VaspReferenceMaker(run_vasp_kwargs=FAST_CUSTODIAN)
    result, folders = _run_one(maker, _frame(_cu_al()), store, tmp_path / "runs")
    runs = _runs(vasp_env)
    assert [(r["algo"], r["outcome"]) for r in runs] == [
        ("Fast", "unconverged"),
        ("Normal", "converged"),
    ]
    (correction,) = result.code.settings["custodian_corrections"]
    assert correction["handler"] == "UnconvergedErrorHandler"
    assert correction["actions"] == [{"dict": "INCAR", "action": {"_set": {"ALGO": "Normal"}}}]
    assert result.code.settings["incar"]["ALGO"] == "Normal"
    folder = _vasp_folder(folders)
    with gzip.open(folder / "custodian.json.gz", "rt") as handle:
        log = json.load(handle)
    assert log[0]["corrections"][0]["errors"] == ["Unconverged"]
    with tarfile.open(folder / "error.1.tar.gz") as tar:  # custodian kept the failed attempt
        assert any(name.endswith("INCAR") for name in tar.getnames())


def test_scf_that_never_converges_fails_the_frame(vasp_env, store, tmp_path, monkeypatch):
    monkeypatch.setenv("VASP_EMULATOR_FAIL", "unconverged")
    maker = VaspReferenceMaker(run_vasp_kwargs={**FAST_CUSTODIAN, "max_errors": 1})
    result, _ = _run_one(maker, _frame(_cu_al()), store, tmp_path / "runs")
    assert result is None
    assert all(r["outcome"] == "unconverged" for r in _runs(vasp_env))


def _flow_maker(n_frames: int = 4) -> SofteningFlowMaker:
    return SofteningFlowMaker(
        md_maker=MDSamplingMaker(steps=40, stride=2, temperature=1000),
        select_maker=FrameSelectionMaker(n_frames=n_frames, n_strained_plus=1, n_strained_minus=1),
        reference_maker=VaspReferenceMaker(run_vasp_kwargs=FAST_CUSTODIAN),
        umlip_maker=UMLIPStaticMaker(),
        n_bootstrap=200,
    )


def _doc(flow, responses):
    ref = flow.output["softening"][0]
    return responses[ref.uuid][max(responses[ref.uuid])].output


def test_flagged_settings_in_the_flow_and_strict(vasp_env, store, tmp_path):
    """Guard rails on VASP run by the flow: a PBEsol override is flagged; strict refuses it, also
    when the flagged result is already stored."""
    frame = _frame(_cu_al())
    pbesol = VaspReferenceMaker(user_incar_settings={"GGA": "PS"}, run_vasp_kwargs=FAST_CUSTODIAN)
    result, _ = _run_one(pbesol, frame, store, tmp_path / "a")
    assert [f.kind for f in result.flags] == ["functional"]
    assert "PBEsol" in result.flags[0].detail
    pbesol.strict = True
    assert _run_one(pbesol, frame, store, tmp_path / "b")[0] is None  # stored, but refused
    assert _run_one(pbesol, _frame(_cu_al(), seed=1), store, tmp_path / "c")[0] is None
    assert len(_runs(vasp_env)) == 2  # the stored result was not recomputed


def test_flow_with_vasp_references_end_to_end(vasp_env, store, tmp_path):
    flow = _flow_maker(n_frames=3).make([_cu_al()])
    responses = run_locally(
        flow, store=store, create_folders=True, root_dir=tmp_path, log=False, ensure_success=True
    )
    doc = _doc(flow, responses)
    assert doc.n_frames == 3 and not doc.missing_frames and not doc.flags
    assert doc.reference.name == "vasp" and doc.reference.settings["input_set"] == "mp"
    assert doc.model.name == "CHGNet-0.3.0"
    assert len(_runs(vasp_env)) == 3
    # The VASP labels are the emulator's EMT forces on the frames, in the frames' site order.
    frames = store.query_one({"output.@class": "FrameSelection"})["output"]["frames"]
    f_emt = np.concatenate([_emt(Structure.from_dict(f["structure"]))[0] for f in frames])
    np.testing.assert_allclose(np.array(doc.forces_ref), f_emt, atol=1e-6)


def test_reference_is_chosen_by_settings():
    from softening.makers import ReferenceStaticMaker

    maker = SofteningFlowMaker(reference_maker=ReferenceStaticMaker(calculator="vasp"))
    assert isinstance(maker.reference_maker, VaspReferenceMaker)
    assert maker.reference_maker.input_set == "mp"


def test_flow_with_vasp_references_and_resume_after_a_crash(vasp_env, store, tmp_path, monkeypatch):
    """The whole flow with VASP references: the third frame's VASP crashes, the comparison names it
    missing; the same flow run again computes only that frame and completes."""
    from softening.stores.queries import softening_docs

    structure = _cu_al()
    monkeypatch.setenv("VASP_EMULATOR_FAIL", "crash@3")
    maker = _flow_maker()
    flow = maker.make([structure])
    doc = _doc(
        flow,
        run_locally(flow, store=store, create_folders=True, root_dir=tmp_path / "r1", log=False),
    )
    assert doc.missing_frames == ["2"] and doc.n_frames == 3
    assert doc.reference.name == "vasp"
    first = _runs(vasp_env)
    assert [r["outcome"] for r in first] == ["converged", "converged", "crash", "converged"]

    monkeypatch.delenv("VASP_EMULATOR_FAIL")
    flow2 = maker.make([structure])
    responses = run_locally(
        flow2,
        store=store,
        create_folders=True,
        root_dir=tmp_path / "r2",
        log=False,
        ensure_success=True,
    )
    doc2 = _doc(flow2, responses)
    assert doc2.missing_frames == [] and doc2.n_frames == 4
    # Which code produced the labels, and how.
    assert (doc2.reference.name, doc2.reference.version) == ("vasp", "6.4.2")
    assert doc2.reference.settings["functional"] == "PBE"
    # Only the crashed frame ran again.
    second = _runs(vasp_env)[len(first) :]
    assert [r["hash"] for r in second] == [first[2]["hash"]]
    assert second[0]["outcome"] == "converged"
    # The labels are the embedded calculator's forces on the frames.
    refs = [
        FrameResult.model_validate(d["output"])
        for d in store.query(
            {"output.@class": "FrameResult", "output.code.name": "vasp"}, load=True
        )
    ]
    for ref in {r.frame_id: r for r in refs}.values():
        np.testing.assert_allclose(ref.forces, _emt(ref.structure)[0], atol=1e-6)
    assert len(softening_docs(store, {"material_id": doc2.material_id})) == 2
    md = store.query_one({"output.@class": "MDResult", "uuid": flow2.jobs[0].jobs[0].uuid})
    assert md["output"]["reused"] is True


# ---------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------


def _cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "softening.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env_extra or {})},
        timeout=600,
    )


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@needs(VASP_OUTPUTS)
def test_evaluate_refuses_unconverged_and_strict(tmp_path):
    _one_line_error(
        _cli("evaluate", VASP_OUTPUTS / "vasprun.unconverged.xml.gz", "--store", tmp_path / "db"),
        "refused",
        "converged SCF",
    )
    _one_line_error(
        _cli("evaluate", VASP_OUTPUTS / "vasprun.lifepo4.xml.gz", "--strict", "--store", tmp_path),
        "refused",
        "U(Fe) = 4.3 eV",
    )


@needs(VASP_OUTPUTS)
def test_evaluate_reports_flags_per_material(tmp_path):
    res = _cli("evaluate", VASP_OUTPUTS / "vasprun.md.xml.gz", "--json", "--store", tmp_path / "db")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    (mat,) = out["models"]["CHGNet-0.3.0"]["materials"]
    assert mat["n_frames"] == 10
    assert any(f.startswith("low_precision: PREC=Low") for f in mat["flags"])
    (inp,) = out["inputs"]
    assert inp["kept"] == 10 and inp["source"].endswith("vasprun.md.xml.gz")


def test_run_without_vasp_fails_before_any_job(tmp_path):
    res = _cli(
        "run",
        ROOT / "examples" / "Si.cif",
        "--reference",
        "vasp",
        "--store",
        tmp_path / "db",
        "--out",
        tmp_path / "out",
        env_extra={"ATOMATE2_VASP_CMD": "no-such-vasp_std"},
    )
    _one_line_error(res, "VASP not found")
    assert not (tmp_path / "db").exists()


def test_emulator_with_gpaw(vasp_env, tmp_path, monkeypatch):
    """The emulator's realistic mode: GPAW plane waves at the INCAR's cutoff and k-points."""
    pytest.importorskip("gpaw")
    from pymatgen.io.vasp import Vasprun

    monkeypatch.setenv("VASP_EMULATOR_CALC", "gpaw")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]])
    s = s.get_primitive_structure()
    maker = VaspReferenceMaker(
        user_incar_settings={"ENCUT": 250, "ISPIN": 1},
        user_kpoints_settings={"reciprocal_density": 20},
    )
    folder = maker.write_inputs(s, tmp_path / "gpaw")
    res = subprocess.run(shlex.split(vasp_command()), cwd=folder, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    run = Vasprun(str(folder / "vasprun.xml"))
    assert run.converged and run.run_type == "GGA"
    assert np.abs(run.ionic_steps[-1]["forces"]).max() < 1e-3  # fcc: forces vanish by symmetry


def test_flow_with_vasp_references_in_parallel_workers(vasp_env, tmp_path, monkeypatch):
    """The local executor follows the VASP maker's replacement by atomate2's static job, in
    worker processes (each VASP job in its own folder), with the same result as run_locally."""
    from pymatgen.core import SETTINGS as PMG_SETTINGS

    from softening.execution.local import flow_outputs, run_flow
    from softening.schemas import StudyResult
    from softening.stores import get_job_store

    # Workers are new processes: they read the POTCAR folder and VASP command from the environment.
    monkeypatch.setenv("PMG_VASP_PSP_DIR", PMG_SETTINGS["PMG_VASP_PSP_DIR"])
    monkeypatch.setenv("ATOMATE2_VASP_CMD", vasp_command())
    monkeypatch.setenv("ATOMATE2_VASP_GAMMA_CMD", vasp_command())
    store = get_job_store(tmp_path / "db")
    flow = _flow_maker(n_frames=3).make([_cu_al()])
    result = run_flow(flow, store, workers=2, create_folders=True, root_dir=tmp_path / "runs")
    assert result.ok, result.failed
    (doc,) = StudyResult.model_validate(flow_outputs(flow, store)).softening
    assert doc.n_frames == 3 and not doc.missing_frames
    assert doc.reference.name == "vasp"
    assert len(_runs(vasp_env)) == 3
    assert len(list((tmp_path / "runs").glob("job_*/vasprun.xml.gz"))) == 3
    frames = store.query_one({"output.@class": "FrameSelection"})["output"]["frames"]
    f_emt = np.concatenate([_emt(Structure.from_dict(f["structure"]))[0] for f in frames])
    np.testing.assert_allclose(np.array(doc.forces_ref), f_emt, atol=1e-6)
