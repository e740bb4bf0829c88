"""The doctor's checks of the result store: it opens and is writable, and its files are intact
(see :mod:`softening.health`)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from softening.errors import InputError, SofteningError
from softening.health import DoctorRequest, PlannedCheck, Problem, Skip
from softening.settings import get_settings, redact


def check_store(store: str | None = None) -> Callable[[], str]:
    """A check that the result store opens and is writable.

    An embedded folder is checked without writing into its database (a temporary file in the
    folder, write permission on the database files); a new folder is not created, and a MontyDB
    folder of an older version is reported, not converted. On MongoDB a probe document is written
    into the collection ``softening_doctor`` and removed.
    """

    def run() -> str:
        from softening.stores.factory import describe_store, resolve_store_spec, store_kind

        spec = resolve_store_spec(store)
        where = describe_store(spec)
        embedded = store_kind(spec) == "embedded"
        if embedded:
            path = Path(spec).expanduser()
            if not path.exists():
                parent = next((p for p in path.resolve().parents if p.exists()), Path("/"))
                if not os.access(parent, os.W_OK):
                    raise Problem(
                        f"{where} does not exist and {parent} is not writable",
                        "give a writable --store folder or set SOFTENING_STORE",
                    )
                return f"{where} (new: created on the first run)"
            if not path.is_dir():
                raise Problem(f"{where} is a file", "give a folder, a mongodb:// URI or .yaml")
            try:
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as exc:
                raise Problem(
                    f"{where} is not writable: {exc.strerror}",
                    "give a writable --store folder or set SOFTENING_STORE",
                ) from None
            readonly = [p.name for p in sorted(path.glob("*.sqlite*")) if not os.access(p, os.W_OK)]
            if readonly:
                raise Problem(
                    f"{where}: read-only {', '.join(readonly)}",
                    "make the store files writable (chmod u+w) or give another --store",
                )
            legacy = _legacy_store(path)
            if legacy:
                return f"{where}: {legacy}"
        from softening.stores import get_job_store

        job_store = get_job_store(spec)
        try:
            job_store.connect()
            n = job_store.docs_store.count()
            if not embedded:
                _probe_write(job_store.docs_store)
        except SofteningError as exc:
            raise Problem(str(exc), _store_fix(spec)) from None
        finally:
            try:
                job_store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        return f"{where}: {n} result document(s), writable"

    return run


def _legacy_store(path: Path) -> str | None:
    """A note when ``path`` holds an older (MontyDB) embedded store, which the next open converts."""
    try:
        from softening.stores.sqlite import has_legacy_store
    except ImportError:  # pragma: no cover - the MontyDB-only version of the stores
        return None
    if has_legacy_store(path):
        return "an older MontyDB folder: converted to SQLite by the next command that opens it"
    return None


def _probe_write(docs_store) -> None:
    """Write one document into the collection ``softening_doctor`` of a MongoDB store, remove it."""
    collection = getattr(docs_store, "_coll", None) or getattr(docs_store, "_collection", None)
    if collection is None:
        return
    probe = collection.database["softening_doctor"]
    try:
        result = probe.insert_one({"probe": "softening-doctor", "time": time.time()})
        probe.delete_one({"_id": result.inserted_id})
    except Exception as exc:  # noqa: BLE001 - reported as a line
        raise SofteningError(f"cannot write to the store: {redact(str(exc))}") from None


def _store_fix(spec: str) -> str:
    from softening.stores.factory import store_kind

    if store_kind(spec) == "mongodb":
        return (
            "check SOFTENING_MONGO_HOST/PORT/USERNAME/PASSWORD (or the URI) and that this node "
            "may reach the server; SOFTENING_MONGO_TIMEOUT sets the wait"
        )
    return "give a usable --store or set SOFTENING_STORE"


def check_store_integrity(store: str | None = None) -> Callable[[], str]:
    """A full check of an embedded store: the stores layer's ``check_integrity`` (sqlite's
    ``PRAGMA integrity_check``, then every document decoded), or ``PRAGMA integrity_check`` on every
    sqlite file of the folder where that is not available."""

    def run() -> str:
        from softening.stores.factory import resolve_store_spec, store_kind

        spec = resolve_store_spec(store)
        try:
            kind = store_kind(spec)
        except InputError:
            raise Skip("no usable store spec (see the store check)") from None
        if kind != "embedded":
            raise Skip("MongoDB keeps its own consistency; only embedded stores are checked")
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise Skip(f"{path} does not exist yet")
        files = [p for p in sorted(path.rglob("*")) if p.is_file() and _is_sqlite(p)]
        problems: list[str] = []
        try:
            from softening.stores.sqlite import check_integrity
        except ImportError:  # pragma: no cover - the MontyDB-only version of the stores
            check_integrity = None
        checked = set()
        if check_integrity is not None:
            from softening.stores.sqlite import database_path

            problems += check_integrity(path)
            checked.add(database_path(path).resolve())
        for p in files:
            if p.resolve() in checked:
                continue
            verdict = sqlite_integrity(p)
            if verdict != "ok":
                problems.append(f"{p.relative_to(path)}: {verdict}")
        if problems:
            raise Problem(
                "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if problems[5:] else ""),
                "restore the store folder from a copy, or rerun into a fresh --store",
            )
        return f"{len(files)} sqlite file(s) in {path}: intact"

    return run


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def sqlite_integrity(path: str | Path) -> str:
    """``ok``, or what sqlite's ``PRAGMA integrity_check`` found wrong in ``path`` (one line)."""
    from softening.stores.sqlite import file_integrity

    try:
        # Read-only, also on a read-only mount (where a WAL file cannot get its -shm file).
        lines = file_integrity(Path(path).resolve(), timeout=5)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "; ".join(lines[:3]) if lines else "ok"


def plan_checks(request: DoctorRequest) -> list[PlannedCheck]:
    """The store and its integrity, both always needed; MongoDB gets ``mongo_timeout`` + 2 s."""
    from softening.stores.factory import resolve_store_spec, store_kind

    store, timeout = request.store, request.timeout
    try:
        store_is_mongo = store_kind(resolve_store_spec(store)) == "mongodb"
    except InputError:
        store_is_mongo = False  # an unusable spec: the store check reports it, as one line
    mongo_wait = get_settings().mongo_timeout + 2
    fix = _store_fix(resolve_store_spec(store)) if store_is_mongo else ""
    return [
        PlannedCheck("store", check_store(store), True, max(timeout, mongo_wait), fix),
        PlannedCheck("store integrity", check_store_integrity(store), True, max(timeout, 30.0)),
    ]
