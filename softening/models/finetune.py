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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from softening.errors import InputError, ModelError

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
        from softening.models.factory import chgnet_from_checkpoint

        model = chgnet_from_checkpoint(best)
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


def finetune_matgl(potential, train: TrainingSet, settings: FineTuneSettings, workdir: Path):
    """Fine-tune a copy of a matgl ``Potential`` (M3GNet, TensorNet, ...) with matgl's Lightning
    module; returns the trained ``Potential`` and the per-epoch losses."""
    from functools import partial

    import lightning as pl
    import torch
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataLoader, MGLDataset, collate_fn_pes
    from matgl.utils.training import PotentialLightningModule

    if settings.mode not in ("head", "full"):
        raise ModelError(f"matgl fine-tuning mode must be head or full, not {settings.mode!r}")
    pot = copy.deepcopy(potential)
    model = pot.model
    for name, p in model.named_parameters():
        # head: only the final readout MLP learns; the backbone stays as trained on MP.
        p.requires_grad = settings.mode == "full" or name.startswith("final_layer")
    has_stress = all(s is not None for s in train.stresses)
    converter = Structure2Graph(element_types=model.element_types, cutoff=model.cutoff)
    labels = {
        "energies": [float(e) for e in train.energies],
        "forces": [np.asarray(f).tolist() for f in train.forces],
        "stresses": [
            (np.asarray(s) * GPA_PER_EV_PER_A3).tolist()
            if has_stress
            else np.zeros((3, 3)).tolist()
            for s in train.stresses
        ],
    }
    n = len(train.structures)
    order = np.random.default_rng(settings.seed).permutation(n)
    n_val = max(1, round(settings.val_fraction * n)) if n >= 2 else 0
    val_idx, train_idx = (order[:n_val], order[n_val:]) if n_val else (order, order)

    def subset(idx, tag):
        return MGLDataset(
            structures=[train.structures[i] for i in idx],
            labels={k: [v[i] for i in idx] for k, v in labels.items()},
            converter=converter,
            root=str(workdir / tag),
            save_cache=False,
        )

    workdir.mkdir(parents=True, exist_ok=True)
    collate = partial(collate_fn_pes, include_line_graph=False, include_stress=True)
    train_loader, val_loader = MGLDataLoader(
        train_data=subset(train_idx, "train"),
        val_data=subset(val_idx, "val"),
        collate_fn=collate,
        batch_size=min(settings.batch_size, len(train_idx)),
        num_workers=0,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    steps = max(1, settings.epochs * len(train_loader))
    lit = PotentialLightningModule(
        model=model,
        element_refs=getattr(pot.element_refs, "property_offset", None),
        data_mean=pot.data_mean,
        data_std=pot.data_std,
        energy_weight=settings.energy_weight,
        force_weight=settings.force_weight,
        stress_weight=settings.stress_weight if has_stress else 0.0,
        lr=settings.learning_rate,
        decay_steps=steps,
        decay_alpha=settings.final_learning_rate / settings.learning_rate,
        include_line_graph=False,
    )
    pl.seed_everything(settings.seed, verbose=False)
    trainer = pl.Trainer(
        max_epochs=settings.epochs,
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(lit, train_loader, val_loader)
    # Trained without stress labels, matgl's module builds its Potential without stresses; the
    # saved model is rebuilt around the trained network so that it predicts them as the base did.
    from matgl.apps.pes import Potential

    trained = Potential(
        model=lit.model.model,
        data_mean=lit.model.data_mean,
        data_std=lit.model.data_std,
        element_refs=getattr(pot.element_refs, "property_offset", None),
        calc_stresses=potential.calc_stresses,
    ).eval()
    history = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return trained, history


def finetune_mace(
    model_path: Path,
    train: TrainingSet,
    settings: FineTuneSettings,
    workdir: Path,
    dtype: str = "float64",
    replay: Path | None = None,
) -> tuple[Path, dict]:
    """Fine-tune a MACE model file with mace's own training entry point (``mace.cli.run_train``).

    Plain fine-tuning of the foundation model by default; with ``replay`` (an extxyz of the
    foundation's training data), mace's multi-head replay fine-tuning. ``head`` mode trains the
    readouts only (the other learning-rate factors are zero). Returns the new model file.
    """
    import json as _json
    import subprocess
    import sys

    from ase.io import write

    if settings.mode not in ("head", "full"):
        raise ModelError(f"MACE fine-tuning mode must be head or full, not {settings.mode!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    atoms = []
    for s, e, f, st in zip(
        train.structures, train.energies, train.forces, train.stresses, strict=True
    ):
        a = s.to_ase_atoms()
        a.info["REF_energy"] = float(e)
        a.arrays["REF_forces"] = np.asarray(f)
        if st is not None:
            a.info["REF_stress"] = np.asarray(st)
        atoms.append(a)
    n = len(atoms)
    order = np.random.default_rng(settings.seed).permutation(n)
    n_val = max(1, round(settings.val_fraction * n)) if n >= 2 else 0
    val = [atoms[i] for i in (order[:n_val] if n_val else order)]
    tr = [atoms[i] for i in (order[n_val:] if n_val else order)]
    write(workdir / "train.extxyz", tr)
    write(workdir / "valid.extxyz", val)
    factors = {
        "embedding_lr_factor": 1.0,
        "interactions_lr_factor": 1.0,
        "products_lr_factor": 1.0,
        "readouts_lr_factor": 1.0,
    }
    if settings.mode == "head":
        factors.update(embedding_lr_factor=0.0, interactions_lr_factor=0.0, products_lr_factor=0.0)
    args = [
        "--name",
        "finetuned",
        "--foundation_model",
        str(model_path),
        "--train_file",
        "train.extxyz",
        "--valid_file",
        "valid.extxyz",
        "--energy_key",
        "REF_energy",
        "--forces_key",
        "REF_forces",
        "--stress_key",
        "REF_stress",
        "--loss",
        "weighted",
        "--energy_weight",
        str(settings.energy_weight),
        "--forces_weight",
        str(settings.force_weight),
        "--stress_weight",
        str(settings.stress_weight),
        "--lr",
        str(settings.learning_rate),
        "--max_num_epochs",
        str(settings.epochs),
        "--batch_size",
        str(min(settings.batch_size, len(tr))),
        "--valid_batch_size",
        str(min(settings.batch_size, len(val))),
        "--E0s",
        "average",
        "--device",
        "cpu",
        "--default_dtype",
        dtype,
        "--seed",
        str(settings.seed),
        "--eval_interval",
        "1",
        "--lr_params_factors",
        _json.dumps(factors),
        "--multiheads_finetuning",
        "True" if replay else "False",
    ]
    if replay is not None:
        args += ["--pt_train_file", str(replay)]
    res = subprocess.run(
        [sys.executable, "-m", "mace.cli.run_train", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    out = workdir / "finetuned.model"
    if res.returncode != 0 or not out.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"MACE fine-tuning failed: {tail[0]}")
    return out, {"log": str(workdir / "logs")}
