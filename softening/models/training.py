"""What fine-tuning passes between its parts: training frames, hyper-parameters, the split.

The interface data of :meth:`softening.models.backends.Backend.finetune` and
:func:`softening.models.finetune.finetune_model`, in a module of its own that imports nothing of the
models package: the backends and ``finetune.py`` both import it, and so depend on each other one
way only (``finetune.py`` runs a model's backend; the backends never import ``finetune.py``).
:mod:`softening.models.finetune` re-exports every name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Structure

from softening.errors import InputError

GPA_PER_EV_PER_A3 = 160.21766208
#: Modes of a correction: ``scale`` (the scale correction) and the fine-tuning modes.
CORRECTION_MODES = ("scale", "head", "full")


@dataclass
class TrainingSet:
    """Labelled frames for training: structures with energies (eV), forces (eV/Å), stresses
    (eV/Å^3, ASE sign, or None) and ids."""

    structures: list[Structure]
    energies: list[float]
    forces: list[np.ndarray]
    stresses: list[np.ndarray | None]
    ids: list[str] = field(default_factory=list)


@dataclass
class FineTuneSettings:
    """Hyper-parameters (defaults: the paper's CHGNet recipe)."""

    mode: str = "full"
    epochs: int = 100
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5
    energy_weight: float = 0.1
    force_weight: float = 100.0
    stress_weight: float = 0.1
    batch_size: int = 4
    val_fraction: float = 0.1
    seed: int = 0
    replay_data: str | None = None  # MACE: extxyz of the foundation's data for multi-head replay

    def __post_init__(self) -> None:
        # Zero epochs would save the unchanged model labelled as fine-tuned.
        if int(self.epochs) < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        for name in ("learning_rate", "final_learning_rate"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name.replace('_', ' ')} must be a positive number")
        if not 0 <= float(self.val_fraction) < 1:
            raise InputError(f"validation fraction must be in [0, 1), got {self.val_fraction}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split(n: int, settings: FineTuneSettings) -> tuple[np.ndarray, np.ndarray, bool]:
    """Training and validation indices of ``n`` frames (seeded, ``settings.val_fraction``), and
    whether any frame is held out: with fewer than two frames, the training frames also validate."""
    order = np.random.default_rng(settings.seed).permutation(n)
    n_val = max(1, round(settings.val_fraction * n)) if n >= 2 else 0
    if not n_val:
        return order, order, False
    return order[n_val:], order[:n_val], True
