"""The model factory and batched evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, MODELS, needs
from pymatgen.core import Lattice, Structure

from softening.errors import ModelError
from softening.models import load_model
from softening.models.evaluate import evaluate_structures, run_batches
from softening.settings import get_settings


def _rattled(n_cells=(1, 1, 1), seed=0) -> Structure:
    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]) * n_cells
    s.perturb(0.15, min_distance=0.05, seed=seed)
    return s


def test_chgnet_loads_offline_with_provenance():
    m = load_model("chgnet")
    assert m.name == "CHGNet-0.3.0" and m.family == "chgnet"
    assert len(m.weights_sha256) == 64
    assert {"Si", "O", "Fe", "Pu"} <= m.elements
    assert load_model("chgnet") is m  # cached


def test_unknown_model_and_missing_file():
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("/nowhere/model.model")


def test_element_check_names_missing_elements():
    with pytest.raises(ModelError, match="Am"):
        load_model("chgnet").check_elements({"Si", "Am"})


def test_offline_named_download_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="no network"):
        load_model("mace-mp-0")
    assert time.perf_counter() - t0 < 10


def test_batched_forces_equal_one_frame_ase_path():
    m = load_model("chgnet")
    structures = [_rattled(seed=i) for i in range(3)] + [_rattled((2, 1, 1))]
    preds = evaluate_structures(m, structures, memory_gb=0.2)  # forces several batches
    calc = m.calculator()
    for s, p in zip(structures, preds, strict=True):
        atoms = s.to_ase_atoms()
        atoms.calc = calc
        # float32 model: identical graph and arithmetic, so agreement is at float32 round-off.
        assert np.abs(atoms.get_forces() - p.forces).max() < 1e-4
        assert atoms.get_potential_energy() == pytest.approx(p.energy, abs=1e-3)
        assert np.abs(atoms.get_stress(voigt=False) - p.stress).max() < 1e-5


class _FakeModel:
    """What run_batches reads of a model: a stand-in so that batching is tested without torch."""

    def __init__(self, device="cpu", family="chgnet"):
        self.name, self.family, self.device = "fake", family, device


def _batched(sizes, memory_gb, device="cpu", oom_above=None, meter=None, failed=None):
    """Run fake frames of ``sizes`` atoms; forward fails for batches above ``oom_above`` atoms."""
    import torch

    structures = [np.zeros(n) for n in sizes]  # run_batches reads only len() of a structure
    seen: list[list[int]] = []

    def forward(batch):
        atoms = sum(n for _, n in batch)
        if oom_above is not None and atoms > oom_above:
            if failed is not None:
                failed.append(atoms)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append([k for k, _ in batch])
        if meter is not None:
            meter.last = atoms
        return [(float(k), np.full((n, 3), k), None) for k, n in batch]

    graphs = iter(list(enumerate(sizes)))
    preds = run_batches(_FakeModel(device), structures, graphs, forward, memory_gb, None, meter)
    assert [p.energy for p in preds] == list(range(len(sizes)))  # every frame once, in order
    return seen


def test_batches_respect_memory_budget():
    # 0.8 GB per 64 atoms: two 64-atom frames fit in 1.7 GB, a third does not.
    assert _batched([64, 64, 64, 8], 1.7, device="cuda", meter=_Meter(0)) == [[0, 1], [2, 3]]
    assert _batched([500], 0.1) == [[0]]
    # On a CPU, large batches are slower: capped at CPU_MAX_BATCH_ATOMS whatever the budget.
    assert _batched([64, 64, 8, 8], 100) == [[0], [1, 2, 3]]


class _Meter:
    """A GPU memory meter whose peak is ``bytes_per_atom`` times the last batch's atoms."""

    def __init__(self, bytes_per_atom):
        self.bytes_per_atom, self.last = bytes_per_atom, 0

    def free(self):
        return 10e9

    def start(self):
        pass

    def peak(self):
        return self.bytes_per_atom * self.last

    def release(self):
        pass


def test_batches_resized_by_measured_memory():
    # The estimate allows 80 atoms per GB for CHGNet; the model really needs 0.1 GB per atom, so
    # after the first batch only 10 atoms fit in the 1 GB budget.
    seen = _batched([80] + [5] * 8, 1.0, device="cuda", meter=_Meter(1e8))
    assert seen[0] == [0] and all(len(b) == 2 for b in seen[1:])
    # The other way round: a model lighter than the estimate gets larger batches (8 atoms fit in
    # the 0.1 GB budget by the estimate, 100 by the measured 1 MB per atom).
    seen = _batched([8] * 20, 0.1, device="cuda", meter=_Meter(1e6))
    assert seen[0] == [0] and len(seen[1]) == 12


def test_out_of_memory_batch_is_split_and_retried():
    seen = _batched([8] * 12, 100, device="cuda", oom_above=20, meter=_Meter(0))
    assert all(len(b) <= 2 for b in seen) and sum(len(b) for b in seen) == 12
    # A measured peak that looks small does not grow batches back past the size that failed.
    failed: list[int] = []
    seen = _batched([8] * 12, 100, device="cuda", oom_above=20, meter=_Meter(1.0), failed=failed)
    assert sum(len(b) for b in seen) == 12 and failed == [96, 48, 24]
    with pytest.raises(ModelError, match="one frame of 64 atoms does not fit"):
        _batched([8, 64], 100, device="cuda", oom_above=20, meter=_Meter(0))


def _same_with_graph_workers(model) -> None:
    """Graphs built in 2 worker processes give bit-identical results to graphs built here."""
    structures = [_rattled(seed=i) for i in range(8)] + [_rattled((1, 1, 2), seed=8)]
    here = evaluate_structures(model, structures, graph_workers=0)
    workers = evaluate_structures(model, structures, graph_workers=2)
    for a, b in zip(here, workers, strict=True):
        assert np.array_equal(a.forces, b.forces) and a.energy == b.energy


def test_graph_workers_setting_cores_and_mpi(monkeypatch):
    import types

    from softening.models.evaluate import resolve_graph_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert resolve_graph_workers(None, "cuda", 1000) == 8  # spare cores, at most 8
    assert resolve_graph_workers(None, "cpu", 1000) == 8  # 15 cores beside 1 torch thread
    assert resolve_graph_workers(None, "cuda", 6) == 1  # too few frames to feed more workers
    assert resolve_graph_workers(3, "cuda", 1000) == 3  # an explicit number wins
    monkeypatch.setenv("SOFTENING_GRAPH_WORKERS", "0")
    get_settings.cache_clear()
    assert resolve_graph_workers(None, "cuda", 1000) == 0
    monkeypatch.delenv("SOFTENING_GRAPH_WORKERS")
    get_settings.cache_clear()
    # Inside an MPI run (here GPAW's world of 4 ranks) no rank forks workers.
    fake = types.SimpleNamespace(world=types.SimpleNamespace(size=4))
    monkeypatch.setitem(sys.modules, "gpaw.mpi", fake)
    assert resolve_graph_workers(None, "cuda", 1000) == 0


def test_chgnet_graph_workers_identical():
    _same_with_graph_workers(load_model("chgnet"))


# ---- every family from a local path ---------------------------------------------------------------

M3GNET_DIR = MODELS / "M3GNet-MP-2021.2.8-PES"


def test_chgnet_from_checkpoint_path():
    import chgnet

    path = next((Path(chgnet.__file__).parent / "pretrained" / "0.3.0").glob("*.pth.tar"))
    m = load_model(str(path))
    assert m.family == "chgnet" and m.weights_sha256 == load_model("chgnet").weights_sha256


@needs(M3GNET_DIR)
def test_matgl_folder_and_name_via_models_dir(monkeypatch):
    m = load_model(str(M3GNET_DIR))
    assert m.name == "M3GNet-MP-2021.2.8-PES" and m.family == "matgl"
    assert {"Si", "O", "Li"} <= m.elements and len(m.weights_sha256) == 64
    monkeypatch.setenv("SOFTENING_MODELS_DIR", str(MODELS))
    from softening.settings import get_settings

    get_settings.cache_clear()
    assert load_model("m3gnet").weights_sha256 == m.weights_sha256


def test_matgl_hub_name_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="local matgl model folder"):
        load_model("M3GNet-MatPES-r2SCAN-v2025.1-PES")
    assert time.perf_counter() - t0 < 10


def test_mace_whole_pickled_file_needs_weights_only_false(tiny_mace):
    import torch

    with pytest.raises(Exception, match="[Ww]eights"):
        torch.load(tiny_mace, map_location="cpu", weights_only=True)  # torch 2.13's default
    m = load_model(str(tiny_mace), dtype="float64", trust_model_file=True)
    # mace's import-time TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 does not leak into the process.
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    assert m.family == "mace" and m.elements == frozenset({"Si"})
    with pytest.raises(ModelError, match="O"):
        m.check_elements({"Si", "O"})


def _agree(model, structures, tol_f: float, tol_e: float, memory_gb: float = 4.0) -> None:
    preds = evaluate_structures(model, structures, memory_gb=memory_gb)
    calc = model.calculator()
    for s, p in zip(structures, preds, strict=True):
        atoms = s.to_ase_atoms()
        atoms.calc = calc
        assert np.abs(atoms.get_forces() - p.forces).max() < tol_f
        assert atoms.get_potential_energy() == pytest.approx(p.energy, abs=tol_e)
        assert np.abs(atoms.get_stress(voigt=False) - p.stress).max() < 1e-6


@needs(M3GNET_DIR)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matgl_batched_equals_ase(dtype):
    structures = [_rattled(seed=i) for i in range(3)] + [_rattled((1, 1, 2))]
    # float64: 1e-5 eV/Å as promised; float32: same arithmetic in another order, ~1e-5 too.
    _agree(load_model(str(M3GNET_DIR), dtype=dtype), structures, 1e-5, 1e-4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mace_batched_equals_ase(tiny_mace, dtype):
    structures = [_rattled(seed=i) for i in range(3)] + [_rattled((1, 1, 2))]
    _agree(load_model(str(tiny_mace), dtype=dtype, trust_model_file=True), structures, 1e-5, 1e-4)


def test_matgl_and_mace_graph_workers_identical(tiny_mace):
    _same_with_graph_workers(load_model(str(tiny_mace), dtype="float64", trust_model_file=True))
    if M3GNET_DIR.is_dir():
        _same_with_graph_workers(load_model(str(M3GNET_DIR)))


def test_mace_runs_md_and_evaluate(tiny_mace, tmp_path):
    from softening.makers.md import MDSamplingMaker, run_md

    m = load_model(str(tiny_mace), dtype="float64", trust_model_file=True)
    traj = run_md(_rattled(), m.calculator(), MDSamplingMaker(steps=10, stride=2, temperature=300))
    assert len(traj.steps) == 4 and np.isfinite(traj.energies).all()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "softening.cli",
            "evaluate",
            str(DATA / "mlearn" / "Si" / "test.json"),
            "--model",
            str(tiny_mace),
            "--model",
            "chgnet",
            "--json",
            "--store",
            str(tmp_path / "db"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SOFTENING_TRUST_MODEL_FILES": "1"},  # the opt-in, as a setting
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)["models"]
    assert set(out) == {"MACE-tiny", "CHGNet-0.3.0"}
    assert out["MACE-tiny"]["pooled"]["n_frames"] == out["CHGNet-0.3.0"]["pooled"]["n_frames"] > 0


# ---- model files run no code unless trusted ----------------------------------------------------


class _Payload:
    """Unpickling this creates a marker file: what a malicious model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payloads_never_run_and_bad_files_are_one_line(tmp_path):
    import torch

    marker = tmp_path / "PWNED"
    for name in ("evil.pth.tar", "evil.model"):
        torch.save({"model": _Payload(marker)}, tmp_path / name)
    # Seeded random bytes: the same "random file" every run.
    noise = __import__("random").Random(0).randbytes(3000)
    (tmp_path / "random.model").write_bytes(noise)
    (tmp_path / "random.pth.tar").write_bytes(noise)
    good = next((Path(__import__("chgnet").__file__).parent / "pretrained" / "0.3.0").glob("*.tar"))
    (tmp_path / "cut.pth.tar").write_bytes(good.read_bytes()[:100_000])
    dataset = DATA / "mlearn" / "Si" / "test.json"
    for name, why in [
        ("evil.pth.tar", "pickled code"),
        ("evil.model", "--trust-model-file"),
        ("random.model", "not a readable torch file"),
        ("random.pth.tar", "not a torch weights file"),
        ("cut.pth.tar", "truncated"),
    ]:
        res = subprocess.run(
            [sys.executable, "-m", "softening.cli", "evaluate", str(dataset), "--model",
             str(tmp_path / name), "--store", str(tmp_path / "db"), "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        err = res.stderr.strip()
        assert not marker.exists(), f"{name}: the payload ran"
        assert res.returncode == 1 and err.startswith("error:") and "\n" not in err, err
        assert name in err and why in err and "Traceback" not in err, err


def test_untrusted_pickled_model_says_how_to_opt_in(tmp_path):
    import torch

    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.model")
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.pth.tar")
    with pytest.raises(ModelError, match="--trust-model-file"):
        load_model(str(tmp_path / "evil.model"))
    with pytest.raises(ModelError, match="pickled code"):
        load_model(str(tmp_path / "evil.pth.tar"))
    assert not marker.exists()


def test_mace_file_trust_rules(tiny_mace, tmp_path, monkeypatch):
    import shutil

    from softening.models import trust
    from softening.models.factory import _load_cached

    copy = tmp_path / "mine" / "tiny.model"
    copy.parent.mkdir()
    shutil.copy(tiny_mace, copy)
    _load_cached.cache_clear()
    with pytest.raises(ModelError, match="--trust-model-file"):
        load_model(str(copy))
    # A registry shipped beside the model proves nothing.
    trust.record_written_model(copy.parent, [copy])
    trust._WRITTEN_SHA.clear()  # written by another process: only the registry file is left
    with pytest.raises(ModelError, match="--trust-model-file"):
        load_model(str(copy))
    # Recorded in the models folder of the store named (SOFTENING_STORE here): trusted.
    store_models = Path(get_settings().store) / "models"
    trust.record_written_model(store_models, [copy])
    trust._WRITTEN_SHA.clear()
    assert load_model(str(copy), dtype="float64").family == "mace"
    (store_models / trust.REGISTRY_FILE).unlink()
    _load_cached.cache_clear()
    # Known published weights: trusted without an opt-in.
    monkeypatch.setitem(trust.KNOWN_MODEL_SHA256, trust.file_sha256(copy), "tiny test model")
    assert load_model(str(copy), dtype="float64").family == "mace"
    monkeypatch.delitem(trust.KNOWN_MODEL_SHA256, trust.file_sha256(copy))
    _load_cached.cache_clear()
    # The setting (SOFTENING_TRUST_MODEL_FILES, what --trust-model-file sets).
    monkeypatch.setenv("SOFTENING_TRUST_MODEL_FILES", "1")
    get_settings.cache_clear()
    assert load_model(str(copy), dtype="float64").family == "mace"


def test_chgnet_checkpoints_load_without_unpickling_code(tmp_path):
    from softening.models.backends.chgnet import chgnet_from_checkpoint, save_chgnet

    m = load_model("chgnet")
    saved = save_chgnet(m.model, tmp_path / "mine.pth.tar")
    again = chgnet_from_checkpoint(saved)
    assert sum(p.numel() for p in again.parameters()) == sum(
        p.numel() for p in m.model.parameters()
    )
    s = _rattled()
    a = evaluate_structures(m, [s])[0]
    b = evaluate_structures(load_model(str(saved)), [s])[0]
    assert np.abs(a.forces - b.forces).max() < 1e-6


@needs(MODELS / "M3GNet-MP-2021.2.8-PES")
def test_matgl_folder_naming_foreign_code_is_refused(tmp_path):
    import shutil

    folder = tmp_path / "evil-m3gnet"
    shutil.copytree(MODELS / "M3GNet-MP-2021.2.8-PES", folder)
    desc = json.loads((folder / "model.json").read_text())
    desc["kwargs"]["model"]["@module"] = "subprocess"
    desc["kwargs"]["model"]["@class"] = "Popen"
    (folder / "model.json").write_text(json.dumps(desc))
    with pytest.raises(ModelError, match="outside matgl.*subprocess"):
        load_model(str(folder))
