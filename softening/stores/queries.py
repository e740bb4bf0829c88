"""Queries over the result store."""

from __future__ import annotations

from typing import Any

from jobflow import JobStore


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
