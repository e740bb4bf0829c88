"""The local parallel executor (softening.execution.local): dependencies, failures, replacements,
dead workers, the sizing of its workers (softening.execution.resources), and the softening flow
with several workers giving the same results as with one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from jobflow import Flow, JobConfig, OnMissing, Response, job, run_locally

from softening.execution.local import flow_outputs, run_flow
from softening.processes import allocated_cores, default_workers
from softening.schemas import StudyResult


@job
def add(a, b):
    return a + b


@job
def interval(label: str, seconds: float):
    """When this job ran, as seen by the wall clock (to check that jobs overlap)."""
    t0 = time.time()
    time.sleep(seconds)
    return {"label": label, "start": t0, "end": time.time(), "pid": os.getpid()}


@job
def boom(x):
    raise ValueError(f"bad input {x}")


@job(config=JobConfig(on_missing_references=OnMissing.NONE))
def tolerant(x):
    return "got none" if x is None else x


@job
def replaced(x):
    return Response(replace=Flow([add(x, 100)], output=None))


@job
def replaced_with_output(x):
    inner = add(x, 1000)
    return Response(replace=Flow([inner], output=inner.output))


@job
def die_once(marker: str, value):
    """Kill its own worker the first time (as the kernel's OOM killer would)."""
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


@job
def die_always():
    os.kill(os.getpid(), signal.SIGKILL)


def _diamond():
    a = add(1, 2)
    b = add(a.output, 10)
    c = add(a.output, 20)
    d = add(b.output, c.output)
    return Flow([a, b, c, d], output=[a.output, b.output, c.output, d.output])


def _values(flow, store):
    return flow_outputs(flow, store)


@pytest.mark.parametrize("workers", [1, 2])
def test_dependencies_same_outputs_as_run_locally(store, workers):
    flow = _diamond()
    result = run_flow(flow, store, workers=workers)
    assert result.ok and result.workers == workers
    assert _values(flow, store) == [3, 13, 23, 36]
    reference = _diamond()
    responses = run_locally(reference, log=False, ensure_success=True)
    assert [responses[r.uuid][1].output for r in reference.output] == [3, 13, 23, 36]


def test_independent_jobs_run_side_by_side(store):
    jobs = [interval(f"j{i}", 1.5) for i in range(2)]
    flow = Flow(jobs, output=[j.output for j in jobs])
    result = run_flow(flow, store, workers=2)
    assert result.ok
    a, b = _values(flow, store)
    assert a["pid"] != b["pid"]
    # The two intervals overlap: the second started before the first ended.
    assert max(a["start"], b["start"]) < min(a["end"], b["end"])


@pytest.mark.parametrize("workers", [1, 2])
def test_failures_skip_dependents_unless_they_tolerate_missing_inputs(store, workers):
    bad = boom(1)
    strict_child = add(bad.output, 1)
    lenient_child = tolerant(bad.output)
    fine = add(2, 2)
    flow = Flow([bad, strict_child, lenient_child, fine])
    result = run_flow(flow, store, workers=workers)
    assert not result.ok
    assert any("boom: ValueError: bad input 1" in f for f in result.failed)
    assert any(f.startswith("add: not run") for f in result.failed)
    assert lenient_child.uuid in result.completed and fine.uuid in result.completed
    assert store.get_output(lenient_child.uuid) == "got none"
    assert store.get_output(fine.uuid) == 4


@pytest.mark.parametrize("workers", [1, 2])
def test_replaced_jobs_are_followed(store, workers):
    first = replaced_with_output(5)
    child = add(first.output, 1)
    other = replaced(1)
    flow = Flow([first, child, other])
    result = run_flow(flow, store, workers=workers)
    assert result.ok, result.failed
    # The child waited for the replacement's output (5 + 1000), stored under the same uuid.
    assert store.get_output(first.uuid, which="last") == 1005
    assert store.get_output(child.uuid) == 1006


def test_flow_outputs_follow_replacements_and_leave_out_failures(store):
    first = replaced_with_output(5)  # its stored output is a reference to the replacement's
    bad = boom(1)
    fine = add(2, 2)
    flow = Flow([first, bad, fine], output={"all": [first.output, bad.output, fine.output]})
    assert not run_flow(flow, store, workers=1).ok
    assert flow_outputs(flow, store) == {"all": [1005, 4]}
    single = add(3, 3)
    one = Flow([single], output=single.output)
    assert run_flow(one, store, workers=1).ok
    assert flow_outputs(one, store) == [6]  # one reference: a list of one


def test_dead_worker_is_retried_once_then_failed(store, tmp_path):
    marker = tmp_path / "marker"
    survivor = die_once(str(marker), 42)
    doomed = die_always()
    fine = add(1, 1)
    flow = Flow([survivor, doomed, fine])
    result = run_flow(flow, store, workers=2)
    assert marker.exists()
    assert store.get_output(survivor.uuid) == 42
    assert store.get_output(fine.uuid) == 2
    assert result.failed == ["die_always: its worker process died twice (killed, or out of memory)"]


def test_core_count_comes_from_the_allocation(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allocated_cores() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allocated_cores() == 8
    monkeypatch.setattr("softening.processes.available_memory_gb", lambda: 100.0)
    assert default_workers(threads=2) == 4
    assert default_workers(threads=1, n_jobs=3) == 3
    monkeypatch.setattr("softening.processes.available_memory_gb", lambda: 7.0)
    assert default_workers(threads=1) == 2  # 3 GB per worker


# ---- the softening flow --------------------------------------------------------------------------


def _emt_flow():
    from pymatgen.core import Lattice, Structure

    from softening.makers import FrameSelectionMaker, MDSamplingMaker, ReferenceStaticMaker
    from softening.workflows import SofteningFlowMaker

    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    al = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]]) * (2, 1, 1)
    fm = SofteningFlowMaker(
        md_maker=MDSamplingMaker(steps=40, stride=4, temperature=1000),
        select_maker=FrameSelectionMaker(n_frames=4, n_strained_plus=1, n_strained_minus=1),
        reference_maker=ReferenceStaticMaker(calculator="emt"),
        n_bootstrap=100,
    )
    return fm.make([cu, al])


def test_softening_flow_two_workers_equals_one(tmp_path):
    from softening.stores import get_job_store

    docs = {}
    for workers in (1, 2):
        store = get_job_store(tmp_path / f"db{workers}")
        flow = _emt_flow()
        result = run_flow(flow, store, workers=workers)
        assert result.ok, result.failed
        docs[workers] = StudyResult.model_validate(flow_outputs(flow, store)).softening
    assert [d.material_id for d in docs[1]] == [d.material_id for d in docs[2]]
    for one, two in zip(docs[1], docs[2], strict=True):
        assert one.n_frames == two.n_frames == 4
        assert one.scale == pytest.approx(two.scale, abs=1e-6)
        assert one.scale_ci == pytest.approx(two.scale_ci, abs=1e-6)
        assert np.allclose(one.forces_ref, two.forces_ref)


def test_run_resumes_after_the_process_is_killed(tmp_path):
    """Kill `softening run --workers 2` (parent and workers) once the MD is stored, run it again:
    the MD and finished references are reused, nothing is stored twice, results are complete."""
    from pymatgen.core import Lattice, Structure

    from softening.stores import get_job_store

    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    cif = tmp_path / "Cu8.cif"
    cu.to(filename=str(cif))
    db = tmp_path / "db"
    cmd = [
        sys.executable, "-m", "softening.cli", "run", str(cif), "--reference", "emt",
        "--steps", "300", "--stride", "10", "--frames", "6", "--strained", "1",
        "--store", str(db), "--out", str(tmp_path / "out"), "--workers", "2", "--json",
    ]  # fmt: skip
    env = {**os.environ, "SOFTENING_STORE": str(db)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE)
    store = get_job_store(db)
    deadline = time.time() + 240
    md_done = False
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if db.exists():
            try:
                store.connect()
                md_done = store.count({"output.@class": "MDResult"}) > 0
            except Exception:  # the first writer may still be creating the store
                md_done = False
            if md_done:
                break
    assert md_done, "the MD never finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    store.connect()
    md = list(store.query({"output.@class": "MDResult"}, properties=["output.reused"]))
    assert [m["output"]["reused"] for m in md].count(False) == 1  # run once, then reused
    docs = list(store.query({"output.@class": "SofteningDoc"}, properties=["output"]))
    assert len(docs) == 1 and docs[0]["output"]["n_frames"] == 6
    assert not docs[0]["output"]["missing_frames"]
