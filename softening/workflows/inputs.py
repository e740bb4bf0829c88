"""Inputs shared by the flows built from options: the models (default, loaded and checked) and
the job folders a reference needs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["default_models", "job_folders", "load_checked_models", "unique_models"]


def default_models(models: Sequence[str] | None) -> list[str]:
    """``models``, or the ``models`` setting when none are given, each model once.

    The one place every command's model list (``--model``, repeated) goes through: specs that
    resolve to the same model (``chgnet`` twice, ``chgnet`` and ``chgnet-0.3.0``, a matgl name and
    its folder) are collapsed to the first, with a warning (:func:`unique_models`).
    """
    from softening.settings import get_settings

    return unique_models(list(models) if models else list(get_settings().models))


def unique_models(specs: Sequence[str]) -> list[str]:
    """``specs`` with every model once (the first spec of each), warning about the others.

    Specs are compared by what they resolve to, without loading the models
    (:func:`softening.models.factory.spec_key`).
    """
    from softening.models.factory import spec_key

    first: dict[str, str] = {}
    repeats: dict[str, list[str]] = {}
    for spec in specs:
        key = spec_key(spec)
        if key in first:
            repeats.setdefault(key, []).append(spec)
        else:
            first[key] = spec
    for key, others in repeats.items():
        same = sorted(set(others) - {first[key]})
        also = f" (and as {', '.join(same)})" if same else ""
        logger.warning(
            "model %s given %d times%s: evaluated once", first[key], len(others) + 1, also
        )
    return list(first.values())


def load_checked_models(specs: Iterable[str], elements: Iterable[str]) -> list[Any]:
    """Load every model (cached) and check that it knows every element, before any work.

    Raises
    ------
    ModelError
        An unknown model, or an element a model lacks.
    """
    from softening.models import load_model

    elements = set(elements)
    loaded = []
    for spec in specs:
        m = load_model(spec)
        m.check_elements(elements)
        loaded.append(m)
    return loaded


def job_folders(reference: str, out: str | Path | None) -> dict[str, Any]:
    """Folder options of :func:`softening.execution.local.run_flow` for a reference.

    atomate2's VASP jobs write into the current folder, so each gets its own under
    ``<out>/vasp-runs`` (created here); the embedded references need none.
    """
    if reference != "vasp":
        return {}
    where = Path(out or "softening-results") / "vasp-runs"
    where.mkdir(parents=True, exist_ok=True)
    return {"create_folders": True, "root_dir": where}
