"""The one store factory: a store spec (a folder today) to a jobflow ``JobStore``."""

from __future__ import annotations

from pathlib import Path

from jobflow import JobStore

from softening.errors import InputError
from softening.settings import get_settings

DOCS_COLLECTION = "outputs"
DATA_COLLECTION = "data"


def resolve_store_spec(store: str | Path | None = None) -> str:
    """The store spec to use: the argument, else the ``store`` setting."""
    return str(store) if store is not None else get_settings().store


def get_job_store(store: str | Path | None = None) -> JobStore:
    """Open (creating if needed) the result store named by ``store``.

    Parameters
    ----------
    store
        A folder: an embedded MontyDB (sqlite) store, shared between processes and runs. ``None``
        means the ``store`` setting (default ``./softening-db``).

    Returns
    -------
    JobStore
        Job outputs in the ``outputs`` collection; large arrays (trajectories, stacked forces) in
        the ``data`` additional store, as jobflow's ``data=`` job argument puts them.
    """
    from maggma.stores import MontyStore

    spec = resolve_store_spec(store)
    path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"store {spec!r} is a file; give a folder for the embedded store")
    path.mkdir(parents=True, exist_ok=True)
    kwargs = {"database_path": str(path.resolve()), "database_name": "softening"}
    docs = MontyStore(DOCS_COLLECTION, key="uuid", **kwargs)
    data = MontyStore(DATA_COLLECTION, key="blob_uuid", **kwargs)
    return JobStore(docs, additional_stores={"data": data})
