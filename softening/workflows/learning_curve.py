"""A learning curve from options: ``softening learning-curve`` and its JSON record and figure.

:class:`LearningCurveOptions` reads labelled dataset files, checks the options before anything
trains, and runs one :class:`~softening.makers.learning_curve.LearningCurveMaker` per model;
:func:`learning_curve_summary` is the ``--json`` record, and writes the figure with ``out``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from softening.errors import InputError

__all__ = ["LearningCurveOptions", "learning_curve_summary", "parse_list"]


def parse_list(text: str | Sequence[str], name: str) -> list[str]:
    """Comma-separated values (or a list of them) as a flat list; ``name`` for the message."""
    items = [text] if isinstance(text, str) else list(text)
    out = [v.strip() for item in items for v in str(item).split(",") if v.strip()]
    if not out:
        raise InputError(f"{name} is empty")
    return out


@dataclass
class LearningCurveOptions:
    """The options of ``softening learning-curve``, with their defaults.

    Attributes
    ----------
    model
        uMLIPs to correct (one curve each).
    mode
        ``scale``, ``head`` or ``full``.
    method
        Scale mode: ``lstsq`` or ``inverse-scale``.
    train_frames
        The K of the curve, comma-separated (``1,2,4,8``).
    repeats
        Repeats of the random choice (different seeds).
    choice
        Frame choices, comma-separated: highest-energy, largest-force, random, diverse.
    epochs
        Fine-tuning epochs (head/full).
    select
        Keep frames whose material, formula, group or description contains every one of these.
    seed
        Base seed of the frame choice and the training.
    strict
        Refuse VASP runs whose settings differ from the models' training data.
    """

    model: list[str] | None = None
    mode: str = "scale"
    method: str = "lstsq"
    train_frames: str = "1,2,4,8"
    repeats: int = 3
    choice: str = "highest-energy,largest-force,random"
    epochs: int = 100
    select: list[str] | None = None
    seed: int = 0
    strict: bool = False
    models_dir: str | None = field(default=None, repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **overrides: Any) -> LearningCurveOptions:
        """The options from a mapping named as the command line's; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**options, **overrides}.items() if k in names})

    def ks(self) -> list[int]:
        """The curve's K, sorted and unique."""
        try:
            ks = sorted({int(k) for k in parse_list(self.train_frames, "--train-frames")})
        except ValueError:
            raise InputError(
                f"--train-frames must be integers like 1,2,4,8, got {self.train_frames!r}"
            ) from None
        return ks

    def makers(self, store: str | None = None) -> list[Any]:
        """One checked :class:`LearningCurveMaker` per model (bad options raise here)."""
        from softening.makers.learning_curve import LearningCurveMaker
        from softening.models.finetune import FineTuneSettings
        from softening.models.trust import models_folder
        from softening.stores.factory import resolve_store_spec
        from softening.workflows.inputs import default_models

        models_dir = self.models_dir or str(models_folder(resolve_store_spec(store)))
        return [
            LearningCurveMaker(
                model=m,
                mode=self.mode,
                method=self.method,
                train_frames=self.ks(),
                choices=parse_list(self.choice, "--choice"),
                repeats=self.repeats,
                finetune=FineTuneSettings(epochs=self.epochs, seed=self.seed),
                models_dir=models_dir,
                seed=self.seed,
            )
            for m in default_models(self.model)
        ]

    def build(self, datasets: Sequence[str | Path], store: str | None = None) -> Any:
        """The flow of the curves of every model, checked and planned before any job.

        ``scale``: one job per model (closed form on one evaluation); ``head``/``full``: one job
        per point, then one that collects them (resumable, side by side with ``--workers``,
        submittable). The output is the list of :class:`~softening.schemas.LearningCurveDoc`.
        """
        from jobflow import Flow

        from softening.makers.learning_curve import curve_flow

        makers, refs = self._inputs(datasets, store)
        flows = [curve_flow(refs, m) for m in makers]
        return Flow(flows, output=[f.output for f in flows], name="learning curves")

    def _inputs(self, datasets: Sequence[str | Path], store: str | None) -> tuple[list, list]:
        from softening.datasets.references import frames_to_references, labelled_frames
        from softening.workflows.inputs import load_checked_models

        makers = self.makers(store)
        frames, _ = labelled_frames(datasets, self.strict, self.select)
        load_checked_models(
            [m.model for m in makers],
            {el.symbol for f in frames for el in f.structure.composition},
        )
        _, refs = frames_to_references(frames)
        return makers, refs

    def run(
        self,
        datasets: Sequence[str | Path],
        store: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """A :class:`~softening.schemas.LearningCurveDoc` per model, options checked first.

        Raises
        ------
        InputError
            Bad options, no labelled frame, no material with frames left to hold out.
        ModelError
            An unknown model, or an element it lacks.
        """
        from softening.makers.learning_curve import run_learning_curve

        makers, refs = self._inputs(datasets, store)
        return [run_learning_curve(refs, m, progress) for m in makers]


def learning_curve_summary(docs: Sequence[Any], out: Path | None = None) -> dict[str, Any]:
    """The ``--json`` record of learning curves; with ``out``, also their figures and JSON.

    ``{"models": {NAME: {"points", "curves", "held_out": {"n_frames", "materials"}, "before",
    "skipped", "figure"}}}``; scale unitless, MAE and cMAE eV/Å, energy MAE eV/atom.
    """
    from softening.analysis.plots import learning_curve_plot
    from softening.jsonio import write_json
    from softening.naming import safe_filename

    models = {}
    for doc in docs:
        record: dict[str, Any] = {
            "points": [p.model_dump() for p in doc.points],
            "curves": doc.curves,
            "held_out": {
                "n_frames": len(doc.held_out),
                "materials": doc.held_out_materials,
                "frames": doc.held_out,
            },
            "before": doc.before,
            "skipped": doc.skipped,
            "wall_time": doc.wall_time,
        }
        if out is not None:
            figure = Path(out) / f"learning-curve-{safe_filename(doc.model)}.png"
            record["figure"] = str(learning_curve_plot(doc.curves, doc.before, figure, doc.model))
        models[doc.model] = record
    summary = {"models": models}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "learning-curve.json", summary, indent=2, default=str)
    return summary
