"""``softening evaluate`` on every core: frames split across worker processes give the results of
one process (order, forces, energies, scales), and a failing worker is one error, not a hang."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import MODELS, WBM_XYZ, needs, one_error_line, run_cli

from softening.errors import InputError, ModelError

M3GNET_DIR = MODELS / "M3GNet-MP-2021.2.8-PES"
MODELS_UNDER_TEST = ["chgnet", str(M3GNET_DIR)]


@pytest.fixture(scope="module")
def frames():
    from softening.datasets import read_frames

    return read_frames(WBM_XYZ)


def _evaluate(frames, workers: int, **kwargs):
    from softening.makers.evaluate import evaluate_frames

    # Small chunks: several chunks in flight, so the workers' look-ahead is exercised too.
    return evaluate_frames(
        MODELS_UNDER_TEST, frames, n_bootstrap=50, workers=workers, chunk_frames=6, **kwargs
    )


@pytest.fixture(scope="module")
def one_process(frames):
    return _evaluate(frames, workers=1)


@needs(WBM_XYZ)
@needs(M3GNET_DIR)
def test_frame_workers_give_each_frame_what_one_process_gives(frames):
    """Per frame and per model, in the frames' order: energies, forces and stresses as evaluated
    here, to float32 round-off (batches are cut differently)."""
    from softening.models import load_model
    from softening.models.evaluate import FrameWorkers, evaluate_structures

    loaded = [load_model(spec) for spec in MODELS_UNDER_TEST]
    structures = [f.structure for f in frames]
    with FrameWorkers(loaded, workers=2) as pool:
        pending = [pool.submit(i, structures) for i in range(len(loaded))]
        parallel = [result() for result in pending]
    for model, preds in zip(loaded, parallel, strict=True):
        serial = evaluate_structures(model, structures, graph_workers=0)
        assert len(preds) == len(serial) == len(frames)
        for s, p, frame in zip(serial, preds, frames, strict=True):
            assert p.forces.shape == (len(frame.structure), 3)
            np.testing.assert_allclose(p.forces, s.forces, rtol=0, atol=5e-6)  # a few ulps
            assert p.energy == pytest.approx(s.energy, rel=1e-6, abs=1e-5)
            np.testing.assert_allclose(p.stress, s.stress, rtol=0, atol=1e-6)


@needs(WBM_XYZ)
@needs(M3GNET_DIR)
def test_two_workers_give_the_results_of_one_process(frames, one_process):
    two = _evaluate(frames, workers=2)
    assert list(two) == list(one_process)
    for name, a in one_process.items():
        b = two[name]
        assert b.n_frames == a.n_frames == len(frames)
        assert [d.material_id for d in b.materials] == [d.material_id for d in a.materials]
        for da, db in zip(a.materials, b.materials, strict=True):
            assert db.scale == pytest.approx(da.scale, abs=1e-6)
            assert db.mae == pytest.approx(da.mae, abs=1e-6)
            assert db.energy_mae_per_atom == pytest.approx(da.energy_mae_per_atom, abs=1e-6)
        assert b.pooled.scale == pytest.approx(a.pooled.scale, abs=1e-6)
        # Same frames in the same order: the reference forces are identical, the model's agree.
        assert np.array_equal(b.pooled_forces[0], a.pooled_forces[0])
        np.testing.assert_allclose(b.pooled_forces[1], a.pooled_forces[1], rtol=0, atol=5e-6)


@needs(WBM_XYZ)
@needs(M3GNET_DIR)
def test_a_worker_that_dies_is_one_error_not_a_hang(frames, monkeypatch):
    import softening.models.evaluate as models_evaluate

    # Forked workers inherit the patch: each one evaluating a task is killed outright.
    monkeypatch.setattr(models_evaluate, "evaluate_structures", lambda *a, **k: os._exit(9))
    with pytest.raises(ModelError, match="worker process died"):
        _evaluate(frames, workers=2)


@needs(WBM_XYZ)
@needs(M3GNET_DIR)
def test_an_error_in_a_worker_is_raised_here(frames, monkeypatch):
    import softening.models.evaluate as models_evaluate

    def fail(*args, **kwargs):
        raise ModelError("the network refused this frame")

    monkeypatch.setattr(models_evaluate, "evaluate_structures", fail)
    with pytest.raises(ModelError, match="refused this frame"):
        _evaluate(frames, workers=2)


class _Model:
    def __init__(self, device: str = "cpu") -> None:
        self.device = device


def test_frame_workers_follow_the_allocation(monkeypatch):
    from softening.models.evaluate import resolve_frame_workers
    from softening.settings import get_settings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.setattr("softening.processes.available_memory_gb", lambda: 100.0)
    cpu = [_Model(), _Model()]
    assert resolve_frame_workers(None, cpu) == 6  # one per core, one torch thread each
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert resolve_frame_workers(None, cpu) == 4
    assert resolve_frame_workers(None, cpu, n_frames=9) == 2  # no more than the frames need
    assert resolve_frame_workers(3, cpu) == 3  # --workers wins
    assert resolve_frame_workers(None, [_Model(), _Model("cuda")]) == 1  # graph workers there
    assert resolve_frame_workers(2, [_Model("cuda")]) == 1
    with pytest.raises(InputError, match="--workers must be >= 1"):
        resolve_frame_workers(0, cpu)
    # Several jobs of one flow share the cores: run_flow turns worker processes off.
    monkeypatch.setenv("SOFTENING_GRAPH_WORKERS", "0")
    get_settings.cache_clear()
    assert resolve_frame_workers(None, cpu) == 1


@needs(WBM_XYZ)
@needs(M3GNET_DIR)
def test_cli_workers_option(tmp_path, one_process):
    res = run_cli(
        "evaluate", WBM_XYZ, "--model", "chgnet", "--model", M3GNET_DIR, "--workers", "2", "--json",
        "--store", tmp_path / "db",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)["models"]
    for name, ev in one_process.items():
        scales = {m["material_id"]: m["scale"] for m in got[name]["materials"]}
        assert scales.keys() == {d.material_id for d in ev.materials}
        for d in ev.materials:
            assert scales[d.material_id] == pytest.approx(d.scale, abs=1e-6)
    one_error_line(
        run_cli("evaluate", WBM_XYZ, "--model", "chgnet", "--workers", "0", "--store",
                tmp_path / "db0"),
        "--workers must be >= 1",
    )  # fmt: skip
