"""Summary collections derived from the stored :class:`SofteningDoc` results by a maggma Builder.

The builder reads the outputs collection and writes four collections next to it:

- ``summary_inputs``: one record per source SofteningDoc (job uuid), holding the hash of the source
  document, the fields the summaries need, and, for a document that could not be processed, the
  error. A later run processes only documents that are new, whose hash changed, or that failed;
  records of deleted documents are removed.
- ``summary_models``: per model, the distribution of ``scale`` across materials (histogram and
  quantiles), the fraction softened, mean and median MAE / cMAE (the paper's Figs. 5b and 6b).
- ``summary_elements``: per model and element, the scale of materials containing the element and
  the element's own scale (``per_element_scales``).
- ``summary_chemsys``: per model and chemical system, the scales of its materials.

Only the groups (model, element, chemical system) touched by a changed input are recomputed.
Per model, the latest result per (material, reference code) counts, as in
:func:`~softening.stores.queries.query_results`. ``material_id == "pooled"`` results are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
from jobflow import JobStore
from maggma.core import Builder, Store
from pydantic import BaseModel, Field

from softening.analysis.metrics import fraction_softened
from softening.errors import one_line
from softening.schemas import SofteningDoc
from softening.stores.factory import sibling_store

__all__ = [
    "SUMMARY_COLLECTIONS",
    "BuildStats",
    "ChemsysSummary",
    "ElementSummary",
    "InputRecord",
    "ModelSummary",
    "ScaleHistogram",
    "SofteningSummaryBuilder",
    "build_summaries",
    "summary_record",
    "summary_stores",
]

#: Collection names of the builder's targets, next to the outputs collection.
SUMMARY_COLLECTIONS = {
    "inputs": "summary_inputs",
    "models": "summary_models",
    "elements": "summary_elements",
    "chemsys": "summary_chemsys",
}
_KEYS = {
    "inputs": "uuid",
    "models": "summary_id",
    "elements": "summary_id",
    "chemsys": "summary_id",
}

#: Histogram bin edges of ``scale``: 0.5 to 1.5 in steps of 0.025 (fixed, so that models and
#: successive builds compare bin by bin); values outside are counted in ``below`` / ``above``.
SCALE_BIN_EDGES = [round(x, 6) for x in np.linspace(0.5, 1.5, 41)]
QUANTILES = {
    "p00": 0.0,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p100": 1.0,
}
_FORCE_FIELDS = ("forces_ml", "forces_ref")


def _now() -> datetime:
    return datetime.now(UTC)


# ---- documents -------------------------------------------------------------------------------------


class InputRecord(BaseModel):
    """The builder's record of one source SofteningDoc (what it last saw, and the outcome)."""

    uuid: str = Field(description="uuid of the job whose output is the SofteningDoc.")
    index: int = Field(description="jobflow index of that output (the highest is used).")
    source_hash: str = Field(description="SHA-256 of the source document as last processed.")
    completed_at: str | None = Field(None, description="When the job finished (ISO 8601, UTC).")
    state: str = Field(description="'ok' when processed, 'failed' when processing raised.")
    error: str | None = Field(None, description="One-line error of a failed processing.")
    attempts: int = Field(1, description="Consecutive processing attempts (1 after a success).")
    last_updated: datetime = Field(default_factory=_now, description="Time of the record (UTC).")
    model: str | None = Field(None, description="Canonical model name.")
    model_family: str | None = Field(None, description="Model family.")
    material_id: str | None = Field(None, description="Material identifier.")
    formula: str | None = Field(None, description="Reduced formula.")
    chemsys: str | None = Field(None, description="Chemical system, elements sorted, '-'-joined.")
    elements: list[str] = Field(default_factory=list, description="Elements, alphabetical.")
    reference: str | None = Field(None, description="Reference code name.")
    scale: float | None = Field(None, description="Softening scale (dimensionless).")
    mae: float | None = Field(None, description="Force MAE, eV/Å.")
    cmae: float | None = Field(None, description="Force MAE after dividing by scale, eV/Å.")
    n_frames: int | None = Field(None, description="Frames compared.")
    per_element_scales: dict[str, float] = Field(
        default_factory=dict, description="Scale over the force rows of each element."
    )


class ScaleHistogram(BaseModel):
    """Counts of materials per bin of the softening scale."""

    edges: list[float] = Field(description="Bin edges of scale (dimensionless), ascending.")
    counts: list[int] = Field(description="Materials per bin; len(edges) - 1 entries.")
    below: int = Field(description="Materials with scale below the first edge.")
    above: int = Field(description="Materials with scale above the last edge.")


class ModelSummary(BaseModel):
    """The softening of one model across all its materials (Figs. 5b and 6b of the paper)."""

    summary_id: str = Field(description="Key: the model name.")
    model: str = Field(description="Canonical model name.")
    model_family: str | None = Field(None, description="Model family.")
    n_materials: int = Field(description="Materials (latest result per material and reference).")
    references: list[str] = Field(description="Reference codes of those results.")
    fraction_softened: float = Field(description="Fraction of materials with scale < 1 (0-1).")
    scale_mean: float = Field(description="Mean scale over materials (dimensionless).")
    scale_std: float = Field(description="Standard deviation of scale (dimensionless).")
    scale_quantiles: dict[str, float] = Field(
        description="Quantiles of scale: p00 (min), p05, p25, p50 (median), p75, p95, p100 (max)."
    )
    histogram: ScaleHistogram = Field(description="Distribution of scale across materials.")
    mae_mean: float = Field(description="Mean force MAE over materials, eV/Å.")
    mae_median: float = Field(description="Median force MAE over materials, eV/Å.")
    cmae_mean: float = Field(description="Mean force cMAE over materials, eV/Å.")
    cmae_median: float = Field(description="Median force cMAE over materials, eV/Å.")
    softest: list[str] = Field(description="Up to 10 material ids with the lowest scale.")
    last_updated: datetime = Field(default_factory=_now, description="Time of the build (UTC).")


class ElementSummary(BaseModel):
    """The softening of one model on the materials that contain one element."""

    summary_id: str = Field(description="Key: '<model>|<element>'.")
    model: str = Field(description="Canonical model name.")
    element: str = Field(description="Element symbol.")
    n_materials: int = Field(description="Materials containing the element.")
    fraction_softened: float = Field(description="Fraction of them with scale < 1 (0-1).")
    scale_mean: float = Field(description="Mean material scale (dimensionless).")
    scale_median: float = Field(description="Median material scale (dimensionless).")
    element_scale_mean: float | None = Field(
        None, description="Mean of the element's own scale (its force rows only; dimensionless)."
    )
    element_scale_median: float | None = Field(
        None, description="Median of the element's own scale (dimensionless)."
    )
    last_updated: datetime = Field(default_factory=_now, description="Time of the build (UTC).")


class ChemsysSummary(BaseModel):
    """The softening of one model on the materials of one chemical system."""

    summary_id: str = Field(description="Key: '<model>|<chemsys>'.")
    model: str = Field(description="Canonical model name.")
    chemsys: str = Field(description="Chemical system, elements sorted, '-'-joined.")
    n_materials: int = Field(description="Materials of this chemical system.")
    material_ids: list[str] = Field(description="Their identifiers.")
    fraction_softened: float = Field(description="Fraction with scale < 1 (0-1).")
    scale_mean: float = Field(description="Mean scale (dimensionless).")
    scale_median: float = Field(description="Median scale (dimensionless).")
    scale_min: float = Field(description="Lowest scale (dimensionless).")
    scale_max: float = Field(description="Highest scale (dimensionless).")
    mae_mean: float = Field(description="Mean force MAE, eV/Å.")
    cmae_mean: float = Field(description="Mean force cMAE, eV/Å.")
    last_updated: datetime = Field(default_factory=_now, description="Time of the build (UTC).")


@dataclass
class BuildStats:
    """What one build did.

    Attributes
    ----------
    processed
        Source documents processed (new, changed or retried), failures included.
    failed
        Of those, how many failed (recorded with their error; retried by the next build).
    retried
        Of those, how many had failed before.
    unchanged
        Source documents skipped because their record is up to date.
    removed
        Records dropped because their source document is gone.
    summaries
        Documents per summary collection after the build.
    processed_uuids
        uuids of the processed source documents.
    errors
        ``{uuid: error}`` of the failures of this build.
    """

    processed: int = 0
    failed: int = 0
    retried: int = 0
    unchanged: int = 0
    removed: int = 0
    summaries: dict[str, int] = field(default_factory=dict)
    processed_uuids: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


# ---- per-document processing ------------------------------------------------------------------------


def source_hash(doc: dict[str, Any]) -> str:
    """SHA-256 of what the builder reads of a source document (index, completion time, output)."""
    payload = {k: doc.get(k) for k in ("index", "completed_at", "output")}
    blob = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()


def summary_record(output: dict[str, Any]) -> dict[str, Any]:
    """The fields of one stored SofteningDoc output that the summaries use, validated.

    Raises
    ------
    pydantic.ValidationError, ValueError
        When the document is not a valid SofteningDoc, or its scale is not finite.
    """
    payload = {
        k: v
        for k, v in output.items()
        if not k.startswith("@") and k not in _FORCE_FIELDS  # blob references, not forces
    }
    doc = SofteningDoc.model_validate(payload)
    for name in ("scale", "mae", "cmae"):
        if not math.isfinite(getattr(doc, name)):
            raise ValueError(f"{name} is not finite: {getattr(doc, name)}")
    return {
        "model": doc.model.name,
        "model_family": doc.model.family,
        "material_id": doc.material_id,
        "formula": doc.formula,
        "chemsys": doc.chemsys,
        "elements": list(doc.elements),
        "reference": doc.reference.name,
        "scale": doc.scale,
        "mae": doc.mae,
        "cmae": doc.cmae,
        "n_frames": doc.n_frames,
        "per_element_scales": dict(doc.per_element_scales),
    }


# ---- aggregation -----------------------------------------------------------------------------------


def _latest_per_material(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple, dict] = {}
    for r in records:
        k = (r.get("material_id"), r.get("reference"))
        if k not in latest or str(r.get("completed_at")) > str(latest[k].get("completed_at")):
            latest[k] = r
    return sorted(latest.values(), key=lambda r: str(r.get("material_id")))


def _histogram(scales: np.ndarray) -> ScaleHistogram:
    edges = np.asarray(SCALE_BIN_EDGES)
    counts, _ = np.histogram(scales, bins=edges)
    return ScaleHistogram(
        edges=list(SCALE_BIN_EDGES),
        counts=[int(c) for c in counts],
        below=int(np.sum(scales < edges[0])),
        above=int(np.sum(scales > edges[-1])),
    )


def model_summary(model: str, records: list[dict[str, Any]]) -> ModelSummary:
    """Summary of one model over its (deduplicated) records."""
    s = np.array([r["scale"] for r in records], dtype=float)
    mae = np.array([r["mae"] for r in records], dtype=float)
    cmae = np.array([r["cmae"] for r in records], dtype=float)
    order = np.argsort(s, kind="stable")
    return ModelSummary(
        summary_id=model,
        model=model,
        model_family=records[0].get("model_family"),
        n_materials=len(records),
        references=sorted({str(r.get("reference")) for r in records}),
        fraction_softened=fraction_softened(s),
        scale_mean=float(np.mean(s)),
        scale_std=float(np.std(s)),
        scale_quantiles={k: float(np.quantile(s, q)) for k, q in QUANTILES.items()},
        histogram=_histogram(s),
        mae_mean=float(np.mean(mae)),
        mae_median=float(np.median(mae)),
        cmae_mean=float(np.mean(cmae)),
        cmae_median=float(np.median(cmae)),
        softest=[str(records[i]["material_id"]) for i in order[:10]],
    )


def element_summary(model: str, element: str, records: list[dict[str, Any]]) -> ElementSummary:
    """Summary of one model on the records that contain ``element``."""
    s = np.array([r["scale"] for r in records], dtype=float)
    own = np.array(
        [r["per_element_scales"][element] for r in records if element in r["per_element_scales"]],
        dtype=float,
    )
    return ElementSummary(
        summary_id=f"{model}|{element}",
        model=model,
        element=element,
        n_materials=len(records),
        fraction_softened=fraction_softened(s),
        scale_mean=float(np.mean(s)),
        scale_median=float(np.median(s)),
        element_scale_mean=float(np.mean(own)) if own.size else None,
        element_scale_median=float(np.median(own)) if own.size else None,
    )


def chemsys_summary(model: str, chemsys: str, records: list[dict[str, Any]]) -> ChemsysSummary:
    """Summary of one model on the records of one chemical system."""
    s = np.array([r["scale"] for r in records], dtype=float)
    return ChemsysSummary(
        summary_id=f"{model}|{chemsys}",
        model=model,
        chemsys=chemsys,
        n_materials=len(records),
        material_ids=[str(r["material_id"]) for r in records],
        fraction_softened=fraction_softened(s),
        scale_mean=float(np.mean(s)),
        scale_median=float(np.median(s)),
        scale_min=float(np.min(s)),
        scale_max=float(np.max(s)),
        mae_mean=float(np.mean([r["mae"] for r in records])),
        cmae_mean=float(np.mean([r["cmae"] for r in records])),
    )


# ---- the builder -----------------------------------------------------------------------------------


class SofteningSummaryBuilder(Builder):
    """Derives the summary collections from the SofteningDocs, incrementally.

    Parameters
    ----------
    source
        The outputs collection (a JobStore's ``docs_store``; a JobStore is accepted too).
    inputs, models, elements, chemsys
        Target stores: per-source records, and the three summary collections.
    chunk_size
        Source documents per ``update_targets`` call.
    """

    def __init__(
        self,
        source: Store,
        inputs: Store,
        models: Store,
        elements: Store,
        chemsys: Store,
        chunk_size: int = 500,
    ):
        self.source = source.docs_store if isinstance(source, JobStore) else source
        self.inputs = inputs
        self.models = models
        self.elements = elements
        self.chemsys = chemsys
        self.stats = BuildStats()
        super().__init__(
            sources=[self.source],
            targets=[inputs, models, elements, chemsys],
            chunk_size=chunk_size,
        )

    @classmethod
    def from_job_store(cls, job_store: JobStore, chunk_size: int = 500) -> SofteningSummaryBuilder:
        """The builder over a result store, targets in the same database."""
        return cls(job_store.docs_store, chunk_size=chunk_size, **summary_stores(job_store))

    def get_items(self) -> Iterator[dict[str, Any]]:
        """New, changed and previously failed SofteningDocs; records of deleted ones."""
        self.stats = BuildStats()
        for key, store in (("uuid", self.inputs), ("model", self.inputs)):
            if _indexable(store):
                store.ensure_index(key)
        records = {
            r["uuid"]: r
            for r in self.inputs.query(
                {}, properties=["uuid", "source_hash", "state", "attempts", "model"]
            )
        }
        latest: dict[str, dict] = {}
        for doc in self.source.query(
            {"output.@class": "SofteningDoc", "output.material_id": {"$ne": "pooled"}},
            properties=["uuid", "index", "completed_at", "output"],
        ):
            doc.pop("_id", None)
            prev = latest.get(doc["uuid"])
            if prev is None or doc.get("index", 0) > prev.get("index", 0):
                latest[doc["uuid"]] = doc
        for uuid, doc in latest.items():
            digest = source_hash(doc)
            rec = records.get(uuid)
            if rec is not None and rec.get("source_hash") == digest and rec.get("state") == "ok":
                self.stats.unchanged += 1
                continue
            yield {"uuid": uuid, "doc": doc, "hash": digest, "previous": _full(self.inputs, rec)}
        for uuid in sorted(records.keys() - latest.keys()):
            yield {"uuid": uuid, "deleted": True, "previous": _full(self.inputs, records[uuid])}

    def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """Validate one source document and extract its summary fields (no database access)."""
        if item.get("deleted"):
            return item
        doc, previous = item["doc"], item.get("previous") or {}
        base = {
            "uuid": item["uuid"],
            "index": int(doc.get("index") or 0),
            "source_hash": item["hash"],
            "completed_at": None if doc.get("completed_at") is None else str(doc["completed_at"]),
        }
        try:
            fields = summary_record(doc.get("output") or {})
            record = InputRecord(**base, state="ok", attempts=1, **fields)
        except Exception as exc:
            # Recorded, not raised: one bad document must not stop the build, and the next
            # build retries it.
            attempts = (
                int(previous.get("attempts", 0)) + 1 if previous.get("state") == "failed" else 1
            )
            record = InputRecord(
                **base,
                state="failed",
                error=one_line(exc, 3, typed=True, limit=500),
                attempts=attempts,
            )
        return {
            "uuid": item["uuid"],
            "record": record.model_dump(),
            "previous": item.get("previous"),
            "retry": previous.get("state") == "failed",
        }

    def update_targets(self, items: list[dict[str, Any]]) -> None:
        """Write the records, then recompute the summary groups the changed records touch."""
        records = [i["record"] for i in items if not i.get("deleted")]
        deleted = [i["uuid"] for i in items if i.get("deleted")]
        touched: set[str] = set()
        for i in items:
            for rec in (i.get("previous"), i.get("record")):
                if rec and rec.get("state") == "ok" and rec.get("model"):
                    touched.add(rec["model"])
        if records:
            self.inputs.update(records, key="uuid")
        if deleted:
            self.inputs.remove_docs({"uuid": {"$in": deleted}})
        for rec in records:
            self.stats.processed += 1
            self.stats.processed_uuids.append(rec["uuid"])
            if rec["state"] == "failed":
                self.stats.failed += 1
                self.stats.errors[rec["uuid"]] = rec["error"]
        self.stats.retried += sum(bool(i.get("retry")) for i in items)
        self.stats.removed += len(deleted)
        for model in sorted(touched):
            self._rebuild_model(model, items)

    def _rebuild_model(self, model: str, items: list[dict[str, Any]]) -> None:
        records = _latest_per_material(list(self.inputs.query({"state": "ok", "model": model})))
        # Groups this model had before (to drop the ones that are now empty) and has now.
        old_elements = {
            d["summary_id"] for d in self.elements.query({"model": model}, ["summary_id"])
        }
        old_chemsys = {
            d["summary_id"] for d in self.chemsys.query({"model": model}, ["summary_id"])
        }
        if not records:
            self.models.remove_docs({"summary_id": model})
            _remove(self.elements, old_elements)
            _remove(self.chemsys, old_chemsys)
            return
        self.models.update([model_summary(model, records).model_dump()], key="summary_id")
        by_element: dict[str, list[dict]] = {}
        by_chemsys: dict[str, list[dict]] = {}
        for r in records:
            for el in r["elements"]:
                by_element.setdefault(el, []).append(r)
            by_chemsys.setdefault(r["chemsys"], []).append(r)
        el_docs = [element_summary(model, el, rs).model_dump() for el, rs in by_element.items()]
        cs_docs = [chemsys_summary(model, cs, rs).model_dump() for cs, rs in by_chemsys.items()]
        self.elements.update(el_docs, key="summary_id")
        self.chemsys.update(cs_docs, key="summary_id")
        _remove(self.elements, old_elements - {d["summary_id"] for d in el_docs})
        _remove(self.chemsys, old_chemsys - {d["summary_id"] for d in cs_docs})

    def finalize(self) -> None:
        """Count the summaries; close only the targets (the source belongs to the caller)."""
        from maggma.stores import MemoryStore, MontyStore

        self.stats.summaries = {
            "models": self.models.count(),
            "elements": self.elements.count(),
            "chemsys": self.chemsys.count(),
        }
        for store in self.targets:
            # Closing an in-memory (mongomock) store would drop its data.
            if not isinstance(store, MemoryStore) or isinstance(store, MontyStore):
                store.close()


def _full(store: Store, rec: dict | None) -> dict | None:
    """The whole previous record (its groups are needed to update the summaries it left)."""
    if rec is None:
        return None
    full = store.query_one({"uuid": rec["uuid"]})
    if full is not None:
        full.pop("_id", None)
    return full


def _remove(store: Store, ids: set[str]) -> None:
    if ids:
        store.remove_docs({"summary_id": {"$in": sorted(ids)}})


def _indexable(store: Store) -> bool:
    from maggma.stores import MontyStore

    return not isinstance(store, MontyStore)  # MontyDB (from a store config) has no indexes


def summary_stores(job_store: JobStore) -> dict[str, Store]:
    """The builder's target stores: collections next to the outputs collection.

    Returns
    -------
    dict[str, maggma.core.Store]
        ``{"inputs", "models", "elements", "chemsys"}`` -> store (not connected).
    """
    return {
        kind: sibling_store(job_store.docs_store, name, key=_KEYS[kind])
        for kind, name in SUMMARY_COLLECTIONS.items()
    }


def build_summaries(
    job_store: JobStore, chunk_size: int = 500, progress: bool = False
) -> BuildStats:
    """Run :class:`SofteningSummaryBuilder` on a result store (``builder.run()``).

    maggma's ``Builder.run`` sets the root logger's level and adds a handler to it; both are
    restored afterwards so that the caller's logging is unchanged.

    Parameters
    ----------
    job_store
        The result store (connected or not).
    chunk_size
        Source documents per batch.
    progress
        Show maggma's progress bar (on stderr).

    Returns
    -------
    BuildStats
        What the build processed, skipped, removed, and the summary counts.
    """
    job_store.connect()
    builder = SofteningSummaryBuilder.from_job_store(job_store, chunk_size=chunk_size)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with contextlib.ExitStack() as stack:
            if not progress:
                stack.enter_context(patch("maggma.core.builder.tqdm", lambda items, **_: items))
            builder.run(log_level=max(level, logging.WARNING))
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    return builder.stats
