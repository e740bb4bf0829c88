"""Queries over the result store: job-output lookups for the makers, and the results query API."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from jobflow import JobStore

from softening.errors import InputError


def find_output_by_key(store: JobStore | None, key: str, cls_name: str) -> dict[str, Any] | None:
    """The stored output of a finished job with this content key, arrays loaded, or ``None``.

    This is what makes a rerun of the same flow compute only what is missing: expensive jobs look
    their result up by content key (structure + code + settings) before computing.
    """
    if store is None:
        return None
    doc = store.query_one(
        {"output.content_key": key, "output.@class": cls_name},
        properties=["output"],
        load=True,
        sort={"completed_at": -1},
    )
    return doc["output"] if doc else None


def softening_docs(store: JobStore, criteria: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All stored :class:`SofteningDoc` outputs matching ``criteria`` (on the document's fields)."""
    query = {"output.@class": "SofteningDoc"}
    for k, v in (criteria or {}).items():
        query[f"output.{k}"] = v
    return [d["output"] for d in store.query(query, properties=["output", "completed_at"])]


# ---- the query API of the results database --------------------------------------------------------

#: SofteningDoc fields held in the data store (large); left out of query results unless asked.
FORCE_FIELDS = ("forces_ml", "forces_ref")


def _open(store: JobStore | str | Path | None) -> JobStore:
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


def results_criteria(
    formula: str | None = None,
    chemsys: str | list[str] | None = None,
    elements: list[str] | None = None,
    model: str | None = None,
    scale_min: float | None = None,
    scale_max: float | None = None,
    material_id: str | None = None,
    include_pooled: bool = False,
) -> dict[str, Any]:
    """The MongoDB filter of :func:`query_results` (on the outputs collection).

    Parameters
    ----------
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
    material_id
        Material identifier.
    include_pooled
        Also the ``material_id == "pooled"`` results (one slope over all materials).

    Returns
    -------
    dict
        A filter that MongoDB, mongomock and MontyDB all evaluate.
    """
    from pymatgen.core import Element

    criteria: dict[str, Any] = {"output.@class": "SofteningDoc"}
    if material_id is not None:
        criteria["output.material_id"] = material_id
    elif not include_pooled:
        criteria["output.material_id"] = {"$ne": "pooled"}
    if formula:
        criteria["output.formula"] = normalize_formula(formula)
    if chemsys:
        criteria["output.chemsys"] = normalize_chemsys(chemsys)
    if elements:
        for el in elements:
            if not Element.is_valid_symbol(el):
                raise InputError(f"{el!r} is not an element")
        criteria["output.elements"] = {"$all": sorted(set(elements))}
    if model:
        criteria["$or"] = [
            {"output.model.name": {"$regex": f"^{re.escape(model)}$", "$options": "i"}},
            {"output.model.family": model.lower()},
        ]
    if scale_min is not None or scale_max is not None:
        for name, value in (("scale-min", scale_min), ("scale-max", scale_max)):
            # NaN compares false with everything: the filter would silently match nothing.
            if value is not None and not math.isfinite(float(value)):
                raise InputError(f"--{name} must be a finite number, got {value}")
        if scale_min is not None and scale_max is not None and scale_min > scale_max:
            raise InputError(f"scale-min {scale_min} is above scale-max {scale_max}")
        bounds = {}
        if scale_min is not None:
            bounds["$gte"] = float(scale_min)
        if scale_max is not None:
            bounds["$lte"] = float(scale_max)
        criteria["output.scale"] = bounds
    return criteria


def query_results(
    store: JobStore | str | Path | None = None,
    formula: str | None = None,
    chemsys: str | list[str] | None = None,
    elements: list[str] | None = None,
    model: str | None = None,
    scale_min: float | None = None,
    scale_max: float | None = None,
    material_id: str | None = None,
    include_pooled: bool = False,
    with_forces: bool = False,
    latest_only: bool = True,
) -> list[dict[str, Any]]:
    """Stored softening results (:class:`SofteningDoc` fields) that match every given filter.

    Parameters
    ----------
    store
        A JobStore, or a store spec (folder, MongoDB URI, store config; ``None``: the setting).
    formula, chemsys, elements, model, scale_min, scale_max, material_id, include_pooled
        Filters, see :func:`results_criteria`.
    with_forces
        Load ``forces_ml`` and ``forces_ref`` ((n_atoms, 3) eV/Å lists) from the data store;
        otherwise they are ``None`` (cheap: only the small documents are read).
    latest_only
        Keep only the most recent result per (material, model, reference code): a rerun of the
        same command replaces the earlier answer instead of counting twice.

    Returns
    -------
    list[dict]
        One dict per result with the SofteningDoc fields plus ``uuid`` (the job that wrote it) and
        ``completed_at`` (ISO time), sorted by material id, then model name.
    """
    job_store = _open(store)
    criteria = results_criteria(
        formula, chemsys, elements, model, scale_min, scale_max, material_id, include_pooled
    )
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
    if latest_only:
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
