"""Shared fixtures: paths to ../shared data, offline/threads environment, temporary stores."""

from __future__ import annotations

import os
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
    """A fresh embedded (MontyDB sqlite) JobStore."""
    from softening.stores import get_job_store

    return get_job_store(tmp_path / "db")


def needs(path: Path):
    """Skip a test when a shared file is absent, saying which."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (../shared not beside)")
