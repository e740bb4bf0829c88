"""Reuse of stored results by reference: a rerun adds nothing to the ``data`` store.

A job that finds its result already stored (same content key) must not store its large arrays
again. jobflow saves the keys named in a job's ``data=`` argument into the ``data`` store on every
run, whatever their value, so the job hands its output over to a replacement job (same uuid, next
index; ``Response(replace=...)``) that has no ``data=`` argument and outputs the stored document
as it is in the store: its arrays are still the references (``{"blob_uuid": ...}``) to the blobs
the first run wrote. jobflow loads those blobs whenever the output is resolved with ``load=True``
(downstream jobs, :func:`find_stored_output` with ``load=True``), so every consumer still
gets the full arrays.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from jobflow import JobStore, Response, job

if TYPE_CHECKING:
    from softening.schemas import FrameSpec

logger = logging.getLogger(__name__)


def find_stored_output(
    store: JobStore | None, key: str, cls_name: str, load: bool = False
) -> tuple[str, dict[str, Any]] | None:
    """The latest stored output with this content key (arrays as blob references unless ``load``).

    Parameters
    ----------
    store
        The job store (``None``: nothing stored).
    key
        Content key (see :func:`softening.schemas.content_key`).
    cls_name
        Class of the output document (``"MDResult"``, ``"FrameResult"``...).
    load
        Load the arrays from the ``data`` store (for a caller that copies the result).

    Returns
    -------
    (str, dict) or None
        The uuid of the job that stored it and its output document.
    """
    if store is None:
        return None
    doc = store.query_one(
        {"output.content_key": key, "output.@class": cls_name},
        properties=["uuid", "output"],
        load=load,
        sort={"completed_at": -1},
    )
    if not doc or not isinstance(doc.get("output"), dict):
        return None
    return doc["uuid"], doc["output"]


def reuse_stored(key: str | None, cls_name: str, what: str, **updates: Any) -> Response | None:
    """For the running job: a ``Response`` handing over the stored output with ``key``, or ``None``.

    The one reuse rule of every job with large arrays (MD, uMLIP single points, comparisons):
    look the content key up in the job's store and, if found, replace the job by one that outputs
    the stored document with its arrays referenced (:func:`reuse_response`).

    Parameters
    ----------
    key
        Content key of the job's inputs (``None``: not reusable).
    cls_name
        Class of the output document.
    what
        What is reused, for the log line (``"MD of Si"``).
    **updates
        Fields to change in the reused output (``reused=True`` is always set).
    """
    from jobflow import CURRENT_JOB

    if key is None:
        return None
    stored = find_stored_output(CURRENT_JOB.store, key, cls_name)
    if stored is None:
        return None
    logger.info("%s reused from the store", what)
    return reuse_response(stored[1], f"{CURRENT_JOB.job.name} (reused)", reused=True, **updates)


def stored_frame_result(key: str, frame: FrameSpec) -> dict[str, Any] | None:
    """For the running job: the stored reference result of ``frame`` with ``key``, or ``None``.

    Single-frame results are small, so they are copied (arrays loaded) rather than referenced. The
    ids are this flow's: the same frame may be stored under an older material id.
    """
    from jobflow import CURRENT_JOB

    stored = find_stored_output(CURRENT_JOB.store, key, "FrameResult", load=True)
    if stored is None:
        return None
    logger.info("reference of frame %s/%s reused", frame.material_id, frame.frame_id)
    ids = {"material_id": frame.material_id, "frame_id": frame.frame_id}
    return {**stored[1], **ids, "reused": True}


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
