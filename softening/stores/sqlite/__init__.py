"""The embedded result store: one SQLite file, indexed, safe for several processes on one machine.

:class:`SQLiteStore` is a maggma :class:`~maggma.core.Store` over one collection (one table) of the
file ``<folder>/softening.sqlite``. Every collection of the embedded JobStore (``outputs``, ``data``)
and the builder's summary collections live in that one file.

- **Bodies** (:mod:`.codec`): each document is one msgpack blob (zlib-compressed when large), with
  ext types for datetimes, dates, ObjectIds and integers beyond 64 bits, so that datetime, bytes,
  NaN and nested lists round-trip exactly. SQLite keeps blobs up to 1 GB, so large arrays need no
  chunking.
- **Indexes** (:mod:`.index`, :mod:`.query`): a side table ``_index(cid, field, value, doc)`` holds
  the values of the indexed dotted fields of every document (one row per array element, as
  MongoDB's multikey indexes). A query takes its top-level equality, ``$in``, ``$all`` and numeric
  range conditions on indexed fields (and ``$or`` / ``$and`` of such) to SQL, decodes only those
  candidates, and applies the full filter with mongomock's filter engine; sort, skip, limit and
  projection follow in Python. Only a query with no usable condition decodes every document
  (:attr:`SQLiteStore.n_decoded` counts decodes).
- **Writes** (:mod:`.store`): ``update`` replaces the document(s) matching the key fields, else
  inserts, inside one ``BEGIN IMMEDIATE`` transaction committed per call: what a call wrote
  survives a crash (SIGKILL) of the process.
- **Several processes** (:mod:`.connection`): WAL journal, a busy timeout and retries; store
  objects pickle to their constructor arguments and reconnect lazily in each process (a connection
  inherited through ``fork`` is never used).
- **Network filesystems** (NFS, Lustre, GPFS, ...; :func:`is_network_filesystem`, :mod:`.lock`):
  WAL needs shared memory, so the journal is ``DELETE`` there, and one process (with the worker
  processes it starts) writes at a time, guarded by a lock file taken at the first write
  (:class:`WriterLock`).
- **Old folders** (:mod:`.maintenance`): a folder written by the MontyDB version is converted on
  first open (:func:`migrate_legacy_store`); the old files move to ``<folder>/montydb-legacy/``.
- **Damage**: a damaged file gives one :class:`~softening.errors.SofteningError` line at open (a
  cheap header and schema check); :func:`check_integrity` is the full check.

Everything is imported from here; ``softening.stores.sqlite.SQLiteStore`` stays the class's
``@module`` path, so serialized stores of every version load.
"""

from __future__ import annotations

from softening.stores.sqlite.codec import COMPRESS_MIN_BYTES, FAST_COMPRESS_BYTES, decode, encode
from softening.stores.sqlite.connection import (
    DATABASE_NAME,
    DEFAULT_TIMEOUT,
    FORMAT_VERSION,
    check_database_file,
    connect_readonly,
    database_path,
)
from softening.stores.sqlite.index import INT64
from softening.stores.sqlite.lock import (
    LOCK_FILE,
    LOCK_TOKEN_ENV,
    NETWORK_FILESYSTEMS,
    STORE_FS_ENV,
    WriterLock,
    filesystem_type,
    is_network_filesystem,
)
from softening.stores.sqlite.maintenance import (
    LEGACY_FOLDER,
    check_integrity,
    file_integrity,
    has_legacy_store,
    migrate_legacy_store,
)
from softening.stores.sqlite.query import ESTIMATE_CAP, INLINE_PARAMS, PROBE_IDS
from softening.stores.sqlite.store import DEFAULT_INDEXED_FIELDS, FETCH_BATCH, SQLiteStore

__all__ = [
    "COMPRESS_MIN_BYTES",
    "DATABASE_NAME",
    "DEFAULT_INDEXED_FIELDS",
    "DEFAULT_TIMEOUT",
    "ESTIMATE_CAP",
    "FAST_COMPRESS_BYTES",
    "FETCH_BATCH",
    "FORMAT_VERSION",
    "INLINE_PARAMS",
    "INT64",
    "LEGACY_FOLDER",
    "LOCK_FILE",
    "LOCK_TOKEN_ENV",
    "NETWORK_FILESYSTEMS",
    "PROBE_IDS",
    "STORE_FS_ENV",
    "SQLiteStore",
    "WriterLock",
    "check_database_file",
    "check_integrity",
    "connect_readonly",
    "database_path",
    "decode",
    "encode",
    "file_integrity",
    "filesystem_type",
    "has_legacy_store",
    "is_network_filesystem",
    "migrate_legacy_store",
]
