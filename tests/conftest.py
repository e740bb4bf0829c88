"""Shared fixtures: paths to ../shared data, offline/threads environment, temporary stores."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
MODELS = SHARED / "models"
WBM_XYZ = DATA / "wbm_high_energy_subset" / "wbm_subset_21frames.extxyz"

# No network on these machines: model hubs must never be tried; one thread is fastest on 2 cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """Each test gets default settings and a store in its own temporary folder."""
    from softening.settings import get_settings

    for key in list(os.environ):
        if key.startswith("SOFTENING_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SOFTENING_CONFIG", str(tmp_path / "no-such-settings.yaml"))
    monkeypatch.setenv("SOFTENING_STORE", str(tmp_path / "store"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def store(tmp_path):
    """A fresh embedded (SQLite) JobStore."""
    from softening.stores import get_job_store

    return get_job_store(tmp_path / "db")


def in_ci() -> bool:
    """True on CI (``CI=true``), where ../shared is always beside the clone."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(path: Path) -> None:
    """Inside a test: skip when a shared file is absent, or fail on CI, saying which.

    On CI a missing file means a broken checkout, and a silent skip would let a green run hide
    the tests that read the real data.
    """
    if path.exists():
        return
    message = f"{path} is absent (../shared not beside)"
    if in_ci():
        pytest.fail(f"{message}; on CI it must be there", pytrace=False)
    pytest.skip(message)


def needs(path: Path):
    """Decorate a test that reads a shared file: skipped when it is absent (failed on CI)."""

    def decorate(test):
        if path.exists():
            return test
        if in_ci():

            @functools.wraps(test)  # keeps the signature, so fixtures still resolve
            def failing(*args, **kwargs):
                require(path)

            return failing
        return pytest.mark.skip(reason=f"{path} is absent (../shared not beside)")(test)

    return decorate


@pytest.fixture(scope="session")
def tiny_mace(tmp_path_factory) -> Path:
    """A tiny MACE model trained in seconds with mace's own training entry point on mlearn Si.

    MACE-MP-0 weights cannot be downloaded here; the tiny model is saved the same way (a whole
    pickled module) and loads through the same path a user's MACE-MP-0 file takes.
    """
    from ase.io import write

    from softening.datasets import read_frames

    src = DATA / "mlearn" / "Si" / "training.json"
    require(src)
    work = tmp_path_factory.mktemp("mace")
    frames = read_frames(src)[:20]
    atoms = []
    for f in frames:
        a = f.structure.to_ase_atoms()
        a.info["REF_energy"] = f.energy
        a.arrays["REF_forces"] = f.forces
        atoms.append(a)
    write(work / "train.extxyz", atoms[:16])
    write(work / "valid.extxyz", atoms[16:])
    args = (
        "--name tiny --train_file train.extxyz --valid_file valid.extxyz --energy_key REF_energy "
        "--forces_key REF_forces --model MACE --num_interactions 2 --num_channels 8 --max_L 0 "
        "--r_max 4.0 --max_ell 1 --correlation 2 --num_radial_basis 4 --E0s average "
        "--batch_size 4 --valid_batch_size 4 --max_num_epochs 2 --device cpu "
        "--default_dtype float64 --seed 0 --eval_interval 1"
    ).split()
    res = subprocess.run(
        [sys.executable, "-m", "mace.cli.run_train", *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return work / "tiny.model"


#: The `softening` command, run in a fresh interpreter as a user would.
CLI = [sys.executable, "-c", "from softening.cli import app; app()"]


def run_cli(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """``softening ARGS`` in a subprocess (one torch thread), from the project root."""
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def one_error_line(res: subprocess.CompletedProcess, *words: str) -> None:
    """Assert that a command failed with exactly one ``error:`` line holding ``words``."""
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in res.stderr


#: Tests measured over ~30 s on 2 cores (``pytest --durations=40``), besides those marked ``slow``
#: in their modules: marked ``slow`` here too, so ``-m "not slow"`` is the quick subset while
#: developing. Update when a test grows slow.
SLOW = {
    "tests/makers/test_phonons.py::test_run_finetune_then_phonons_of_raw_and_corrected_model",
    "tests/makers/test_mixing.py::test_mixing_cu_ag_au_matches_plain_xml_and_chgnet_calculator",
    "tests/execution/test_local_executor.py::test_run_resumes_after_the_process_is_killed",
    "tests/hpc/test_slurm.py::test_submit_property_flow_to_the_launchpad",
    "tests/makers/test_migration.py::test_migration_interstitial_h_in_pd_emt_matches_plain_ase",
    "tests/models/test_factory.py::test_pickled_payloads_never_run_and_bad_files_are_one_line",
    "tests/makers/test_evaluate.py::test_stream_gives_the_frames_read_frames_gives",
    "tests/makers/test_migration.py::test_migration_bad_input",
    "tests/cli/test_cli.py::test_run_emt_end_to_end",
    "tests/makers/test_mixing.py::test_properties_mixing_emt_matches_plain_ase",
    "tests/makers/test_point_defects.py::test_defect_bad_input",
    "tests/workflows/test_learning_curve.py::test_scale_curve_on_mlearn_si",
    "tests/makers/test_point_defects.py::test_defects_nial_emt_match_plain_pymatgen_and_ase",
    "tests/makers/test_vasp.py::test_flow_with_vasp_references_and_resume_after_a_crash",
    "tests/makers/test_vasp.py::test_flow_with_vasp_references_in_parallel_workers",
    "tests/workflows/test_html_report.py::test_20000_results_open_and_filter",
    "tests/makers/test_correction.py::test_full_finetune_beats_one_frame_and_reloads",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Mark the measured slow tests, and run the SLURM tests on one worker, long tests first.

    Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``) the private SLURM cluster
    is one per worker process and its node runs one job at a time, so its tests share one worker
    (``xdist_group``). Starting the longest work first keeps both cores busy to the end: a
    30-minute suite on two workers otherwise ends waiting for one long test started last.
    """
    for item in items:
        if item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
        if item.nodeid.startswith("tests/hpc/test_slurm.py"):
            item.add_marker(pytest.mark.xdist_group("slurm"))

    def rank(item) -> int:
        if item.nodeid.startswith("tests/hpc/test_slurm.py"):
            return 0  # one unit of several minutes
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: the collection order within each rank
