"""uMLIP single points of many frames, the model loaded once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from jobflow import Maker

from softening.makers.job import softening_job
from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    UMLIPResults,
    content_key,
)

logger = logging.getLogger(__name__)


@dataclass
class UMLIPStaticMaker(Maker):
    """Evaluate all frames with one uMLIP in memory-bounded batches.

    Attributes
    ----------
    name
        Job name.
    model
        uMLIP spec (name or local path; see :func:`softening.models.load_model`).
    device
        ``auto``, ``cpu`` or ``cuda`` (default from settings).
    dtype
        ``float32`` or ``float64`` (default from settings).
    memory_gb
        Memory budget of one batch, GB (default from settings).
    """

    name: str = "umlip static"
    model: str = "chgnet"
    device: str | None = None
    dtype: str | None = None
    memory_gb: float | None = None

    @softening_job(UMLIPResults, store=True, replaces=True)
    def make(self, frames: list[FrameSpec]):
        """Single points of ``frames``, or the stored ones of an identical earlier job.

        A reuse returns a ``Response`` replacing this job by one that outputs the stored result,
        its forces referenced rather than copied (see :mod:`softening.makers.reuse`).
        """

        from softening.makers.reuse import reuse_stored
        from softening.models import load_model

        model = load_model(self.model, device=self.device, dtype=self.dtype)
        key = umlip_content_key(frames, model)
        reused = reuse_stored(key, "UMLIPResults", f"{model.name} on {len(frames)} frames")
        if reused is not None:
            return reused
        return predict_frames(frames, self).model_copy(update={"content_key": key})


def umlip_content_key(frames: list[FrameSpec], model) -> str:
    """Content key of a uMLIP job: every frame (ids and structure) and the model's weights."""
    import hashlib

    settings = {"weights": model.weights_sha256, "dtype": model.dtype, "factor": model.factor}
    keys = [
        f"{f.material_id}/{f.frame_id}/{content_key(f.structure, model.name, settings)}"
        for f in frames
    ]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def predict_frames(frames: list[FrameSpec], maker: UMLIPStaticMaker) -> UMLIPResults:
    """The maker's model's energies, forces and stresses on ``frames`` (what the job does,
    callable without jobflow); no reference is involved (compare
    :func:`softening.makers.evaluate.evaluate_frames`, which fits the softening of labelled frames).
    """
    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    model = load_model(maker.model, device=maker.device, dtype=maker.dtype)
    t0 = time.perf_counter()
    structures = [f.structure for f in frames]
    preds = evaluate_structures(model, structures, memory_gb=maker.memory_gb)
    code = CodeInfo(
        name=model.name,
        version=model.version,
        settings={"device": model.device, "dtype": model.dtype},
    )
    results = [
        FrameResult(
            frame_id=f.frame_id,
            material_id=f.material_id,
            formula=f.formula,
            structure=f.structure,
            energy=p.energy,
            forces=p.forces.tolist(),
            stress=p.stress.tolist() if p.stress is not None else None,
            code=code,
        )
        for f, p in zip(frames, preds, strict=True)
    ]
    wall = time.perf_counter() - t0
    logger.info("%s: %d frames in %.1f s", model.name, len(frames), wall)
    return UMLIPResults(model=model.info, frames=results, wall_time=wall)
