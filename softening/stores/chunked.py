"""Data stores for large blobs: no stored document ever comes near MongoDB's 16 MB limit.

- :class:`ChunkedStore` wraps any Mongo-like maggma store (MontyDB, MongoDB, mongomock). A document
  whose ``data`` field packs to more than ``inline_bytes`` is stored as a small head document
  (every other field kept, so the usual queries on ``blob_uuid``, ``job_uuid`` ... still work) plus
  compressed chunks of at most ``chunk_bytes`` each in a second collection; queries reassemble it.
  Small documents are stored unchanged, so stores written before chunking existed read the same.
  Used for Mongo-like data stores named in a store config, which have no GridFS.
- :class:`GridFSDataStore` is maggma's :class:`~maggma.stores.GridFSStore` (MongoDB's own chunking)
  with faster serialisation and compression; its files stay readable by a stock ``GridFSStore``.

Both implement the methods that jobflow's :class:`~jobflow.JobStore` calls on an additional store:
``connect``, ``close``, ``update(blobs, key="blob_uuid")``, ``query(criteria={"blob_uuid": {"$in":
...}}, properties=["blob_uuid", "data"])`` (and so ``query_one``), and ``remove_docs``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
from maggma.core import Sort, Store
from maggma.stores import GridFSStore
from maggma.stores.gridfs import files_collection_fields
from monty.json import jsanitize

# The one msgpack codec of the stores; re-exported here, where it was first written.
from softening.stores.sqlite.codec import pack, unpack

__all__ = ["ChunkedStore", "GridFSDataStore", "pack", "unpack"]

# 4 MiB chunks: far below the 16 MB document limit (and the brief's 8 MB), large enough that a
# 60 MB compressed trajectory is only ~15 documents.
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
# Payloads below 1 MiB stay inline and uncompressed: readable by any tool, and cheap to query.
DEFAULT_INLINE_BYTES = 1024 * 1024
# zlib level 1: ~1 s per 120 MB of float text against ~7 s at the default level 6, for ~7 % more
# bytes (measured on 10,000 x 200 x 3 random float64).
DEFAULT_COMPRESS_LEVEL = 1


class ChunkedStore(Store):
    """A maggma store whose large ``data`` payloads are split into compressed chunk documents.

    Parameters
    ----------
    store
        Mongo-like store of the documents (and of the head documents of chunked ones).
    chunks
        Mongo-like store of the chunks (``{"files_key", "n", "bytes"}`` documents); another
        collection of the same database.
    field
        The field that may be large (jobflow's additional stores keep the blob in ``data``).
    chunk_bytes
        Largest chunk, in bytes of compressed payload.
    inline_bytes
        Payloads that pack to at most this many bytes are stored inline, unchanged.
    compress_level
        zlib level of chunked payloads (1 = fastest, 9 = smallest).
    **kwargs
        Passed to :class:`maggma.core.Store` (``key`` defaults to the wrapped store's key).
    """

    #: Field of a head document that describes its chunks.
    CHUNK_INFO = "chunked"

    def __init__(
        self,
        store: Store,
        chunks: Store,
        field: str = "data",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        inline_bytes: int = DEFAULT_INLINE_BYTES,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        **kwargs: Any,
    ):
        if not 0 < chunk_bytes <= 8 * 1024 * 1024:
            raise ValueError(f"chunk_bytes must be in (0, 8 MiB], not {chunk_bytes}")
        self.store = store
        self.chunks = chunks
        self.field = field
        self.chunk_bytes = int(chunk_bytes)
        self.inline_bytes = int(inline_bytes)
        self.compress_level = int(compress_level)
        self.kwargs = kwargs
        kwargs.setdefault("key", store.key)
        super().__init__(**kwargs)
        self.chunks.key = "files_key"

    # The key lives on the wrapped store: jobflow sets ``additional_store.key = "blob_uuid"``.
    @property
    def key(self) -> str:
        return self.store.key

    @key.setter
    def key(self, value: str) -> None:
        if "store" in self.__dict__:
            self.store.key = value

    @property
    def name(self) -> str:
        return f"chunked:{self.store.name}"

    @property
    def _collection(self):
        return self.store._collection

    def connect(self, force_reset: bool = False) -> None:
        self.store.connect(force_reset=force_reset)
        self.chunks.connect(force_reset=force_reset)

    def close(self) -> None:
        self.store.close()
        self.chunks.close()

    def count(self, criteria: dict | None = None) -> int:
        return self.store.count(criteria)

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        return self.store.ensure_index(key, unique=unique)

    def ensure_chunk_index(self) -> bool:
        """Index the chunks by their head's key (a no-op where the backend has no indexes)."""
        return self.chunks.ensure_index("files_key")

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        return self.store.distinct(field, criteria=criteria, all_exist=all_exist)

    # ---- writing ---------------------------------------------------------------------------------

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Insert or replace documents; a large ``data`` payload goes to compressed chunks.

        Parameters
        ----------
        docs
            The document(s).
        key
            Field(s) that identify a document (default: the store's key).
        """
        if not isinstance(docs, list):
            docs = [docs]
        key = key or self.key
        keys = key if isinstance(key, list) else [key]
        for doc in docs:
            head, parts = self._split(doc)
            ident = _files_key({k: doc[k] for k in keys})
            # Replace: the old chunks of this document go first (a smaller payload has fewer).
            self._remove_chunks({"files_key": ident})
            if parts:
                self.chunks.update(
                    [{"files_key": ident, "n": i, "bytes": p} for i, p in enumerate(parts)],
                    key=["files_key", "n"],
                )
            self.store.update(head, key=key)

    def _split(self, doc: dict) -> tuple[dict, list[bytes]]:
        if self.field not in doc:
            return doc, []
        raw, encoding = pack(doc[self.field])
        if len(raw) <= self.inline_bytes:
            return doc, []
        payload = zlib.compress(raw, self.compress_level)
        parts = [
            payload[i : i + self.chunk_bytes] for i in range(0, len(payload), self.chunk_bytes)
        ]
        head = {k: v for k, v in doc.items() if k != self.field}
        head[self.CHUNK_INFO] = {
            "field": self.field,
            "encoding": encoding,
            "compression": "zlib",
            "n_chunks": len(parts),
            "nbytes": len(raw),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        return head, parts

    # ---- reading ---------------------------------------------------------------------------------

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[dict]:
        """Documents matching ``criteria``, chunked payloads reassembled when requested.

        Criteria can use every field but the chunked payload itself.
        """
        wanted = _wants(properties, self.field)
        if properties is not None:
            properties = _with(properties, self.CHUNK_INFO)
            if wanted:  # the chunks are found by the document's key
                properties = _with(properties, self.key)
        for doc in self.store.query(
            criteria=criteria, properties=properties, sort=sort, skip=skip, limit=limit
        ):
            yield self._join(doc, wanted)

    def _join(self, doc: dict, wanted: bool) -> dict:
        info = doc.pop(self.CHUNK_INFO, None)
        if info is None or not wanted:
            return doc
        key_fields = self.key if isinstance(self.key, list) else [self.key]
        ident = _files_key({k: doc[k] for k in key_fields})
        parts = {
            c["n"]: c["bytes"]
            for c in self.chunks.query({"files_key": ident}, properties=["n", "bytes"])
        }
        if sorted(parts) != list(range(info["n_chunks"])):
            raise OSError(
                f"blob {ident}: {len(parts)} of {info['n_chunks']} chunks found; the store is "
                "incomplete (interrupted write?)"
            )
        payload = b"".join(bytes(parts[i]) for i in range(info["n_chunks"]))
        if hashlib.sha256(payload).hexdigest() != info["sha256"]:
            raise OSError(f"blob {ident}: chunks do not match their checksum")
        doc[info["field"]] = unpack(zlib.decompress(payload), info["encoding"])
        return doc

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[tuple[dict, list[dict]]]:
        wanted = _wants(properties, self.field)
        if properties is not None:
            properties = _with(properties, self.CHUNK_INFO)
            if wanted:
                properties = _with(properties, self.key)
        for group, docs in self.store.groupby(
            keys, criteria=criteria, properties=properties, sort=sort, skip=skip, limit=limit
        ):
            yield group, [self._join(d, wanted) for d in docs]

    def remove_docs(self, criteria: dict) -> None:
        """Remove matching documents and their chunks."""
        key_fields = self.key if isinstance(self.key, list) else [self.key]
        idents = [
            _files_key({k: d.get(k) for k in key_fields})
            for d in self.store.query(criteria, properties=key_fields)
        ]
        if idents:
            self._remove_chunks({"files_key": {"$in": idents}})
            self.store.remove_docs(criteria)

    def _remove_chunks(self, criteria: dict) -> None:
        # MontyDB fails to delete from a collection never written to ("no such table"): count first.
        if self.chunks.count(criteria):
            self.chunks.remove_docs(criteria)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChunkedStore)
            and self.store == other.store
            and self.chunks == other.chunks
            and self.field == other.field
        )

    def __hash__(self) -> int:
        return hash(self.name)


def _files_key(ident: dict) -> str:
    # One string per document key (a single key is used as is: readable in the chunks collection).
    if len(ident) == 1:
        return str(next(iter(ident.values())))
    return json.dumps(ident, sort_keys=True, default=str)


def _wants(properties: dict | list | None, field: str) -> bool:
    if properties is None:
        return True
    if isinstance(properties, dict):
        return bool(properties.get(field)) or any(
            k.startswith(f"{field}.") and v for k, v in properties.items()
        )
    return any(p == field or p.startswith(f"{field}.") for p in properties)


def _with(properties: dict | list, field: str) -> dict | list:
    if isinstance(properties, dict):
        return {**properties, field: 1} if any(properties.values()) else properties
    return [*properties, field] if field not in properties else list(properties)


class GridFSDataStore(GridFSStore):
    """maggma's GridFS store with fast serialisation: orjson and zlib level 1, compressed by default.

    The stock store sanitises every document again and writes it with the standard library's JSON
    at zlib level 6: ~13 s per (10000, 200, 3) float64 array, against ~1.5 s here. The files are
    the same JSON (read by a stock ``GridFSStore`` too). orjson writes NaN and inf as ``null``, so
    payloads that hold a ``null`` (a NaN, or a real ``None``) are written by the standard library,
    which keeps NaN exact.
    """

    def __init__(
        self,
        database: str | None,
        collection_name: str,
        host: str = "localhost",
        port: int = 27017,
        username: str = "",
        password: str = "",
        compression: bool = True,
        ensure_metadata: bool = False,
        searchable_fields: list[str] | None = None,
        auth_source: str | None = None,
        mongoclient_kwargs: dict | None = None,
        ssh_tunnel: Any = None,
        uri: str | None = None,
        **kwargs: Any,
    ):
        # The stock signature, spelled out so that MSONable serialisation keeps every argument;
        # only the compression default differs.
        super().__init__(
            database,
            collection_name,
            host=host,
            port=port,
            username=username,
            password=password,
            compression=compression,
            ensure_metadata=ensure_metadata,
            searchable_fields=searchable_fields,
            auth_source=auth_source,
            mongoclient_kwargs=mongoclient_kwargs,
            ssh_tunnel=ssh_tunnel,
            uri=uri,
            **kwargs,
        )

    @property
    def name(self) -> str:
        # The stock name is the URI, password included.
        from softening.settings import redact

        return redact(super().name)

    def update(
        self,
        docs: list[dict] | dict,
        key: list | str | None = None,
        additional_metadata: str | list[str] | None = None,
    ) -> None:
        if not isinstance(docs, list):
            docs = [docs]
        key = [key] if isinstance(key, str) else (key or [self.key])
        key = list(set(key) - set(files_collection_fields))
        if isinstance(additional_metadata, str):
            extra = [additional_metadata]
        else:
            extra = list(additional_metadata or [])
        for d in docs:
            search_doc = {k: d[k] for k in key}
            metadata = {}
            for k in [self.last_updated_field, *extra, *self.searchable_fields]:
                found, value = _lookup(d, k)
                if found:
                    metadata[k] = value
            metadata.update(search_doc)
            data = _dumps(d)
            if self.compression:
                data = zlib.compress(data, DEFAULT_COMPRESS_LEVEL)
                metadata["compression"] = "zlib"
            self._collection.put(data, metadata=metadata)
            search_doc = self.transform_criteria(search_doc)
            # As the stock store: keep only the newest file of this key.
            for fdoc in (
                self._files_collection.find(search_doc, ["_id"]).sort("uploadDate", -1).skip(1)
            ):
                self._collection.delete(fdoc["_id"])

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[dict]:
        if isinstance(criteria, dict):
            criteria = self.transform_criteria(criteria)
        elif criteria is not None:
            raise ValueError("Criteria must be a dictionary or None")
        props = set(properties or [])
        for doc in self._files_store.query(criteria=criteria, sort=sort, limit=limit, skip=skip):
            if properties is not None and props.issubset(doc):
                yield {p: doc[p] for p in props}
                continue
            metadata = doc.get("metadata", {})
            raw = self._collection.get(doc["_id"]).read()
            if metadata.get("compression", "") == "zlib":
                raw = zlib.decompress(raw)
            try:
                data = _loads(raw)
            except ValueError:
                data = {
                    "data": raw,
                    self.key: doc.get(self.key),
                    self.last_updated_field: doc.get(self.last_updated_field),
                }
            if self.ensure_metadata and isinstance(data, dict):
                data.update(metadata)
            yield data


def _lookup(doc: dict, dotted: str) -> tuple[bool, Any]:
    # pydash.has/get (what the stock store uses) repr() the whole document on a miss: seconds for
    # a trajectory.
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _dumps(doc: dict) -> bytes:
    try:
        out = orjson.dumps(doc)
    except TypeError:
        out = b"null"  # not orjson-serialisable: take the stock path below
    if b"null" not in out:
        return out
    # Either a real None or a NaN/inf that orjson turned into null: the standard library keeps both.
    return json.dumps(jsanitize(doc, recursive_msonable=True)).encode("utf-8")


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # NaN / Infinity tokens, written by the standard library
