"""The whole pipeline with EMT references through run_locally into a temporary embedded store."""

from __future__ import annotations

import re

import numpy as np
import pytest
from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from softening.analysis import scale_through_origin
from softening.datasets.checks import structure_digest
from softening.execution.local import flow_outputs
from softening.makers import (
    FrameSelectionMaker,
    MDSamplingMaker,
    ReferenceStaticMaker,
    UMLIPStaticMaker,
)
from softening.schemas import StudyResult
from softening.stores.queries import softening_docs
from softening.workflows import SofteningFlowMaker


def _cu8() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)


def _flow_maker(reference: ReferenceStaticMaker, n_frames: int = 5) -> SofteningFlowMaker:
    return SofteningFlowMaker(
        md_maker=MDSamplingMaker(steps=60, stride=3, temperature=1000),
        select_maker=FrameSelectionMaker(n_frames=n_frames, n_strained_plus=1, n_strained_minus=1),
        reference_maker=reference,
        umlip_maker=UMLIPStaticMaker(),
        n_bootstrap=200,
    )


def _doc(flow, responses):
    ref = flow.output["softening"][0]
    return responses[ref.uuid][max(responses[ref.uuid])].output


def test_emt_flow_end_to_end(store):
    flow = _flow_maker(ReferenceStaticMaker(calculator="emt")).make([_cu8()])
    responses = run_locally(flow, store=store, log=False, ensure_success=True)
    doc = _doc(flow, responses)
    # Material id: reduced formula plus a short hash of the structure.
    assert doc.material_id == f"Cu-{structure_digest(_cu8())}"
    assert re.fullmatch(r"Cu-[0-9a-f]{6}", doc.material_id)
    assert doc.n_frames == 5 and not doc.missing_frames
    assert doc.model.name == "CHGNet-0.3.0" and len(doc.model.weights_sha256) == 64
    assert doc.reference.name == "emt" and doc.reference.settings["compute_stress"] is True
    assert doc.scale_ci[0] <= doc.scale <= doc.scale_ci[1]
    # Independent recomputation from the stored per-frame outputs of the reference jobs.
    f_ref = np.array(doc.forces_ref)
    f_ml = np.array(doc.forces_ml)
    assert f_ref.shape == (40, 3)
    s = float(np.sum(f_ml * f_ref) / np.sum(f_ref**2))
    assert doc.scale == pytest.approx(s, rel=1e-12)
    assert doc.mae == pytest.approx(np.mean(np.abs(f_ml - f_ref)))
    # The stored document has its arrays in the data store, and loads back whole.
    stored = softening_docs(store, {"material_id": doc.material_id})
    assert len(stored) == 1
    loaded = store.query_one({"output.@class": "SofteningDoc"}, load=True)["output"]
    assert np.allclose(np.array(loaded["forces_ml"]), f_ml)
    # MD trajectory went to the data store too: the outputs document holds only a reference.
    md_doc = store.query_one({"output.@class": "MDResult"}, load=False)
    assert "blob_uuid" in md_doc["output"]["trajectory"]
    # Two of five frames strained by +/-3 %: their volumes differ from the MD cell by (1.03)^3.
    sel = store.query_one({"output.@class": "FrameSelection"})["output"]
    strains = sorted(f["strain"] for f in sel["frames"])
    assert strains == [-0.03, 0.0, 0.0, 0.0, 0.03]


def test_resume_computes_only_the_failed_frame(store, tmp_path):
    log, fail = tmp_path / "computed.log", tmp_path / "fail"
    fail.write_text("3")  # the third distinct structure the reference sees fails
    ref = ReferenceStaticMaker(
        calculator="flaky:FlakyEMT",
        calculator_kwargs={"log_file": str(log), "fail_file": str(fail)},
    )
    maker = _flow_maker(ref)
    flow = maker.make([_cu8()])
    responses = run_locally(flow, store=store, log=False)
    doc = _doc(flow, responses)
    assert doc.missing_frames == ["2"]
    assert doc.n_frames == 4
    computed_first = log.read_text().split()
    assert len(computed_first) == 5  # all five tried, one failed

    fail.unlink()
    flow2 = maker.make([_cu8()])
    responses2 = run_locally(flow2, store=store, log=False, ensure_success=True)
    doc2 = _doc(flow2, responses2)
    assert doc2.missing_frames == [] and doc2.n_frames == 5
    # The rerun computed the failed frame again and nothing else (MD and 4 frames reused).
    computed_second = log.read_text().split()
    assert computed_second == computed_first
    reused = [
        d["output"]["reused"]
        for d in store.query(
            {"output.@class": "FrameResult", "uuid": {"$in": [j.uuid for j in flow2.jobs[0].jobs]}}
        )
    ]
    assert sorted(reused) == [False, True, True, True, True]
    md = store.query_one({"output.@class": "MDResult", "uuid": flow2.jobs[0].jobs[0].uuid})
    assert md["output"]["reused"] is True


def test_md_blowup_is_a_clear_error():
    from softening.errors import CalculationError
    from softening.makers.md import run_md
    from softening.models import load_model

    s = _cu8()
    s.translate_sites([1], [0.0, 0.0, 0.0])
    s.replace(1, "Cu", coords=s[0].coords + [0.3, 0, 0], coords_are_cartesian=True)
    maker = MDSamplingMaker(steps=5, stride=1)
    with pytest.raises(CalculationError, match="apart"):
        run_md(s, load_model("chgnet").calculator(), maker)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -5}, "temperature"),
        ({"steps": 0}, "steps"),
        ({"thermostat": "x"}, "thermostat"),
    ],
)
def test_md_maker_rejects_bad_settings(kwargs, match):
    from softening.errors import InputError

    with pytest.raises(InputError, match=match):
        MDSamplingMaker(**kwargs)


def test_pooled_is_one_slope_not_a_mean(store):
    """compare_results over two materials pools all components (checked against numpy)."""
    from softening.makers.force_comparison import compare_results
    from softening.stores import CodeInfo, FrameResult, ModelInfo, UMLIPResults

    rng = np.random.default_rng(1)
    refs, mls = [], []
    for mid, scale, n in (("A", 0.5, 2), ("B", 1.0, 12)):
        for i in range(3):
            s = Structure(Lattice.cubic(5), ["Cu"] * n, rng.random((n, 3)))
            f = rng.normal(size=(n, 3))
            code = CodeInfo(name="x")
            refs.append(
                FrameResult(
                    frame_id=str(i),
                    material_id=mid,
                    formula="Cu",
                    structure=s,
                    energy=1.0,
                    forces=f.tolist(),
                    code=code,
                )
            )
            mls.append(
                FrameResult(
                    frame_id=str(i),
                    material_id=mid,
                    formula="Cu",
                    structure=s,
                    energy=1.0,
                    forces=(scale * f).tolist(),
                    code=code,
                )
            )
    umlip = UMLIPResults(model=ModelInfo(name="m", family="chgnet"), frames=mls)
    pooled = compare_results(refs, umlip)
    f_ref = np.concatenate([r.forces for r in refs])
    f_ml = np.concatenate([m.forces for m in mls])
    assert pooled.material_id == "pooled"
    assert pooled.scale == pytest.approx(scale_through_origin(f_ml, f_ref))
    assert abs(pooled.scale - 0.75) > 0.1  # not the mean of 0.5 and 1.0
    a = compare_results(refs, umlip, material_id="A")
    assert a.scale == pytest.approx(0.5) and a.n_frames == 3
    assert not any(f.kind == "uncorrelated" for f in pooled.flags + a.flags)
    # uMLIP forces unrelated to the reference: the CI reaches 0 and cMAE is flagged meaningless.
    noise = [
        m.model_copy(update={"forces": rng.normal(size=(len(m.forces), 3)).tolist()}) for m in mls
    ]
    flat = compare_results(refs, umlip.model_copy(update={"frames": noise}), material_id="B")
    assert flat.scale_ci[0] <= 0 <= flat.scale_ci[1]
    assert any(f.kind == "uncorrelated" for f in flat.flags)


def test_rerun_references_stored_results_instead_of_copying(store):
    """Three identical runs: MD trajectory and references are reused by reference, not copied."""
    store.connect()
    data = store.additional_stores["data"]
    maker = _flow_maker(ReferenceStaticMaker(calculator="emt"))
    counts, docs, job_names = [], [], {}
    for _ in range(3):
        flow = maker.make([_cu8()])
        run_locally(flow, store=store, log=False, ensure_success=True)
        # A reused comparison's output is the stored document: read it back, arrays loaded.
        docs.append(StudyResult.model_validate(flow_outputs(flow, store)).softening[0])
        store.connect()
        job_names.update(
            {d["uuid"]: d["name"] for d in store.query({}, properties=["uuid", "name"])}
        )
        blobs = list(data.query({}, properties=["job_uuid"]))
        md_and_refs = [
            b
            for b in blobs
            if job_names[b["job_uuid"]].startswith(("md sampling", "reference static"))
        ]
        counts.append((len(blobs), len(md_and_refs)))
    # Every consumer still gets the full arrays: identical results.
    assert docs[1].forces_ref == docs[0].forces_ref == docs[2].forces_ref
    assert docs[2].scale == docs[0].scale and docs[2].forces_ml == docs[0].forces_ml
    md_outputs = [d["output"] for d in store.query({"output.@class": "MDResult"}, load=True)]
    assert [m["reused"] for m in md_outputs].count(True) == 2
    assert all(len(m["trajectory"]["positions"]) == 16 for m in md_outputs)
    # The MD trajectory is stored once, and nothing of the reused references is stored again.
    assert counts[0][1] == counts[1][1] == counts[2][1] == 1
    # Nor the uMLIP forces and the comparison's arrays: an identical rerun adds no blob at all.
    assert counts[2][0] == counts[1][0] == counts[0][0]
    compare_outputs = [d["output"] for d in store.query({"output.@class": "SofteningDoc"})]
    assert [c["reused"] for c in compare_outputs].count(True) == 2


def test_default_ids_are_formula_plus_structure_hash():
    from softening.workflows.softening import _default_ids

    a = _cu8()
    b = _cu8()
    b.perturb(0.05, seed=1)  # another structure with the same reduced formula
    ids = _default_ids([a, b, a])
    assert all(re.fullmatch(r"Cu-[0-9a-f]{6}(-2)?", i) for i in ids)
    assert ids[0] != ids[1] and ids[2] == f"{ids[0]}-2"
    assert _default_ids([b]) == [ids[1]]  # the same structure gets the same id in any run


def test_material_ids_follow_one_rule():
    """Every flow's ids (formula + hash, formula, file stem) are made unique by one function, which
    keeps the first of equal names and numbers the others from 2, never repeating an id."""
    from softening.naming import unique_ids

    assert unique_ids(["Si", "Si", "Cu", "Si"]) == ["Si", "Si-2", "Cu", "Si-3"]
    assert unique_ids(["X", "X", "X-2"]) == ["X", "X-2", "X-2-2"]  # a base that looks numbered
    assert unique_ids([]) == []


def test_store_with_formula_ids_resumes_under_new_ids(store):
    """A store written when ids were bare formulas: MD and references are reused by content key."""
    maker = _flow_maker(ReferenceStaticMaker(calculator="emt"))
    old_flow = maker.make([_cu8()], material_ids=["Cu"])  # the id rule before formula+hash
    old = _doc(old_flow, run_locally(old_flow, store=store, log=False, ensure_success=True))
    flow = maker.make([_cu8()])
    new = _doc(flow, run_locally(flow, store=store, log=False, ensure_success=True))
    assert old.material_id == "Cu" and new.material_id == f"Cu-{structure_digest(_cu8())}"
    assert new.scale == old.scale and new.forces_ref == old.forces_ref
    uuids = [j.uuid for j in flow.jobs[0].jobs]
    refs = list(store.query({"output.@class": "FrameResult", "uuid": {"$in": uuids}}))
    assert len(refs) == 5 and all(r["output"]["reused"] for r in refs)
    assert {r["output"]["material_id"] for r in refs} == {new.material_id}
    md = store.query_one({"output.@class": "MDResult", "uuid": flow.jobs[0].jobs[0].uuid})
    assert md["output"]["reused"] is True and md["output"]["material_id"] == new.material_id


def test_diverse_selection_picks_the_direct_frames_of_the_md(store):
    from softening.analysis.learning_curve import direct_select
    from softening.errors import InputError
    from softening.models import load_model
    from softening.schemas import MDResult

    fm = _flow_maker(ReferenceStaticMaker(calculator="emt"), n_frames=4)
    fm.select_maker = FrameSelectionMaker(
        n_frames=4, n_strained_plus=1, n_strained_minus=1, method="diverse", model="chgnet"
    )
    run_locally(fm.make([_cu8()]), store=store, log=False, ensure_success=True)
    sel = store.query_one({"output.@class": "FrameSelection"})["output"]
    md = MDResult.model_validate(
        store.query_one({"output.@class": "MDResult"}, load=True)["output"]
    )
    traj = md.trajectory
    structures = [
        Structure(Lattice(c), [s.species for s in md.structure], p, coords_are_cartesian=True)
        for c, p in zip(traj.cells, traj.positions, strict=True)
    ]
    model = load_model("chgnet")
    expected = direct_select(model.backend.features(model, structures), 4, seed=0)
    assert sel["method"] == "diverse"
    assert [f["md_step"] for f in sel["frames"]] == [traj.steps[i] for i in expected]
    with pytest.raises(InputError, match="diverse"):
        FrameSelectionMaker(method="smart")
