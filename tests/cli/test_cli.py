"""The command line: evaluate on the paper's WBM frames, the JSON contract, and error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, WBM_XYZ, needs

CLI = [sys.executable, "-m", "softening.cli"]


def _cli(*args, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=600,
    )


@needs(WBM_XYZ)
def test_evaluate_wbm_json_matches_independent_numpy(tmp_path):
    res = _cli("evaluate", WBM_XYZ, "--model", "chgnet", "--json", "--store", tmp_path / "db")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    model = out["models"]["CHGNet-0.3.0"]
    pooled = model["pooled"]
    assert set(pooled) >= {"scale", "scale_ci", "mae", "cmae", "n_frames", "fraction_softened"}
    assert pooled["n_frames"] == 21

    # Independent check: CHGNet's own ASE calculator, frame by frame, and numpy.
    from ase.io import read
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    calc = CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", verbose=False), use_device="cpu")
    f_ml, f_dft = [], []
    for atoms in read(WBM_XYZ, index=":"):
        f_dft.append(np.array(atoms.arrays["REF_forces"]))
        atoms.calc = calc
        f_ml.append(atoms.get_forces())
    f_ml, f_dft = np.concatenate(f_ml), np.concatenate(f_dft)
    s = np.sum(f_ml * f_dft) / np.sum(f_dft**2)
    assert pooled["scale"] == pytest.approx(s, abs=2e-4)
    assert 0.8 < s < 0.92  # the paper-era outside check gives about 0.86
    assert pooled["mae"] == pytest.approx(np.mean(np.abs(f_ml - f_dft)), abs=2e-4)
    assert pooled["cmae"] == pytest.approx(np.mean(np.abs(f_ml / s - f_dft)), abs=2e-4)
    assert pooled["scale_ci"][0] < pooled["scale"] < pooled["scale_ci"][1]

    mats = model["materials"]
    assert len(mats) == 14  # 14 compositions, grouped by reduced formula
    assert sum(m["n_frames"] for m in mats) == 21
    assert pooled["fraction_softened"] == pytest.approx(np.mean([m["scale"] < 1 for m in mats]))
    for m in mats:
        assert {"material_id", "formula", "scale", "scale_ci", "mae", "cmae", "n_frames"} <= set(m)


def _assert_one_line_error(res, *words):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error:"), err
    for w in words:
        assert w in err, err


def test_error_unreadable_file(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not a crystal\n")
    _assert_one_line_error(_cli("run", bad, "--reference", "emt"), "bad.cif")


def test_error_missing_file(tmp_path):
    _assert_one_line_error(_cli("evaluate", tmp_path / "nope.extxyz"), "nope.extxyz")


def test_error_element_the_model_lacks(tmp_path):
    from pymatgen.core import Lattice, Structure

    p = tmp_path / "Am.cif"
    Structure(Lattice.cubic(3.5), ["Am"], [[0, 0, 0]]).to(filename=str(p))
    _assert_one_line_error(_cli("run", p, "--reference", "emt"), "Am", "CHGNet")


def test_error_unknown_model(tmp_path):
    _assert_one_line_error(
        _cli("run", ROOT / "examples" / "Si.cif", "--model", "no-such-model"), "no-such-model"
    )


@pytest.mark.parametrize(
    ("args", "word"), [(["--temperature", "-3"], "temperature"), (["--steps", "0"], "steps")]
)
def test_error_out_of_range(args, word):
    _assert_one_line_error(_cli("run", ROOT / "examples" / "Si.cif", *args), word)


def test_error_emt_elements():
    _assert_one_line_error(_cli("run", ROOT / "examples" / "Si.cif", "--reference", "emt"), "Si")


def test_error_gpaw_missing(tmp_path):
    # A sitecustomize that hides gpaw, as on a machine where it was never installed.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['gpaw'] = None\n"
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n == 'gpaw' else _f(n, *a)\n"
    )
    res = _cli("run", ROOT / "examples" / "Si.cif", env_extra={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    _assert_one_line_error(res, "GPAW")


def test_run_emt_end_to_end(tmp_path):
    """`softening run` with EMT references writes the summary, the plot and the store; rerun reuses."""
    from pymatgen.core import Lattice, Structure

    p = tmp_path / "Cu.cif"
    (Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)).to(
        filename=str(p)
    )
    args = [
        "run",
        p,
        "--reference",
        "emt",
        "--steps",
        "40",
        "--stride",
        "2",
        "--frames",
        "4",
        "--strained",
        "1",
        "--store",
        tmp_path / "db",
        "--out",
        tmp_path / "out",
        "--json",
    ]
    res = _cli(*args)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    (mat,) = summary["materials"]
    from softening.datasets import read_structure
    from softening.datasets.checks import structure_digest

    # Material id: reduced formula plus a short hash of the structure read from the file.
    assert mat["material_id"] == f"Cu-{structure_digest(read_structure(p))}"
    assert mat["n_frames"] == 4 and mat["model"] == "CHGNet-0.3.0"
    assert (tmp_path / "out" / "parity.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    res2 = _cli(*args)
    assert json.loads(res2.stdout)["materials"][0]["scale"] == pytest.approx(mat["scale"])
    from softening.stores import get_job_store

    store = get_job_store(tmp_path / "db")
    store.connect()
    reused = [d["output"]["reused"] for d in store.query({"output.@class": "FrameResult"})]
    assert sorted(reused) == [False] * 4 + [True] * 4  # the rerun reused all four references
