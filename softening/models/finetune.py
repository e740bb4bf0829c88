"""Fine-tuning corrections of uMLIPs: training data, hyper-parameters, and the family's trainer.

A correction has one of :data:`CORRECTION_MODES`: ``scale`` (the scale correction, closed form, no
trainer: see :mod:`softening.analysis.correction`), ``head`` (readout only, backbone frozen) or
``full`` (every weight). The fine-tuning modes run the trainer of the model's backend
(:meth:`softening.models.backends.Backend.finetune`: CHGNet's ``Trainer``, matgl's Lightning
module, mace's ``run_train``) with the paper's CHGNet recipe by default (MSE; energy:force:stress
weights 0.1:100:0.1; Adam, lr 1e-3 cosine-decayed to 1e-5; train:validation 9:1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from softening.errors import ModelError

# The interface data lives in a leaf module the backends import too; re-exported here.
from softening.models.training import (
    CORRECTION_MODES,
    GPA_PER_EV_PER_A3,
    FineTuneSettings,
    TrainingSet,
    split,
)

if TYPE_CHECKING:
    from softening.models.backends import LoadedModel

__all__ = [
    "CORRECTION_MODES",
    "GPA_PER_EV_PER_A3",
    "FineTuneSettings",
    "TrainingSet",
    "finetune_model",
    "save_finetuned",
    "split",
]


def finetune_model(
    model: LoadedModel, train: TrainingSet, settings: FineTuneSettings, workdir: Path
) -> tuple[Any, dict]:
    """Fine-tune a copy of ``model`` on ``train`` with its family's trainer.

    Returns
    -------
    tuple
        The trained model (for :func:`save_finetuned`) and the training history.

    Raises
    ------
    ModelError
        A mode other than ``head`` or ``full``, or a family without fine-tuning.
    """
    if settings.mode not in ("head", "full"):
        raise ModelError(
            f"{model.family} fine-tuning mode must be head or full, not {settings.mode!r}"
        )
    return model.backend.finetune(model, train, settings, workdir)


def save_finetuned(model: LoadedModel, trained: Any, folder: Path) -> str:
    """Write the ``trained`` fine-tune of ``model`` into ``folder``; returns the weights' name."""
    return model.backend.save(model, folder, trained)
