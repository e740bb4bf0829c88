"""The package's job decorator: jobflow's ``job`` with its conventions set once (as atomate2's
``vasp_job`` does).

Every job that outputs a document names its schema; the schema's large fields
(``data_fields``, declared on the document in :mod:`softening.schemas`) go to the JobStore's
``data`` store, so no job lists them by hand and no document can outgrow MongoDB's 16 MB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobflow import JobConfig, OnMissing, job

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["softening_job"]


def softening_job(
    schema: type[BaseModel],
    *,
    tolerant: bool = False,
    store: bool = False,
    replaces: bool = False,
    **kwargs: Any,
) -> Callable:
    """Decorate a job function or a Maker's ``make`` that outputs a ``schema`` document.

    Parameters
    ----------
    schema
        The output document class. Its ``data_fields`` are routed to the ``data`` store.
    tolerant
        Run even when a parent job failed (``OnMissing.NONE``): comparisons say which frames are
        missing instead of failing, so a rerun of the failed jobs completes them.
    store
        Give the job its store (``expose_store``), for reuse by content key.
    replaces
        The job may replace itself (``Response(replace=...)``): a stored output handed over by
        reference (:mod:`softening.makers.reuse`), or the VASP jobs. jobflow applies a job's
        ``output_schema`` to its replacement too, where it cannot work (a stored document whose
        arrays are blob references; the output-collecting job of a replacing flow, validated
        before its input is resolved), so no ``output_schema`` is set.
    **kwargs
        Passed on to :func:`jobflow.job` (``name``...).
    """
    data = list(getattr(schema, "data_fields", ())) or None
    config = JobConfig(
        expose_store=store,
        on_missing_references=OnMissing.NONE if tolerant else OnMissing.ERROR,
    )
    output_schema = None if replaces else schema
    return job(data=data, config=config, output_schema=output_schema, **kwargs)
