"""Upkeep of a store folder: the full integrity check, and the conversion of MontyDB folders.

- :func:`check_integrity`: ``PRAGMA integrity_check``, then every document decoded (slow; for
  ``softening doctor``, not for every open); :func:`file_integrity` is SQLite's own check of any
  one SQLite file (the doctor runs it on the other SQLite files of a folder).
- :func:`migrate_legacy_store`: a folder written by the MontyDB version is converted on first open
  (registered in :data:`.connection.BEFORE_OPEN`); the old files move to
  ``<folder>/montydb-legacy/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from maggma.core import Store

from softening.errors import SofteningError
from softening.stores.sqlite.codec import decode
from softening.stores.sqlite.connection import (
    _DATABASES,
    BEFORE_OPEN,
    DATABASE_NAME,
    DEFAULT_TIMEOUT,
    _database,
    _quote,
    check_database_file,
    connect_readonly,
    database_path,
)
from softening.stores.sqlite.lock import _pid_alive
from softening.stores.sqlite.store import FETCH_BATCH, SQLiteStore

__all__ = [
    "LEGACY_FOLDER",
    "check_integrity",
    "file_integrity",
    "has_legacy_store",
    "migrate_legacy_store",
]

# The store's one logger (log lines name the store, not one of its modules).
logger = logging.getLogger("softening.stores.sqlite")

#: Where the files of a converted MontyDB store are kept.
LEGACY_FOLDER = "montydb-legacy"

# ---- integrity -----------------------------------------------------------------------------------


def check_integrity(folder: str | Path, database_name: str = DATABASE_NAME) -> list[str]:
    """A full check of a store folder: ``PRAGMA integrity_check``, then every document decoded.

    Slow on a large store (reads everything); for a ``doctor`` command, not for every open.

    Returns
    -------
    list[str]
        One line per problem; empty when the store is intact (or has no database yet).
    """
    path = database_path(folder, database_name)
    if not path.exists():
        return []
    problems: list[str] = []
    try:
        check_database_file(path)
        conn = connect_readonly(path)
    except SofteningError as exc:
        return [str(exc)]
    except sqlite3.Error as exc:
        return [f"cannot open {path}: {exc}"]
    try:
        problems += [f"integrity_check: {r}" for r in _integrity_rows(conn)[:20]]
        names = conn.execute("SELECT cid, name FROM _collections ORDER BY name").fetchall()
        for cid, name in names:
            last = -1
            while True:
                batch = conn.execute(
                    f"SELECT id, enc, body FROM {_quote(name)} WHERE id > ? ORDER BY id LIMIT ?",
                    (last, FETCH_BATCH),
                ).fetchall()
                if not batch:
                    break
                for doc_id, enc, body in batch:
                    last = doc_id
                    try:
                        doc = decode(enc, body)
                        if not isinstance(doc, dict):
                            raise ValueError("not a document")
                    except Exception as exc:
                        problems.append(f"{name} document {doc_id} does not decode: {exc}")
            orphans = conn.execute(
                f"SELECT count(*) FROM _index WHERE cid = ? AND doc NOT IN "
                f"(SELECT id FROM {_quote(name)})",
                (cid,),
            ).fetchone()[0]
            if orphans:
                problems.append(f"{name}: {orphans} index rows of missing documents")
    except sqlite3.Error as exc:
        problems.append(f"{path}: {exc}")
    finally:
        conn.close()
    return problems


def file_integrity(path: str | Path, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """What SQLite's ``PRAGMA integrity_check`` finds wrong in one SQLite file, opened read-only.

    Any SQLite file (a store's database, the files of an older MontyDB folder...); also on a
    read-only mount (:func:`.connection.connect_readonly`).

    Returns
    -------
    list[str]
        SQLite's lines; empty when the file is intact.

    Raises
    ------
    sqlite3.Error
        When the file does not open as an SQLite database.
    """
    conn = connect_readonly(path, timeout)
    try:
        return _integrity_rows(conn)
    finally:
        conn.close()


def _integrity_rows(conn: sqlite3.Connection) -> list[str]:
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows


# ---- the MontyDB stores of earlier versions ------------------------------------------------------

_LEGACY_FILES = (".monty.storage", "monty.storage.cfg")


def _legacy_dir(folder: Path) -> Path:
    return folder / DATABASE_NAME


def has_legacy_store(folder: str | Path) -> bool:
    """Whether ``folder`` holds the MontyDB files of an earlier version (and not yet converted)."""
    folder = Path(folder).expanduser()
    legacy = _legacy_dir(folder)
    return (
        any((folder / f).exists() for f in _LEGACY_FILES)
        and legacy.is_dir()
        and any(legacy.glob("*.collection"))
    )


def _maybe_migrate(folder: Path, path: Path) -> None:
    if path.name == f"{DATABASE_NAME}.sqlite" and not path.exists() and has_legacy_store(folder):
        migrate_legacy_store(folder)


BEFORE_OPEN.append(_maybe_migrate)


def migrate_legacy_store(
    folder: str | Path, indexed: dict[str, Sequence[str]] | None = None
) -> int:
    """Convert a MontyDB store folder (earlier versions) into the SQLite database, in place.

    Copies every collection (``outputs``, ``data`` with its chunked blobs reassembled, summary
    collections) into ``<folder>/softening.sqlite``, then moves the old files into
    ``<folder>/montydb-legacy/``. The new file appears only once complete (written under a
    temporary name, then renamed); concurrent openers wait for it.

    Parameters
    ----------
    folder
        The store folder.
    indexed
        Extra indexed fields per collection (``{"outputs": [...]}``).

    Returns
    -------
    int
        Documents copied (0 when there was nothing to convert).
    """
    folder = Path(folder).expanduser().absolute()
    final = database_path(folder)
    if final.exists() or not has_legacy_store(folder):
        return 0
    lock = folder / ".softening-convert.lock"
    deadline = time.monotonic() + 3600
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
            os.close(fd)
            break
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
                if host == socket.gethostname() and not _pid_alive(int(pid)):
                    lock.unlink()
                    continue
            except (OSError, ValueError):
                pass
            if final.exists() or time.monotonic() > deadline:
                return 0
            time.sleep(0.2)
        except OSError as exc:
            raise SofteningError(
                f"cannot convert the old store in {folder}: {exc.strerror}"
            ) from None
    try:
        if final.exists():
            return 0
        n = _convert(folder, final, indexed or {})
        _move_legacy(folder)
        logger.info(
            "converted the MontyDB store in %s to %s (%d documents; the old files are in %s)",
            folder, final.name, n, folder / LEGACY_FOLDER,
        )  # fmt: skip
        return n
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


def _convert(folder: Path, final: Path, indexed: dict[str, Sequence[str]]) -> int:
    from maggma.stores import MontyStore

    from softening.stores.chunked import ChunkedStore

    tmp_name = f"{DATABASE_NAME}.converting-{os.getpid()}"
    tmp = database_path(folder, tmp_name)
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(tmp) + suffix).unlink()
    names = sorted(p.name[: -len(".collection")] for p in _legacy_dir(folder).glob("*.collection"))
    kw = {"database_path": str(folder), "database_name": DATABASE_NAME}
    total = 0
    try:
        for name in names:
            if name.endswith("_chunks") and name[: -len("_chunks")] in names:
                continue  # read through its head collection
            source: Store = MontyStore(name, key="_id", **kw)
            if f"{name}_chunks" in names:
                source = ChunkedStore(source, MontyStore(f"{name}_chunks", key="files_key", **kw))
                source.store.key = "blob_uuid"
            target = SQLiteStore(
                str(folder), name, key="_id", indexed_fields=list(indexed.get(name, ())),
                database_name=tmp_name,
            )  # fmt: skip
            source.connect()
            try:
                docs = ({k: v for k, v in d.items() if k != "_id"} for d in source.query({}))
                total += target.insert_many(docs)
            finally:
                source.close()
                target.close()
        if not tmp.exists():  # nothing to copy: an empty database
            db = _database(tmp, DEFAULT_TIMEOUT)
            db.open(create=True)
            db.close()
        # One self-contained file before the rename: no WAL beside it.
        conn = sqlite3.connect(str(tmp))
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        os.replace(tmp, final)
    except SofteningError:
        raise
    except Exception as exc:
        raise SofteningError(
            f"cannot convert the old (MontyDB) store in {folder}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        _DATABASES.pop(str(tmp), None)
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(tmp) + suffix).unlink()
    return total


def _move_legacy(folder: Path) -> None:
    dest = folder / LEGACY_FOLDER
    dest.mkdir(exist_ok=True)
    for name in (*_LEGACY_FILES, DATABASE_NAME):
        src = folder / name
        if src.exists():
            shutil.move(str(src), str(dest / name))
