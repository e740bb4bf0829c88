"""Learning curves of a correction: frame choices, the common held-out set, mlearn Si AIMD."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, ROOT, needs

from softening.analysis.learning_curve import (
    curve_statistics,
    direct_select,
    plan_points,
    select_frames,
)
from softening.errors import InputError, ModelError
from softening.makers.learning_curve import LearningCurveMaker, plan_curve, run_learning_curve

SI = DATA / "mlearn" / "Si" / "training.json"


def _synthetic(material: str, n: int, seed: int = 0):
    from pymatgen.core import Lattice, Structure

    from softening.stores import CodeInfo, FrameResult

    rng = np.random.default_rng(seed)
    s = Structure(Lattice.cubic(5.4), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    return [
        FrameResult(
            frame_id=str(i),
            material_id=material,
            formula="Si",
            structure=s,
            energy=float(-10.0 + rng.normal()),
            forces=rng.normal(size=(2, 3)).tolist(),
            code=CodeInfo(name="x"),
        )
        for i in range(n)
    ]


# ---- pure analysis --------------------------------------------------------------------------------


def test_diverse_covers_known_clusters():
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=10.0, size=(4, 16))
    labels = np.repeat(np.arange(4), 10)
    features = centres[labels] + rng.normal(scale=0.1, size=(40, 16))
    order = rng.permutation(40)  # clusters interleaved in the frame order
    features, labels = features[order], labels[order]
    picked = direct_select(features, 4, seed=0)
    assert len(set(picked)) == 4
    assert sorted(labels[picked].tolist()) == [0, 1, 2, 3]  # one frame per cluster
    assert direct_select(features, 4, seed=0) == picked  # the same frames for the same inputs
    with pytest.raises(ValueError, match="features"):
        select_frames("diverse", 2, None, [0.1] * 5)


def test_plan_points_and_statistics():
    points = plan_points(["highest-energy", "random"], [1, 2], repeats=3, seed=5)
    assert [p for p in points if p[0] == "highest-energy"] == [
        ("highest-energy", 1, 0, 5),
        ("highest-energy", 2, 0, 5),
    ]
    assert [p[3] for p in points if p[0] == "random" and p[1] == 1] == [5, 6, 7]
    rows = curve_statistics(
        [
            {"choice": "random", "mode": "scale", "k": 1, "scale": 0.8, "mae": 0.2},
            {"choice": "random", "mode": "scale", "k": 1, "scale": 1.0, "mae": 0.1},
        ],
        keys=("scale", "mae"),
    )
    assert rows == [
        {
            "choice": "random",
            "mode": "scale",
            "k": 1,
            "n_repeats": 2,
            "scale_mean": pytest.approx(0.9),
            "scale_std": pytest.approx(0.1),
            "mae_mean": pytest.approx(0.15),
            "mae_std": pytest.approx(0.05),
        }
    ]


def test_held_out_is_common_and_disjoint():
    refs = _synthetic("A", 30) + _synthetic("B", 3, seed=1)

    def features(frames):
        return np.array([[float(f.energy), float(np.sum(f.forces))] for f in frames])

    plan = plan_curve(
        refs, ["highest-energy", "largest-force", "random", "diverse"], [1, 2, 4], 3, 0, features
    )
    held = set(plan.held_out)
    assert held and all(k.startswith("A/") for k in held)
    # B (3 frames) cannot train on 4 and hold one out: said, and the rest goes on.
    assert len(plan.skipped) == 1 and "B has 3 frame(s)" in plan.skipped[0]
    for choice, k, _, _, train in plan.points:
        assert len(train) == k and len(set(train)) == k, choice
        assert held.isdisjoint(train)
    # Every A frame is either trained on by some point or held out.
    used = set().union(*(p[4] for p in plan.points))
    assert used | held == {f"A/{i}" for i in range(30)}


def test_bad_inputs():
    with pytest.raises(InputError, match="repeats"):
        LearningCurveMaker(repeats=0, choices=["random"])
    with pytest.raises(InputError, match="unknown frame choice nope"):
        LearningCurveMaker(choices=["random", "nope"])
    with pytest.raises(InputError, match="mode"):
        LearningCurveMaker(mode="magic")
    with pytest.raises(InputError, match="no material has frames left.*A has 5 frame"):
        plan_curve(_synthetic("A", 5), ["highest-energy"], [1, 8])
    # Random repeats can use up a small material's frames: said too.
    with pytest.raises(InputError, match="trains on all its 4 frames"):
        plan_curve(_synthetic("A", 4), ["random", "highest-energy", "largest-force"], [3], 4)


def test_features_missing_names_the_family():
    from softening.models.backends import Backend

    class Plain(Backend):
        family = "plain"

        def claims(self, spec, path):
            return False

        def load(self, spec, path, device, dtype, trust=False):
            raise NotImplementedError

        def calculator(self, model):
            raise NotImplementedError

    with pytest.raises(ModelError, match="'plain'"):
        Plain().features(None, [])


# ---- on real AIMD data ----------------------------------------------------------------------------


def _refs(*temperatures: str):
    from softening.datasets import read_frames
    from softening.stores import CodeInfo, FrameResult

    return [
        FrameResult(
            frame_id=f.frame_id,
            material_id=f.material_key,
            formula=f.formula,
            structure=f.structure,
            energy=f.energy,
            forces=f.forces.tolist(),
            code=CodeInfo(name="vasp"),
            region=f.region,
        )
        for f in read_frames(SI)
        if f.group == "AIMD-NVT" and any(f"{t} K" in f.description for t in temperatures)
    ]


@needs(SI)
def test_k1_highest_energy_reproduces_finetune(tmp_path):
    from softening.makers.correction import CorrectionMaker, fit_correction, verify_correction

    refs = _refs("843")
    doc = run_learning_curve(
        refs, LearningCurveMaker(train_frames=[1], choices=["highest-energy"], repeats=1)
    )
    corr = fit_correction(refs, CorrectionMaker(mode="scale", models_dir=str(tmp_path)))
    check = verify_correction(refs, corr)
    (point,) = doc.points
    assert point.train_frames == corr.train_frames
    assert point.factor == corr.factor
    # One point: its held-out frames are finetune's, so the figures are finetune's.
    assert doc.held_out == corr.held_out_frames
    for key in ("scale", "mae", "cmae"):
        assert doc.before[key] == pytest.approx(check.before[key], rel=1e-6)
        assert getattr(point, key) == pytest.approx(check.after[key], rel=1e-6)


@needs(SI)
def test_head_points_are_jobs_and_resume(tmp_path, store):
    from softening.execution.local import flow_outputs, run_flow
    from softening.makers.learning_curve import curve_flow
    from softening.models.finetune import FineTuneSettings

    refs = _refs("843")
    maker = LearningCurveMaker(
        mode="head",
        train_frames=[1],
        choices=["highest-energy"],
        repeats=1,
        finetune=FineTuneSettings(epochs=1),
        models_dir=str(tmp_path / "models"),
    )
    flow = curve_flow(refs, maker)
    assert len(flow.jobs) == 2  # one job per point, then the one that collects them
    run_flow(flow, store, workers=1)
    out = flow_outputs(flow, store)
    doc = out[0] if isinstance(out, list) else out
    (point,) = doc.points
    assert point.model_path and point.factor is None
    assert set(doc.held_out).isdisjoint(point.train_frames)
    assert doc.before["mae"] > 0
    # A rerun loads the point's model instead of training again: the same figures exactly.
    (again,) = run_learning_curve(refs, maker).points
    assert again.model_path == point.model_path and again.mae == pytest.approx(point.mae)


@needs(SI)
def test_scale_curve_on_mlearn_si(tmp_path):
    # Its cost (about one evaluation of the frames) is measured in benchmarks/bench_learning_curve.py.
    out = subprocess.run(
        [
            sys.executable, "-m", "softening.cli", "learning-curve", str(SI), "--select", "AIMD-NVT",
            "--train-frames", "1,2,4", "--repeats", "2",
            "--choice", "highest-energy,random,diverse", "--json", "--out", str(tmp_path / "lc"),
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (m,) = json.loads(out.stdout)["models"].values()
    held = set(m["held_out"]["frames"])
    assert m["held_out"]["n_frames"] == len(held) > 0
    assert len(m["points"]) == 3 + 3 * 2 + 3
    for p in m["points"]:
        assert held.isdisjoint(p["train_frames"]) and len(p["train_frames"]) == p["k"]
    assert {(c["choice"], c["k"]) for c in m["curves"]} == {
        (c, k) for c in ("highest-energy", "random", "diverse") for k in (1, 2, 4)
    }
    assert m["before"]["scale"] < 1  # CHGNet is softened on Si AIMD
    assert (tmp_path / "lc" / "learning-curve.json").is_file()
    assert (tmp_path / "lc" / "learning-curve-CHGNet-0.3.0.png").stat().st_size > 0


def test_unknown_choice_is_one_line_before_anything(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "softening.cli", "learning-curve", str(tmp_path / "x.xyz"),
         "--choice", "best"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stdout.strip().startswith("error:") or out.stderr.strip().startswith("error:")
    assert "unknown frame choice best" in out.stdout + out.stderr


@needs(SI)
def test_head_curve_is_submitted_as_one_job_per_point(tmp_path):
    """`learning-curve --submit` puts the curve's flow on the LaunchPad (mongomock file): one
    `umlip` job per fine-tune point and the one that collects them; nothing trains here."""
    import os

    (tmp_path / "lp.yaml").write_text("host: localhost\nname: softening_test\n")
    (tmp_path / "mock.json").write_text("{}")
    env = {
        **os.environ,
        "MONGOMOCK_SERVERSTORE_FILE": str(tmp_path / "mock.json"),
        "SOFTENING_LAUNCHPAD": str(tmp_path / "lp.yaml"),
        "SOFTENING_STORE": str(tmp_path / "db"),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        "learning-curve", SI, "--select", "AIMD-NVT", "--select", "843 K", "--mode", "head",
        "--epochs", "1", "--train-frames", "1,2", "--choice", "highest-energy,random",
        "--repeats", "2", "--submit", "--json",
    ]  # fmt: skip
    cli = [sys.executable, "-m", "softening.cli"]
    res = subprocess.run(
        [*cli, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    points = 2 + 2 * 2  # highest-energy once per K, random twice per K
    assert out["n_jobs"] == points + 1 and out["categories"]["umlip"] == points + 1
    assert out["store"] == str(tmp_path / "db")
    assert not (tmp_path / "db" / "models").exists()  # submitted, not trained
    res = subprocess.run(
        [*cli, "status", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    (flow,) = json.loads(res.stdout)["flows"]
    assert flow["flow_id"] == out["flow_id"] and len(flow["jobs"]) == points + 1
