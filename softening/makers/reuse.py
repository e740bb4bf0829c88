"""Reuse of stored results by reference: a rerun adds nothing to the ``data`` store.

A job that finds its result already stored (same content key) must not store its large arrays
again. jobflow saves the keys named in a job's ``data=`` argument into the ``data`` store on every
run, whatever their value, so the job hands its output over to a replacement job (same uuid, next
index; ``Response(replace=...)``) that has no ``data=`` argument and outputs the stored document
as it is in the store: its arrays are still the references (``{"blob_uuid": ...}``) to the blobs
the first run wrote. jobflow loads those blobs whenever the output is resolved with ``load=True``
(downstream jobs, :func:`softening.stores.queries.find_output_by_key`), so every consumer still
gets the full arrays.
"""

from __future__ import annotations

import json
from typing import Any

from jobflow import JobStore, Response, job


def find_stored_output(
    store: JobStore | None, key: str, cls_name: str
) -> tuple[str, dict[str, Any]] | None:
    """The latest stored output with this content key, arrays left as blob references.

    Parameters
    ----------
    store
        The job store (``None``: nothing stored).
    key
        Content key (see :func:`softening.schemas.content_key`).
    cls_name
        Class of the output document (``"MDResult"``, ``"FrameResult"``...).

    Returns
    -------
    (str, dict) or None
        The uuid of the job that stored it and its output document, unloaded.
    """
    if store is None:
        return None
    doc = store.query_one(
        {"output.content_key": key, "output.@class": cls_name},
        properties=["uuid", "output"],
        load=False,
        sort={"completed_at": -1},
    )
    if not doc or not isinstance(doc.get("output"), dict):
        return None
    return doc["uuid"], doc["output"]


def reuse_response(output: dict[str, Any], name: str, **updates: Any) -> Response:
    """Replace the running job by one that outputs ``output`` (with ``updates``), copying no blob.

    Parameters
    ----------
    output
        A stored output document as :func:`find_stored_output` returns it (blob references in
        place of arrays).
    name
        Name of the replacement job (e.g. ``"md sampling Si-3f9a2c (reused)"``).
    **updates
        Fields to change in the output (e.g. ``reused=True``).

    Returns
    -------
    Response
        Return it from the job.
    """
    # Handed over as JSON text: a job manager that serializes the replacement (FireWorks, the
    # parallel local runner) would otherwise decode the document into its class, which refuses
    # blob references in place of arrays.
    reused = reused_output(json.dumps({**output, **updates}, default=str))
    reused.name = name
    return Response(replace=reused)


@job
def reused_output(document: str) -> dict[str, Any]:
    """Output a stored document as it is (no ``data=``: its blob references are not copied).

    Parameters
    ----------
    document
        The output document as JSON text.

    Returns
    -------
    dict
        The document; jobflow stores it as this job's output.
    """
    return json.loads(document)
