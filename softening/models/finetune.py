"""Fine-tuning of uMLIPs with each family's own trainer.

CHGNet: its ``Trainer`` with the paper's recipe (MSE; energy:force:stress weights 0.1:100:0.1; Adam,
lr 1e-3 cosine-decayed to 1e-5; train:validation 9:1; the best validation force-MAE checkpoint, or the
last epoch when there is only one training frame). Modes: ``head`` (readout MLP only, backbone
frozen) and ``full``. The ``scale`` mode needs no trainer (see :mod:`softening.analysis.correction`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from softening.errors import ModelError

logger = logging.getLogger(__name__)
GPA_PER_EV_PER_A3 = 160.21766208
FINETUNE_MODES = ("scale", "head", "full")


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def finetune_chgnet(net, train: TrainingSet, settings: FineTuneSettings, workdir: Path):
    """Fine-tune a copy of the CHGNet model ``net`` on ``train``; returns the trained model.

    The train:validation split is 9:1 by frames (seeded); with fewer than two frames, the training
    frames also validate and the last epoch is kept.
    """
    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.trainer import Trainer
    from torch.utils.data import DataLoader, Subset

    if settings.mode not in ("head", "full"):
        raise ModelError(f"CHGNet fine-tuning mode must be head or full, not {settings.mode!r}")
    model = copy.deepcopy(net)
    for p in model.parameters():
        p.requires_grad = settings.mode == "full"
    if settings.mode == "head":
        for p in model.mlp.parameters():
            p.requires_grad = True
    has_stress = all(s is not None for s in train.stresses)
    data = StructureData(
        structures=train.structures,
        energies=[e / len(s) for e, s in zip(train.energies, train.structures, strict=True)],
        forces=[np.asarray(f).tolist() for f in train.forces],
        stresses=[(np.asarray(s) * GPA_PER_EV_PER_A3).tolist() for s in train.stresses]
        if has_stress
        else None,
        structure_ids=train.ids or None,
        graph_converter=model.graph_converter,
        shuffle=False,
    )
    n = len(train.structures)
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(n)
    n_val = max(1, round(settings.val_fraction * n)) if n >= 2 else 0
    val_idx, train_idx = order[:n_val], order[n_val:] if n_val else order
    batch = min(settings.batch_size, len(train_idx))
    train_loader = DataLoader(
        Subset(data, train_idx.tolist()),
        batch_size=batch,
        shuffle=True,
        collate_fn=collate_graphs,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    val_loader = DataLoader(
        Subset(data, (val_idx if n_val else train_idx).tolist()),
        batch_size=batch,
        collate_fn=collate_graphs,
    )
    trainer = Trainer(
        model=model,
        targets="efs" if has_stress else "ef",
        energy_loss_ratio=settings.energy_weight,
        force_loss_ratio=settings.force_weight,
        stress_loss_ratio=settings.stress_weight,
        optimizer="Adam",
        scheduler="CosLR",
        # CHGNet's CosLR steps once per batch with T_max = 10 epochs' worth; decay_fraction sets
        # the floor (1e-5 / 1e-3 = the paper's final learning rate).
        scheduler_params={"decay_fraction": settings.final_learning_rate / settings.learning_rate},
        criterion="MSE",
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        torch_seed=settings.seed,
        data_seed=settings.seed,
        use_device="cpu" if not torch.cuda.is_available() else "cuda",
        print_freq=10**9,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(train_loader, val_loader, save_dir=str(workdir))
    best = _best_force_checkpoint(workdir) if n_val else None
    if best is not None:
        from chgnet.model import CHGNet

        model = CHGNet.from_file(str(best))
    model.eval()
    history = {k: v for k, v in trainer.training_history.items() if v["train"]}
    return model, history


def _best_force_checkpoint(workdir: Path) -> Path | None:
    found = sorted(Path(workdir).glob("bestF_epoch*.pth.tar"))
    return found[-1] if found else None


def save_chgnet(model, path: Path) -> Path:
    """Save CHGNet weights in the layout ``CHGNet.from_file`` reads."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.as_dict()}, path)
    return path
