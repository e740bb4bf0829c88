"""The model factory and batched evaluation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from softening.errors import ModelError
from softening.models import load_model
from softening.models.evaluate import evaluate_structures, plan_batches


def _rattled(n_cells=(1, 1, 1), seed=0) -> Structure:
    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]) * n_cells
    s.perturb(0.15, min_distance=0.05)
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


def test_plan_batches_respects_budget():
    batches = plan_batches([64, 64, 64, 8], "chgnet", memory_gb=1.7)
    # 0.8 GB per 64 atoms: two 64-atom frames fit in 1.7 GB, a third does not.
    assert batches == [[0, 1], [2, 3]]
    assert plan_batches([500], "chgnet", memory_gb=0.1) == [[0]]
