"""Cost of a learning curve (``softening learning-curve``) per point, against one ``evaluate``.

Data: the AIMD frames of ``../shared/data/mlearn/Si/training.json`` (CHGNet 0.3.0 by default).

- ``evaluate_s``: the model on every frame once (:func:`softening.models.evaluate.evaluate_structures`),
  what ``softening evaluate`` spends in the model;
- ``scale``: a ``--mode scale`` curve with few and with ten times more points (K x repeats of the
  random choice, plus highest-energy and largest-force). The model's outputs are computed once and
  every point is closed form on them, so a curve should cost about one evaluation whatever its
  number of points: ``scale_ratio`` = curve / evaluation, and ``growth`` = (cost of the big curve) /
  (cost of the small one), about 1 rather than 10;
- ``head``: one point of a ``--mode head`` curve, a 5-epoch fine-tune of the readout on K frames
  (:func:`softening.makers.correction.fit_correction`, the family's own trainer) and its held-out
  evaluation: ``head_point_s`` and its ratio to one evaluation.

Usage: ``python benchmarks/bench_learning_curve.py [--model chgnet] [--epochs 5] [--k 4]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared" / "data" / "mlearn" / "Si" / "training.json"


def references(select: list[str]) -> list:
    """The frames as :class:`~softening.schemas.FrameResult` (as the command reads them)."""
    from softening.datasets.references import frames_to_references, labelled_frames

    frames, _ = labelled_frames([SI], False, select)
    return frames_to_references(frames)[1]


def curve_seconds(
    refs: list, model: str, ks: list[int], repeats: int, where: str
) -> tuple[float, int]:
    """Wall time of a ``scale`` curve of highest-energy, largest-force and random (``repeats``)."""
    from softening.makers.learning_curve import LearningCurveMaker, run_learning_curve

    maker = LearningCurveMaker(
        model=model,
        mode="scale",
        train_frames=ks,
        choices=["highest-energy", "largest-force", "random"],
        repeats=repeats,
        models_dir=where,
    )
    t0 = time.perf_counter()
    doc = run_learning_curve(refs, maker)
    seconds = time.perf_counter() - t0
    return seconds, len(doc.points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="chgnet")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--k", type=int, default=4, help="Frames of the head fine-tune point.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from softening.makers.correction import CorrectionMaker, fit_correction, verify_correction
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures
    from softening.models.finetune import FineTuneSettings

    refs = references(["AIMD-NVT"])
    model = load_model(args.model)
    evaluate_structures(model, [refs[0].structure])  # warm-up: first-call costs out of the timing
    t0 = time.perf_counter()
    evaluate_structures(model, [r.structure for r in refs])
    evaluate_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as where:
        small_s, small_n = curve_seconds(refs, args.model, [1, 2], 2, where)
        big_s, big_n = curve_seconds(refs, args.model, [1, 2, 3, 4, 6, 8], 8, where)
        one = [r for r in refs if "843 K" in (r.region or "")] or refs
        maker = CorrectionMaker(
            model=args.model,
            mode="head",
            train_frames=args.k,
            finetune=FineTuneSettings(epochs=args.epochs),
            models_dir=where,
        )
        t0 = time.perf_counter()
        corr = fit_correction(one, maker)
        verify_correction(one, corr)
        head_s = time.perf_counter() - t0

    result = {
        "model": model.name,
        "frames": len(refs),
        "evaluate_s": round(evaluate_s, 2),
        "scale_points_small": small_n,
        "scale_small_s": round(small_s, 2),
        "scale_points_big": big_n,
        "scale_big_s": round(big_s, 2),
        "scale_ratio": round(big_s / evaluate_s, 2),
        "scale_per_point_ms": round(1e3 * max(big_s - small_s, 0.0) / max(big_n - small_n, 1), 1),
        "growth": round(big_s / small_s, 2),
        "head_frames": len(one),
        "head_k": args.k,
        "head_epochs": args.epochs,
        "head_point_s": round(head_s, 2),
        "head_ratio": round(head_s / (evaluate_s * len(one) / len(refs)), 1),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
