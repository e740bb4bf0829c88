"""Inputs shared by the flows built from options: the models (default, loaded and checked) and
the job folders a reference needs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["default_models", "job_folders", "load_checked_models"]


def default_models(models: Sequence[str] | None) -> list[str]:
    """``models``, or the ``models`` setting when none are given."""
    from softening.settings import get_settings

    return list(models) if models else list(get_settings().models)


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
    """Folder options of :func:`softening.hpc.local.run_flow` for a reference.

    atomate2's VASP jobs write into the current folder, so each gets its own under
    ``<out>/vasp-runs`` (created here); the embedded references need none.
    """
    if reference != "vasp":
        return {}
    where = Path(out or "softening-results") / "vasp-runs"
    where.mkdir(parents=True, exist_ok=True)
    return {"create_folders": True, "root_dir": where}
