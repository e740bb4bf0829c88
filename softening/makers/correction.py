"""Correct a softened uMLIP on a few high-energy frames per material, and verify on held-out frames.

A correction is of two kinds: a linear scale (mode ``scale``, closed form) or a fine-tune (``head``
or ``full``, the family's trainer); either makes a corrected model
(:mod:`softening.models.corrected`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Maker, job

from softening import defaults
from softening.analysis.correction import (
    CORRECTION_METHODS,
    correction_factor,
    train_scalar_layer,
)
from softening.analysis.learning_curve import CURVE_CHOICES
from softening.analysis.metrics import corrected_force_mae, force_mae, scale_through_origin
from softening.errors import InputError
from softening.makers.job import softening_job
from softening.models.finetune import CORRECTION_MODES, FineTuneSettings
from softening.models.trust import models_folder
from softening.schemas import (
    CorrectionResult,
    FrameResult,
    GroupVerification,
    VerificationDoc,
)

logger = logging.getLogger(__name__)


def _key(r: FrameResult) -> str:
    return f"{r.material_id}/{r.frame_id}"


def _usable(references: list[FrameResult | dict | None]) -> list[FrameResult]:
    refs = [FrameResult.model_validate(r) for r in references if r is not None]
    refs = [r for r in refs if r.forces is not None]
    for r in refs:
        if not np.all(np.isfinite(r.forces)) or (
            r.energy is not None and not np.isfinite(r.energy)
        ):
            raise InputError(f"frame {_key(r)} has NaN or infinite labels")
    return refs


def split_frames(
    refs: list[FrameResult],
    k: int,
    choice: str,
    seed: int = 0,
    features: Callable[[list[FrameResult]], np.ndarray] | None = None,
) -> tuple[list[FrameResult], list[FrameResult]]:
    """Training and held-out frames, chosen per material (held-out frames are never trained on).

    ``features`` gives the structure features of a material's frames, for the ``diverse``
    choice (e.g. ``lambda frames: model.backend.features(model, [f.structure for f in
    frames])``).
    """
    from softening.analysis.learning_curve import select_frames

    train, held = [], []
    for frames in _by_material(refs, k):
        energies = None
        if all(f.energy is not None for f in frames):
            energies = [f.energy / len(f.structure) for f in frames]
        mean_f = [float(np.mean(np.abs(f.forces))) for f in frames]
        feas = features(frames) if choice == "diverse" and features is not None else None
        picked = set(select_frames(choice, k, energies, mean_f, feas, seed))
        train += [f for i, f in enumerate(frames) if i in picked]
        held += [f for i, f in enumerate(frames) if i not in picked]
    return train, held


def _by_material(refs: list[FrameResult], k: int) -> list[list[FrameResult]]:
    """Frames grouped by material (sorted by id); each must keep a frame after ``k`` train."""
    by_material: dict[str, list[FrameResult]] = defaultdict(list)
    for r in refs:
        by_material[r.material_id].append(r)
    for mid, frames in sorted(by_material.items()):
        if len(frames) <= k:
            raise InputError(
                f"{mid} has {len(frames)} frame(s): too few to train on {k} and hold any out"
            )
    return [frames for _, frames in sorted(by_material.items())]


def check_split(refs: list[FrameResult], k: int) -> None:
    """Raise :class:`InputError` when a material has too few frames to train on ``k``."""
    _by_material(refs, k)


@dataclass
class CorrectionMaker(Maker):
    """Fit a correction of ``model`` on ``train_frames`` frames per material; the result is a
    corrected model, saved in ``models_dir``.

    Attributes
    ----------
    name
        Job name.
    model
        uMLIP spec to correct.
    mode
        One of :data:`~softening.models.finetune.CORRECTION_MODES`: ``scale`` (the scale
        correction: one factor on energy, forces and stress, closed form), ``head`` (fine-tune the
        readout, backbone frozen) or ``full`` (fine-tune everything) with the trainer of the
        model's backend: CHGNet's ``Trainer``, matgl's Lightning module, mace's ``run_train``.
    method
        Closed form of the scale correction: ``lstsq`` (what the paper's trained scalar layer
        converges to) or ``inverse-scale`` (``c = 1/scale``).
    train_frames
        Frames per material to fit on (the paper: 1 for the scale correction, ~10 to fine-tune).
    frame_choice
        ``highest-energy`` (default), ``largest-force``, ``random`` or ``diverse`` (DIRECT: one
        frame per cluster of the model's structure features).
    finetune
        Fine-tuning hyper-parameters (the paper's CHGNet recipe by default).
    cross_check
        Also train the scale correction as the paper does (a scalar layer, Adam on the frozen
        model's outputs) as a cross-check.
    models_dir
        Folder the corrected model is saved in (default:
        :func:`~softening.models.trust.models_folder`).
    seed
        Seed of the frame choice and the training.
    """

    name: str = "correct"
    model: str = "chgnet"
    mode: str = "scale"
    method: str = "lstsq"
    train_frames: int = defaults.TRAIN_FRAMES
    frame_choice: str = "highest-energy"
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    cross_check: bool = True
    models_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.finetune, dict):
            # Back from JSON (a job sent to a worker process, or through FireWorks).
            keys = {k: v for k, v in self.finetune.items() if not k.startswith("@")}
            self.finetune = FineTuneSettings(**keys)
        if self.mode not in CORRECTION_MODES:
            raise InputError(f"mode must be one of {CORRECTION_MODES}, got {self.mode!r}")
        if self.method not in CORRECTION_METHODS:
            raise InputError(f"method must be one of {CORRECTION_METHODS}, got {self.method!r}")
        if self.frame_choice not in CURVE_CHOICES:
            raise InputError(
                f"frame choice must be one of {', '.join(CURVE_CHOICES)}, got {self.frame_choice!r}"
            )
        if self.train_frames < 1:
            raise InputError("train frames must be >= 1")

    @softening_job(CorrectionResult, tolerant=True)
    def make(self, references: list[FrameResult | None]) -> CorrectionResult:
        """Fit the correction on the chosen frames of each material."""
        return fit_correction(references, self)


def save_correction(
    folder: Path,
    name: str,
    spec: str,
    base: Any,
    mode: str,
    factor: float,
    weights: str | None,
    train_frames: list[str],
    hyperparameters: dict[str, Any],
) -> None:
    """Write a corrected model's folder (``softening-model.json``), after recording fine-tuned
    ``weights`` as written by softening so that they load later without an opt-in (a MACE
    fine-tune is a whole pickled model; see :mod:`softening.models.trust`)."""
    from softening.models.corrected import write_corrected_model
    from softening.models.trust import record_written_model

    if weights is not None:
        written = folder / weights
        record_written_model(
            folder.parent, [written] if written.is_file() else sorted(written.glob("*"))
        )
    write_corrected_model(
        folder,
        name=name,
        base={"spec": spec, **base.info.model_dump()},
        mode=mode,
        factor=factor,
        weights=weights,
        train_frames=train_frames,
        hyperparameters=hyperparameters,
    )


def fit_correction(references: list, maker: CorrectionMaker) -> CorrectionResult:
    """What the correction job does (callable without jobflow)."""
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    t0 = time.perf_counter()
    refs = _usable(references)
    base = load_model(maker.model)
    base.check_elements({el.symbol for r in refs for el in r.structure.composition})
    train, held = split_frames(
        refs,
        maker.train_frames,
        maker.frame_choice,
        maker.seed,
        lambda frames: base.backend.features(base, [f.structure for f in frames]),
    )
    digest = hashlib.sha256(
        json.dumps(
            [
                [r.content_key or _key(r) for r in train],
                maker.mode,
                maker.method,
                maker.finetune.as_dict(),
                base.weights_sha256,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:10]
    name = f"{base.name}+{maker.mode}-{digest}"
    folder = Path(maker.models_dir or models_folder()) / name
    factor, trained, weights, history = 1.0, None, None, {}
    if maker.mode == "scale":
        preds = evaluate_structures(base, [r.structure for r in train])
        f_ml = [p.forces for p in preds]
        f_dft = [np.asarray(r.forces) for r in train]
        factor = correction_factor(f_ml, f_dft, maker.method)
        if maker.cross_check and all(r.energy is not None for r in train):
            trained = train_scalar_layer(
                [p.energy for p in preds],
                f_ml,
                [r.energy for r in train],
                f_dft,
                [len(r.structure) for r in train],
            )
        hyper = {"method": maker.method}
    else:
        from softening.models.finetune import TrainingSet, finetune_model, save_finetuned

        settings = FineTuneSettings(**{**maker.finetune.as_dict(), "mode": maker.mode})
        data = TrainingSet(
            structures=[r.structure for r in train],
            energies=[r.energy for r in train],
            forces=[np.asarray(r.forces) for r in train],
            stresses=[None if r.stress is None else np.asarray(r.stress) for r in train],
            ids=[_key(r) for r in train],
        )
        if any(e is None for e in data.energies):
            raise InputError("fine-tuning needs reference energies for every training frame")
        network, history = finetune_model(base, data, settings, folder / "training")
        weights = save_finetuned(base, network, folder)
        hyper = settings.as_dict()
    save_correction(
        folder,
        name,
        maker.model,
        base,
        maker.mode,
        factor,
        weights,
        [_key(r) for r in train],
        hyper,
    )
    corrected = load_model(str(folder))
    logger.info("%s: %s fitted on %d frame(s) -> %s", base.name, maker.mode, len(train), folder)
    return CorrectionResult(
        base_model=base.info,
        model=corrected.info,
        mode=maker.mode,
        method=maker.method if maker.mode == "scale" else None,
        factor=factor,
        trained_factor=trained,
        train_frames=[_key(r) for r in train],
        held_out_frames=[_key(r) for r in held],
        frame_choice=maker.frame_choice,
        hyperparameters=hyper,
        training_history=history,
        wall_time=time.perf_counter() - t0,
    )


def _figures(f_ml: list[np.ndarray], f_dft: list[np.ndarray]) -> dict[str, float]:
    s = scale_through_origin(f_ml, f_dft)
    return {"scale": s, "mae": force_mae(f_ml, f_dft), "cmae": corrected_force_mae(f_ml, f_dft, s)}


def verify_correction(references: list, correction: CorrectionResult) -> VerificationDoc:
    """Held-out figures before and after the correction, per group, with warnings."""
    from softening import __version__
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    correction = CorrectionResult.model_validate(correction)
    held_ids = set(correction.held_out_frames)
    held = [r for r in _usable(references) if _key(r) in held_ids]
    if not held:
        raise InputError("no held-out frame to verify the correction on")
    structures = [r.structure for r in held]
    # The corrected model was written by the correction job (maybe in another process): its
    # files are trusted when they still hash as that job's output in the store records.
    from softening.models.corrected import trust_saved_model

    trust_saved_model(correction.model)
    before = [p.forces for p in evaluate_structures(load_model(_spec_of(correction)), structures)]
    after = [p.forces for p in evaluate_structures(load_model(correction.model.path), structures)]
    dft = [np.asarray(r.forces) for r in held]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(held):
        groups[" ".join(x for x in (r.material_id, r.region) if x)].append(i)
    rows, warnings = [], []
    for g, idx in sorted(groups.items()):
        b = _figures([before[i] for i in idx], [dft[i] for i in idx])
        a = _figures([after[i] for i in idx], [dft[i] for i in idx])
        worse = a["mae"] > b["mae"]
        rows.append(
            GroupVerification(
                group=g,
                n_frames=len(idx),
                scale_before=b["scale"],
                scale_after=a["scale"],
                mae_before=b["mae"],
                mae_after=a["mae"],
                cmae_before=b["cmae"],
                cmae_after=a["cmae"],
                worse=worse,
            )
        )
        if worse:
            warnings.append(
                f"the correction worsens {g}: held-out MAE {b['mae']:.3f} -> {a['mae']:.3f} eV/Å "
                "(a correction belongs to one material and region; fit it there)"
            )
    for w in warnings:
        logger.warning(w)
    return VerificationDoc(
        correction=correction,
        before=_figures(before, dft),
        after=_figures(after, dft),
        groups=rows,
        warnings=warnings,
        package_version=__version__,
    )


def _spec_of(correction: CorrectionResult) -> str:
    """The spec to reload the base model: its weights path where it has one, else its name."""
    from softening.models.corrected import read_corrected_model

    doc = read_corrected_model(Path(correction.model.path))
    return doc["base"]["spec"]


@softening_job(VerificationDoc, tolerant=True, name="verify")
def verify_job(references: list, correction: CorrectionResult) -> VerificationDoc:
    """jobflow job around :func:`verify_correction`."""
    return verify_correction(references, correction)


@job
def property_after_correction(
    structure: Any,
    material_id: str,
    correction: CorrectionResult,
    property_maker: Any,
    base_model: str,
):
    """A property (any registered one: phonons, surfaces, defects, mixing...) of ``structure``
    with the reference, the base model and the model the correction just wrote, side by side.

    The corrected model's folder exists only once the correction has run, so this job replaces
    itself by the property maker's flow with both models. Its reference jobs reuse stored results
    by content key: the reference side is computed once for both models.
    """
    from dataclasses import replace as _replace

    from jobflow import Response

    correction = CorrectionResult.model_validate(correction)
    maker = _replace(property_maker, models=[base_model, str(correction.model.path)])
    return Response(replace=maker.make(structure, material_id))
