"""Evaluate uMLIPs on existing DFT-labelled datasets, streamed: the engine of ``softening evaluate``.

A paper-sized study (the WBM high-energy set: 972 materials, 9,308 frames) is one pass per model
over the files: frames are read one at a time (:mod:`softening.datasets.readers`), evaluated in
batches (graphs built once, the model loaded once), and each material's result is computed and
written to the store as soon as its frames are complete. Per frame only the two force arrays, the
energies and the species are kept (a few hundred bytes for a WBM frame), for the pooled result,
which is one fit over every component of every frame. Every result lands in the store as the
output document of a job (a :class:`SofteningDoc`, forces in the ``data`` store), exactly as the
comparison jobs of a flow write them, so ``query``, ``build`` and ``report`` see them.

Frames under one material id with different compositions are split: those of a later composition
form the result ``<id>:<formula>``, flagged ``mixed_composition``.

On a CPU the frames are evaluated by worker processes, one per core, each with its own copy of the
models (:class:`softening.models.evaluate.FrameWorkers`), one chunk ahead of this process, which
keeps the results in the frames' order and fits and stores them as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import JobConfig, Maker, job

from softening.analysis.metrics import fraction_softened
from softening.errors import InputError
from softening.makers.force_comparison import NoForceSignal, _natural, softening_doc
from softening.schemas import CodeInfo, Flag, ModelInfo, SofteningDoc, flag_texts

logger = logging.getLogger(__name__)

#: Frames handed to the batched evaluator at once: big enough that graph building in worker
#: processes overlaps the model well, small enough that memory stays flat.
CHUNK_FRAMES = 256


MIXED_COMPOSITION = Flag(kind="mixed_composition")


@dataclass(slots=True)
class _Pair:
    """What is kept of one evaluated frame."""

    material: str
    frame_id: str
    formula: str
    species: list[str]
    f_ml: np.ndarray
    f_ref: np.ndarray
    e_ml: float | None
    e_ref: float | None
    flags: tuple[Flag | str, ...]
    code: str


@dataclass
class ModelEvaluation:
    """The evaluation of one model on the datasets.

    Attributes
    ----------
    model
        Provenance of the model.
    materials
        One result per material (in the order their frames ended), without forces.
    pooled
        One fit over all frames of all materials (the material's own result when there is one).
    pooled_forces
        ``(f_ref, f_ml)`` stacked over all frames, ``(n, 3)`` eV/Å (for a parity plot).
    n_frames
        Frames evaluated.
    wall_time
        Seconds for this model.
    skipped
        Materials without a result, and why (``material_id``, ``formula``, ``n_frames``,
        ``reason``): every reference force of theirs is zero (1-atom cells...), so no slope
        exists; they are left out of the pooled fit too.
    """

    model: ModelInfo
    materials: list[SofteningDoc] = field(default_factory=list)
    pooled: SofteningDoc | None = None
    pooled_forces: tuple[np.ndarray, np.ndarray] | None = None
    n_frames: int = 0
    wall_time: float = 0.0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``evaluate --json`` entry of this model: ``{"pooled": {...}, "materials": [...]}``."""
        p = self.pooled
        mats = self.materials
        return {
            "pooled": {
                "scale": p.scale,
                "scale_ci": list(p.scale_ci),
                "mae": p.mae,
                "cmae": p.cmae,
                "energy_mae_per_atom": p.energy_mae_per_atom,
                "n_frames": p.n_frames,
                "n_materials": len(mats),
                "fraction_softened": fraction_softened([d.scale for d in mats]),
                "flags": flag_texts(p.flags),
            },
            "materials": [material_summary(d) for d in mats],
            "skipped": list(self.skipped),
        }


def material_summary(d: SofteningDoc) -> dict[str, Any]:
    """One material's entry of the ``--json`` output (no forces)."""
    return {
        "material_id": d.material_id,
        "formula": d.formula,
        "scale": d.scale,
        "scale_ci": list(d.scale_ci),
        "mae": d.mae,
        "cmae": d.cmae,
        "n_frames": d.n_frames,
        "energy_mae_per_atom": d.energy_mae_per_atom,
        "missing_frames": d.missing_frames,
        "flags": flag_texts(d.flags),
    }


def store_output(store: Any, output: Any, name: str) -> str:
    """Write ``output`` into ``store`` as a finished job's output document; return its uuid.

    The document is the one ``jobflow.Job.run`` writes (uuid, index 1, output, completed_at,
    metadata, hosts, name), its schema's ``data_fields`` going to the ``data`` additional store,
    so results written here and results of flows are read the same way.
    """
    from jobflow.core.schemas import JobStoreDocument
    from monty.json import jsanitize

    uuid = str(uuid_mod.uuid4())
    doc = JobStoreDocument(
        uuid=uuid,
        index=1,
        output=jsanitize(output, strict=True, enum_values=True, allow_bson=True),
        completed_at=datetime.now().isoformat(),
        metadata={},
        hosts=[],
        name=name,
    )
    data_fields = list(getattr(type(output), "data_fields", ()))
    save = {"data": data_fields} if data_fields else {}
    store.update(doc, key=["uuid", "index"], save=save)
    return uuid


def _material_doc(
    pairs: list[_Pair],
    model: ModelInfo,
    n_bootstrap: int,
    seed: int,
    extra_flags: Iterable[Flag] = (),
) -> SofteningDoc:
    pairs = sorted(pairs, key=lambda p: (p.material, _natural(p.frame_id)))
    codes = sorted({p.code for p in pairs})
    flags = sorted({Flag.model_validate(fl) for p in pairs for fl in p.flags} | set(extra_flags))
    return softening_doc(
        keys=[(p.material, p.frame_id) for p in pairs],
        f_ml=[p.f_ml for p in pairs],
        f_ref=[p.f_ref for p in pairs],
        species=[p.species for p in pairs],
        e_ml=[p.e_ml for p in pairs],
        e_ref=[p.e_ref for p in pairs],
        formula=pairs[0].formula,
        model=model,
        reference=CodeInfo(name="+".join(codes), settings={}),
        flags=flags,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


def _chunks(frames: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for f in frames:
        chunk.append(f)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Accumulator:
    """One model's state while frames stream by: open material, finished results, kept pairs."""

    def __init__(self, model: Any, store: Any | None, n_bootstrap: int, seed: int) -> None:
        self.result = ModelEvaluation(model=model.info)
        self.store = store
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.pairs: dict[str, list[_Pair]] = {}
        self.first_formula: dict[str, str] = {}
        self.seen: set[tuple[str, str]] = set()
        self.mixed: set[str] = set()
        self.written: dict[str, str] = {}  # material -> uuid of its stored result
        self.docs: dict[str, SofteningDoc] = {}
        self.skipped: dict[str, dict[str, Any]] = {}  # material -> why it has no result
        self.run_flags: dict[tuple, list[Flag]] = {}  # (run source, formula, flags) -> flags
        self.open: str | None = None
        self.t0 = time.perf_counter()

    def add(self, frame: Any, pred: Any) -> None:
        key = frame.material_key
        formula = frame.formula
        if formula != self.first_formula.setdefault(key, formula):
            key = f"{key}:{formula}"
            self.mixed.add(key)
        if (key, frame.frame_id) in self.seen:
            raise InputError(
                f"frame {frame.frame_id} of {key} appears twice; give each dataset once"
            )
        self.seen.add((key, frame.frame_id))
        if self.open is not None and key != self.open:
            self.flush(self.open)
        self.open = key
        self.pairs.setdefault(key, []).append(
            _Pair(
                material=key,
                frame_id=frame.frame_id,
                formula=formula,
                species=[site.specie.symbol for site in frame.structure],
                f_ml=np.asarray(pred.forces, dtype=float),
                f_ref=np.asarray(frame.forces, dtype=float),
                e_ml=pred.energy,
                e_ref=frame.energy,
                flags=tuple(self.frame_flags(frame)),
                code=str(frame.metadata.get("code", "dataset")),
            )
        )
        self.result.n_frames += 1

    def frame_flags(self, frame: Any) -> list[Flag]:
        """The frame's flags for this model: a VASP frame's run settings against the model's
        training data (:func:`softening.models.backends.flags_for_model`)."""
        from softening.models.backends import ReferenceRun, flags_for_model

        run_info = frame.metadata.get("vasp")
        key = (frame.source or "").rsplit("@", 1)[0], frame.formula, tuple(frame.flags)
        if key not in self.run_flags:  # once per run (file), not per ionic step
            runs = []
            if run_info is not None:
                elements = {el.symbol for el in frame.structure.composition}
                runs = [ReferenceRun.from_run_info(run_info, elements)]
            self.run_flags[key] = flags_for_model(self.result.model.name, frame.flags, runs)
        return self.run_flags[key]

    def flush(self, material: str) -> None:
        """The material's frames are complete: fit, store, keep only the summary."""
        extra = [MIXED_COMPOSITION] if material in self.mixed else []
        try:
            doc = _material_doc(
                self.pairs[material], self.result.model, self.n_bootstrap, self.seed, extra
            )
        except NoForceSignal as exc:  # no slope for this one: the others still have theirs
            pairs = self.pairs[material]
            self.skipped[material] = {
                "material_id": material,
                "formula": pairs[0].formula,
                "n_frames": len(pairs),
                "reason": str(exc).removeprefix(f"{material}: "),
            }
            return
        self.skipped.pop(material, None)
        if self.store is not None:
            if material in self.written:  # frames of this material came back later: replace
                self.store.remove_docs({"uuid": self.written[material]})
            self.written[material] = store_output(
                self.store, doc, f"compare {material} {self.result.model.name}"
            )
        self.docs[material] = doc.model_copy(update={"forces_ml": None, "forces_ref": None})

    def finish(self) -> ModelEvaluation:
        if self.open is None:
            raise InputError("no labelled frames (with reference forces) in the given datasets")
        self.flush(self.open)
        result = self.result
        result.materials = sorted(self.docs.values(), key=lambda d: d.material_id)
        result.skipped = [self.skipped[k] for k in sorted(self.skipped)]
        if not result.materials:
            first = result.skipped[0]
            raise InputError(
                f"no material has a softening scale: {first['material_id']}: {first['reason']}"
                + (f" (and {len(result.skipped) - 1} more)" if len(result.skipped) > 1 else "")
            )
        all_pairs = [p for k, ps in self.pairs.items() if k not in self.skipped for p in ps]
        pooled = _material_doc(all_pairs, result.model, self.n_bootstrap, self.seed)
        if len(result.materials) > 1 and self.store is not None:
            # Pooled: one slope over all components of all frames, never a mean of slopes.
            store_output(self.store, pooled, f"compare pooled {result.model.name}")
        ordered = sorted(all_pairs, key=lambda p: (p.material, _natural(p.frame_id)))
        result.pooled_forces = (
            np.concatenate([p.f_ref for p in ordered]),
            np.concatenate([p.f_ml for p in ordered]),
        )
        result.pooled = pooled.model_copy(update={"forces_ml": None, "forces_ref": None})
        result.wall_time = time.perf_counter() - self.t0
        logger.info(
            "%s: %d frames of %d materials in %.1f s",
            result.model.name,
            result.n_frames,
            len(result.materials),
            result.wall_time,
        )
        return result


def evaluate_frames(
    models: list[str],
    frames: Iterable[Any],
    store: Any | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    workers: int | None = None,
    n_frames: int | None = None,
) -> dict[str, ModelEvaluation]:
    """Evaluate uMLIPs on labelled frames (one streamed pass) and fit the softening per material.

    Parameters
    ----------
    models
        Model names or paths (see :func:`softening.models.load_model`); each is loaded once.
    frames
        Labelled :class:`~softening.datasets.frames.Frame` objects, any iterable (consumed once).
    store
        A connected JobStore: each material's result (and the pooled one) is written as soon as its
        frames are complete. ``None``: nothing is written.
    n_bootstrap, seed
        Bootstrap of each scale's interval.
    progress
        Called with the number of frames just finished (by every model).
    chunk_frames
        Frames evaluated per call of the batched evaluator.
    workers
        Processes that evaluate frames, each with its own copy of the models (1: this process);
        ``None``: chosen from the allocation (:func:`softening.models.evaluate.resolve_frame_workers`).
        Results are the same whatever the number, to float32 round-off.
    n_frames
        About how many frames ``frames`` holds, when known (no more workers than they need).

    Returns
    -------
    dict[str, ModelEvaluation]
        Per canonical model name: per-material results and the pooled one.

    Raises
    ------
    InputError
        A frame that appears twice, or no labelled frame at all.
    ModelError
        A model that lacks an element of the frames (checked before each batch is evaluated), or
        a worker process that died.
    """
    from softening.models import load_model
    from softening.models.evaluate import resolve_frame_workers

    loaded = [load_model(spec) for spec in models]
    accs = [_Accumulator(m, store, n_bootstrap, seed) for m in loaded]
    n_workers = resolve_frame_workers(workers, loaded, n_frames)
    chunks = _chunks(iter(frames), chunk_frames)
    # closing: an error here (a repeated frame) stops the workers at once, not when collected.
    with contextlib.closing(_predictions(loaded, chunks, n_workers)) as predicted:
        for chunk, preds in predicted:
            for acc, chunk_preds in zip(accs, preds, strict=True):
                for frame, pred in zip(chunk, chunk_preds, strict=True):
                    acc.add(frame, pred)
            if progress is not None:
                progress(len(chunk))
    return {m.name: acc.finish() for m, acc in zip(loaded, accs, strict=True)}


def _predictions(
    loaded: list[Any], chunks: Iterator[list[Any]], workers: int
) -> Iterator[tuple[list[Any], list[list[Any]]]]:
    """Each chunk of frames with every model's predictions of it, in the frames' order.

    With one worker, in this process; with more, by frame workers, the next chunk queued before
    this one is handed back, so they keep evaluating while this process fits and stores.
    """
    from softening.models.evaluate import FrameWorkers, evaluate_structures

    def checked(chunk: list[Any]) -> list[Any]:
        structures = [f.structure for f in chunk]
        elements = {el.symbol for s in structures for el in s.composition}
        for m in loaded:
            m.check_elements(elements)
        return structures

    if workers <= 1:
        for chunk in chunks:
            structures = checked(chunk)
            yield chunk, [evaluate_structures(m, structures) for m in loaded]
        return
    with FrameWorkers(loaded, workers) as pool:
        ahead = None
        for chunk in chunks:
            structures = checked(chunk)
            queued = chunk, [pool.submit(i, structures) for i in range(len(loaded))]
            if ahead is not None:
                yield ahead[0], [result() for result in ahead[1]]
            ahead = queued
        if ahead is not None:
            yield ahead[0], [result() for result in ahead[1]]


@dataclass
class DatasetEvaluation:
    """Result of :func:`evaluate_datasets`.

    Attributes
    ----------
    models
        One :class:`ModelEvaluation` per canonical model name.
    reports
        The guard-rail report of every VASP run read
        (:class:`~softening.datasets.guards.GuardReport`).
    """

    models: dict[str, ModelEvaluation]
    reports: list[Any] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``softening evaluate --json`` object: ``{"models": {NAME: {"pooled", "materials"}}}``
        plus ``"inputs"`` (per VASP file: steps kept and dropped, flags) when VASP files were read.
        """
        out: dict[str, Any] = {"models": {k: v.summary() for k, v in self.models.items()}}
        if self.reports:
            out["inputs"] = [r.as_dict() for r in self.reports]
        return out


def evaluate_datasets(
    datasets: list[str | Path],
    models: list[str],
    store: Any | None = None,
    strict: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: Callable[[int, int | None], None] | None = None,
    workers: int | None = None,
) -> DatasetEvaluation:
    """Evaluate uMLIPs on labelled datasets: the library function behind ``softening evaluate``.

    Parameters
    ----------
    datasets
        Dataset files (extended XYZ, WBM/mlearn JSON, vasprun), read once, as streams.
    models
        Model specs.
    store
        A JobStore (connected here) for the per-material and pooled results, or ``None``.
    strict
        Refuse VASP runs whose settings differ from the models' training data.
    n_bootstrap, seed
        Bootstrap of the scales' intervals.
    progress
        Called as ``progress(frames just done, about how many frames in all or None)``.
    workers
        Processes that evaluate frames (``--workers``; ``None``: from the allocation), see
        :func:`evaluate_frames`.

    Returns
    -------
    DatasetEvaluation
        Per model: pooled and per-material results; its ``summary()`` is the ``--json`` object.
    """
    from softening.datasets.readers import count_frames, iter_labelled_frames

    paths = [Path(p) for p in datasets]
    counts = [count_frames(p) for p in paths]
    total = sum(counts) if all(c is not None for c in counts) else None
    if store is not None:
        store.connect()
    reports: list[Any] = []
    frames = iter_labelled_frames(paths, strict=strict, reports=reports)

    def step(n: int) -> None:
        if progress is not None:
            progress(n, total)

    results = evaluate_frames(
        models,
        frames,
        store=store,
        n_bootstrap=n_bootstrap,
        seed=seed,
        progress=step,
        workers=workers,
        n_frames=total,
    )
    return DatasetEvaluation(models=results, reports=reports)


@dataclass
class DatasetEvaluationMaker(Maker):
    """Evaluate uMLIPs on labelled dataset files (one job; results stored per material).

    The job streams the files (they must be readable where the job runs), writes one
    :class:`SofteningDoc` per material and model and a pooled one into the job's store, and returns
    the ``evaluate --json`` summary.

    Attributes
    ----------
    name
        Job name.
    models
        Model specs.
    strict
        Refuse VASP runs whose settings differ from the models' training data.
    n_bootstrap, seed
        Bootstrap of the scales' intervals.
    workers
        Processes that evaluate frames (``None``: from the allocation; 1 when the job shares the
        cores with other jobs of :func:`softening.execution.local.run_flow`).
    """

    name: str = "evaluate datasets"
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    strict: bool = False
    n_bootstrap: int = 1000
    seed: int = 0
    workers: int | None = None

    @job(config=JobConfig(expose_store=True))
    def make(self, datasets: list[str]) -> dict[str, Any]:
        """Evaluate ``datasets`` (paths) with every model."""
        from jobflow import CURRENT_JOB

        result = evaluate_datasets(
            datasets,
            self.models,
            store=CURRENT_JOB.store,
            strict=self.strict,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
            workers=self.workers,
        )
        return result.summary()
