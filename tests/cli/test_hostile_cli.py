"""Hostile use of the command line (issue 27, third round): killed parents, bad option values,
typos in the settings file, --out naming a file, and a dead worker charged to the wrong job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import DATA, ROOT, WBM_XYZ, needs, one_error_line, run_cli
from jobflow import Flow, job

# ---- workers end with their parent -----------------------------------------------------------------

#: Jobs and graph builders that note their process id, then idle: what a worker looks like when its
#: parent is killed in the middle of a run.
_NAPPERS = """
import os
import time
from pathlib import Path

from jobflow import job


def _note_pid():
    folder = Path(os.environ["HOSTILE_PIDS"])
    folder.mkdir(exist_ok=True)
    (folder / str(os.getpid())).write_text("")


@job
def nap(label):
    _note_pid()
    time.sleep(300)


def slow_build(structure):
    _note_pid()
    time.sleep(300)
"""

#: The parent: the local executor of `run` (spawned workers) or the graph builders of `evaluate`
#: (forked workers), two workers each.
_PARENTS = {
    "run_flow": """
        from jobflow import Flow
        from nappers import nap
        from softening.execution.local import run_flow
        from softening.stores import get_job_store

        run_flow(Flow([nap("a"), nap("b")]), get_job_store(sys.argv[1] + "/db"), workers=2)
    """,
    "graph_workers": """
        from nappers import slow_build
        from softening.models.evaluate import iter_graphs

        next(iter_graphs(slow_build, list(range(8)), 2))
    """,
}


def _state(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a process from /proc, ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("pool", sorted(_PARENTS))
def test_workers_end_when_their_parent_is_killed(tmp_path, pool):
    (tmp_path / "nappers.py").write_text(_NAPPERS)
    script = "import sys\nsys.path.insert(0, sys.argv[1])\n" + textwrap.dedent(_PARENTS[pool])
    pids = tmp_path / "pids"
    env = {**os.environ, "HOSTILE_PIDS": str(pids), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2:
            assert parent.poll() is None, parent.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
            workers = [int(p.name) for p in pids.iterdir()] if pids.is_dir() else []
        assert all(_state(w)[1] == parent.pid for w in workers)  # the parent's own workers
        parent.kill()  # kill -9: no chance to shut the pool down
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# ---- a dead worker is charged to its own job ---------------------------------------------------


@job
def die_when_alone(flag: str, marker: str, value):
    """On the pool with :func:`die_flagged` (before its death): go down with it. Afterwards,
    alone: kill its own worker once, then return ``value``."""
    if not os.path.exists(flag):
        deadline = time.monotonic() + 60
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The pool's break ends this worker. CPython (3.11) may miss the other worker's death
        # (a worker spawned after the manager thread's wake-up is not watched) until another
        # event: this worker's own death, which makes it a loss shared by both jobs all the same.
        time.sleep(5)
        os.kill(os.getpid(), signal.SIGKILL)
    elif not os.path.exists(marker):
        Path(marker).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


@job
def die_flagged(flag: str):
    Path(flag).write_text("dying")
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_death_is_not_charged_to_a_job_that_shared_the_pool(store, tmp_path):
    """The doomed job's death breaks the pool while the other job waits (or has not started):
    the other job was not at fault; it dies once later on its own and must still be retried,
    not failed. (Before: charged for the shared loss, its own first death was its second.)"""
    from softening.execution.local import run_flow

    flag, marker = tmp_path / "flag", tmp_path / "marker"
    survivor = die_when_alone(str(flag), str(marker), 42)
    doomed = die_flagged(str(flag))
    result = run_flow(Flow([survivor, doomed]), store, workers=2)
    assert marker.exists()  # the survivor's own death happened, and was retried
    assert store.get_output(survivor.uuid) == 42
    assert result.failed == [
        "die_flagged: its worker process died twice (killed, or out of memory)"
    ]


# ---- option values refused before anything runs ---------------------------------------------------


def _cu_cif(tmp_path: Path) -> Path:
    from pymatgen.core import Lattice, Structure

    path = tmp_path / "Cu.cif"
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]).to(
        filename=str(path)
    )
    return path


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--strained", "-1", ["--strained", ">= 0", "-1"]),
        ("--seed", "-1", ["--seed", "between 0 and", "-1"]),
        ("--seed", str(2**32), ["--seed", str(2**32)]),
    ],
)
def test_negative_strained_or_seed_is_refused_before_the_md(tmp_path, option, value, words):
    db = tmp_path / "db"
    res = run_cli(
        "run", _cu_cif(tmp_path), "--reference", "emt", "--steps", "40", "--stride", "4",
        "--frames", "4", "--store", db, "--out", tmp_path / "out", option, value,
    )  # fmt: skip
    one_error_line(res, *words)
    assert not db.exists() and not (tmp_path / "out").exists()  # nothing ran


def test_seed_is_checked_on_every_command_that_takes_it(tmp_path):
    res = run_cli("evaluate", tmp_path / "frames.extxyz", "--seed", "-5")
    one_error_line(res, "--seed", "-5")


# ---- the settings file ------------------------------------------------------------------------------


def test_unknown_setting_is_refused_with_the_nearest_name(tmp_path, monkeypatch):
    from softening.settings import SettingsError, get_settings

    cfg = tmp_path / "settings.yaml"
    monkeypatch.setenv("SOFTENING_CONFIG", str(cfg))
    for text, key, hint in [
        ("storre: ./db\n", "storre", "did you mean 'store'?"),
        ("SOFTENING_TORCH_THREDS: 2\n", "SOFTENING_TORCH_THREDS", "did you mean 'torch_threads'?"),
        ("seed: 1\nzzqx: 3\n", "zzqx", "graph_workers"),  # nothing close: the settings listed
    ]:
        cfg.write_text(text)
        get_settings.cache_clear()
        with pytest.raises(SettingsError) as info:
            get_settings()
        msg = str(info.value)
        assert msg.startswith(f"unknown setting '{key}' in {cfg}; "), msg
        assert hint in msg and "\n" not in msg
    cfg.write_text("store: ./db\nSOFTENING_SEED: 3\n")  # both spellings of known settings
    get_settings.cache_clear()
    assert get_settings().seed == 3


def test_unknown_setting_is_one_cli_error_line(tmp_path, monkeypatch):
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("storre: ./db\n")
    monkeypatch.setenv("SOFTENING_CONFIG", str(cfg))
    one_error_line(run_cli("query"), "unknown setting 'storre'", str(cfg), "'store'")


# ---- --out naming a file ----------------------------------------------------------------------------


def _out_commands(tmp_path: Path) -> dict[str, list]:
    return {
        "report": ["report"],
        "evaluate": ["evaluate", WBM_XYZ],
        "phonons": ["phonons", DATA / "phonopy_examples" / "Si"],
        "run": ["run", _cu_cif(tmp_path), *"--reference emt --steps 40 --stride 4".split()],
        "learning-curve": ["learning-curve", WBM_XYZ],
    }


@needs(WBM_XYZ)
@pytest.mark.parametrize("command", ["report", "evaluate", "phonons", "run", "learning-curve"])
def test_out_naming_a_file_is_refused_before_anything_runs(tmp_path, command):
    args = _out_commands(tmp_path)[command]
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder\n")
    db = tmp_path / "db"
    one_error_line(run_cli(*args, "--store", db, "--out", taken), f"--out {taken} is a file")
    assert not db.exists() and taken.read_text() == "not a folder\n"


def test_out_inside_a_file_is_refused(tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("")
    res = run_cli("report", "--store", tmp_path / "db", "--out", taken / "figures")
    one_error_line(res, f"{taken} is a file, not a folder")
