"""The maggma store over one collection (one table) of the embedded SQLite file of a folder.

- **Bodies**: one msgpack blob per document (:mod:`.codec`); SQLite keeps blobs up to 1 GB, so
  large arrays need no chunking.
- **Reads**: candidates from the multikey index (:mod:`.index`, :mod:`.query`), decoded in batches,
  then the full filter; only a query with no usable condition decodes every document
  (:attr:`SQLiteStore.n_decoded` counts decodes).
- **Writes**: ``update`` replaces the document(s) matching the key fields, else inserts, inside one
  ``BEGIN IMMEDIATE`` transaction committed per call (:mod:`.connection`): what a call wrote
  survives a crash (SIGKILL) of the process.
- **Several processes**: store objects pickle to their constructor arguments and reconnect lazily
  in each process (a connection inherited through ``fork`` is never used).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store

from softening.errors import SofteningError
from softening.stores.sqlite.codec import decode, encode
from softening.stores.sqlite.connection import (
    DATABASE_NAME,
    DEFAULT_TIMEOUT,
    _Database,
    _database,
    _quote,
    database_path,
)
from softening.stores.sqlite.index import _index_rows, _path_values
from softening.stores.sqlite.query import (
    _candidate_ids,
    _matches,
    _Plan,
    _plan_parts,
    _project,
    _projection,
    _sorted,
)

__all__ = ["DEFAULT_INDEXED_FIELDS", "FETCH_BATCH", "SQLiteStore"]

#: Fields every collection indexes (jobflow's job and blob keys).
DEFAULT_INDEXED_FIELDS = ("uuid", "index", "blob_uuid", "job_uuid")
FETCH_BATCH = 256  # documents decoded per SQL round trip


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


# Serialized stores (monty's ``@module``, pickles) name the package, as before it was split into
# modules, so that every version of softening reads them; ``softening.stores.sqlite.store`` loads too.
SQLiteStore.__module__ = "softening.stores.sqlite"


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return (type(value).__name__, value) if isinstance(value, bool) else value
    except TypeError:
        return repr(value)
