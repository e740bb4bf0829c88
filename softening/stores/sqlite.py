"""The embedded result store: one SQLite file, indexed, safe for several processes on one machine.

:class:`SQLiteStore` is a maggma :class:`~maggma.core.Store` over one collection (one table) of the
file ``<folder>/softening.sqlite``. Every collection of the embedded JobStore (``outputs``, ``data``)
and the builder's summary collections live in that one file.

- **Bodies**: each document is one msgpack blob (zlib-compressed when large), with ext types for
  datetimes, dates, ObjectIds and integers beyond 64 bits, so that datetime, bytes, NaN and nested
  lists round-trip exactly. SQLite keeps blobs up to 1 GB, so large arrays need no chunking.
- **Indexes**: a side table ``_index(cid, field, value, doc)`` holds the values of the indexed dotted
  fields of every document (one row per array element, as MongoDB's multikey indexes). A query takes
  its top-level equality, ``$in``, ``$all`` and numeric range conditions on indexed fields (and
  ``$or`` / ``$and`` of such) to SQL, decodes only those candidates, and applies the full filter with
  mongomock's filter engine; sort, skip, limit and projection follow in Python. Only a query with no
  usable condition decodes every document (:attr:`SQLiteStore.n_decoded` counts decodes).
- **Writes**: ``update`` replaces the document(s) matching the key fields, else inserts, inside one
  ``BEGIN IMMEDIATE`` transaction committed per call: what a call wrote survives a crash (SIGKILL) of
  the process.
- **Several processes**: WAL journal, a busy timeout and retries; store objects pickle to their
  constructor arguments and reconnect lazily in each process (a connection inherited through
  ``fork`` is never used).
- **Network filesystems** (NFS, Lustre, GPFS, ...; :func:`is_network_filesystem`): WAL needs shared
  memory, so the journal is ``DELETE`` there, and one process (with the worker processes it starts)
  writes at a time, guarded by a lock file taken at the first write (:class:`WriterLock`).
- **Old folders**: a folder written by the MontyDB version is converted on first open
  (:func:`migrate_legacy_store`); the old files move to ``<folder>/montydb-legacy/``.
- **Damage**: a damaged file gives one :class:`~softening.errors.SofteningError` line at open (a
  cheap header and schema check); :func:`check_integrity` is the full check.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import numbers
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid as uuidlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgpack
from maggma.core import Sort, Store

from softening.errors import SofteningError
from softening.settings import redact

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_INDEXED_FIELDS",
    "LEGACY_FOLDER",
    "LOCK_TOKEN_ENV",
    "STORE_FS_ENV",
    "SQLiteStore",
    "WriterLock",
    "check_database_file",
    "check_integrity",
    "database_path",
    "decode",
    "encode",
    "filesystem_type",
    "has_legacy_store",
    "is_network_filesystem",
    "migrate_legacy_store",
]

logger = logging.getLogger(__name__)

#: File name (without ``.sqlite``) of the database in the store folder.
DATABASE_NAME = "softening"
#: Fields every collection indexes (jobflow's job and blob keys).
DEFAULT_INDEXED_FIELDS = ("uuid", "index", "blob_uuid", "job_uuid")
#: Where the files of a converted MontyDB store are kept.
LEGACY_FOLDER = "montydb-legacy"
#: ``network`` or ``local``: overrides the filesystem detection (tests, unusual mounts).
STORE_FS_ENV = "SOFTENING_STORE_FS"
#: The network-filesystem writer lock, in the store folder.
LOCK_FILE = "softening.lock"
#: Run token of the network-filesystem writer lock, inherited by the writer's child processes.
LOCK_TOKEN_ENV = "SOFTENING_STORE_LOCK_TOKEN"

FORMAT_VERSION = 1
DEFAULT_TIMEOUT = 60.0  # seconds a writer waits for another one (busy timeout)
# Bodies above this size are zlib-compressed when that saves at least 10 %.
COMPRESS_MIN_BYTES = 4096
# zlib level 1 above 1 MiB: ~1 s per 120 MB of floats against ~7 s at level 6, for ~7 % more bytes.
FAST_COMPRESS_BYTES = 1024 * 1024
FETCH_BATCH = 256  # documents decoded per SQL round trip
INLINE_PARAMS = 200  # larger $in lists go to SQL as one JSON array
ESTIMATE_CAP = 200  # rows counted, at most, to rank the conditions of a query by selectivity
PROBE_IDS = 500  # candidate ids checked against a further condition by index lookups
INT64 = (-(2**63), 2**63 - 1)

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "glusterfs",
        "sshfs", "afs", "9p_network", "pvfs2", "orangefs", "panfs", "ocfs2", "gfs2", "davfs",
    }
)  # fmt: skip

# ---- encoding ------------------------------------------------------------------------------------

_EXT_DATETIME, _EXT_OBJECTID, _EXT_BIGINT, _EXT_DATE = 1, 2, 3, 4
_ENC_MSGPACK, _ENC_ZLIB = 0, 1


def _default(obj: Any) -> Any:
    """msgpack's hook for types it lacks: exact ext types, else what maggma's MongoStore stores."""
    if isinstance(obj, datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, int) and not isinstance(obj, bool):
        return msgpack.ExtType(_EXT_BIGINT, str(int(obj)).encode())  # beyond msgpack's 64 bits
    cls = type(obj).__name__
    if cls == "ObjectId":
        return msgpack.ExtType(_EXT_OBJECTID, obj.binary)
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return obj.tolist()  # arrays and numpy scalars, without a jsanitize pass over every float
    from monty.json import jsanitize

    out = jsanitize(obj, allow_bson=True, recursive_msonable=True)
    if type(out) is type(obj):
        raise TypeError(f"cannot store an object of type {cls}")
    return out


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        return datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return date.fromisoformat(data.decode())
    if code == _EXT_OBJECTID:
        from bson import ObjectId

        return ObjectId(data)
    if code == _EXT_BIGINT:
        return int(data.decode())
    return msgpack.ExtType(code, data)


def encode(doc: Any) -> tuple[int, bytes]:
    """A document as ``(encoding, body)``: msgpack, zlib-compressed when large.

    Returns
    -------
    tuple[int, bytes]
        ``0`` (msgpack) or ``1`` (zlib over msgpack), and the bytes.
    """
    raw = msgpack.packb(doc, default=_default, use_bin_type=True)
    if len(raw) > COMPRESS_MIN_BYTES:
        level = 1 if len(raw) > FAST_COMPRESS_BYTES else 6
        packed = zlib.compress(raw, level)
        if len(packed) < 0.9 * len(raw):
            return _ENC_ZLIB, packed
    return _ENC_MSGPACK, raw


def decode(encoding: int, body: bytes) -> Any:
    """Inverse of :func:`encode`."""
    raw = zlib.decompress(body) if encoding == _ENC_ZLIB else body
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_ext_hook)


# ---- index values --------------------------------------------------------------------------------

_SKIP = object()
_PLAIN = (dict, list, tuple, str, bytes, int, float, type(None), datetime, date)


def _index_key(value: Any) -> Any:
    """The value an index row holds, or ``_SKIP`` for values the index leaves out.

    Strings and numbers only: booleans (SQLite would equal them to 0 and 1), ``None`` (MongoDB's
    ``None`` also matches a missing field), NaN (SQLite stores it as NULL), datetimes and documents
    are not indexed, and a query on such a value does not use the index.
    """
    if isinstance(value, bool):
        return _SKIP
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        v = int(value)
        return v if INT64[0] <= v <= INT64[1] else _SKIP
    if isinstance(value, numbers.Real):
        v = float(value)
        return _SKIP if math.isnan(v) else v
    return _SKIP


def _plain(value: Any) -> Any:
    # What the encoder turns a foreign object into, so that index rows match the stored body.
    if isinstance(value, _PLAIN) or isinstance(value, numbers.Number):
        return value
    try:
        return _default(value)
    except TypeError:
        return value


def _path_values(obj: Any, parts: Sequence[str]) -> Iterator[Any]:
    """The values at a dotted path, MongoDB-style: arrays of documents are traversed."""
    obj = _plain(obj)
    if not parts:
        yield obj
        return
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):
        if head in obj:
            yield from _path_values(obj[head], rest)
    elif isinstance(obj, list | tuple):
        if head.isdigit() and int(head) < len(obj):
            yield from _path_values(obj[int(head)], rest)
        for item in obj:
            item = _plain(item)
            if isinstance(item, dict):
                yield from _path_values(item, parts)


def _index_rows(doc: dict, fields: Iterable[str]) -> set[tuple[str, Any]]:
    rows = set()
    for field in fields:
        for value in _path_values(doc, field.split(".")):
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                key = _index_key(_plain(item))
                if key is not _SKIP:
                    rows.add((field, key))
    return rows


# ---- filesystems and the network-filesystem writer lock ------------------------------------------


def filesystem_type(path: str | Path) -> str:
    """The filesystem type (``ext4``, ``nfs4``, ``lustre``, ``fuse.sshfs``...) holding ``path``.

    Reads ``/proc/self/mountinfo`` (else ``/proc/mounts``) and takes the longest mount point that
    contains the path (or its nearest existing parent). ``""`` when unknown.
    """
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    target = os.path.realpath(p)
    mounts: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and rfields:
                    mounts.append((_unescape(fields[4]), rfields[0]))
    except OSError:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    f = line.split()
                    if len(f) >= 3:
                        mounts.append((_unescape(f[1]), f[2]))
        except OSError:
            return ""
    best, kind = "", ""
    for mount, fstype in mounts:
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def _unescape(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040...).
    return text.encode().decode("unicode_escape") if "\\" in text else text


def is_network_filesystem(path: str | Path) -> bool:
    """Whether ``path`` is on a network filesystem, where SQLite's WAL and locks are unsafe.

    ``SOFTENING_STORE_FS=network`` or ``local`` overrides the detection.
    """
    forced = os.environ.get(STORE_FS_ENV, "").strip().lower()
    if forced in ("network", "local"):
        return forced == "network"
    kind = filesystem_type(path).lower()
    base = kind.split(".", 1)[1] if kind.startswith("fuse.") else kind
    return base in NETWORK_FILESYSTEMS or base.startswith(("nfs", "ceph", "gluster", "lustre"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


class WriterLock:
    """The writer lock of a store folder on a network filesystem.

    The lock file (created with ``O_CREAT | O_EXCL``) holds host, pid, time and a run token. The
    first writer puts the token in ``os.environ[LOCK_TOKEN_ENV]``, so the worker processes it starts
    inherit it and may write too. A lock of a dead process on this host is taken over; any other
    holder makes :meth:`acquire` raise a one-line :class:`SofteningError`.

    Parameters
    ----------
    path
        The lock file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.owned = False
        self.joined = False
        self.token: str | None = None

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content, ``None`` when there is none (``{}`` when unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            info = json.loads(text)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> None:
        """Take the lock, or join it (same token), or raise :class:`SofteningError`."""
        if self.owned or self.joined:
            return
        token = os.environ.get(LOCK_TOKEN_ENV) or None
        host = socket.gethostname()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released meanwhile
                if not info:
                    # Being written by its creator right now, or damaged: look again shortly.
                    time.sleep(0.05)
                    info = self.holder()
                    if not info:
                        if info is None:
                            continue
                        raise SofteningError(
                            f"the store lock {self.path} is unreadable; delete it if no process "
                            "is writing to the store"
                        ) from None
                if token and info.get("token") == token:
                    self.token, self.joined = token, True  # a worker of the holder
                    return
                pid = info.get("pid")
                if info.get("host") == host and isinstance(pid, int) and not _pid_alive(pid):
                    logger.warning("taking over the lock of a finished process: %s", self.path)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise SofteningError(
                    f"the store folder {self.path.parent} is on a network filesystem and "
                    f"{info.get('host', '?')} pid {info.get('pid', '?')} has been writing to it "
                    f"since {info.get('time', '?')}; wait for it to finish, or delete "
                    f"{self.path} if that process is gone"
                ) from None
            else:
                token = token or uuidlib.uuid4().hex
                os.environ[LOCK_TOKEN_ENV] = token
                info = {
                    "host": host,
                    "pid": os.getpid(),
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "token": token,
                }
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(info, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                self.owned, self.token = True, token
                _OWNED_LOCKS.add(self)
                return
        raise SofteningError(f"cannot take the store lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock file if this process created it."""
        self.joined = False
        if not self.owned:
            return
        self.owned = False
        _OWNED_LOCKS.discard(self)
        info = self.holder()
        if info and info.get("pid") == os.getpid() and info.get("token") == self.token:
            with contextlib.suppress(OSError):
                self.path.unlink()


_OWNED_LOCKS: set[WriterLock] = set()


@atexit.register
def _release_locks() -> None:
    for lock in list(_OWNED_LOCKS):
        with contextlib.suppress(Exception):
            lock.release()


# ---- one database file per process ---------------------------------------------------------------


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

    # -- errors, in one place --

    def error(self, exc: BaseException) -> SofteningError:
        """A one-line :class:`SofteningError` for a SQLite or decoding error."""
        where = redact(str(self.folder))
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
                _maybe_migrate(self.folder, self.path)
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
            try:
                mode = "rwc" if create else "rw"
                conn = sqlite3.connect(
                    f"file:{_uri_path(self.path)}?mode={mode}",
                    uri=True,
                    timeout=self.timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                self._check_schema(conn)
                self._journal(conn)
                if create:
                    self._retry(lambda: self._create_schema(conn))
            except sqlite3.Error as exc:
                raise self.error(exc) from None
            self.conn = conn
            self.checked = True
            return True

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
            self.checked = self.schema_ready = False
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


# ---- query planning ------------------------------------------------------------------------------

#: One SQL sub-query selecting ``doc`` ids, with its parameters.
_Part = tuple[str, list[Any]]


class _Plan:
    """The SQL candidates of a filter: sub-queries to intersect (none: every document), and
    whether their intersection is exactly the set of matches (then no document needs checking)."""

    def __init__(self, parts: list[_Part], exact: bool):
        self.parts, self.exact = parts, exact


def _keys(values: Iterable[Any]) -> list[Any] | None:
    out = []
    for v in values:
        k = _index_key(v)
        if k is _SKIP:
            return None
        out.append(k)
    return out


def _values_sql(cid: int, field: str, keys: list[Any]) -> _Part:
    head = "SELECT doc FROM _index WHERE cid = ? AND field = ? AND value"
    if len(keys) == 1:
        return f"{head} = ?", [cid, field, keys[0]]
    if len(keys) <= INLINE_PARAMS or any(isinstance(k, float) and math.isinf(k) for k in keys):
        return f"{head} IN ({','.join('?' * len(keys))})", [cid, field, *keys]
    # One parameter however long the list (SQLite limits the number of parameters).
    return f"{head} IN (SELECT value FROM json_each(?))", [cid, field, json.dumps(keys)]


def _intersect(parts: list[_Part]) -> _Part:
    sql = " INTERSECT ".join(f"SELECT doc FROM ({p})" for p, _ in parts)
    return sql, [x for _, params in parts for x in params]


def _plan_parts(criteria: dict, cid: int, fields: set[str]) -> tuple[list[_Part], bool]:
    """SQL sub-queries whose intersection holds every match, and whether it is exactly the matches."""
    parts: list[_Part] = []
    exact = True
    for key, cond in criteria.items():
        if key == "$and" and isinstance(cond, list):
            for sub in cond:
                if isinstance(sub, dict):
                    p, e = _plan_parts(sub, cid, fields)
                    parts += p
                    exact = exact and e
                else:
                    exact = False
            continue
        if key == "$or" and isinstance(cond, list) and cond:
            branches: list[_Part] = []
            all_exact = True
            for sub in cond:
                p, e = _plan_parts(sub, cid, fields) if isinstance(sub, dict) else ([], False)
                if not p:  # a branch without a usable condition: the $or restricts nothing
                    branches = []
                    break
                branches.append(_intersect(p))
                all_exact = all_exact and e
            if branches:
                sql = " UNION ".join(f"SELECT doc FROM ({b})" for b, _ in branches)
                parts.append((sql, [x for _, params in branches for x in params]))
                exact = exact and all_exact
            else:
                exact = False
            continue
        if key.startswith("$") or key not in fields:
            exact = False
            continue
        # A numeric path part ("a.0") reads an array position or a key: candidates, not exact.
        key_exact = not any(p.isdigit() for p in key.split("."))
        if isinstance(cond, dict) and cond and all(str(op).startswith("$") for op in cond):
            for op, arg in cond.items():
                keys = None
                if op == "$eq":
                    keys = _keys([arg])
                elif op in ("$in", "$all") and isinstance(arg, list | tuple) and arg:
                    keys = _keys(arg)
                if keys and op in ("$eq", "$in"):
                    parts.append(_values_sql(cid, key, keys))
                    exact = exact and key_exact
                elif keys and op == "$all":
                    parts += [_values_sql(cid, key, [k]) for k in dict.fromkeys(keys)]
                    exact = exact and key_exact
                elif op in ("$gt", "$gte", "$lt", "$lte") and _is_number(arg):
                    sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
                    # Numbers sort before text in SQLite: a lower bound alone must stop there.
                    upper = " AND value < ''" if op in ("$gt", "$gte") else ""
                    sql = f"SELECT doc FROM _index WHERE cid = ? AND field = ? AND value {sql_op} ?"
                    parts.append((sql + upper, [cid, key, float(arg)]))
                    exact = False  # the filter engine decides type brackets and arrays
                else:
                    exact = False
        elif (keys := _keys([cond])) is not None:
            parts.append(_values_sql(cid, key, keys))
            exact = exact and key_exact
        else:
            exact = False
    return parts, exact


def _estimate(conn: sqlite3.Connection, part: _Part) -> int:
    """Rows of a sub-query, counted up to a cap (cheap): to start from the most selective one."""
    sql, params = part
    return conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM ({sql}) LIMIT {ESTIMATE_CAP})", params
    ).fetchone()[0]


def _candidate_ids(conn: sqlite3.Connection, plan: _Plan) -> list[int]:
    """The ids of the intersection of the plan's sub-queries, ascending.

    The most selective sub-query runs first; the others are then only probed for its ids (an
    index lookup each), so that e.g. ``{"uuid": u, "index": 1}`` costs the same in a store of
    ten or of a million documents.
    """
    parts = plan.parts
    if len(parts) > 1:
        parts = sorted(parts, key=lambda p: _estimate(conn, p))
    sql, params = parts[0]
    ids = sorted({r[0] for r in conn.execute(f"SELECT doc FROM ({sql})", params)})
    for sql, params in parts[1:]:
        if not ids:
            break
        if len(ids) > PROBE_IDS:
            found = {r[0] for r in conn.execute(f"SELECT doc FROM ({sql})", params)}
        else:
            marks = ",".join("?" * len(ids))
            found = {
                r[0]
                for r in conn.execute(
                    f"SELECT doc FROM ({sql}) WHERE doc IN ({marks})", [*params, *ids]
                )
            }
        ids = [i for i in ids if i in found]
    return ids


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isnan(float(x))


# ---- projection and sorting ----------------------------------------------------------------------


def _projection(properties: dict | list | None) -> tuple[bool, list[str]] | None:
    """``(include, paths)`` or ``None`` for whole documents."""
    if properties is None:
        return None
    if isinstance(properties, dict):
        include = [k for k, v in properties.items() if v and k != "_id"]
        if include:
            return True, include
        exclude = [k for k, v in properties.items() if not v]
        return (False, exclude) if exclude else None
    return (True, list(properties)) if properties else None


def _tree(paths: Iterable[str]) -> dict:
    tree: dict = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for i, part in enumerate(parts):
            if node.get(part) is True:
                break  # a parent is included whole
            if i == len(parts) - 1:
                node[part] = True
            else:
                node = node.setdefault(part, {})
    return tree


def _include(obj: Any, tree: dict) -> Any:
    if isinstance(obj, list):
        return [_include(x, tree) for x in obj if isinstance(x, dict | list)]
    out = {}
    for key, sub in tree.items():
        if key not in obj:
            continue
        value = obj[key]
        if sub is True:
            out[key] = value
        elif isinstance(value, dict | list):
            out[key] = _include(value, sub)
    return out


def _exclude(obj: Any, parts: list[str]) -> None:
    if isinstance(obj, list):
        for x in obj:
            _exclude(x, parts)
    elif isinstance(obj, dict) and parts[0] in obj:
        if len(parts) == 1:
            del obj[parts[0]]
        else:
            _exclude(obj[parts[0]], parts[1:])


def _project(doc: dict, spec: tuple[bool, list[str]] | None) -> dict:
    if spec is None:
        return doc
    include, paths = spec
    if include:
        out = _include(doc, _tree(paths))
        if "_id" in doc:
            out = {"_id": doc["_id"], **out}
        return out
    for p in paths:
        _exclude(doc, p.split("."))
    return doc


def _sorted(docs: list[dict], sort: dict) -> list[dict]:
    from mongomock.filtering import resolve_sort_key

    for key, direction in reversed(list(sort.items())):
        d = direction.value if isinstance(direction, Sort) else int(direction)
        docs.sort(key=lambda x, k=key: resolve_sort_key(k, x), reverse=d < 0)
    return docs


def _matches(criteria: dict, doc: dict) -> bool:
    from mongomock.filtering import filter_applies

    return filter_applies(criteria, doc)


# ---- the store -----------------------------------------------------------------------------------


class SQLiteStore(Store):
    """A maggma store over one collection of the embedded SQLite database of a folder.

    Parameters
    ----------
    folder
        The store folder; the database is ``<folder>/<database_name>.sqlite``.
    collection_name
        The collection (one table).
    key
        Key field (jobflow sets ``uuid`` on its documents store, ``blob_uuid`` on additional ones).
    indexed_fields
        Dotted fields to index besides :data:`DEFAULT_INDEXED_FIELDS` and the key.
    database_name
        File name of the database, without ``.sqlite``.
    timeout
        Seconds to wait for another process's write before giving up.
    **kwargs
        Passed to :class:`maggma.core.Store` (``last_updated_field``, ``validator``...).

    Attributes
    ----------
    n_decoded
        Documents decoded by this store object so far (to check that lookups use the indexes).
    """

    def __init__(
        self,
        folder: str,
        collection_name: str,
        key: str = "uuid",
        indexed_fields: list[str] | None = None,
        database_name: str = DATABASE_NAME,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ):
        if not collection_name or collection_name.startswith(("_", "sqlite_")):
            raise ValueError(f"invalid collection name {collection_name!r}")
        self.folder = str(Path(folder).expanduser().absolute())
        self.collection_name = collection_name
        self.indexed_fields = list(indexed_fields or [])
        self.database_name = database_name
        self.timeout = float(timeout)
        self.kwargs = kwargs
        self.n_decoded = 0
        self._db: _Database | None = None
        self._pid: int | None = None
        self._pending: list[str] = []
        super().__init__(key=key, **kwargs)

    # ---- identity ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return database_path(self.folder, self.database_name)

    @property
    def name(self) -> str:
        return f"sqlite://{self.path}/{self.collection_name}"

    @property
    def _collection(self):
        """The SQLite connection (maggma's stores expose their backend handle here)."""
        return self._database().conn

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SQLiteStore)
            and self.path == other.path
            and self.collection_name == other.collection_name
        )

    def __hash__(self) -> int:
        return hash(self.name)

    def sibling(self, collection_name: str, key: str = "key") -> SQLiteStore:
        """Another collection of the same database, with the same settings."""
        kwargs = {k: v for k, v in self.kwargs.items() if k != "key"}
        return SQLiteStore(
            self.folder,
            collection_name,
            key=key,
            database_name=self.database_name,
            timeout=self.timeout,
            **kwargs,
        )

    # ---- connection -------------------------------------------------------------------------------

    def _database(self) -> _Database:
        if self._db is None or self._pid != os.getpid():
            self._db = _database(self.path, self.timeout)
            self._db.refs += 1
            self._pid = os.getpid()
        return self._db

    def connect(self, force_reset: bool = False) -> None:
        """Open the database if it exists (converting a legacy MontyDB folder); creates nothing.

        The file (and the folder) are created by the first write. ``force_reset`` reopens.
        """
        if force_reset and self._db is not None and self._pid == os.getpid():
            self.close()
        db = self._database()
        db.open(create=False)

    def close(self) -> None:
        """Release this store's use of the database; the last one closes the connection."""
        db, self._db = self._db, None
        if db is None or self._pid != os.getpid():
            return
        db.refs -= 1
        if db.refs <= 0:
            db.refs = 0
            db.close()

    # ---- helpers ----------------------------------------------------------------------------------

    def _fields(self) -> list[str]:
        keys = self.key if isinstance(self.key, list) else [self.key]
        return list(
            dict.fromkeys([*DEFAULT_INDEXED_FIELDS, *keys, *self.indexed_fields, *self._pending])
        )

    def _table_fields(self, conn: sqlite3.Connection, cid: int) -> set[str]:
        return {r[0] for r in conn.execute("SELECT field FROM _indexes WHERE cid = ?", (cid,))}

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite and decoding errors -> one-line :class:`SofteningError` (the one place)."""
        try:
            yield
        except SofteningError:
            raise
        except sqlite3.Error as exc:
            raise self._database().error(exc) from None

    def _decode(self, enc: int, body: bytes) -> dict:
        self.n_decoded += 1
        try:
            doc = decode(enc, body)
        except Exception as exc:
            raise sqlite3.DatabaseError(
                f"a {self.collection_name} document does not decode: {exc}"
            ) from None
        if not isinstance(doc, dict):
            raise sqlite3.DatabaseError(f"a {self.collection_name} document does not decode")
        return doc

    def _plan(self, conn: sqlite3.Connection, cid: int, criteria: dict | None) -> _Plan:
        if not criteria:
            return _Plan([], True)
        parts, exact = _plan_parts(criteria, cid, self._table_fields(conn, cid))
        return _Plan(parts, exact and bool(parts))

    def _iter(self, criteria: dict | None, limit: int = 0) -> Iterator[tuple[int, dict]]:
        """``(id, document)`` of every match, in insertion order; decodes candidates only."""
        db = self._database()
        table = _quote(self.collection_name)

        def start(conn: sqlite3.Connection) -> tuple[int | None, _Plan | None, list[int] | None]:
            cid = db.cid(conn, self.collection_name)
            if cid is None:
                return None, None, None
            plan = self._plan(conn, cid, criteria)
            ids = _candidate_ids(conn, plan) if plan.parts else None
            return cid, plan, ids

        with self._guard():
            cid, plan, ids = db.read(start, default=(None, None, None))
        if cid is None or plan is None:
            return
        check = bool(criteria) and not plan.exact
        found = 0
        last = -1
        pos = 0
        while True:
            size = FETCH_BATCH
            if limit:
                # Few decodes for a small limit: exact plans return only matches.
                size = min(FETCH_BATCH, max(limit - found, 16 if check else 1))
            with self._guard():
                if ids is None:
                    rows = db.read(
                        lambda c, last=last, size=size: c.execute(
                            f"SELECT id, enc, body FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                            (last, size),
                        ).fetchall(),
                        default=[],
                    )
                else:
                    batch = ids[pos : pos + size]
                    pos += len(batch)
                    if not batch:
                        return
                    marks = ",".join("?" * len(batch))
                    rows = db.read(
                        lambda c, batch=batch, marks=marks: c.execute(
                            f"SELECT id, enc, body FROM {table} WHERE id IN ({marks}) ORDER BY id",
                            batch,
                        ).fetchall(),
                        default=[],
                    )
                if not rows and ids is None:
                    return
                decoded = []
                for doc_id, enc, body in rows:
                    last = doc_id
                    decoded.append((doc_id, self._decode(enc, body)))
            for doc_id, doc in decoded:
                if check and not _matches(criteria, doc):
                    continue
                yield doc_id, doc
                found += 1
                if limit and found >= limit:
                    return

    # ---- reading ----------------------------------------------------------------------------------

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[dict]:
        """Documents matching a MongoDB filter (candidates from the indexes, then the full filter).

        Parameters
        ----------
        criteria
            MongoDB filter.
        properties
            Fields to return (list, or ``{field: 1}``), or ``{field: 0}`` to leave out.
        sort
            ``{field: 1 or -1}``, applied in Python to the matches.
        skip, limit
            Documents to skip; most to return (0: all).
        """
        if criteria is not None and not isinstance(criteria, dict):
            raise ValueError("criteria must be a dictionary or None")
        spec = _projection(properties)
        if sort:
            docs = _sorted([d for _, d in self._iter(criteria)], dict(sort))
            end = skip + limit if limit else None
            for doc in docs[skip:end]:
                yield _project(doc, spec)
            return
        n = 0
        for _, doc in self._iter(criteria, limit=skip + limit if limit else 0):
            n += 1
            if n > skip:
                yield _project(doc, spec)

    def query_one(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
    ) -> dict | None:
        """The first matching document, or ``None``."""
        return next(self.query(criteria, properties=properties, sort=sort, limit=1), None)

    def count(self, criteria: dict | None = None) -> int:
        """Matching documents; exact index plans (and no criteria) are counted in SQL."""
        db = self._database()

        def run(conn: sqlite3.Connection) -> int | None:
            cid = db.cid(conn, self.collection_name)
            if cid is None:
                return 0
            if not criteria:
                return conn.execute(
                    f"SELECT count(*) FROM {_quote(self.collection_name)}"
                ).fetchone()[0]
            plan = self._plan(conn, cid, criteria)
            if plan.parts and plan.exact:
                return len(_candidate_ids(conn, plan))
            return None

        with self._guard():
            n = db.read(run, default=0)
        if n is None:
            n = sum(1 for _ in self._iter(criteria))
        return int(n)

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of a field (array values count element by element, as in MongoDB)."""
        out: list = []
        seen: set = set()
        for doc in self.query(criteria, properties=[field]):
            for value in _path_values(doc, field.split(".")):
                for v in value if isinstance(value, list) else [value]:
                    marker = _hashable(v)
                    if marker not in seen:
                        seen.add(marker)
                        out.append(v)
        return out

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[tuple[dict, list[dict]]]:
        """Documents grouped by the values of ``keys`` (a missing key groups as ``None``)."""
        from pydash import get, set_

        keys = keys if isinstance(keys, list | tuple) else [keys]
        if isinstance(properties, dict):
            properties = {**properties, **dict.fromkeys(keys, 1)}
        elif properties is not None:
            properties = [*properties, *keys]
        groups: dict[Any, tuple[dict, list[dict]]] = {}
        for doc in self.query(criteria, properties=properties, sort=sort, skip=skip, limit=limit):
            values = tuple(get(doc, k) for k in keys)
            marker = _hashable(values)
            if marker not in groups:
                head: dict = {}
                for k, v in zip(keys, values, strict=True):
                    set_(head, k, v)
                groups[marker] = (head, [])
            groups[marker][1].append(doc)
        yield from groups.values()

    # ---- writing ----------------------------------------------------------------------------------

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Replace the document(s) matching the key fields, else insert; one transaction per call.

        Parameters
        ----------
        docs
            Document(s).
        key
            Field(s) that identify a document (default: the store's key).
        """
        if not isinstance(docs, list):
            docs = [docs]
        key = key or self.key
        keys = list(key) if isinstance(key, list | tuple) else [key]
        prepared = []
        for doc in docs:
            if self.validator is not None and not self.validator.is_valid(doc):
                if self.validator.strict:
                    raise ValueError(self.validator.validation_errors(doc))
                self.logger.error(self.validator.validation_errors(doc))
                continue
            ident = {k: doc[k] for k in keys}
            # Encoding (the costly part for large arrays) happens before the write lock is taken.
            prepared.append((doc, ident, *encode(doc)))
        if not prepared:
            return
        db = self._database()
        table = _quote(self.collection_name)

        def write(conn: sqlite3.Connection) -> None:
            cid = db.create_collection(conn, self.collection_name, self._fields())
            fields = self._table_fields(conn, cid)
            for k in keys:
                if k not in fields:
                    self._add_index(conn, cid, k)
                    fields.add(k)
            for doc, ident, enc, body in prepared:
                plan = self._plan(conn, cid, ident)
                ids = self._matching_ids(conn, cid, plan, ident)
                if ids:
                    doc_id = ids[0]
                    conn.execute(
                        f"UPDATE {table} SET enc = ?, body = ? WHERE id = ?", (enc, body, doc_id)
                    )
                    self._delete(conn, cid, ids[1:])
                    conn.execute("DELETE FROM _index WHERE cid = ? AND doc = ?", (cid, doc_id))
                else:
                    cur = conn.execute(
                        f"INSERT INTO {table} (enc, body) VALUES (?, ?)", (enc, body)
                    )
                    doc_id = int(cur.lastrowid)
                conn.executemany(
                    "INSERT OR IGNORE INTO _index (cid, field, value, doc) VALUES (?, ?, ?, ?)",
                    [(cid, f, v, doc_id) for f, v in _index_rows(doc, fields)],
                )

        with self._guard():
            db.write(write)

    def _matching_ids(
        self, conn: sqlite3.Connection, cid: int, plan: _Plan, criteria: dict
    ) -> list[int]:
        table = _quote(self.collection_name)
        if plan.parts:
            ids = _candidate_ids(conn, plan)
            if plan.exact:
                return ids
            rows: Iterable = []
            for i in range(0, len(ids), FETCH_BATCH):
                batch = ids[i : i + FETCH_BATCH]
                rows = [
                    *rows,
                    *conn.execute(
                        f"SELECT id, enc, body FROM {table} WHERE id IN "
                        f"({','.join('?' * len(batch))}) ORDER BY id",
                        batch,
                    ),
                ]
        else:
            rows = conn.execute(f"SELECT id, enc, body FROM {table} ORDER BY id")
        return [i for i, enc, body in rows if _matches(criteria, self._decode(enc, body))]

    def _delete(self, conn: sqlite3.Connection, cid: int, ids: list[int]) -> None:
        table = _quote(self.collection_name)
        for i in range(0, len(ids), FETCH_BATCH):
            batch = ids[i : i + FETCH_BATCH]
            marks = ",".join("?" * len(batch))
            conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", batch)
            conn.execute(f"DELETE FROM _index WHERE cid = ? AND doc IN ({marks})", [cid, *batch])

    def remove_docs(self, criteria: dict) -> None:
        """Remove the documents matching a MongoDB filter (one transaction)."""
        db = self._database()
        with self._guard():
            if not db.open(create=False):
                return

            def write(conn: sqlite3.Connection) -> None:
                cid = db.cid(conn, self.collection_name)
                if cid is None:
                    return
                plan = self._plan(conn, cid, criteria)
                if not criteria:
                    ids = [
                        r[0] for r in conn.execute(f"SELECT id FROM {_quote(self.collection_name)}")
                    ]
                else:
                    ids = self._matching_ids(conn, cid, plan, criteria)
                self._delete(conn, cid, ids)

            db.write(write)

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """Index a dotted field (backfilled from the stored documents). Uniqueness is not enforced.

        Without a database or collection yet (a read-only open), the field is remembered and
        indexed when the collection is created: nothing is written for a read.

        Returns
        -------
        bool
            True when the field is (or will be) indexed; False for ``unique=True``.
        """
        if unique:
            return False
        if key.startswith("$") or not key:
            return False
        db = self._database()

        def present(conn: sqlite3.Connection) -> bool | None:
            cid = db.cid(conn, self.collection_name)
            if cid is None:
                return None
            return key in self._table_fields(conn, cid)

        with self._guard():
            state = db.read(present, default=None)
            if state is None:
                if key not in self._fields():
                    self._pending.append(key)
                return True
            if state:
                return True

            def write(conn: sqlite3.Connection) -> None:
                cid = db.cid(conn, self.collection_name)
                if cid is not None and key not in self._table_fields(conn, cid):
                    self._add_index(conn, cid, key)

            db.write(write)
        return True

    def _add_index(self, conn: sqlite3.Connection, cid: int, field: str) -> None:
        """Register an indexed field and backfill it (inside the caller's write transaction)."""
        conn.execute("INSERT OR IGNORE INTO _indexes (cid, field) VALUES (?, ?)", (cid, field))
        rows = conn.execute(f"SELECT id, enc, body FROM {_quote(self.collection_name)}")
        batch: list[tuple] = []
        for doc_id, enc, body in rows:
            batch += [(cid, f, v, doc_id) for f, v in _index_rows(self._decode(enc, body), [field])]
            if len(batch) > 10_000:
                conn.executemany("INSERT OR IGNORE INTO _index VALUES (?, ?, ?, ?)", batch)
                batch = []
        conn.executemany("INSERT OR IGNORE INTO _index VALUES (?, ?, ?, ?)", batch)

    def insert_many(self, docs: Iterable[dict], batch: int = 500) -> int:
        """Append documents without key matching (bulk copies); commits every ``batch``.

        Returns
        -------
        int
            Documents written.
        """
        db = self._database()
        table = _quote(self.collection_name)
        n = 0

        def flush(items: list[tuple[dict, int, bytes]]) -> None:
            def write(conn: sqlite3.Connection) -> None:
                cid = db.create_collection(conn, self.collection_name, self._fields())
                fields = self._table_fields(conn, cid)
                for doc, enc, body in items:
                    cur = conn.execute(
                        f"INSERT INTO {table} (enc, body) VALUES (?, ?)", (enc, body)
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO _index VALUES (?, ?, ?, ?)",
                        [(cid, f, v, cur.lastrowid) for f, v in _index_rows(doc, fields)],
                    )

            with self._guard():
                db.write(write)

        items: list[tuple[dict, int, bytes]] = []
        for doc in docs:
            items.append((doc, *encode(doc)))
            n += 1
            if len(items) >= batch:
                flush(items)
                items = []
        if items:
            flush(items)
        return n

    def indexes(self) -> list[str]:
        """The indexed fields of this collection (in the database, else those it will get)."""
        db = self._database()

        def run(conn: sqlite3.Connection) -> list[str] | None:
            cid = db.cid(conn, self.collection_name)
            return None if cid is None else sorted(self._table_fields(conn, cid))

        with self._guard():
            found = db.read(run, default=None)
        return found if found is not None else sorted(self._fields())


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return (type(value).__name__, value) if isinstance(value, bool) else value
    except TypeError:
        return repr(value)


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
        conn = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=DEFAULT_TIMEOUT)
    except SofteningError as exc:
        return [str(exc)]
    except sqlite3.Error as exc:
        return [f"cannot open {path}: {exc}"]
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            problems += [f"integrity_check: {r}" for r in rows[:20]]
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
