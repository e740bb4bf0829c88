"""The library functions behind the commands, called without the command line.

Each command of ``softening.cli`` is a few lines over one of these: the study built from options
(``run``, ``submit``), dataset frames as references and the correction flow (``finetune``), the
evaluation summary (``evaluate --json``), the one filter model and the report's selection
(``query``, ``report``), the property records and figures (``phonons``, ``surfaces``,
``properties``), and the serialised flow a ``submit --single-job`` script runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jobflow import Flow, job

from softening.errors import InputError

# ---- data: Cu and Al frames labelled by EMT ----------------------------------------------------------


def _cell(element: str, a: float, shift: float):
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [element], [[0, 0, 0]])
    s.translate_sites([0], [0.08 + shift, 0.03, -0.05], frac_coords=False)
    s.translate_sites([2], [-0.04, 0.06 + shift, 0.02], frac_coords=False)
    return s


def _emt_labels(structure):
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces()


def _labelled_xyz(path: Path, n_frames: int = 2) -> Path:
    """Extended XYZ of EMT-labelled frames: materials ``cu`` and ``al``, ``n_frames`` each."""
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    images = []
    for mid, element, a in (("cu", "Cu", 3.61), ("al", "Al", 4.05)):
        for k in range(n_frames):
            s = _cell(element, a, 0.03 * k)
            energy, forces = _emt_labels(s)
            atoms = AseAtomsAdaptor.get_atoms(s)
            atoms.info.update(material_id=mid, frame_id=str(k), REF_energy=energy)
            atoms.arrays["REF_forces"] = forces
            images.append(atoms)
    ase.io.write(str(path), images, format="extxyz")
    return path


def _cu_cif(path: Path) -> Path:
    from pymatgen.core import Lattice, Structure

    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    cu.to(filename=str(path))
    return path


# ---- frames -> references (softening.datasets.references) -------------------------------------------


def test_frames_to_references_and_unique_ids(tmp_path):
    from softening.datasets.references import frames_to_references, labelled_frames

    frames, reports = labelled_frames([_labelled_xyz(tmp_path / "f.extxyz")])
    assert len(frames) == 4 and reports == []
    specs, refs = frames_to_references(frames)
    assert [(s.material_id, s.frame_id) for s in specs] == [
        ("cu", "0"), ("cu", "1"), ("al", "0"), ("al", "1"),
    ]  # fmt: skip
    assert refs[0].formula == "Cu" and refs[0].code.name == "dataset"
    assert np.allclose(refs[0].forces, frames[0].forces) and refs[0].energy == frames[0].energy
    assert refs[0].code.settings["source"] == frames[0].source
    with pytest.raises(InputError, match="frame 0 of cu appears twice"):
        frames_to_references([frames[0], frames[0]])
    # Selection: every text must occur in the material id, formula, group or description.
    only_al, _ = labelled_frames([tmp_path / "f.extxyz"], select=["Al"])
    assert {f.material_key for f in only_al} == {"al"}
    with pytest.raises(InputError, match="matching Zn"):
        labelled_frames([tmp_path / "f.extxyz"], select=["Zn"])


# ---- the evaluation summary (softening.makers.evaluate) -------------------------------------------------


def test_evaluation_summary_is_the_evaluate_json_contract(tmp_path):
    from softening.makers.evaluate import evaluate_datasets
    from softening.makers.evaluation_output import evaluation_summary

    ev = evaluate_datasets([_labelled_xyz(tmp_path / "f.extxyz")], ["chgnet"], n_bootstrap=50)
    result = evaluation_summary(ev, tmp_path / "out")
    model = result["models"]["CHGNet-0.3.0"]
    mats = model["materials"]
    assert [m["material_id"] for m in mats] == ["al", "cu"]
    pooled = model["pooled"]
    # Pooled: one slope over every frame of every material; the share softened counts materials.
    assert pooled["n_frames"] == 4 and pooled["n_materials"] == 2
    assert pooled["fraction_softened"] == pytest.approx(np.mean([m["scale"] < 1 for m in mats]))
    assert Path(result["plot"]).is_file() and Path(result["parity"]).is_file()
    json.dumps(result)  # JSON-ready as it is
    assert "plot" not in evaluation_summary(ev)


# ---- the study of `run` / `submit` (softening.workflows.study) -------------------------------------


def test_study_options_from_command_line_names():
    from softening.workflows.study import StudyOptions

    opts = StudyOptions.from_options(
        {"model": ["chgnet"], "steps": 20, "store": "ignored", "prop": "phonon"}, prop=None
    )
    assert opts.models == ["chgnet"] and opts.steps == 20 and opts.prop is None
    assert opts.reference == "gpaw" and opts.frames == 10  # the command line's defaults


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"frames": 3, "strained": 2}, "fewer than the 4 strained"),
        ({"finetune": "scale", "train_frames": 4}, "leaves none of 4 frames"),
        ({"steps": 6}, "the MD keeps 3 frame"),
    ],
)
def test_study_options_refuse_before_any_job(tmp_path, changes, words):
    from softening.workflows.study import StudyOptions

    base = {"reference": "emt", "steps": 40, "stride": 2, "frames": 4, "strained": 1}
    with pytest.raises(InputError, match=words):
        StudyOptions(**{**base, **changes}).build([_cu_cif(tmp_path / "Cu.cif")])


def test_study_build_and_outputs_by_role(tmp_path):
    from softening.workflows.study import StudyOptions

    opts = StudyOptions(reference="emt", steps=40, stride=2, frames=4, strained=1, seed=3)
    study = opts.build([_cu_cif(tmp_path / "Cu.cif")], store=str(tmp_path / "db"))
    assert len(study.structures) == 1 and study.maker.models == ["chgnet"]
    assert study.maker.md_maker.steps == 40 and study.maker.select_maker.n_frames == 4
    assert study.maker.reference_maker.calculator == "emt" and study.maker.seed == 3
    # MD, selection, 4 references, uMLIP, comparison.
    assert len(list(study.flow.iterflow())) == 8
    # One typed container (StudyResult's roles), not a mixed list.
    assert set(study.flow.output) == {"softening", "verification"}
    assert len(study.flow.output["softening"]) == 1 and study.flow.output["verification"] == []


def _softening_doc(material_id: str, scale: float):
    from softening.makers.force_comparison import softening_doc
    from softening.schemas import CodeInfo, ModelInfo

    rng = np.random.default_rng(0)
    f_ref = rng.normal(size=(8, 3))
    return softening_doc(
        keys=[(material_id, "0")], f_ml=[scale * f_ref], f_ref=[f_ref], species=[["Cu"] * 8],
        e_ml=[-1.0], e_ref=[-1.1], formula="Cu", model=ModelInfo(name="M-1", family="m"),
        reference=CodeInfo(name="emt"), n_bootstrap=20,
    )  # fmt: skip


def test_collect_study_summary_and_files(tmp_path, store):
    from softening.workflows.study import StudyOptions, collect_study

    doc = _softening_doc("Cu-1", 0.8)
    outcome = collect_study(Flow([]), store, {"softening": [doc]}, ["x: failed"], StudyOptions())
    (mat,) = outcome.summary["materials"]
    assert mat["material_id"] == "Cu-1" and mat["model"] == "M-1"
    assert mat["scale"] == pytest.approx(0.8)
    assert outcome.summary["failed_jobs"] == ["x: failed"] and outcome.summary["store"]
    assert "corrections" not in outcome.summary and "properties" not in outcome.summary
    parity = outcome.save(tmp_path / "out")
    assert parity is not None and parity.is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == outcome.summary
    with_corrections = collect_study(Flow([]), store, {"softening": [doc]}, [],
                                     StudyOptions(finetune="scale"))  # fmt: skip
    assert with_corrections.summary["corrections"] == []


# ---- the correction of `finetune` (softening.workflows.correction) ---------------------------------


def test_correction_options_build_run_and_summary(tmp_path):
    from softening.execution.local import flow_outputs, run_flow
    from softening.stores import get_job_store
    from softening.workflows.correction import CorrectionOptions, verification_summary

    data = _labelled_xyz(tmp_path / "f.extxyz", n_frames=3)
    with pytest.raises(InputError):  # 3 frames per material: none left with 3 to train on
        CorrectionOptions(train_frames=3).build([data], store=str(tmp_path / "db"))
    opts = CorrectionOptions.from_options({"model": "chgnet", "train_frames": 1, "out": "x"})
    flow = opts.build([data], store=str(tmp_path / "db"))
    store = get_job_store(tmp_path / "db")
    assert run_flow(flow, store, workers=1).ok
    (doc,) = flow_outputs(flow, store)
    record = verification_summary(doc)
    assert record["mode"] == "scale" and len(record["train_frames"]) == 2  # one per material
    assert len(record["held_out_frames"]) == 4 and Path(record["model_path"]).is_dir()
    assert {"before", "after", "groups", "factor", "warnings"} <= set(record)
    json.dumps(record)


# ---- the filter model and the report (softening.stores.queries, softening.workflows.report) ------


def test_result_filter_criteria():
    from softening.stores.queries import ResultFilter, results_criteria

    assert ResultFilter().criteria() == {
        "output.@class": "SofteningDoc",
        "output.material_id": {"$ne": "pooled"},
    }
    c = ResultFilter(formula="OCu", chemsys="O-Cu", elements=["O", "Cu", "O"], model="chgnet",
                     scale_min=0.5, scale_max=1).criteria()  # fmt: skip
    assert c["output.formula"] == "CuO" and c["output.chemsys"] == "Cu-O"
    assert c["output.elements"] == {"$all": ["Cu", "O"]}
    assert c["output.scale"] == {"$gte": 0.5, "$lte": 1.0}
    assert {"output.model.family": "chgnet"} in c["$or"]
    assert "output.material_id" not in ResultFilter(include_pooled=True).criteria()
    assert ResultFilter(material_id="pooled").criteria()["output.material_id"] == "pooled"
    assert results_criteria(formula="OCu") == ResultFilter(formula="OCu").criteria()
    for bad, words in (({"scale_min": 2, "scale_max": 1}, "above"), ({"elements": ["Xx"]}, "Xx"),
                       ({"scale_max": float("nan")}, "scale-max")):  # fmt: skip
        with pytest.raises(InputError, match=words):
            ResultFilter(**bad).criteria()
    with pytest.raises(TypeError):
        results_criteria(ResultFilter(), formula="Cu")


def _row(mid: str, model: str, scale: float, ci_low: float) -> dict:
    return {"material_id": mid, "model": {"name": model}, "scale": scale,
            "scale_ci": [ci_low, scale + 0.1], "mae": 0.2, "cmae": 0.1}  # fmt: skip


def test_report_selection_leaves_out_pooled_and_uncorrelated():
    from softening.stores.queries import is_pooled, report_selection

    rows = [_row("a", "M", 0.8, 0.7), _row("b", "M", 0.1, -0.2), _row("pooled", "M", 0.8, 0.7),
            _row("c", "N", 0.9, 0.8)]  # fmt: skip
    sel = report_selection(rows, parity_limit=3)
    assert [r["material_id"] for r in sel.parity] == ["a", "b", "pooled"] and sel.skipped == 1
    assert {m: [r["material_id"] for r in rs] for m, rs in sel.by_model.items()} == {
        "M": ["a", "b"], "N": ["c"],
    }  # fmt: skip
    assert {m: [r["material_id"] for r in rs] for m, rs in sel.mae_vs_cmae.items()} == {
        "M": ["a"], "N": ["c"],
    }  # fmt: skip
    assert sel.excluded == ["b (M)"] and sel.label_points
    assert report_selection(rows, parity_limit=-1).skipped == 4
    assert is_pooled(rows[2]) and not is_pooled(rows[0])


def test_query_results_and_report_with_one_filter(tmp_path, store):
    from documents import _doc, _insert_docs

    from softening.stores.queries import ResultFilter, query_results
    from softening.workflows.report import results_report

    f = [[0.1, -0.2, 0.3], [0.2, 0.1, -0.1]]
    _insert_docs(store, [
        _doc("mp-1", "CHGNet-0.3.0", 0.85, ["Cu", "O"], formula="CuO", forces_ref=f, forces_ml=f),
        _doc("mp-2", "CHGNet-0.3.0", 1.02, ["Cu"], formula="Cu", forces_ref=f, forces_ml=f),
        _doc("pooled", "CHGNet-0.3.0", 0.9, ["Cu", "O"], formula="", forces_ref=f, forces_ml=f),
    ])  # fmt: skip
    where = ResultFilter(elements=["Cu"], include_pooled=True)
    assert [r["material_id"] for r in query_results(store, where)] == ["mp-1", "mp-2", "pooled"]
    assert query_results(store, where) == query_results(store, elements=["Cu"], include_pooled=True)
    drawn = results_report(store, tmp_path / "rep", where, parity_limit=2)
    assert len(drawn.files["parity"]) == 2 and drawn.selection.skipped == 1
    assert Path(drawn.files["scale_distribution"]).is_file()
    assert drawn.files["property_results"] == 0 and drawn.files["mae_vs_cmae_excluded"] == []
    with pytest.raises(InputError, match="nothing to plot"):
        results_report(store, tmp_path / "rep2", ResultFilter(formula="Li2O"))


# ---- property records and figures (softening.workflows.property_results) --------------------------


def _ns(**kw) -> SimpleNamespace:
    return SimpleNamespace(**kw)


def _surface_doc(model: str, gamma: float):
    from softening.schemas import Flag

    row = _ns(facet=[1, 0, 0], description="(100)", reconstructed=False, gamma_ref=1.0,
              gamma=gamma, gamma_ref_ev=0.06, gamma_ev=0.06 * gamma, n_atoms=8, area=10.0,
              vacuum=12.0, e_slab_ref=-30.0, e_slab=-29.0, relaxed=False, frame_id="3")  # fmt: skip
    values = _ns(rows=[row], bulk_choice="ground_state", bulk_frame="0", e_bulk_ref=-4.0,
                 e_bulk=-3.9, mae=abs(1 - gamma), mean_ratio=gamma,
                 fraction_underestimated=float(gamma < 1), skipped=["(111): too thin"])  # fmt: skip
    return _ns(material_id="Si", property="surface", model=_ns(name=model), ratio=gamma,
               reference=_ns(name="dft"), flags=[Flag(kind="functional", detail="PBEsol")],
               values=values)  # fmt: skip


def test_defect_result_records_and_figures(tmp_path):
    from softening.workflows.property_results import (
        defect_result,
        properties_result,
        property_figures,
        property_summary,
    )

    docs = [_surface_doc("A", 0.5), _surface_doc("B", 0.8)]
    result = properties_result(docs, ["A", "B"], phonon=False)
    assert result == defect_result(docs, ["A", "B"])
    a = result["models"]["A"]
    (row,) = a["surfaces"]
    assert row["material"] == "Si" and row["gamma"] == 0.5 and row["bulk_choice"] == "ground_state"
    assert a["summary"]["surface"]["fraction_underestimated"] == 1.0
    (mat,) = a["materials"]
    assert mat == property_summary(docs[0]) and mat["flags"] == ["functional: PBEsol"]
    assert mat["skipped"] == ["(111): too thin"]
    json.dumps(result)
    files = property_figures(docs, tmp_path / "fig", phonon=False)
    assert Path(files["surface_parity"]).stat().st_size > 1000


def test_phonon_summary_record():
    from softening.workflows.property_results import phonon_result, phonon_summary

    names = ("omega_max_ref omega_max omega_max_ratio freq_mae freq_max_abs_error scale mae "
             "imaginary_fraction_ref imaginary_fraction imaginary_tol n_displacements "
             "n_supercell_atoms mesh residual_force_max residual_force_max_ref temperature "
             "free_energy_ref free_energy entropy_ref entropy heat_capacity_ref heat_capacity")  # fmt: skip
    values = _ns(**{k: 1.0 for k in names.split()})
    doc = _ns(material_id="MgO", formula="MgO", property="phonon", values=values,
              reference=_ns(name="vasp"), model=_ns(name="A"), flags=["nac_ignored"])  # fmt: skip
    rec = phonon_summary(doc)
    assert rec["material"] == "MgO" and rec["reference"] == "vasp"
    assert rec["flags"] == ["nac_ignored"] and set(names.split()) < set(rec)
    assert phonon_result([doc], ["A", "B"]) == {
        "models": {"A": {"materials": [rec]}, "B": {"materials": []}}
    }


# ---- a serialised flow, as `submit --single-job` ships it (softening.hpc) ----------------------------


@job
def _add(a: int, b: int) -> int:
    return a + b


def test_serialised_flow_round_trip_and_run(tmp_path):
    from softening.hpc.run_serialized import read_serialized, run_serialized, write_serialized
    from softening.stores import get_job_store

    first = _add(1, 2)
    flow = Flow([first, _add(first.output, 4)], output=first.output)
    path = write_serialized(tmp_path / "flow.json", flow)
    again, study = read_serialized(path)
    assert study is None and again.uuid == flow.uuid
    assert [j.uuid for j, _ in again.iterflow()] == [j.uuid for j, _ in flow.iterflow()]
    ran = run_serialized(path, store=str(tmp_path / "db"), workers=1)
    assert ran.run.ok and ran.failures == [] and ran.outcome is None
    store = get_job_store(tmp_path / "db")
    store.connect()
    assert sorted(d["output"] for d in store.query({}, properties=["output"])) == [3, 7]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a flow written by softening"):
        read_serialized(tmp_path / "bad.json")


def test_single_job_ships_the_serialised_study(tmp_path, monkeypatch):
    """The script runs the serialised flow into the store; the study runs from that file alone."""
    import softening.hpc.slurm
    from softening.hpc import submit_single_job
    from softening.hpc.run_serialized import main, read_serialized
    from softening.workflows.study import StudyOptions

    monkeypatch.setattr(softening.hpc.slurm, "sbatch", lambda script, cwd=None: "4242")
    opts = StudyOptions(reference="emt", steps=20, stride=2, frames=2, strained=0)
    study = opts.build([_cu_cif(tmp_path / "Cu.cif")], local_checks=False)
    store = str(tmp_path / "db")
    submitted = submit_single_job(study.flow, store, None, tmp_path / "launch", study=asdict(opts))
    text = submitted.script.read_text()
    assert submitted.slurm_job_id == "4242" and submitted.store == store
    assert "softening.hpc.run_serialized" in text and str(submitted.flow_file) in text
    assert f"--store {store}" in text and "--out" in text
    flow, options = read_serialized(submitted.flow_file)
    assert flow.uuid == study.flow.uuid and StudyOptions(**options) == opts
    # What the batch script runs.
    status = main([str(submitted.flow_file), "--store", store, "--out", str(submitted.out),
                   "--workers", "1"])  # fmt: skip
    assert status == 0
    summary = json.loads((submitted.out / "summary.json").read_text())
    (mat,) = summary["materials"]
    assert mat["n_frames"] == 2 and mat["model"] == "CHGNet-0.3.0" and summary["failed_jobs"] == []
    assert (submitted.out / "parity.png").is_file()


# ---- the command line's one flag helper (softening.cli.display) --------------------------------------


def test_flags_print_and_dump_as_kind_detail_text():
    from softening.cli.display import dumps, flag_kinds, flag_text, with_flag_texts
    from softening.schemas import Flag

    text = "hubbard_u: U(Fe) = 4.3 eV"
    flag = Flag(kind="hubbard_u", detail="U(Fe) = 4.3 eV")
    assert flag_text(flag) == flag_text(flag.model_dump()) == flag_text(text) == text
    assert flag_text({"kind": "uncorrelated", "detail": ""}) == "uncorrelated"
    assert json.loads(dumps({"flags": [flag]})) == {"flags": [text]}  # --json keeps the text
    assert with_flag_texts({"flags": [flag.model_dump()], "n": 1}) == {"flags": [text], "n": 1}
    assert flag_kinds([flag, "spin: ISPIN=1"]) == "hubbard_u, spin" and flag_kinds([]) == "-"
    with pytest.raises(TypeError):
        dumps({"x": object()})
    assert json.loads(dumps({"x": Path("a")}, lenient=True)) == {"x": "a"}


def test_result_filter_by_flag_kind(store):
    """Flags are structured: a query finds the results carrying a kind of flag."""
    from documents import _doc, _insert_docs

    from softening.schemas import Flag
    from softening.stores.queries import ResultFilter, query_results

    _insert_docs(store, [
        _doc("mp-1", "CHGNet-0.3.0", 0.85, ["Cu"]),
        _doc("mp-2", "CHGNet-0.3.0", 0.9, ["Cu"], flags=[Flag(kind="unconverged", detail="ref")]),
        _doc("mp-3", "CHGNet-0.3.0", 0.9, ["Cu"], flags=["missing_frames: 1 frame(s) missing"]),
    ])  # fmt: skip
    assert [r["material_id"] for r in query_results(store, ResultFilter(flag="unconverged"))] == [
        "mp-2"
    ]
    assert [r["material_id"] for r in query_results(store, flag="missing_frames")] == ["mp-3"]
    assert len(query_results(store, ResultFilter())) == 3


@pytest.mark.parametrize("command", ["run", "submit"])
def test_run_and_submit_defaults_are_the_study_options_defaults(command):
    """typer needs the defaults in each command's signature: they must stay StudyOptions' own,
    or `run`, `submit` and Python users would study different things by default."""
    import inspect
    from dataclasses import fields

    from softening.cli import cluster, workflow
    from softening.workflows.study import StudyOptions

    fn = {"run": workflow.run, "submit": cluster.submit}[command]
    params = inspect.signature(fn).parameters
    defaults = {f.name: getattr(StudyOptions(), f.name) for f in fields(StudyOptions)}
    checked = 0
    for name, param in params.items():
        key = "models" if name == "model" else name
        if command == "submit" and key == "batch_md":
            # Deliberately off on a cluster: one MD job per material, each its own SLURM task.
            assert param.default is False
            continue
        if key in defaults:
            assert param.default == defaults[key], (command, name)
            checked += 1
    assert checked >= 12  # every study option the command takes


def test_the_study_defaults_have_one_source():
    """The defaults the makers, StudyOptions and the help of `run` and `submit` show are the
    constants of softening.defaults, not copies that could drift apart."""
    import typer

    from softening import defaults
    from softening.cli import app
    from softening.makers import FrameSelectionMaker, MDSamplingMaker
    from softening.workflows.study import StudyOptions

    options = StudyOptions()
    expected = {
        "md_model": defaults.MD_MODEL, "reference": defaults.REFERENCE,
        "temperature": defaults.TEMPERATURE, "steps": defaults.STEPS,
        "timestep": defaults.TIMESTEP, "stride": defaults.STRIDE, "frames": defaults.FRAMES,
        "strained": defaults.STRAINED, "frame_selection": defaults.FRAME_SELECTION,
        "ecut": defaults.ECUT, "kspacing": defaults.KSPACING, "seed": defaults.SEED,
        "train_frames": defaults.TRAIN_FRAMES, "max_cells": defaults.MAX_CELLS,
    }  # fmt: skip
    assert {k: getattr(options, k) for k in expected} == expected
    md, select = MDSamplingMaker(), FrameSelectionMaker()
    assert (md.model, md.temperature, md.steps, md.timestep, md.stride, md.seed) == (
        options.md_model, options.temperature, options.steps, options.timestep, options.stride,
        options.seed,
    )  # fmt: skip
    assert (select.n_frames, select.n_strained_plus, select.n_strained_minus, select.method) == (
        options.frames, options.strained, options.strained, options.frame_selection,
    )  # fmt: skip
    commands = typer.main.get_command(app).commands
    for name in ("run", "submit"):
        # What `--help` prints as each option's [default: ...].
        shown = {p.name: p.default for p in commands[name].params if p.name in expected}
        assert shown == expected, name
