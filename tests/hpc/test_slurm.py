"""On a cluster: FireWorks + a real single-node SLURM (submit, status, rerun, lost runs, single job).

A private SLURM cluster (tests/slurm_cluster.py) runs for the session. FireWorks uses a mongomock
file instead of MongoDB (none can run here); that file is written whole by each process and not
locked, so the node has one CPU (one SLURM job at a time) and the tests open the LaunchPad (through
the CLI) only while the queue is empty, waiting on SLURM's own state (``squeue``) in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

TESTS = Path(__file__).resolve().parents[1]  # the tests folder: slurm_calculators for the jobs
CLI = [sys.executable, "-m", "softening.cli"]
# A short flow: 20 MD steps of an 8-atom Cu cell, 3 frames (1 strained each way), 3 EMT references.
FLOW_ARGS = [
    "--reference",
    "slurm_calculators:ControlledEMT",
    "--steps",
    "20",
    "--stride",
    "2",
    "--frames",
    "3",
    "--strained",
    "1",
]
RAPIDFIRE = (
    "{python} -m softening.hpc.rlaunch -l {launchpad} -c {categories} --qadapter {qadapter} "
    "--launch-dir {launch_dir} rapidfire"
)
SINGLESHOT = RAPIDFIRE.replace("rapidfire", "singleshot")


# ---- no scheduler needed ---------------------------------------------------------------------------


def test_expand_env_defaults_nesting_and_no_reexpansion():
    from softening.hpc.config import expand_env

    env = {"A": "x", "P": "pa$${B}ss", "EMPTY": ""}
    assert expand_env("${A}", env) == "x"
    assert expand_env("${UNSET}", env) == ""  # never a literal ${...} to a server
    assert expand_env("${UNSET:-dflt}", env) == "dflt"
    assert expand_env("${EMPTY:-dflt}", env) == "dflt"
    assert expand_env("${UNSET:-${A}}", env) == "x"
    assert expand_env("${P}", env) == "pa$${B}ss"  # a password is not expanded again
    assert expand_env({"k": ["${A}", 3]}, env) == {"k": ["x", 3]}


def test_launchpad_template_reads_the_environment(monkeypatch):
    from softening.hpc.config import launchpad_dict

    monkeypatch.setenv("SOFTENING_MONGO_HOST", "db.example.org")
    monkeypatch.setenv("SOFTENING_MONGO_PORT", "27018")
    monkeypatch.setenv("SOFTENING_MONGO_USERNAME", "alice")
    monkeypatch.setenv("SOFTENING_MONGO_PASSWORD", "s3cret")
    monkeypatch.delenv("SOFTENING_MONGO_AUTH_SOURCE", raising=False)
    d = launchpad_dict(ROOT / "launchpad.yaml")
    assert d["host"] == "db.example.org" and d["port"] == 27018
    assert d["username"] == "alice" and d["password"] == "s3cret"
    assert d["name"] == "softening_fireworks"
    assert "authsource" not in d  # unset: FireWorks' default
    assert "s3cret" not in (ROOT / "launchpad.yaml").read_text()


def test_qadapter_template_groups_partitions_and_placeholders(monkeypatch, tmp_path):
    from softening.hpc.config import load_qadapters

    monkeypatch.setenv("SOFTENING_SLURM_PARTITION", "cpu")
    monkeypatch.setenv("SOFTENING_SLURM_UMLIP_PARTITION", "gpu")
    monkeypatch.setenv("SOFTENING_SLURM_UMLIP_GRES", "gpu:1")
    monkeypatch.delenv("SOFTENING_SLURM_ACCOUNT", raising=False)
    groups = load_qadapters(ROOT / "qadapter_slurm.yaml", tmp_path / "lp.yaml", tmp_path)
    by = {g.name: g for g in groups}
    assert set(by) == {"umlip", "dft"}
    assert by["umlip"].params["queue"] == "gpu" and by["umlip"].params["gres"] == "gpu:1"
    assert by["dft"].params["queue"] == "cpu"  # falls back on the common partition
    assert "account" not in by["dft"].params  # unset: no #SBATCH --account line
    rl = by["dft"].params["rocket_launch"]
    assert rl.startswith(sys.executable) and "-c dft" in rl and str(tmp_path / "lp.yaml") in rl
    assert by["dft"].reserve  # singleshot: reservation mode, one SLURM job per job
    script = by["umlip"].adapter().get_script_str(str(tmp_path))
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --gres=gpu:1" in script
    assert "--account" not in script and "$${" not in script
    single = load_qadapters(ROOT / "qadapter_slurm.yaml", None, tmp_path, base_only=True)
    assert [g.name for g in single] == ["all"] and single[0].categories == ["umlip", "dft"]


def test_store_spec_for_workers_is_absolute_and_secret_free(tmp_path, monkeypatch):
    from softening.errors import InputError
    from softening.hpc.firetask import worker_store_spec

    monkeypatch.chdir(tmp_path)
    assert worker_store_spec("db") == str(tmp_path / "db")
    assert worker_store_spec("mongodb") == "mongodb"
    assert worker_store_spec("mongodb://host/db") == "mongodb://host/db"
    with pytest.raises(InputError, match="password"):
        worker_store_spec("mongodb://u:pw@host/db")


def test_workflow_categories_and_serialized_tasks(tmp_path):
    from fireworks import Workflow

    from softening.hpc.firetask import SofteningJobFiretask, to_workflow
    from softening.makers import FrameSelectionMaker, MDSamplingMaker, ReferenceStaticMaker
    from softening.workflows import SofteningFlowMaker

    fm = SofteningFlowMaker(
        md_maker=MDSamplingMaker(steps=20, stride=2),
        select_maker=FrameSelectionMaker(n_frames=3, n_strained_plus=1, n_strained_minus=1),
        reference_maker=ReferenceStaticMaker(calculator="emt"),
    )
    from softening.workflows.softening import _default_ids

    wf = to_workflow(fm.make([_cu8()]), str(tmp_path / "db"))
    cats = {fw.name: fw.spec["_category"] for fw in wf.fws}
    (mid,) = _default_ids([_cu8()])  # formula plus a structure hash
    assert mid.startswith("Cu-")
    assert sorted(n for n, c in cats.items() if c == "dft") == [
        f"reference static {mid} {i}" for i in range(3)
    ]
    assert {c for n, c in cats.items() if not n.startswith("reference")} == {"umlip"}
    compare = next(fw for fw in wf.fws if fw.name.startswith("compare"))
    assert compare.spec["_allow_fizzled_parents"]  # compares what it has; names what is missing
    text = json.dumps(wf.to_dict(), default=str)
    assert "store_spec" in text and '"store":' not in text
    back = Workflow.from_dict(wf.to_dict())
    task = back.fws[0].tasks[0]
    assert isinstance(task, SofteningJobFiretask) and task["store_spec"] == str(tmp_path / "db")


def test_submit_property_flow_to_the_launchpad(tmp_path):
    """`submit --property phonon` puts the flow of `softening properties` on the LaunchPad: one
    `dft` job per displaced supercell (and the undisplaced one), the rest `umlip`."""
    (tmp_path / "lp.yaml").write_text("host: localhost\nname: softening_test\n")
    (tmp_path / "mock.json").write_text("{}")
    _cu8().to(filename=str(tmp_path / "Cu.cif"))
    env = {
        **os.environ,
        "MONGOMOCK_SERVERSTORE_FILE": str(tmp_path / "mock.json"),
        "SOFTENING_LAUNCHPAD": str(tmp_path / "lp.yaml"),
        "SOFTENING_STORE": str(tmp_path / "db"),
        "OMP_NUM_THREADS": "1",
    }
    args = ["submit", tmp_path / "Cu.cif", "--property", "phonon", "--reference", "emt", "--json"]
    res = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["categories"]["dft"] >= 2 and out["categories"]["umlip"] >= 1
    res = subprocess.run(
        [*CLI, "status", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    (flow,) = json.loads(res.stdout)["flows"]
    names = [j["name"] for j in flow["jobs"]]
    assert any(n.startswith("reference static") for n in names)
    bad = subprocess.run(
        [*CLI, *map(str, [*args[:-1], "--single-job"])], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "--property" in bad.stderr


def test_jobs_a_job_creates_keep_its_category_and_store(tmp_path):
    # VASP reference jobs replace themselves with atomate2's jobs: those must stay `dft` jobs and
    # write to the same store, without the opened store ever entering the task.
    from softening.hpc.firetask import SofteningJobFiretask

    task = SofteningJobFiretask(job=_replaced(3), store_spec=str(tmp_path / "db"))
    action = task.run_task({"_category": "dft"})
    (wf,) = action.detours
    (fw,) = wf.fws
    assert fw.spec["_category"] == "dft"
    (t,) = fw.tasks
    assert isinstance(t, SofteningJobFiretask) and t["store_spec"] == str(tmp_path / "db")
    assert "store" not in task and "store" not in t


def _double(x: int) -> int:
    return 2 * x


def _replace_with_double(x: int):
    from jobflow import Response, job

    return Response(replace=job(_double)(x))


def _replaced(x: int):
    from jobflow import job

    return job(_replace_with_double)(x)


def test_unreachable_launchpad_is_one_line_without_the_password(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there afterwards
    lp = tmp_path / "lp.yaml"
    lp.write_text((ROOT / "launchpad.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "MONGOMOCK_SERVERSTORE_FILE"}
    env.update(
        SOFTENING_MONGO_HOST="127.0.0.1",
        SOFTENING_MONGO_PORT=str(port),
        SOFTENING_MONGO_USERNAME="alice",
        SOFTENING_MONGO_PASSWORD="hunter2-secret",
        SOFTENING_MONGO_TIMEOUT="1",
    )
    res = subprocess.run(
        [*CLI, "status", "--launchpad", lp], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error: cannot use the LaunchPad 127.0.0.1") and "\n" not in err
    assert "hunter2" not in res.stderr + res.stdout and "Traceback" not in res.stderr


def test_rerun_needs_failed():
    res = subprocess.run([*CLI, "rerun"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1 and res.stderr.startswith("error:") and "--failed" in res.stderr


# ---- against a real SLURM --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm():
    """A private single-node SLURM cluster for the session (skipped without root or packages)."""
    from slurm_cluster import start_cluster, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


def test_slurm_state_from_squeue_scontrol_and_jobcomp(slurm, tmp_path):
    from softening.hpc import slurm as sl

    jid = sl.sbatch(_script(tmp_path, "sleep 60"), cwd=tmp_path)
    deadline = time.monotonic() + 30
    while sl.slurm_job_state(jid).state != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.3)
    st = sl.slurm_job_state(jid)
    assert (st.state, st.source, st.alive) == ("RUNNING", "squeue", True)
    slurm.run("scancel", jid)
    slurm.wait_idle(60)
    st = sl.slurm_job_state(jid)
    assert st.state == "CANCELLED" and st.ended  # squeue -t all, within MinJobAge
    # After MinJobAge only the jobcomp log (or sacct with slurmdbd) remembers the job.
    assert sl._scontrol_state(jid).state == "CANCELLED"
    assert sl._jobcomp_state(jid).state == "CANCELLED"
    assert sl.jobcomp_log() == slurm.jobcomp
    assert sl.slurm_job_state("999999").state == "ENDED"  # unknown to the controller: not alive


def _script(folder: Path, command: str) -> Path:
    path = folder / "job.sh"
    path.write_text(f"#!/bin/bash\n#SBATCH --job-name=probe\n{command}\n")
    return path


@dataclass
class Workspace:
    """A LaunchPad (mongomock file), a queue adapter, a store and a control folder for one test."""

    root: Path
    slurm: object
    env: dict[str, str]

    @property
    def store(self) -> Path:
        return self.root / "db"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def cif(self) -> Path:
        return self.root / "Cu.cif"

    def cli(self, *args: str, check: bool = True, stdin: str | None = None):
        """The command line; the LaunchPad file may only be opened while no SLURM job runs."""
        assert not self.slurm.jobs(), "a SLURM job runs: the mongomock LaunchPad is in use"
        res = subprocess.run(
            [*CLI, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=self.env,
            input=stdin,
            timeout=300,
        )
        if check:
            assert res.returncode == 0, res.stderr[-3000:]
        return res

    def json(self, *args: str) -> dict:
        return json.loads(self.cli(*args, "--json").stdout)

    def qadapter(self, rocket_launch: str, categories: dict | None = None) -> None:
        import yaml

        q = {
            "_fw_name": "CommonAdapter",
            "_fw_q_type": "SLURM",
            "job_name": "softening",
            "walltime": "00:15:00",
            # The submitting process writes the mongomock file when it exits, just after sbatch.
            "pre_rocket": "sleep 1",
            "rocket_launch": rocket_launch,
        }
        if categories:
            q["categories"] = categories
        (self.root / "qadapter.yaml").write_text(yaml.safe_dump(q))

    def wait(self, timeout: float = 300) -> None:
        self.slurm.wait_idle(timeout)

    def results(self) -> tuple[list[dict], list[dict]]:
        """(SofteningDocs, FrameResults) in the store."""
        from softening.stores import get_job_store

        store = get_job_store(self.store)
        store.connect()
        docs = [d["output"] for d in store.query({"output.@class": "SofteningDoc"})]
        frames = [d["output"] for d in store.query({"output.@class": "FrameResult"})]
        return docs, frames

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.root.rglob("*.error"))
        )


def _cu8():
    from pymatgen.core import Lattice, Structure

    fcc = Structure(
        Lattice.cubic(3.61),
        ["Cu"] * 4,
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    return fcc * (2, 1, 1)


@pytest.fixture
def ws(slurm, tmp_path):
    """A fresh workspace; the queue is empty before and after."""
    slurm.wait_idle(60)
    (tmp_path / "lp.yaml").write_text("host: localhost\nname: softening_test\n")
    (tmp_path / "mock.json").write_text("{}")
    (tmp_path / "control").mkdir()
    _cu8().to(filename=str(tmp_path / "Cu.cif"))
    env = {
        **slurm.env,
        "MONGOMOCK_SERVERSTORE_FILE": str(tmp_path / "mock.json"),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "SOFTENING_TEST_CONTROL": str(tmp_path / "control"),
        "SOFTENING_LAUNCHPAD": str(tmp_path / "lp.yaml"),
        "SOFTENING_QADAPTER": str(tmp_path / "qadapter.yaml"),
        "SOFTENING_STORE": str(tmp_path / "db"),
        "SOFTENING_N_BOOTSTRAP": "100",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    w = Workspace(tmp_path, slurm, env)
    yield w
    slurm.run("scancel", "--user", "root", check=False)
    slurm.wait_idle(60)


def _all_jobs(status: dict) -> list[dict]:
    return [j for f in status["flows"] for j in f["jobs"]]


@pytest.mark.slow
def test_flow_runs_through_fireworks_on_slurm_with_partitions_per_category(ws):
    ws.qadapter(RAPIDFIRE, {"umlip": {"queue": "umlip"}, "dft": {"queue": "dft"}})
    sub = ws.json("submit", ws.cif, *FLOW_ARGS, "--launch")
    assert sub["categories"] == {"umlip": 4, "dft": 3}
    assert [q["group"] for q in sub["queued"]] == ["umlip"]  # only the MD is READY at first
    assert sub["store"] == str(ws.store)
    ws.wait()
    status = ws.json("status")
    (flow,) = status["flows"]
    assert flow["flow_id"] == sub["flow_id"] and flow["state"] == "COMPLETED", ws.worker_logs()
    jobs = _all_jobs(status)
    assert len(jobs) == 7 and {j["state"] for j in jobs} == {"COMPLETED"}
    # Each job ran in a SLURM job of its category's partition (the jobcomp log says where).
    partition = {r["JobId"]: r["Partition"] for r in ws.slurm.ended_jobs()}
    for j in jobs:
        assert partition[j["slurm_job_id"]] == j["category"], j
    assert {j["category"] for j in jobs if j["name"].startswith("reference")} == {"dft"}
    docs, frames = ws.results()
    assert len(docs) == 1 and docs[0]["n_frames"] == 3 and docs[0]["missing_frames"] == []
    assert 0.3 < docs[0]["scale"] < 3
    assert sorted(f["frame_id"] for f in frames) == ["0", "1", "2"]


@pytest.mark.slow
def test_fizzled_reference_is_rerun_and_completes_the_flow(ws):
    ws.qadapter(RAPIDFIRE)  # one queue group: a rapidfire job runs every READY job
    (ws.control / "fail").write_text("")
    sub = ws.json("submit", ws.cif, *FLOW_ARGS, "--launch")
    ws.wait()
    status = ws.json("status", "--state", "FIZZLED")
    assert [f["state"] for f in status["flows"]] == ["FIZZLED"]  # FireWorks says COMPLETED
    fizzled = _all_jobs(status)
    assert len(fizzled) == 1, ws.worker_logs()
    assert fizzled[0]["category"] == "dft" and fizzled[0]["name"].startswith("reference")
    docs, frames = ws.results()
    assert len(docs) == 1 and len(docs[0]["missing_frames"]) == 1  # compared what it had
    assert len(frames) == 2

    dry = ws.json("rerun", "--failed", "--flow", str(sub["flow_id"]), "--dry-run")
    assert [d["fw_id"] for d in dry["fizzled"]] == [fizzled[0]["fw_id"]] and dry["reset"] == []
    res = ws.json("rerun", "--failed", "--flow", str(sub["flow_id"]), "--launch")
    assert fizzled[0]["fw_id"] in res["reset"] and len(res["queued"]) == 1
    ws.wait()
    status = ws.json("status", "--flow", str(sub["flow_id"]))
    assert {j["state"] for j in _all_jobs(status)} == {"COMPLETED"}, ws.worker_logs()
    docs, frames = ws.results()
    assert len(docs) == 1 and docs[0]["n_frames"] == 3 and docs[0]["missing_frames"] == []
    # One result per frame, no duplicates; only the failed frame was computed again.
    assert sorted(f["frame_id"] for f in frames) == ["0", "1", "2"]
    computed = (ws.control / "computed.log").read_text().split()
    assert len(computed) == len(set(computed)) == 3


@pytest.mark.slow
def test_cancelled_running_job_is_lost_by_slurm_state_and_rerun(ws):
    # uMLIP jobs: one rapidfire job; references: one SLURM job each (reservation mode).
    ws.qadapter(SINGLESHOT, {"umlip": {"rocket_launch": RAPIDFIRE}})
    (ws.control / "hold").write_text("")
    sub = ws.json("submit", ws.cif, *FLOW_ARGS, "--launch")
    holding = ws.control / "holding"
    deadline = time.monotonic() + 240
    while not holding.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert holding.exists(), ws.worker_logs()
    jid = holding.read_text().strip()
    state = ws.slurm.run("squeue", "-h", "-j", jid, "-o", "%T").stdout.strip()
    assert state == "RUNNING"  # confirmed by SLURM, then cancelled
    ws.slurm.run("scancel", jid)
    ws.wait()

    plan = ws.json("rerun", "--failed", "--dry-run")  # a dry run asks nothing
    assert plan["fizzled"] == []
    (lost,) = plan["lost"]
    assert lost["slurm_job_id"] == jid and lost["slurm_state"] == "CANCELLED"
    assert lost["state"] == "RUNNING" and lost["detected_by"].startswith("slurm:")
    assert lost["name"].startswith("reference")
    # No filter: it asks first; "no" changes nothing.
    refused = ws.cli("rerun", "--failed", check=False, stdin="n\n")
    assert refused.returncode != 0 and "across all flows" in refused.stderr
    assert ws.json("rerun", "--failed", "--dry-run")["lost"] == plan["lost"]

    res = ws.json("rerun", "--failed", "--yes", "--launch")
    assert lost["fw_id"] in res["reset"] and res["queued"]
    ws.wait()
    status = ws.json("status", "--flow", sub["flow_uuid"])
    assert {j["state"] for j in _all_jobs(status)} == {"COMPLETED"}, ws.worker_logs()
    docs, frames = ws.results()
    assert len(docs) == 1 and docs[0]["n_frames"] == 3 and docs[0]["missing_frames"] == []
    assert sorted(f["frame_id"] for f in frames) == ["0", "1", "2"]


@pytest.mark.slow
def test_queue_job_that_never_started_its_worker_is_released(ws):
    # The queue job fails before the worker runs (think: a broken module load): the job stays
    # RESERVED in the LaunchPad while SLURM says FAILED.
    ws.qadapter("false singleshot")
    sub = ws.json("submit", ws.cif, *FLOW_ARGS, "--launch")
    (queued,) = sub["queued"]
    ws.wait()
    plan = ws.json("rerun", "--failed", "--dry-run")
    (lost,) = plan["lost"]
    assert lost["state"] == "RESERVED" and lost["slurm_state"] == "FAILED"
    assert lost["slurm_job_id"] == queued["slurm_job_id"] and lost["fw_id"] in queued["fw_ids"]
    res = ws.json("rerun", "--failed", "--fw-id", str(lost["fw_id"]))
    assert res["reset"] == [lost["fw_id"]]
    (job,) = [j for j in _all_jobs(ws.json("status")) if j["fw_id"] == lost["fw_id"]]
    assert job["state"] == "READY"


@pytest.mark.slow
def test_single_job_runs_the_flow_in_one_allocation(ws):
    store = ws.root / "single-db"
    out = ws.json(
        "submit", ws.cif, *FLOW_ARGS, "--single-job", "--store", store, "--launch-dir", ws.root
    )
    script = Path(out["script"])
    assert script.is_file() and out["store"] == str(store)
    # The script runs the serialised flow (built and checked at submission) into the store.
    text = script.read_text()
    assert "softening.hpc.run_serialized" in text and f"--store {store}" in text
    assert (script.parent / "flow.json").is_file() and str(script.parent / "flow.json") in text
    ws.wait()
    ended = {r["JobId"]: r["JobState"] for r in ws.slurm.ended_jobs()}
    assert ended[out["slurm_job_id"]] == "COMPLETED", ws.worker_logs()
    from softening.stores import get_job_store

    job_store = get_job_store(store)
    job_store.connect()
    docs = [d["output"] for d in job_store.query({"output.@class": "SofteningDoc"})]
    assert len(docs) == 1 and docs[0]["n_frames"] == 3
    assert (Path(out["out"]) / "summary.json").is_file()
