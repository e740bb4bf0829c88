"""uMLIP model factory and batched evaluation."""

from __future__ import annotations

from softening.models.factory import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
