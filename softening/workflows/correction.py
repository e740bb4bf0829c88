"""A correction: its flow (:class:`CorrectionFlowMaker`), the flow of ``softening finetune`` from
options, and its JSON record.

:class:`CorrectionOptions` builds, from labelled dataset files, the flow that corrects a uMLIP on a
few frames per material and verifies it on the held-out ones (:class:`CorrectionFlowMaker`);
:func:`verification_summary` is the ``finetune --json`` record of its
:class:`~softening.schemas.VerificationDoc`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jobflow import Flow, Maker

from softening import defaults
from softening.makers.correction import CorrectionMaker, verify_job
from softening.schemas import FrameResult

__all__ = ["CorrectionFlowMaker", "CorrectionOptions", "verification_summary"]


@dataclass
class CorrectionFlowMaker(Maker):
    """Correct a uMLIP on labelled frames and verify it on the held-out ones (two jobs)."""

    name: str = "correct"
    correction_maker: CorrectionMaker = field(default_factory=CorrectionMaker)

    def make(self, references: list[FrameResult]) -> Flow:
        """The flow; its output is the :class:`VerificationDoc`."""
        correct = self.correction_maker.make(references)
        verify = verify_job(references, correct.output)
        return Flow([correct, verify], output=verify.output, name=self.name)


@dataclass
class CorrectionOptions:
    """The options of ``softening finetune``, with their defaults.

    Attributes
    ----------
    model
        uMLIP to correct.
    mode
        ``scale`` (linear, closed form), ``head`` (readout only) or ``full``.
    method
        Scale mode: ``lstsq`` or ``inverse-scale``.
    train_frames
        Frames per material to fit on; the rest are held out.
    frame_choice
        ``highest-energy``, ``largest-force``, ``random`` or ``diverse`` (DIRECT on the model's
        structure features).
    epochs
        Fine-tuning epochs (the paper: 100).
    replay
        MACE: extended XYZ of the foundation model's data, for multi-head replay.
    select
        Keep frames whose material, formula, group or description contains every one of these.
    seed
        Seed of the frame choice and the training.
    strict
        Refuse VASP runs whose settings differ from the models' training data.
    """

    model: str = "chgnet"
    mode: str = "scale"
    method: str = "lstsq"
    train_frames: int = defaults.TRAIN_FRAMES
    frame_choice: str = "highest-energy"
    epochs: int = 100
    replay: str | Path | None = None
    select: list[str] | None = None
    seed: int = 0
    strict: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **overrides: Any) -> CorrectionOptions:
        """The options from a mapping named as the command line's; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**options, **overrides}.items() if k in names})

    def build(self, datasets: Sequence[str | Path], store: str | None = None) -> Flow:
        """The correction flow over the labelled frames of ``datasets``, checked before any job.

        Parameters
        ----------
        datasets
            Labelled dataset files (extended XYZ, WBM/mlearn JSON, vasprun).
        store
            Store spec of the results (the corrected model is written under its ``models/``).

        Returns
        -------
        Flow
            Correct, then verify; its output is the :class:`~softening.schemas.VerificationDoc`.

        Raises
        ------
        InputError
            Bad options, no labelled frame, too few frames per material to hold any out.
        ModelError
            An unknown model, or an element it lacks.
        """
        from softening.datasets.references import frames_to_references, labelled_frames
        from softening.makers.correction import check_split, models_folder
        from softening.models.finetune import FineTuneSettings
        from softening.stores.factory import resolve_store_spec
        from softening.workflows.inputs import load_checked_models

        maker = CorrectionMaker(
            model=self.model,
            mode=self.mode,
            method=self.method,
            train_frames=self.train_frames,
            frame_choice=self.frame_choice,
            finetune=FineTuneSettings(
                epochs=self.epochs,
                seed=self.seed,
                replay_data=str(self.replay) if self.replay else None,
            ),
            seed=self.seed,
            models_dir=str(models_folder(resolve_store_spec(store))),
        )
        frames, _ = labelled_frames(datasets, self.strict, self.select)
        load_checked_models(
            [self.model], {el.symbol for f in frames for el in f.structure.composition}
        )
        _, refs = frames_to_references(frames)
        # Too few frames: fail before any work.
        check_split(refs, self.train_frames)
        return CorrectionFlowMaker(correction_maker=maker).make(refs)


def verification_summary(doc: Any) -> dict[str, Any]:
    """The JSON record of a :class:`~softening.schemas.VerificationDoc` (``finetune --json``).

    Held-out ``before``/``after`` (scale, MAE and cMAE in eV/Å), per-group results, the frames
    trained on and held out, the corrected model (name, path), its factor and mode, warnings.
    """
    c = doc.correction
    return {
        "before": doc.before,
        "after": doc.after,
        "groups": [g.model_dump() for g in doc.groups],
        "train_frames": c.train_frames,
        "held_out_frames": c.held_out_frames,
        "model": c.model.name,
        "model_path": c.model.path,
        "factor": c.factor,
        "trained_factor": c.trained_factor,
        "mode": c.mode,
        "warnings": doc.warnings,
    }
