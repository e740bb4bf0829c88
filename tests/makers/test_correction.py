"""Linear correction and fine-tuning, verified on held-out frames (mlearn Si AIMD)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, ROOT, needs

from softening.analysis.correction import (
    choose_training_frames,
    correction_factor,
    train_scalar_layer,
)
from softening.analysis.metrics import scale_through_origin
from softening.errors import InputError
from softening.makers.correction import CorrectionMaker, fit_correction, verify_correction
from softening.models.finetune import FineTuneSettings

SI = DATA / "mlearn" / "Si" / "training.json"


def _refs(*temperatures: str):
    from softening.datasets import read_frames
    from softening.stores import CodeInfo, FrameResult

    frames = [
        f
        for f in read_frames(SI)
        if f.group == "AIMD-NVT" and any(f"{t} K" in f.description for t in temperatures)
    ]
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
        for f in frames
    ]


# ---- pure analysis --------------------------------------------------------------------------------


def test_correction_factor_variants():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(50, 3))
    ml = 0.6 * f + rng.normal(scale=0.05, size=f.shape)
    c_ls = correction_factor(ml, f, "lstsq")
    c_inv = correction_factor(ml, f, "inverse-scale")
    assert scale_through_origin(c_inv * ml, f) == pytest.approx(1.0)
    # lstsq leaves the fitted slope at the uncentred r^2 (< 1), not at 1.
    r2 = np.sum(ml * f) ** 2 / (np.sum(ml**2) * np.sum(f**2))
    assert scale_through_origin(c_ls * ml, f) == pytest.approx(r2)
    with pytest.raises(ValueError, match="unknown correction"):
        correction_factor(ml, f, "nope")


def test_trained_scalar_layer_converges_to_the_closed_form():
    rng = np.random.default_rng(1)
    f_dft = [rng.normal(size=(8, 3)) for _ in range(2)]
    f_ml = [0.7 * f + rng.normal(scale=0.02, size=f.shape) for f in f_dft]
    e_dft, e_ml = [-40.0, -39.0], [-30.0, -29.3]
    c = train_scalar_layer(e_ml, f_ml, e_dft, f_dft, [8, 8])
    assert c == pytest.approx(correction_factor(f_ml, f_dft), rel=2e-3)


def test_choose_training_frames():
    e = [-5.0, -4.0, -4.5, -3.9]
    f = [0.1, 0.2, 0.9, 0.3]
    assert choose_training_frames(e, f, 1) == [3]
    assert choose_training_frames(e, f, 2, "largest-force") == [2, 3]
    assert choose_training_frames(e, f, 2, "random", seed=1) == choose_training_frames(
        e, f, 2, "random", seed=1
    )
    with pytest.raises(ValueError, match="held out"):
        choose_training_frames(e, f, 4)


# ---- on real AIMD data ----------------------------------------------------------------------------


def _independent_heldout(refs, train_id: str):
    """Independent recomputation: CHGNet's own calculator and numpy, no package code."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    calc = CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", verbose=False), use_device="cpu")

    def forces(r):
        a = r.structure.to_ase_atoms()
        a.calc = calc
        return a.get_forces()

    train = next(r for r in refs if f"{r.material_id}/{r.frame_id}" == train_id)
    f_tr, d_tr = forces(train), np.array(train.forces)
    c = np.sum(f_tr * d_tr) / np.sum(f_tr**2)
    held = [r for r in refs if r is not train]
    ml = np.concatenate([forces(r) for r in held])
    dft = np.concatenate([np.array(r.forces) for r in held])
    s = lambda x: np.sum(x * dft) / np.sum(dft**2)  # noqa: E731
    return c, s(ml), np.mean(np.abs(ml - dft)), s(c * ml), np.mean(np.abs(c * ml - dft))


@needs(SI)
def test_one_frame_scale_correction_843K(tmp_path):
    refs = _refs("843")
    corr = fit_correction(refs, CorrectionMaker(mode="scale", models_dir=str(tmp_path)))
    assert len(corr.train_frames) == 1 and len(corr.held_out_frames) == len(refs) - 1
    # The training frame is the highest in energy per atom.
    e = {f"{r.material_id}/{r.frame_id}": r.energy / len(r.structure) for r in refs}
    assert corr.train_frames == [max(e, key=e.get)]
    assert corr.trained_factor == pytest.approx(corr.factor, rel=5e-3)  # the paper's layer agrees
    doc = verify_correction(refs, corr)
    c, s0, mae0, s1, mae1 = _independent_heldout(refs, corr.train_frames[0])
    assert corr.factor == pytest.approx(c, rel=1e-4)
    assert doc.before["scale"] == pytest.approx(s0, abs=1e-4)
    assert doc.after["scale"] == pytest.approx(s1, abs=1e-4)
    assert doc.after["mae"] == pytest.approx(mae1, abs=1e-4)
    # The paper's claim, on frames never trained on: softening at least halved, MAE at least halved.
    assert abs(1 - doc.after["scale"]) <= 0.5 * abs(1 - doc.before["scale"])
    assert doc.after["mae"] <= 0.5 * doc.before["mae"]
    assert not doc.warnings


@needs(SI)
def test_full_finetune_beats_one_frame_and_reloads(tmp_path):
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    refs = _refs("843")
    one = fit_correction(refs, CorrectionMaker(mode="scale", models_dir=str(tmp_path)))
    full = fit_correction(
        refs,
        CorrectionMaker(
            mode="full",
            train_frames=10,
            models_dir=str(tmp_path),
            finetune=FineTuneSettings(epochs=5),
        ),
    )
    assert set(full.held_out_frames).isdisjoint(full.train_frames)
    assert set(one.train_frames) <= set(full.train_frames)
    held = [r for r in refs if f"{r.material_id}/{r.frame_id}" in set(full.held_out_frames)]
    dft = np.concatenate([np.array(r.forces) for r in held])

    def mae(spec):
        preds = evaluate_structures(load_model(spec), [r.structure for r in held])
        return float(np.mean(np.abs(np.concatenate([p.forces for p in preds]) - dft)))

    # On the same held-out frames, the 10-frame fine-tune is better than the one-frame correction.
    assert mae(full.model.path) < mae(one.model.path) < mae("chgnet")

    # The saved model reloads by path and by id with the forces it had right after training.
    from chgnet.model import CHGNet

    trained = CHGNet.from_file(str(tmp_path / full.model.name / "model.pth.tar"))
    reloaded = load_model(full.model.path)
    assert reloaded.weights_sha256 == full.model.weights_sha256
    s = held[0].structure
    f_trained = trained.predict_structure(s, task="ef")["f"]
    f_reloaded = evaluate_structures(reloaded, [s])[0].forces
    assert np.abs(f_trained - f_reloaded).max() < 1e-4


@needs(SI)
def test_mixed_temperatures_warn():
    refs = _refs("300", "843", "1518", "2530", "3374")
    corr = fit_correction(refs, CorrectionMaker(mode="scale", cross_check=False))
    doc = verify_correction(refs, corr)
    assert len(doc.groups) == 5
    assert doc.warnings and any(g.worse for g in doc.groups)
    assert doc.after["mae"] > doc.before["mae"]  # one frame's correction does not carry over


def test_bad_inputs(tmp_path):
    from pymatgen.core import Lattice, Structure

    from softening.stores import CodeInfo, FrameResult

    s = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    ok = dict(material_id="Cu", formula="Cu", structure=s, energy=-3.0, code=CodeInfo(name="x"))
    refs = [FrameResult(frame_id="0", forces=[[0.1, 0, 0]], **ok)]
    with pytest.raises(InputError, match="too few"):
        fit_correction(refs, CorrectionMaker(models_dir=str(tmp_path)))
    nan = [FrameResult(frame_id=str(i), forces=[[np.nan, 0, 0]], **ok) for i in range(3)]
    with pytest.raises(InputError, match="NaN"):
        fit_correction(nan, CorrectionMaker(models_dir=str(tmp_path)))
    with pytest.raises(InputError, match="mode"):
        CorrectionMaker(mode="magic")


def test_scaled_calculator_in_md_and_atomate2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # atomate2's force-field jobs write files into the working folder
    from atomate2.forcefields.jobs import ForceFieldStaticMaker
    from jobflow import run_locally
    from pymatgen.core import Lattice, Structure

    from softening.models import load_model
    from softening.models.corrected import ScaledCalculator

    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    s.perturb(0.1)
    base = s.to_ase_atoms()
    base.calc = load_model("chgnet").calculator()
    job = ForceFieldStaticMaker(
        force_field_name={"@module": "softening.models.corrected", "@callable": "ScaledCalculator"},
        calculator_kwargs={"model": "chgnet", "factor": 1.5},
    ).make(s)
    out = run_locally(job, log=False, ensure_success=True)[job.uuid][1].output
    assert np.allclose(out.output.forces, 1.5 * base.get_forces(), atol=1e-5)
    assert out.output.energy == pytest.approx(1.5 * base.get_potential_energy(), abs=1e-4)

    from softening.makers.md import MDSamplingMaker, run_md

    traj = run_md(
        s, ScaledCalculator(model="chgnet", factor=1.2), MDSamplingMaker(steps=4, stride=2)
    )
    assert len(traj.steps) == 2


@needs(SI)
def test_cli_finetune_json(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "softening.cli",
            "finetune",
            str(SI),
            "--select",
            "AIMD-NVT",
            "--select",
            "843 K",
            "--mode",
            "scale",
            "--json",
            "--store",
            str(tmp_path / "db"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"before", "after", "groups", "train_frames", "model_path"} <= set(out)
    assert set(out["before"]) >= {"scale", "mae", "cmae"}
    assert out["after"]["mae"] < out["before"]["mae"]
    assert out["model_path"].startswith(str(tmp_path / "db" / "models"))
    # Too few frames to hold any out: a one-line error.
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "softening.cli",
            "finetune",
            str(SI),
            "--select",
            "843 K",
            "--train-frames",
            "40",
            "--store",
            str(tmp_path / "db"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 1 and res.stderr.startswith("error:") and "hold any out" in res.stderr


M3GNET_DIR = DATA.parent / "models" / "M3GNet-MP-2021.2.8-PES"


@needs(SI)
@needs(M3GNET_DIR)
def test_matgl_head_finetune_improves_and_reloads(tmp_path):
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    refs = _refs("843")
    corr = fit_correction(
        refs,
        CorrectionMaker(
            model=str(M3GNET_DIR),
            mode="head",
            train_frames=10,
            models_dir=str(tmp_path),
            finetune=FineTuneSettings(epochs=2),
        ),
    )
    doc = verify_correction(refs, corr)
    assert doc.after["mae"] < doc.before["mae"]
    reloaded = load_model(corr.model.path)
    assert reloaded.family == "matgl" and reloaded.name == corr.model.name
    again = evaluate_structures(reloaded, [refs[0].structure])[0]
    assert again.stress is not None and np.isfinite(again.forces).all()


@needs(SI)
def test_mace_finetune_runs(tiny_mace, tmp_path, monkeypatch):
    from softening.models import load_model
    from softening.models.factory import _load_cached
    from softening.settings import get_settings

    refs = _refs("843")
    # The tiny foundation model is a whole pickled file from mace's trainer: explicit opt-in.
    monkeypatch.setenv("SOFTENING_TRUST_MODEL_FILES", "1")
    get_settings.cache_clear()
    corr = fit_correction(
        refs,
        CorrectionMaker(
            model=str(tiny_mace),
            mode="full",
            train_frames=6,
            models_dir=str(tmp_path),
            finetune=FineTuneSettings(epochs=1),
        ),
    )
    # The fine-tuned model softening wrote loads without the opt-in (its hash is recorded).
    monkeypatch.delenv("SOFTENING_TRUST_MODEL_FILES")
    get_settings.cache_clear()
    _load_cached.cache_clear()
    m = load_model(corr.model.path)
    assert m.family == "mace" and (tmp_path / corr.model.name / "model.model").exists()
    monkeypatch.setenv("SOFTENING_TRUST_MODEL_FILES", "1")
    get_settings.cache_clear()
    assert set(corr.held_out_frames).isdisjoint(corr.train_frames)
    # The scale mode works for MACE too: its batched path applies c exactly once.
    scaled = fit_correction(refs, CorrectionMaker(model=str(tiny_mace), models_dir=str(tmp_path)))
    doc = verify_correction(refs, scaled)
    assert doc.after["scale"] == pytest.approx(scaled.factor * doc.before["scale"], rel=1e-6)


@needs(SI)
def test_diverse_frame_choice_picks_one_frame_per_feature_cluster(tmp_path):
    from softening.analysis.learning_curve import direct_select
    from softening.models import load_model

    refs = _refs("843")
    corr = fit_correction(
        refs, CorrectionMaker(frame_choice="diverse", train_frames=2, models_dir=str(tmp_path))
    )
    # The same frames as DIRECT on CHGNet's own structure features, computed independently.
    model = load_model("chgnet")
    feats = model.backend.features(model, [r.structure for r in refs])
    keys = [f"{r.material_id}/{r.frame_id}" for r in refs]
    assert corr.train_frames == [keys[i] for i in direct_select(feats, 2, seed=0)]
    assert corr.frame_choice == "diverse" and len(corr.held_out_frames) == len(refs) - 2
    with pytest.raises(InputError, match="diverse"):
        CorrectionMaker(frame_choice="smart")
