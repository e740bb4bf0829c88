"""The SQLite file of a store folder: one connection per process, retries, read-only opening.

Every store object of one process that uses the same file shares one :class:`_Database` (one
connection, one lock): :func:`_database` is the per-process registry, which forgets (and never
uses) the connections a forked child inherits. Writes run in one ``BEGIN IMMEDIATE`` transaction,
retried while another process holds the file; every SQLite error becomes one
:class:`~softening.errors.SofteningError` line (:meth:`_Database.error`). The WAL journal on a
local disk, ``DELETE`` and the writer lock of :mod:`.lock` on a network filesystem.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from softening.errors import SofteningError, one_line
from softening.settings import redact
from softening.stores.sqlite.lock import LOCK_FILE, WriterLock, is_network_filesystem

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_TIMEOUT",
    "FORMAT_VERSION",
    "check_database_file",
    "connect_readonly",
    "database_path",
]

# The store's one logger (log lines name the store, not one of its modules).
logger = logging.getLogger("softening.stores.sqlite")

#: File name (without ``.sqlite``) of the database in the store folder.
DATABASE_NAME = "softening"

FORMAT_VERSION = 1
DEFAULT_TIMEOUT = 60.0  # seconds a writer waits for another one (busy timeout)

#: Run with ``(folder, path)`` before a process first opens a database file: the conversion of an
#: older MontyDB folder (:mod:`.maintenance` adds it; it writes through the store, which reads
#: through this module, so this module cannot call it by name).
BEFORE_OPEN: list[Callable[[Path, Path], None]] = []


def database_path(folder: str | Path, database_name: str = DATABASE_NAME) -> Path:
    """The SQLite file of a store folder."""
    return Path(folder).expanduser().absolute() / f"{database_name}.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS _collections (cid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS _indexes (
    cid INTEGER NOT NULL, field TEXT NOT NULL, PRIMARY KEY (cid, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _index (
    cid INTEGER NOT NULL, field TEXT NOT NULL, value, doc INTEGER NOT NULL,
    PRIMARY KEY (cid, field, value, doc)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _index_doc ON _index (cid, doc);
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Database:
    """One SQLite file, shared by every store object of one process (one connection)."""

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.folder = path.parent
        self.timeout = timeout
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.RLock()
        self.refs = 0
        self.network: bool | None = None
        self.writer_lock: WriterLock | None = None
        self.cids: dict[str, int] = {}
        self.checked = False
        self.schema_ready = False
        #: Opened read-only: the folder or the file is not writable (a read-only mount).
        self.readonly = False

    # -- errors, in one place --

    def error(self, exc: BaseException) -> SofteningError:
        """A one-line :class:`SofteningError` for a SQLite or decoding error."""
        where = redact(str(self.folder))
        text = one_line(exc, "first")
        low = text.lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in low or "busy" in low):
            return SofteningError(
                f"the result store in {where} stayed busy for over {self.timeout:.0f} s (another "
                "process is writing); try again"
            )
        if "readonly" in low or "read-only" in low:
            return SofteningError(f"the result store in {where} is read-only here: {text}")
        if "unable to open" in low or "disk i/o" in low or "is full" in low:
            return SofteningError(f"cannot use the result store in {where}: {text}")
        return SofteningError(
            f"the result store in {where} is damaged ({text}); restore it from a backup, or "
            "start a new store with --store"
        )

    # -- opening --

    def open(self, create: bool) -> bool:
        """Open the file (creating it, with its folder, when ``create``); False when absent."""
        if self.conn is not None:
            return True
        with self.lock:
            if self.conn is not None:
                return True
            if not self.checked:
                for before_open in BEFORE_OPEN:
                    before_open(self.folder, self.path)
            exists = self.path.exists()
            if not exists and not create:
                return False
            if self.network is None:
                self.network = is_network_filesystem(self.folder)
                if self.network:
                    logger.warning(
                        "the result store %s is on a network filesystem: SQLite runs without "
                        "WAL there, and one process (with the workers it starts) writes at a time",
                        self.folder,
                    )
            if not exists:
                try:
                    self.folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise SofteningError(
                        f"cannot create the store folder {self.folder}: {exc.strerror}"
                    ) from None
                if self.network:
                    self.acquire_writer_lock()
            elif not self.checked:
                check_database_file(self.path)
            # Reading a store this process may not write (a read-only mount, a colleague's
            # folder): SQLite's read-only mode, which a write then refuses as one line.
            readonly = exists and not _writable(self.path)
            try:
                if readonly:
                    conn = self._connect_readonly()
                else:
                    conn = self._connect("rwc" if create else "rw")
                self._check_schema(conn)
                if not readonly:
                    self._journal(conn)
                if create and not readonly:
                    self._retry(lambda: self._create_schema(conn))
            except sqlite3.Error as exc:
                raise self.error(exc) from None
            self.conn = conn
            self.readonly = readonly
            self.checked = True
            return True

    def _connect(self, mode: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{_uri_path(self.path)}?mode={mode}",
            uri=True,
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        conn = connect_readonly(self.path, self.timeout)
        conn.isolation_level = None
        return conn

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        # Cheap: reads the schema page(s) only; garbage bytes fail here ("not a database").
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        self.schema_ready = {"_meta", "_collections", "_indexes", "_index"} <= names
        if names and "_meta" not in names:
            raise SofteningError(
                f"{self.path} is an SQLite file but not a softening result store; give another "
                "--store folder"
            )
        if "_meta" in names:
            row = conn.execute("SELECT value FROM _meta WHERE key = 'format'").fetchone()
            if row is not None and int(row[0]) > FORMAT_VERSION:
                raise SofteningError(
                    f"the result store in {self.folder} was written by a newer softening "
                    f"(format {row[0]}); upgrade softening to read it"
                )

    def _journal(self, conn: sqlite3.Connection) -> None:
        want = "delete" if self.network else "wal"
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
        if mode != want:
            try:
                mode = conn.execute(f"PRAGMA journal_mode = {want}").fetchone()[0].lower()
            except sqlite3.OperationalError:
                pass  # another process has it open: keep its mode
        # WAL: a commit reaches the OS before returning (survives a killed process) without an
        # fsync per commit; the rollback journal on a network filesystem syncs fully.
        conn.execute(f"PRAGMA synchronous = {'NORMAL' if mode == 'wal' else 'FULL'}")

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # One statement at a time: executescript() would commit the transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO _meta (key, value) VALUES ('format', ?)", (FORMAT_VERSION,)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.schema_ready = True

    def acquire_writer_lock(self) -> None:
        if self.writer_lock is None:
            self.writer_lock = WriterLock(self.folder / LOCK_FILE)
        self.writer_lock.acquire()

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.close()
                self.conn = None
            self.checked = self.schema_ready = self.readonly = False
            if self.writer_lock is not None:
                self.writer_lock.release()
            self.cids.clear()

    # -- transactions --

    def _retry(self, fn: Callable[[], Any]) -> Any:
        # The busy timeout waits inside SQLite; this loop covers the cases where SQLite answers
        # "busy" at once (e.g. while another process recovers the WAL).
        deadline = time.monotonic() + 2 * self.timeout
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                low = str(exc).lower()
                if ("locked" not in low and "busy" not in low) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction, committed before returning."""
        self.open(create=True)
        if self.readonly:
            raise SofteningError(
                f"the result store in {redact(str(self.folder))} is read-only here (the folder or "
                "its database file is not writable): commands that only read work; give a "
                "writable --store to write"
            )
        if self.network:
            self.acquire_writer_lock()
        conn = self.conn
        assert conn is not None
        if not self.schema_ready:
            with self.lock:
                self._retry(lambda: self._create_schema(conn))

        def attempt() -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
                return out
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

        with self.lock:
            return self._retry(attempt)

    def read(self, fn: Callable[[sqlite3.Connection], Any], default: Any = None) -> Any:
        """Run ``fn(conn)`` (one or more statements); ``default`` when there is no file yet."""
        if not self.open(create=False):
            return default
        with self.lock:
            if not self.schema_ready:
                # An empty file, or one another process is initialising: look again.
                self._retry(lambda: self._check_schema(self.conn))
                if not self.schema_ready:
                    return default
            return self._retry(lambda: fn(self.conn))

    # -- collections --

    def cid(self, conn: sqlite3.Connection, name: str) -> int | None:
        if name in self.cids:
            return self.cids[name]
        row = conn.execute("SELECT cid FROM _collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        self.cids[name] = row[0]
        return row[0]

    def create_collection(self, conn: sqlite3.Connection, name: str, fields: Iterable[str]) -> int:
        cid = self.cid(conn, name)
        if cid is not None:
            return cid
        if not name or name.startswith(("_", "sqlite_")):
            raise ValueError(f"invalid collection name {name!r} (reserved prefix)")
        cur = conn.execute("INSERT INTO _collections (name) VALUES (?)", (name,))
        cid = int(cur.lastrowid)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_quote(name)} "
            "(id INTEGER PRIMARY KEY, enc INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        conn.executemany(
            "INSERT OR IGNORE INTO _indexes (cid, field) VALUES (?, ?)",
            [(cid, f) for f in dict.fromkeys(fields)],
        )
        # Not cached before the commit: a rolled-back creation must not be remembered.
        return cid


def _writable(path: Path) -> bool:
    """Whether this process may write the database file and create its journals in its folder.

    ``os.access`` also answers False on a read-only mount, for root too.
    """
    files = [path, *(path.with_name(path.name + x) for x in ("-wal", "-shm", "-journal"))]
    return os.access(path.parent, os.W_OK | os.X_OK) and all(
        os.access(f, os.W_OK) for f in files if f.exists()
    )


def connect_readonly(path: str | Path, timeout: float = DEFAULT_TIMEOUT) -> sqlite3.Connection:
    """A read-only connection to an SQLite file, also on a read-only mount.

    SQLite's ``mode=ro``; when that cannot open the file (a WAL database needs its ``-shm`` file,
    which a read-only folder cannot get), ``immutable=1``: no locks, which is right where nobody
    can write. Commits still in a ``-wal`` file are then not seen (a store closed cleanly has
    none; a warning says so otherwise).

    Raises
    ------
    sqlite3.Error
        When neither opens the file.
    """
    path = Path(path)

    def connect(options: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{_uri_path(path)}?{options}", uri=True, timeout=timeout, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        return conn

    conn = connect("mode=ro")
    try:
        conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc).lower():
            raise
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        logger.warning(
            "%s is read-only here and its %s holds writes not yet in the file, which cannot be "
            "read; open the store once where it is writable to fold them in",
            redact(str(path)),
            wal.name,
        )
    return connect("mode=ro&immutable=1")


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path))


def check_database_file(path: Path) -> None:
    """Raise :class:`SofteningError` when the file is not an intact SQLite database (cheap).

    Reads the 100-byte header only: the SQLite magic, and the page count against the file size
    (a truncated file). :func:`check_integrity` is the full check.
    """
    folder = path.parent
    damaged = (
        f"the result store in {folder} is damaged ({{}}); restore it from a backup, or start a "
        "new store with --store"
    )
    try:
        size = path.stat().st_size
        if size == 0:
            return  # created, never written: SQLite reads it as an empty database
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise SofteningError(f"cannot read the result store {path}: {exc.strerror}") from None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise SofteningError(damaged.format(f"{path.name} is not an SQLite database"))
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(head[28:32], "big")
    # The page count is valid when the change counter matches "version-valid-for".
    if n_pages and head[24:28] == head[92:96] and size < page_size * n_pages:
        raise SofteningError(
            damaged.format(f"{path.name} is truncated: {size} of {page_size * n_pages} bytes")
        )


_DATABASES: dict[str, _Database] = {}
_DATABASES_PID = os.getpid()
_ORPHANS: list[Any] = []  # connections inherited through fork: kept, never used nor closed
_REGISTRY_LOCK = threading.Lock()


def _database(path: Path, timeout: float) -> _Database:
    global _DATABASES_PID
    with _REGISTRY_LOCK:
        if _DATABASES_PID != os.getpid():
            # A forked child: the parent's connections must not be used (nor closed) here.
            _ORPHANS.extend(db.conn for db in _DATABASES.values() if db.conn is not None)
            _DATABASES.clear()
            _DATABASES_PID = os.getpid()
        key = str(path)
        db = _DATABASES.get(key)
        if db is None:
            db = _DATABASES[key] = _Database(path, timeout)
        return db
