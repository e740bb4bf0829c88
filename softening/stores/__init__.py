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
from softening.stores.factory import get_job_store

__all__ = [
    "CodeInfo",
    "FrameResult",
    "FrameSpec",
    "ModelInfo",
    "SofteningDoc",
    "UMLIPResults",
    "content_key",
    "get_job_store",
]
