"""Store configuration, output documents and queries."""

from __future__ import annotations

from softening.stores.documents import (
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
