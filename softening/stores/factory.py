"""The one store factory: a store spec to a jobflow ``JobStore``.

A store spec (``--store`` on the command line, the ``store`` setting otherwise) is one of

- a folder: the embedded store, one SQLite file ``<folder>/softening.sqlite`` written through
  :class:`~softening.stores.sqlite.SQLiteStore` (collections ``outputs`` and ``data`` are tables;
  indexed lookups; several processes of one machine may write at once; on a network filesystem one
  writer at a time, guarded by a lock file). The folder is created when missing, the file at the
  first write; a folder of the earlier MontyDB store is converted on first open;
- a ``mongodb://`` or ``mongodb+srv://`` URI: documents in a MongoDB collection ``outputs``, blobs in
  GridFS (``data.files`` / ``data.chunks``) through
  :class:`~softening.stores.chunked.GridFSDataStore`; a URI without a database uses the
  ``mongo_database`` setting, one without credentials the ``mongo_username`` / ``mongo_password``
  settings, one naming a user without password (``mongodb://alice@host/db``) ``mongo_password``.
  Anything else that looks like a URI (``mongodb:/host``, ``user:pw@host``) is refused, never
  taken as a folder (:func:`~softening.settings.store_kind`);
- ``mongodb``: the same, connection from the ``mongo_*`` settings (``SOFTENING_MONGO_HOST``...);
- a ``.yaml`` / ``.yml`` / ``.json`` file: a jobflow JobStore config (``docs_store`` plus
  ``additional_stores: {data: ...}``, optionally under a ``JOB_STORE`` key as in jobflow's own
  settings file). A Mongo-like ``data`` store there is wrapped in a
  :class:`~softening.stores.chunked.ChunkedStore`; Mongo-like stores get the ``mongo_timeout``
  setting as their server-selection and connect timeouts.

Every message that names a store goes through :func:`~softening.settings.redact`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobflow import JobStore
from maggma.core import Store

from softening.errors import InputError, SofteningError, one_line
from softening.settings import (
    get_settings,
    redact,
    resolve_store_spec,
    store_kind,
)
from softening.stores.chunked import ChunkedStore, GridFSDataStore
from softening.stores.sqlite import (
    SQLiteStore,
    check_database_file,
    database_path,
    has_legacy_store,
    migrate_legacy_store,
)

__all__ = [
    "DATA_COLLECTION",
    "DOCS_COLLECTION",
    "INDEXED_FIELDS",
    "SofteningJobStore",
    "describe_store",
    "ensure_indexes",
    "get_job_store",
    "redact",
    "resolve_store_spec",
    "sibling_store",
    "store_kind",
]

DOCS_COLLECTION = "outputs"
DATA_COLLECTION = "data"
CHUNKS_SUFFIX = "_chunks"

#: Fields of the outputs collection that get an index (SofteningDoc fields, and the content key the
#: makers look finished results up by).
INDEXED_FIELDS = (
    # jobflow's own lookups: every reference is resolved by (uuid, index).
    "uuid",
    "index",
    "output.@class",
    "output.content_key",
    "output.property",
    "output.material_id",
    "output.formula",
    "output.chemsys",
    "output.elements",
    "output.model.name",
    "output.scale",
)


def describe_store(store: str | Path | JobStore | None = None) -> str:
    """A one-line, credential-free description of a store (for logs, summaries and errors)."""
    if isinstance(store, JobStore):
        spec = getattr(store, "spec", None)
        return describe_store(spec) if spec is not None else redact(store.docs_store.name)
    spec = resolve_store_spec(store)
    kind = store_kind(spec)
    if kind == "embedded":
        return str(Path(spec).expanduser().resolve())
    if kind == "config":
        return f"store config {Path(spec).expanduser()}"
    if spec.strip() == "mongodb":
        s = get_settings()
        user = f"{s.mongo_username}@" if s.mongo_username else ""
        return f"mongodb://{user}{s.mongo_host}:{s.mongo_port}/{s.mongo_database}"
    return redact(spec.strip())


class SofteningJobStore(JobStore):
    """A jobflow :class:`~jobflow.JobStore` that indexes the SofteningDoc fields when it connects.

    Attributes
    ----------
    spec
        The store spec it was opened from (may hold a password: print :func:`describe_store`).
    indexes
        ``{field: created or present}`` after the first :meth:`connect` (True everywhere for the
        embedded SQLite store and MongoDB; False where a backend has no indexes, e.g. MontyDB
        from a store config).
    """

    spec: str | None = None
    indexes: dict[str, bool] | None = None

    def connect(self, force_reset: bool = False) -> None:
        """Connect the documents and additional stores; on the first call, ensure the indexes."""
        try:
            super().connect(force_reset=force_reset)
            _ping(self.docs_store)
            if self.indexes is None or force_reset:
                self.indexes = ensure_indexes(self)
        except SofteningError:
            raise
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            where = describe_store(self.spec) if self.spec is not None else "the result store"
            raise SofteningError(f"cannot use {where}: {_store_error(exc, self.spec)}") from None


def get_job_store(store: str | Path | None = None) -> SofteningJobStore:
    """Open the result store named by ``store`` (the embedded folder is created if needed).

    Parameters
    ----------
    store
        A folder (embedded SQLite store), a ``mongodb://`` / ``mongodb+srv://`` URI, ``mongodb``
        (connection from the ``mongo_*`` settings), or a jobflow store config file (``.yaml``,
        ``.yml``, ``.json``). ``None`` means the ``store`` setting (default ``./softening-db``).

    Returns
    -------
    SofteningJobStore
        Job outputs in the ``outputs`` collection; large arrays (trajectories, stacked forces) in
        the ``data`` additional store, where jobflow's ``data=`` job argument puts them. Not yet
        connected: jobflow (or the caller) calls ``connect()``, which also ensures the indexes.

    Raises
    ------
    InputError
        On a spec that names no usable store; the message is one line without credentials.
    """
    spec = resolve_store_spec(store).strip()
    kind = store_kind(spec)
    if kind == "embedded":
        job_store = _embedded(spec)
    elif kind == "mongodb":
        job_store = _mongodb(spec)
    else:
        job_store = _from_config(spec)
    job_store.spec = spec
    return job_store


# ---- the three kinds -----------------------------------------------------------------------------


def _embedded(spec: str) -> SofteningJobStore:
    path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(
            f"store {spec!r} is a file; give a folder for the embedded store, or a .yaml store "
            "config"
        )
    try:
        # Resolved: a link to a folder not made yet gets its folder (store_kind() has checked
        # that the target is no system folder).
        path.resolve().mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the store folder {spec!r}: {exc.strerror}") from None
    folder = str(path.resolve())
    if database_path(folder).exists():
        # Cheap (the file header): a damaged store fails here, before any work is done.
        check_database_file(database_path(folder))
    elif has_legacy_store(folder):
        # Converted here rather than by the store's connect(), so that the outputs collection
        # gets all its indexes in the same pass.
        migrate_legacy_store(folder, {DOCS_COLLECTION: INDEXED_FIELDS})
    # SQLite keeps blobs up to 1 GB and the store compresses large ones: no chunking.
    docs = SQLiteStore(folder, DOCS_COLLECTION, key="uuid", indexed_fields=list(INDEXED_FIELDS))
    data = SQLiteStore(folder, DATA_COLLECTION, key="blob_uuid")
    return SofteningJobStore(docs, additional_stores={"data": data})


def _mongodb(spec: str) -> SofteningJobStore:
    from maggma.stores import MongoStore

    s = get_settings()
    client_kwargs = _timeouts()
    if spec == "mongodb":
        auth = {
            "host": s.mongo_host,
            "port": s.mongo_port,
            "username": s.mongo_username or "",
            "password": s.mongo_password.get_secret_value() if s.mongo_password else "",
            "auth_source": s.mongo_auth_source or s.mongo_database,
            "mongoclient_kwargs": client_kwargs,
        }
        docs = MongoStore(s.mongo_database, DOCS_COLLECTION, key="uuid", **auth)
        data = GridFSDataStore(s.mongo_database, DATA_COLLECTION, key="blob_uuid", **auth)
        return SofteningJobStore(docs, additional_stores={"data": data})

    database = _uri_database(spec) or s.mongo_database
    client_kwargs.update(_env_credentials(spec, database))
    docs = MongoStore(
        database, DOCS_COLLECTION, uri=spec, key="uuid", mongoclient_kwargs=client_kwargs
    )
    data = GridFSDataStore(
        database, DATA_COLLECTION, uri=spec, key="blob_uuid", mongoclient_kwargs=client_kwargs
    )
    return SofteningJobStore(docs, additional_stores={"data": data})


def _uri_database(uri: str) -> str | None:
    """The database named in a MongoDB URI (checked by pymongo, offline), or ``None``."""
    if uri.startswith("mongodb+srv://"):
        # pymongo would resolve the SRV record here (DNS): read the path without it.
        path = urlsplit(uri).path.lstrip("/")
        return path or None
    from pymongo import uri_parser

    try:
        return uri_parser.parse_uri(uri)["database"]
    except Exception as exc:
        raise InputError(f"store {redact(uri)!r}: {_store_error(exc, uri)}") from None


def _uri_userinfo(uri: str) -> tuple[str | None, bool]:
    """The user named in a MongoDB URI (``None`` when none) and whether it holds a password."""
    netloc = uri.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    if "@" not in netloc:
        return None, False
    userinfo = netloc.rsplit("@", 1)[0]
    return userinfo.split(":", 1)[0], ":" in userinfo


def _env_credentials(uri: str, database: str) -> dict[str, Any]:
    """pymongo client options with the credentials the settings add to a URI.

    Credentials come from the environment rather than the command line (where ``ps`` shows
    them): a URI without a user gets ``mongo_username`` and ``mongo_password``; a URI with a user
    but no password (``mongodb://alice@host/db``) gets ``mongo_password``. A password in the URI
    itself wins. They go to ``MongoClient`` as ``username`` / ``password`` options (taken as they
    are, so no character needs quoting), never into the URI, which maggma shows as the store's
    name.
    """
    s = get_settings()
    user, has_password = _uri_userinfo(uri)
    password = s.mongo_password.get_secret_value() if s.mongo_password else None
    kwargs: dict[str, Any] = {}
    if user is None and s.mongo_username:
        kwargs["username"] = s.mongo_username
        if password:
            kwargs["password"] = password
    elif user is not None and not has_password and password:
        kwargs["password"] = password
    if kwargs and "authsource=" not in uri.lower():
        # The URI's own authSource option wins; else the setting, else the store's database.
        kwargs["authSource"] = s.mongo_auth_source or database
    return kwargs


def _from_config(spec: str) -> SofteningJobStore:
    from monty.serialization import loadfn

    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"store config {spec!r} does not exist")
    try:
        info = loadfn(path)
        if isinstance(info, dict) and "JOB_STORE" in info:
            info = info["JOB_STORE"]
        if isinstance(info, JobStore):
            docs, additional = info.docs_store, dict(info.additional_stores)
        elif isinstance(info, dict):
            base = JobStore.from_dict_spec(info)
            docs, additional = base.docs_store, dict(base.additional_stores)
        else:
            raise ValueError("expected a mapping with docs_store and additional_stores")
    except KeyError as exc:
        raise InputError(
            f"store config {spec!r}: unknown store type or missing key {exc.args[0]!r}"
        ) from None
    except Exception as exc:
        raise InputError(f"store config {spec!r}: {_store_error(exc, None)}") from None
    if "data" not in additional:
        raise InputError(
            f"store config {spec!r} has no additional store named 'data' (where arrays go)"
        )
    for store in (docs, *additional.values()):
        _apply_timeouts(store)
    if _needs_chunking(additional["data"]):
        data = additional["data"]
        additional["data"] = ChunkedStore(
            data, sibling_store(data, data.collection_name + CHUNKS_SUFFIX, key="files_key")
        )
    return SofteningJobStore(docs, additional_stores=additional)


def _timeouts() -> dict[str, Any]:
    """pymongo client options from the ``mongo_timeout`` setting (pymongo waits 30 s otherwise)."""
    ms = int(1000 * get_settings().mongo_timeout)
    return {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms}


def _apply_timeouts(store: Store) -> None:
    """Give a Mongo-like store from a config the timeout setting (the config's own values win)."""
    from maggma.stores import GridFSStore, MemoryStore, MongoStore, MongoURIStore

    if isinstance(store, MongoStore | MongoURIStore | GridFSStore) and not isinstance(
        store, MemoryStore
    ):
        kwargs = dict(getattr(store, "mongoclient_kwargs", None) or {})
        for k, v in _timeouts().items():
            kwargs.setdefault(k, v)
        store.mongoclient_kwargs = kwargs


def _needs_chunking(store: Store) -> bool:
    """A Mongo-like store keeps each document whole: it needs chunking for large blobs."""
    from maggma.stores import JSONStore, MongoStore

    return isinstance(store, MongoStore) and not isinstance(store, JSONStore)


# ---- helpers ---------------------------------------------------------------------------------------


def sibling_store(store: Store, collection_name: str, key: str = "key") -> Store:
    """Another collection in the same database as ``store``, with the same connection settings.

    Used for the builder's summary collections and for the chunks of a Mongo-like data store.

    Parameters
    ----------
    store
        The embedded :class:`SQLiteStore`, a Mongo-like store (MongoDB, MontyDB, mongomock), or
        a store wrapping one.
    collection_name
        Name of the other collection.
    key
        Key field of the new store.

    Raises
    ------
    InputError
        When ``store`` is not Mongo-like (e.g. a file or S3 store from a config file).
    """
    from maggma.stores import MemoryStore, MongoStore, MontyStore

    if isinstance(store, ChunkedStore):
        store = store.store
    if isinstance(store, SQLiteStore):
        return store.sibling(collection_name, key=key)
    if not isinstance(store, MongoStore):
        raise InputError(
            f"{type(store).__name__} is not a MongoDB-like store: it has no sibling collections"
        )
    sib = copy.copy(store)
    sib.collection_name = collection_name
    sib.key = key
    sib.kwargs = {**getattr(store, "kwargs", {}), "key": key}
    sib._coll = None
    if isinstance(store, MemoryStore) and not isinstance(store, MontyStore):
        # An in-memory (mongomock) store cannot reconnect to its data: share its database.
        store.connect()
        sib._coll = store._collection.database[sib.name]
    return sib


def ensure_indexes(job_store: JobStore) -> dict[str, bool]:
    """Create the indexes of the outputs and data collections where the backend supports them.

    The embedded SQLite store, MongoDB and mongomock support all; MontyDB (from a store config)
    none (every entry is then False).

    Returns
    -------
    dict[str, bool]
        ``{"outputs:<field>" or "data:<field>": created or already present}``.
    """
    result = {}
    for field in INDEXED_FIELDS:
        result[f"{DOCS_COLLECTION}:{field}"] = _try_index(job_store.docs_store, field)
    for name, store in job_store.additional_stores.items():
        for field in ("blob_uuid", "job_uuid"):
            result[f"{name}:{field}"] = _try_index(store, field)
        if isinstance(store, ChunkedStore):
            result[f"{name}{CHUNKS_SUFFIX}:files_key"] = _try_index(store.chunks, "files_key")
    return result


def _try_index(store: Store, field: str) -> bool:
    try:
        return bool(store.ensure_index(field))
    except Exception as exc:
        if _is_connection_error(exc):
            raise
        return False  # MontyDB: NotImplementedError; a read-only user: OperationFailure


def _ping(store: Store) -> None:
    from maggma.stores import MemoryStore, MongoStore

    if isinstance(store, MongoStore) and not isinstance(store, MemoryStore):
        store._collection.database.client.admin.command("ping")


def _is_connection_error(exc: BaseException) -> bool:
    from pymongo.errors import ConfigurationError, ConnectionFailure, OperationFailure

    if isinstance(exc, ConnectionFailure | ConfigurationError):
        return True
    # 18: authentication failed; 13: unauthorized.
    return isinstance(exc, OperationFailure) and exc.code in (13, 18)


def _store_error(exc: BaseException, uri: str | None) -> str:
    """The first line of an exception's message, credentials removed."""
    text = one_line(exc, "first")
    # pymongo appends timeouts and a long topology description; keep the gist.
    text = text.split(", Timeout:")[0].split(" (configured timeouts")[0]
    text = redact(text)
    for secret in _secrets(uri):
        # A literal password in free text (not in a URI). Very short ones are skipped: replacing
        # every "b" of a message would garble it, and a 3-character password is no secret.
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _secrets(uri: str | None) -> list[str]:
    from urllib.parse import unquote

    secrets = []
    s = get_settings()
    if s.mongo_password:
        secrets.append(s.mongo_password.get_secret_value())
    if uri and "://" in uri:
        netloc = uri.split("://", 1)[1]
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            if ":" in userinfo:
                pw = userinfo.split(":", 1)[1]
                secrets += [pw, unquote(pw)]
    return [x for x in secrets if x]
