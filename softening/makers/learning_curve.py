"""Learning curves of a correction: held-out figures against the number of frames trained on.

:func:`plan_curve` chooses, for every point (choice, K, repeat), the training frames of each
material, and holds out the frames that no point trains on; :func:`run_learning_curve` then fits
and measures every point on that one held-out set. In ``scale`` mode the model is evaluated once
on all frames and every point is closed form on those outputs; ``head`` and ``full`` fine-tune
with the family's trainer (:func:`~softening.models.finetune.finetune_model`) once per point.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Maker

from softening.analysis.correction import CORRECTION_METHODS, correction_factor
from softening.analysis.learning_curve import (
    CURVE_CHOICES,
    curve_statistics,
    plan_points,
    select_frames,
)
from softening.analysis.metrics import (
    corrected_force_mae,
    energy_mae_per_atom,
    force_mae,
    scale_through_origin,
)
from softening.errors import InputError
from softening.makers.correction import _key, _usable, save_correction
from softening.makers.job import softening_job
from softening.models.finetune import CORRECTION_MODES, FineTuneSettings
from softening.schemas import FrameResult, LearningCurveDoc, LearningCurvePoint

logger = logging.getLogger(__name__)

__all__ = [
    "CurvePlan",
    "LearningCurveMaker",
    "curve_flow",
    "fine_tune_point",
    "plan_curve",
    "run_learning_curve",
]


@dataclass
class CurvePlan:
    """The training frames of every point and the common held-out frames.

    Attributes
    ----------
    points
        ``(choice, k, repeat, seed, train_keys)`` per point; keys are ``material/frame``.
    held_out
        Keys of the frames no point trains on (in input order).
    skipped
        Materials left out, each with why.
    """

    points: list[tuple[str, int, int, int, list[str]]]
    held_out: list[str]
    skipped: list[str] = field(default_factory=list)


def check_curve_options(
    choices: Sequence[str], ks: Sequence[int], repeats: int, mode: str, method: str = "lstsq"
) -> None:
    """Raise :class:`InputError` (one line) for options no curve can run with."""
    bad = [c for c in choices if c not in CURVE_CHOICES]
    if bad or not choices:
        raise InputError(f"unknown frame choice {', '.join(bad)!s}; use {', '.join(CURVE_CHOICES)}")
    if not ks or any(int(k) < 1 for k in ks):
        raise InputError(f"train frames must be >= 1, got {list(ks)}")
    if repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {repeats}")
    if mode not in CORRECTION_MODES:
        raise InputError(f"mode must be one of {CORRECTION_MODES}, got {mode!r}")
    if method not in CORRECTION_METHODS:
        raise InputError(f"method must be one of {CORRECTION_METHODS}, got {method!r}")


def plan_curve(
    refs: Sequence[FrameResult],
    choices: Sequence[str],
    ks: Sequence[int],
    repeats: int = 1,
    seed: int = 0,
    features: Callable[[list[FrameResult]], np.ndarray] | None = None,
) -> CurvePlan:
    """Choose every point's training frames per material; hold out the frames none trains on.

    The frames are chosen from all of a material's frames, as ``finetune`` does (so K=1 with
    ``highest-energy`` trains on the frame ``finetune --train-frames 1`` trains on); the held-out
    set is what is left once every point has chosen.

    Parameters
    ----------
    refs
        Labelled frames (forces required).
    choices, ks, repeats, seed
        The curve's frame choices, frames per material, repeats of random choices and base seed.
    features
        Structure features of a material's frames, for ``diverse``.

    Raises
    ------
    InputError
        No material has frames left to hold out (each material's reason is given).
    """
    by_material: dict[str, list[FrameResult]] = defaultdict(list)
    for r in refs:
        by_material[r.material_id].append(r)
    planned = plan_points(choices, ks, repeats, seed)
    train: dict[tuple[str, int, int, int], list[str]] = {p: [] for p in planned}
    held: set[str] = set()
    skipped = []
    for mid, frames in sorted(by_material.items()):
        n, k_max = len(frames), max(ks)
        if n <= k_max:
            skipped.append(f"{mid} has {n} frame(s): too few to train on {k_max} and hold any out")
            continue
        # As split_frames: energies only when every frame has one.
        energies = None
        if all(f.energy is not None for f in frames):
            energies = [f.energy / len(f.structure) for f in frames]
        mean_f = [float(np.mean(np.abs(f.forces))) for f in frames]
        feas = features(frames) if features is not None and "diverse" in choices else None
        picks = {
            p: select_frames(p[0], p[1], energies, mean_f, feas, p[3]) for p in planned
        }  # fmt: skip
        used = set().union(*picks.values())
        if len(used) == n:
            skipped.append(
                f"{mid}: the curve trains on all its {n} frames; none is left to hold out "
                "(fewer K, repeats or choices)"
            )
            continue
        for p, idx in picks.items():
            train[p] += [_key(frames[i]) for i in idx]
        held |= {_key(f) for i, f in enumerate(frames) if i not in used}
    if not held:
        raise InputError("no material has frames left to hold out: " + "; ".join(skipped))
    for s in skipped:
        logger.warning(s)
    order = [_key(r) for r in refs if _key(r) in held]
    return CurvePlan(points=[(*p, train[p]) for p in planned], held_out=order, skipped=skipped)


def _figures(
    f_ml: list[np.ndarray],
    f_dft: list[np.ndarray],
    e_ml: list[float | None],
    e_dft: list[float | None],
    n_atoms: list[int],
    groups: list[str],
) -> dict[str, float | None]:
    s = scale_through_origin(f_ml, f_dft)
    e_mae = None
    if all(e is not None for e in (*e_ml, *e_dft)):
        e_mae = energy_mae_per_atom(e_ml, e_dft, n_atoms, groups)
    return {
        "scale": s,
        "mae": force_mae(f_ml, f_dft),
        "cmae": corrected_force_mae(f_ml, f_dft, s),
        "energy_mae": e_mae,
    }


@dataclass
class LearningCurveMaker(Maker):
    """A learning curve of one uMLIP's correction (see the module docstring).

    Attributes
    ----------
    name
        Job name.
    model
        uMLIP spec to correct.
    mode
        ``scale`` (closed form on one evaluation), ``head`` or ``full`` (a fine-tune per point).
    method
        Scale mode: ``lstsq`` or ``inverse-scale``.
    train_frames
        The curve's K: frames per material of each point.
    choices
        Frame choices: ``highest-energy``, ``largest-force``, ``random``, ``diverse``.
    repeats
        Repeats (seeds ``seed``, ``seed + 1``...) of the random choice.
    finetune
        Fine-tuning hyper-parameters (head/full).
    models_dir
        Folder the fine-tuned models are saved in (head/full).
    seed
        Base seed.
    """

    name: str = "learning curve"
    model: str = "chgnet"
    mode: str = "scale"
    method: str = "lstsq"
    train_frames: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    choices: list[str] = field(default_factory=lambda: ["highest-energy"])
    repeats: int = 3
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    models_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.finetune, dict):
            keys = {k: v for k, v in self.finetune.items() if not k.startswith("@")}
            self.finetune = FineTuneSettings(**keys)
        check_curve_options(self.choices, self.train_frames, self.repeats, self.mode, self.method)

    @softening_job(LearningCurveDoc, tolerant=True)
    def make(self, references: list[FrameResult | None]) -> LearningCurveDoc:
        """Fit and measure every point of the curve."""
        return run_learning_curve(references, self)


def run_learning_curve(
    references: list, maker: LearningCurveMaker, progress: Callable[[int], None] | None = None
) -> LearningCurveDoc:
    """What the learning-curve job does (callable without jobflow)."""
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    t0 = time.perf_counter()
    refs = _usable(references)
    base = load_model(maker.model)
    base.check_elements({el.symbol for r in refs for el in r.structure.composition})

    def features(frames: list[FrameResult]) -> np.ndarray:
        return base.backend.features(base, [f.structure for f in frames])

    plan = plan_curve(
        refs, maker.choices, maker.train_frames, maker.repeats, maker.seed, features
    )  # fmt: skip
    by_key = {_key(r): r for r in refs}
    held = [by_key[k] for k in plan.held_out]
    needed = set(plan.held_out).union(*(set(p[4]) for p in plan.points))
    frames = [r for r in refs if _key(r) in needed]
    # The base model on every frame a point uses, once: scale points are closed form on these.
    preds = dict(
        zip(
            [_key(r) for r in frames],
            evaluate_structures(base, [r.structure for r in frames]),
            strict=True,
        )
    )
    dft_f = [np.asarray(r.forces) for r in held]
    dft_e = [r.energy for r in held]
    n_at = [len(r.structure) for r in held]
    groups = [r.material_id for r in held]

    def figures(f_ml, e_ml) -> dict[str, float | None]:
        return _figures(f_ml, dft_f, e_ml, dft_e, n_at, groups)

    base_f = [preds[_key(r)].forces for r in held]
    base_e = [preds[_key(r)].energy for r in held]
    before = figures(base_f, base_e)
    points = []
    for choice, k, repeat, seed, train_keys in plan.points:
        t1 = time.perf_counter()
        factor, path = None, None
        if maker.mode == "scale":
            factor = correction_factor(
                [preds[t].forces for t in train_keys],
                [np.asarray(by_key[t].forces) for t in train_keys],
                maker.method,
            )
            fig = figures([factor * f for f in base_f], [factor * e for e in base_e])
        else:
            path = _finetune_point(base, [by_key[t] for t in train_keys], maker, seed)
            after = evaluate_structures(load_model(path), [r.structure for r in held])
            fig = _held_figures(held, after)
        points.append(
            LearningCurvePoint(
                choice=choice,
                mode=maker.mode,
                k=k,
                repeat=repeat,
                seed=seed,
                train_frames=train_keys,
                factor=factor,
                model_path=path,
                wall_time=time.perf_counter() - t1,
                **fig,
            )
        )
        if progress is not None:
            progress(1)
    return LearningCurveDoc(
        model=base.name,
        model_spec=maker.model,
        points=points,
        curves=curve_statistics(p.model_dump() for p in points),
        held_out=plan.held_out,
        held_out_materials=sorted(set(groups)),
        before=before,
        skipped=plan.skipped,
        wall_time=time.perf_counter() - t0,
    )


def _as_maker(maker: LearningCurveMaker | dict) -> LearningCurveMaker:
    """The maker, also from its JSON form (a job run in another process)."""
    if isinstance(maker, LearningCurveMaker):
        return maker
    return LearningCurveMaker(**{k: v for k, v in maker.items() if not k.startswith("@")})


def _held_figures(held: list[FrameResult], preds: list[Any]) -> dict[str, float | None]:
    """Held-out figures of a model's predictions ``preds`` (one per held-out frame)."""
    return _figures(
        [p.forces for p in preds],
        [np.asarray(r.forces) for r in held],
        [p.energy for p in preds],
        [r.energy for r in held],
        [len(r.structure) for r in held],
        [r.material_id for r in held],
    )


def fine_tune_point(
    references: list, maker: LearningCurveMaker, point: list, held_out: list[str]
) -> LearningCurvePoint:
    """One head/full point: fine-tune on its frames, measure on the curve's held-out frames.

    Parameters
    ----------
    references
        The labelled frames (at least the point's training frames and the held-out ones).
    maker
        The curve's settings.
    point
        ``(choice, k, repeat, seed, train_keys)`` from :func:`plan_curve`.
    held_out
        Keys of the curve's held-out frames.
    """
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    t0 = time.perf_counter()
    maker = _as_maker(maker)
    choice, k, repeat, seed, train_keys = point
    by_key = {_key(r): r for r in _usable(references)}
    held = [by_key[h] for h in held_out]
    base = load_model(maker.model)
    path = _finetune_point(base, [by_key[t] for t in train_keys], maker, seed)
    preds = evaluate_structures(load_model(path), [r.structure for r in held])
    return LearningCurvePoint(
        choice=choice,
        mode=maker.mode,
        k=k,
        repeat=repeat,
        seed=seed,
        train_frames=list(train_keys),
        model_path=path,
        wall_time=time.perf_counter() - t0,
        **_held_figures(held, preds),
    )


@softening_job(LearningCurvePoint, name="learning curve point")
def fine_tune_point_job(
    references: list, maker: LearningCurveMaker, point: list, held_out: list[str]
) -> LearningCurvePoint:
    """jobflow job around :func:`fine_tune_point` (one per point: resumable, run side by side)."""
    return fine_tune_point(references, maker, point, held_out)


@softening_job(LearningCurveDoc, tolerant=True, name="learning curve")
def collect_curve_job(
    references: list,
    maker: LearningCurveMaker,
    held_out: list[str],
    skipped: list[str],
    points: list,
) -> LearningCurveDoc:
    """The curve of fine-tuned points: the uncorrected model's held-out figures and statistics."""
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    maker = _as_maker(maker)
    by_key = {_key(r): r for r in _usable(references)}
    held = [by_key[h] for h in held_out]
    base = load_model(maker.model)
    points = [LearningCurvePoint.model_validate(p) for p in points if p is not None]
    return LearningCurveDoc(
        model=base.name,
        model_spec=maker.model,
        points=points,
        curves=curve_statistics(p.model_dump() for p in points),
        held_out=held_out,
        held_out_materials=sorted({r.material_id for r in held}),
        before=_held_figures(held, evaluate_structures(base, [r.structure for r in held])),
        skipped=skipped,
    )


def curve_flow(references: list[FrameResult], maker: LearningCurveMaker) -> Any:
    """The flow of a curve, planned here (bad inputs fail before any job).

    ``scale``: one job (closed form on one evaluation). ``head``/``full``: one job per point
    (each resumable, run side by side with ``--workers``), then one that collects them. Its
    output is the :class:`~softening.schemas.LearningCurveDoc`.
    """
    from jobflow import Flow

    if maker.mode == "scale":
        job = maker.make(references)
        return Flow([job], output=job.output, name=f"learning curve {maker.model}")
    from softening.models import load_model

    refs = _usable(references)
    base = load_model(maker.model)
    plan = plan_curve(
        refs,
        maker.choices,
        maker.train_frames,
        maker.repeats,
        maker.seed,
        lambda frames: base.backend.features(base, [f.structure for f in frames]),
    )
    by_key = {_key(r): r for r in refs}
    held = [by_key[h] for h in plan.held_out]
    jobs = [
        fine_tune_point_job([by_key[t] for t in p[4]] + held, maker, list(p), plan.held_out)
        for p in plan.points
    ]
    collect = collect_curve_job(
        held, maker, plan.held_out, plan.skipped, [j.output for j in jobs]
    )  # fmt: skip
    return Flow([*jobs, collect], output=collect.output, name=f"learning curve {maker.model}")


def _finetune_point(
    base: Any, train: list[FrameResult], maker: LearningCurveMaker, seed: int
) -> str:
    """Fine-tune ``base`` on ``train`` as ``finetune --mode head|full`` does; the model's folder.

    Named by a digest of its inputs, as :func:`~softening.makers.correction.fit_correction` names
    its models: a point already trained is loaded, not trained again (a rerun resumes).
    """
    from softening.models.corrected import MODEL_FILE
    from softening.models.finetune import TrainingSet, finetune_model, save_finetuned
    from softening.models.trust import models_folder

    settings = FineTuneSettings(**{**maker.finetune.as_dict(), "mode": maker.mode, "seed": seed})
    ids = [_key(r) for r in train]
    digest = hashlib.sha256(
        json.dumps(
            [[r.content_key or _key(r) for r in train], maker.mode, settings.as_dict(),
             base.weights_sha256],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:10]  # fmt: skip
    name = f"{base.name}+{maker.mode}-{digest}"
    folder = Path(maker.models_dir or models_folder()) / name
    if (folder / MODEL_FILE).is_file():
        return str(folder)
    if any(r.energy is None for r in train):
        raise InputError("fine-tuning needs reference energies for every training frame")
    data = TrainingSet(
        structures=[r.structure for r in train],
        energies=[r.energy for r in train],
        forces=[np.asarray(r.forces) for r in train],
        stresses=[None if r.stress is None else np.asarray(r.stress) for r in train],
        ids=ids,
    )
    # Trainers print progress on stdout, which belongs to --json: sent to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        network, _ = finetune_model(base, data, settings, folder / "training")
    weights = save_finetuned(base, network, folder)
    save_correction(
        folder, name, maker.model, base, maker.mode, 1.0, weights, ids, settings.as_dict()
    )
    return str(folder)
