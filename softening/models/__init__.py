"""uMLIP model factory and batched evaluation (one backend per family: :mod:`.backends`)."""

from __future__ import annotations

from softening.models.backends import LoadedModel
from softening.models.factory import load_model

__all__ = ["LoadedModel", "load_model"]
