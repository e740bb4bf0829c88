"""The property results of the HTML page: each stored property document as the page draws it.

:func:`property_docs` finds the latest document per property, material and model (registered
properties only, validated as their classes); :func:`property_entry` gives one as parity pairs
(the registry's ``pairs``, labelled by its ``items``) and, where stored, its band path. Used by
:func:`softening.workflows.html_report.page_data`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from softening.jsonio import rounded

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jobflow import JobStore

    from softening.stores.queries import ResultFilter

__all__ = ["axis_text", "property_docs", "property_entry"]

log = logging.getLogger(__name__)

#: Significant digits of the numbers written into the page (plots, table, properties; 4-5 is
#: plenty).
DIGITS = 5


def property_docs(job_store: JobStore, where: ResultFilter) -> list[Any]:
    """The latest property document per property, material and model (registered properties
    only, validated as their document classes), with the same model and material filters as
    the PNG report's property plots."""
    from pydantic import ValidationError

    from softening.makers.properties import get_property, property_names, result_key
    from softening.workflows.properties import query_property_docs

    known = set(property_names())
    latest: dict[tuple, dict[str, Any]] = {}
    docs = query_property_docs(
        job_store, model=where.model, material_id=where.material_id, load_arrays=True
    )
    for d in docs:  # newest first
        if d["property"] in known:
            latest.setdefault(result_key(d), d)
    out = []
    for d in latest.values():
        clean = {k: (None if is_blob_ref(v) else v) for k, v in d.items()}
        try:
            out.append(get_property(d["property"]).validate(clean))
        except ValidationError as exc:  # a document of another version of its property
            log.warning(
                "property %s of %s (%s) left out of the page: %s", d["property"],
                d["material_id"], d["model"]["name"], str(exc).splitlines()[0],
            )  # fmt: skip
    return out


def is_blob_ref(value: Any) -> bool:
    """Whether a stored field is a reference to the data store (its array not loaded)."""
    return isinstance(value, dict) and "blob_uuid" in value


def axis_text(axis: str) -> str:
    """A registry axis label (matplotlib mathtext) as plotly text: ``$^2$`` -> ``<sup>2</sup>``."""
    text = re.sub(r"\$\^\{?([^}$]*)\}?\$", r"<sup>\1</sup>", axis)
    text = re.sub(r"\$_\{?([^}$]*)\}?\$", r"<sub>\1</sub>", text)
    return text.replace("$", "")


def property_entry(doc: Any) -> dict[str, Any] | None:
    """One property document as the page draws it: its parity pairs (the registry's ``pairs``,
    labelled by its ``items`` where they match) and, where stored, its band path."""
    from softening.makers.properties import get_property
    from softening.schemas import flag_texts

    spec = get_property(doc.property)
    pairs = [(rounded(a, DIGITS), rounded(b, DIGITS)) for a, b in spec.pairs(doc)]
    labels: list[str] = []
    if spec.items is not None:
        items = spec.items(doc)
        if len(items) == len(pairs):
            labels = [str(item[0]) for item in items]
    return {
        "property": doc.property,
        "material_id": doc.material_id,
        "formula": doc.formula,
        "model": doc.model.name,
        "reference": doc.reference.name,
        "ratio": rounded(doc.ratio, DIGITS),
        "flags": flag_texts(doc.flags),
        "axis": axis_text(spec.axis),
        "description": spec.description,
        "x": [a for a, _ in pairs],
        "y": [b for _, b in pairs],
        "labels": labels,
        "bands": band_path_data(doc),
    }


def band_path_data(doc: Any) -> dict[str, Any] | None:
    """The band path a document stores in its ``arrays`` (distances, ticks, reference and model
    frequencies), whatever its property; ``None`` when it stores none."""
    arrays = getattr(doc, "arrays", None)
    distances = getattr(arrays, "band_distances", None)
    ref = getattr(arrays, "band_frequencies_ref", None)
    ml = getattr(arrays, "band_frequencies", None)
    if not distances or not (ref or ml):
        return None

    def table(freqs: Iterable[Iterable[float]] | None) -> list[list[float | None]]:
        return [[rounded(f, 4) for f in row] for row in freqs or []]

    return {
        "x": [rounded(d, 5) for d in distances],
        "ticks": [[rounded(d, 5), str(label)] for d, label in getattr(arrays, "band_ticks", [])],
        "ref": table(ref),
        "ml": table(ml),
    }
