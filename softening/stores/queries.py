"""Queries over the result store: job-output lookups for the makers, and the results query API."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobflow import JobStore

from softening.errors import InputError


def softening_docs(store: JobStore, criteria: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All stored :class:`SofteningDoc` outputs matching ``criteria`` (on the document's fields)."""
    query = {"output.@class": "SofteningDoc"}
    for k, v in (criteria or {}).items():
        query[f"output.{k}"] = v
    return [d["output"] for d in store.query(query, properties=["output", "completed_at"])]


# ---- the query API of the results database --------------------------------------------------------

#: SofteningDoc fields held in the data store (large); left out of query results unless asked.
FORCE_FIELDS = ("forces_ml", "forces_ref")


def open_store(store: JobStore | str | Path | None) -> JobStore:
    """A connected JobStore from a JobStore or a store spec (``None``: the ``store`` setting).

    Reading never creates a store: a spec naming a missing embedded folder is an error (a typo
    must not make a new, empty store), and an existing folder gets no file from a read.

    Raises
    ------
    InputError
        When the spec names an embedded store folder that does not exist.
    """
    from softening.stores.factory import get_job_store, resolve_store_spec, store_kind

    if isinstance(store, JobStore):
        job_store = store
    else:
        spec = resolve_store_spec(store)
        path = Path(spec).expanduser()
        if store_kind(spec) == "embedded" and not path.is_dir():
            if path.exists():
                raise InputError(f"store {spec!r} is a file; give the folder of a result store")
            raise InputError(f"no result store at {spec!r} (give --store, or run a flow first)")
        job_store = get_job_store(spec)
    job_store.connect()
    return job_store


_open = open_store


def store_exists(store: str | Path | None) -> bool:
    """Whether the store spec names something that exists already (a database, or a folder).

    ``softening run`` opens an existing store before anything else (a damaged one is reported at
    once) and creates a new one only once its inputs are known to be good.
    """
    from softening.stores.factory import resolve_store_spec, store_kind

    spec = resolve_store_spec(None if store is None else str(store))
    return store_kind(spec) != "embedded" or Path(spec).expanduser().exists()


def normalize_formula(formula: str) -> str:
    """The reduced formula as the documents store it (``"OCu"``, ``"Cu2O2"`` -> ``"CuO"``)."""
    from pymatgen.core import Composition

    try:
        return Composition(formula).reduced_formula
    except Exception as exc:
        raise InputError(f"cannot read the formula {formula!r}") from exc


def normalize_chemsys(chemsys: str | list[str]) -> str:
    """A chemical system as the documents store it: elements sorted, joined by ``-``."""
    from pymatgen.core import Element

    parts = chemsys if isinstance(chemsys, list) else str(chemsys).replace(",", "-").split("-")
    elements = sorted({p.strip() for p in parts if p.strip()})
    for el in elements:
        if not Element.is_valid_symbol(el):
            raise InputError(f"{el!r} in chemical system {chemsys!r} is not an element")
    if not elements:
        raise InputError("empty chemical system")
    return "-".join(elements)


#: ``material_id`` of a pooled result: one slope over every force component of every frame of a
#: dataset (``softening evaluate`` with several materials), not a material. Pooled results are left
#: out of queries unless asked for, and never count as a material (summaries, report figures).
POOLED_ID = "pooled"


def is_pooled(result: dict[str, Any] | Any) -> bool:
    """Whether a result (a query row or a :class:`SofteningDoc`) is a pooled one, not a material."""
    mid = result.get("material_id") if isinstance(result, dict) else result.material_id
    return mid == POOLED_ID


@dataclass(frozen=True)
class ResultFilter:
    """Which stored softening results to read: the one filter model of every results query.

    All given filters must hold. ``softening query`` and ``softening report`` build one from their
    options; :func:`query_results` takes one (or its fields as keywords).

    Attributes
    ----------
    material_id
        Material identifier (exact).
    formula
        Reduced formula, in any order or multiple (``"OCu"`` finds ``"CuO"``).
    chemsys
        Chemical system: exactly these elements (``"O-Cu"`` or ``["Cu", "O"]``).
    elements
        Elements every result must contain (others may be present).
    model
        Canonical model name (``"CHGNet-0.3.0"``) or family (``"chgnet"``), case-insensitive.
    scale_min, scale_max
        Inclusive bounds on the softening scale (dimensionless).
    include_pooled
        Also the pooled results (``material_id == "pooled"``, one slope over a dataset).
    flag
        Kind of flag every result must carry (``unconverged``, ``missing_frames``,
        ``uncorrelated``, ``hubbard_u``...; see :class:`softening.schemas.Flag`).
    latest_only
        Keep only the most recent result per (material, model, reference code): a rerun of the
        same command replaces the earlier answer instead of counting twice.
    """

    material_id: str | None = None
    formula: str | None = None
    chemsys: str | list[str] | None = None
    elements: list[str] | None = None
    model: str | None = None
    scale_min: float | None = None
    scale_max: float | None = None
    include_pooled: bool = False
    flag: str | None = None
    latest_only: bool = True

    def criteria(self) -> dict[str, Any]:
        """The MongoDB filter on the outputs collection (MongoDB, mongomock and MontyDB all
        evaluate it).

        Raises
        ------
        InputError
            An unreadable formula, a non-element, a non-finite scale bound, or
            ``scale_min > scale_max``.
        """
        from pymatgen.core import Element

        criteria: dict[str, Any] = {"output.@class": "SofteningDoc"}
        if self.material_id is not None:
            criteria["output.material_id"] = self.material_id
        elif not self.include_pooled:
            criteria["output.material_id"] = {"$ne": POOLED_ID}
        if self.formula:
            criteria["output.formula"] = normalize_formula(self.formula)
        if self.chemsys:
            criteria["output.chemsys"] = normalize_chemsys(self.chemsys)
        if self.flag:
            criteria["output.flags.kind"] = self.flag.strip().split(":")[0]
        if self.elements:
            for el in self.elements:
                if not Element.is_valid_symbol(el):
                    raise InputError(f"{el!r} is not an element")
            criteria["output.elements"] = {"$all": sorted(set(self.elements))}
        if self.model:
            criteria["$or"] = [
                {"output.model.name": {"$regex": f"^{re.escape(self.model)}$", "$options": "i"}},
                {"output.model.family": self.model.lower()},
            ]
        lo, hi = self.scale_min, self.scale_max
        if lo is not None or hi is not None:
            for name, value in (("scale-min", lo), ("scale-max", hi)):
                # NaN compares false with everything: the filter would silently match nothing.
                if value is not None and not math.isfinite(float(value)):
                    raise InputError(f"--{name} must be a finite number, got {value}")
            if lo is not None and hi is not None and lo > hi:
                raise InputError(f"scale-min {lo} is above scale-max {hi}")
            bounds = {}
            if lo is not None:
                bounds["$gte"] = float(lo)
            if hi is not None:
                bounds["$lte"] = float(hi)
            criteria["output.scale"] = bounds
        return criteria


def results_criteria(where: ResultFilter | None = None, **filters: Any) -> dict[str, Any]:
    """The MongoDB filter of :func:`query_results`: ``ResultFilter(**filters).criteria()``.

    Parameters
    ----------
    where
        A :class:`ResultFilter`; or give its fields as keywords.
    **filters
        :class:`ResultFilter` fields (``formula``, ``chemsys``, ``elements``, ``model``,
        ``scale_min``, ``scale_max``, ``material_id``, ``include_pooled``).

    Returns
    -------
    dict
        A filter that MongoDB, mongomock and MontyDB all evaluate.
    """
    return _filter(where, filters).criteria()


def _filter(where: ResultFilter | None, filters: dict[str, Any]) -> ResultFilter:
    if where is not None and filters:
        raise TypeError("give a ResultFilter or its fields as keywords, not both")
    return where if where is not None else ResultFilter(**filters)


def query_results(
    store: JobStore | str | Path | None = None,
    where: ResultFilter | None = None,
    *,
    with_forces: bool = False,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Stored softening results (:class:`SofteningDoc` fields) that match every given filter.

    Parameters
    ----------
    store
        A JobStore, or a store spec (folder, MongoDB URI, store config; ``None``: the setting).
    where
        The filters (:class:`ResultFilter`); or give its fields as keywords
        (``query_results(store, elements=["O"], model="chgnet", scale_max=0.9)``).
    with_forces
        Load ``forces_ml`` and ``forces_ref`` ((n_atoms, 3) eV/Å lists) from the data store;
        otherwise they are ``None`` (cheap: only the small documents are read).
    **filters
        :class:`ResultFilter` fields, ``latest_only`` included (default ``True``).

    Returns
    -------
    list[dict]
        One dict per result with the SofteningDoc fields plus ``uuid`` (the job that wrote it) and
        ``completed_at`` (ISO time), sorted by material id, then model name.
    """
    where = _filter(where, filters)
    job_store = _open(store)
    criteria = where.criteria()
    docs = list(
        job_store.query(
            criteria,
            properties=["output", "completed_at"],
            load={"data": list(FORCE_FIELDS)} if with_forces else False,
        )
    )
    results = []
    for d in docs:
        out = dict(d["output"])
        for f in FORCE_FIELDS:
            if isinstance(out.get(f), dict):  # an unloaded reference to the data store
                out[f] = None
        out.pop("@module", None)
        out.pop("@class", None)
        out.pop("@version", None)
        out["uuid"] = d.get("uuid")
        out["completed_at"] = d.get("completed_at")
        results.append(out)
    if where.latest_only:
        latest: dict[tuple, dict] = {}
        for r in results:
            k = _identity(r)
            if k not in latest or str(r["completed_at"]) > str(latest[k]["completed_at"]):
                latest[k] = r
        results = list(latest.values())
    return sorted(results, key=lambda r: (r["material_id"], r["model"]["name"]))


def _identity(result: dict[str, Any]) -> tuple:
    return (
        result.get("material_id"),
        (result.get("model") or {}).get("name"),
        (result.get("reference") or {}).get("name"),
    )


def load_forces(store: JobStore | str | Path | None, uuid: str) -> tuple[Any, Any]:
    """The stacked reference and uMLIP forces ((n_atoms, 3) numpy arrays, eV/Å) of one result.

    Parameters
    ----------
    store
        A JobStore or a store spec.
    uuid
        The ``uuid`` of a result from :func:`query_results`.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        ``(forces_ref, forces_ml)``.
    """
    import numpy as np

    job_store = _open(store)
    doc = job_store.query_one(
        {"uuid": uuid, "output.@class": "SofteningDoc"},
        properties=["output"],
        sort={"index": -1},
        load={"data": list(FORCE_FIELDS)},
    )
    if doc is None:
        raise InputError(f"no softening result with uuid {uuid}")
    out = doc["output"]
    return np.asarray(out["forces_ref"], dtype=float), np.asarray(out["forces_ml"], dtype=float)


def query_summaries(
    store: JobStore | str | Path | None, kind: str = "models", model: str | None = None
) -> list[dict[str, Any]]:
    """Summary documents written by :class:`~softening.stores.builders.SofteningSummaryBuilder`.

    Parameters
    ----------
    store
        A JobStore or a store spec.
    kind
        ``models``, ``elements`` or ``chemsys``.
    model
        Only this model's summaries (canonical name).

    Returns
    -------
    list[dict]
        The summary documents, without database ids.
    """
    from softening.stores.builders import summary_stores

    stores = summary_stores(_open(store))
    if kind not in stores or kind == "inputs":
        raise InputError(f"unknown summary kind {kind!r}; use models, elements or chemsys")
    target = stores[kind]
    target.connect()
    criteria = {"model": model} if model else {}
    docs = [{k: v for k, v in d.items() if k != "_id"} for d in target.query(criteria)]
    return sorted(docs, key=lambda d: d["summary_id"])


# ---- what ``softening report`` draws ---------------------------------------------------------------


@dataclass
class ReportSelection:
    """Which results each figure of ``softening report`` shows, and which it leaves out.

    Attributes
    ----------
    parity
        Results that get a parity plot: the first ``parity_limit`` (in query order).
    skipped
        How many results got no parity plot because of the limit.
    by_model
        Per model name, the per-material results (pooled ones left out): the scale distribution.
    mae_vs_cmae
        Per model name, the per-material results whose cMAE means something: the MAE-vs-cMAE
        figure (cMAE divides by the scale; where its 95 % CI reaches 0 or lies below it the
        forces are uncorrelated or anticorrelated, and the point would squash every other one
        into a corner).
    excluded
        ``"material_id (model)"`` of the results left out of MAE vs cMAE for that reason.
    label_points
        Whether MAE vs cMAE names its points (at most 30 per model).
    """

    parity: list[dict[str, Any]]
    skipped: int
    by_model: dict[str, list[dict[str, Any]]]
    mae_vs_cmae: dict[str, list[dict[str, Any]]]
    excluded: list[str]
    label_points: bool


def report_selection(results: list[dict[str, Any]], parity_limit: int = 100) -> ReportSelection:
    """What each figure of ``softening report`` shows, from :func:`query_results` rows.

    Parameters
    ----------
    results
        Query rows (:func:`query_results`), in the order parity plots are drawn.
    parity_limit
        Most parity plots (one per material and model); negative counts as 0.

    Returns
    -------
    ReportSelection
        Parity results, the per-model material results, and those MAE vs cMAE leaves out.
    """
    from softening.analysis.metrics import is_uncorrelated

    limit = max(parity_limit, 0)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if not is_pooled(r):
            by_model.setdefault(r["model"]["name"], []).append(r)
    meaningful: dict[str, list[dict[str, Any]]] = {}
    excluded = []
    for m, rs in by_model.items():
        for r in rs:
            if is_uncorrelated(r["scale_ci"]):
                excluded.append(f"{r['material_id']} ({m})")
            else:
                meaningful.setdefault(m, []).append(r)
    return ReportSelection(
        parity=results[:limit],
        skipped=len(results) - min(len(results), limit),
        by_model=by_model,
        mae_vs_cmae=meaningful,
        excluded=excluded,
        label_points=all(len(rs) <= 30 for rs in meaningful.values()),
    )
