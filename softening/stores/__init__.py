"""Store configuration, queries and builders (output documents live in :mod:`softening.schemas`)."""

from __future__ import annotations

from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    ModelInfo,
    SofteningDoc,
    UMLIPResults,
    content_key,
)
from softening.stores.factory import describe_store, get_job_store, redact

__all__ = [
    "CodeInfo",
    "FrameResult",
    "FrameSpec",
    "ModelInfo",
    "SofteningDoc",
    "UMLIPResults",
    "content_key",
    "describe_store",
    "get_job_store",
    "redact",
]
