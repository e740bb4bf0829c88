"""The embedded SQLite result store: types, upserts, Mongo query semantics, indexes, crashes,
concurrent writers, the network-filesystem lock, damaged files and the MontyDB conversion."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid as uuidlib
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from softening.errors import InputError, SofteningError
from softening.stores import get_job_store
from softening.stores.factory import INDEXED_FIELDS
from softening.stores.sqlite import (
    LEGACY_FOLDER,
    LOCK_FILE,
    LOCK_TOKEN_ENV,
    SQLiteStore,
    check_integrity,
    database_path,
    filesystem_type,
    is_network_filesystem,
    migrate_legacy_store,
)

ROOT = Path(__file__).resolve().parents[2]


def _store(folder: Path, name: str = "outputs", **kw) -> SQLiteStore:
    store = SQLiteStore(str(folder), name, indexed_fields=list(INDEXED_FIELDS), **kw)
    store.connect()
    return store


def _python(code: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# ---- documents -----------------------------------------------------------------------------------


def test_every_type_round_trips(tmp_path):
    store = _store(tmp_path)
    doc = {
        "uuid": "u1",
        "index": 1,
        "naive": datetime(2024, 5, 6, 7, 8, 9, 123456),
        "aware": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "offset": datetime(2024, 5, 6, tzinfo=timezone(timedelta(hours=-3))),
        "day": date(2024, 1, 2),
        "bytes": b"\x00\xff" * 10,
        "nan": float("nan"),
        "inf": [float("inf"), float("-inf")],
        "nested": [[1, 2.5], [[3]], [], {"a": [None, True, False]}],
        "big": 2**70,
        "neg": -(2**63),
        "text": "ünïcode ✓",
        "empty": {},
        "tuple": (1, 2),
    }
    store.update(doc)
    back = store.query_one({"uuid": "u1"})
    assert math.isnan(back.pop("nan"))
    expected = {**doc, "tuple": [1, 2]}
    expected.pop("nan")
    assert back == expected
    assert back["aware"].tzinfo is not None and back["naive"].tzinfo is None
    assert back["offset"].utcoffset() == timedelta(hours=-3)
    # A large body is compressed, and still exact.
    floats = [i / 7 for i in range(200_000)]
    store.update({"uuid": "u2", "data": floats})
    assert store.query_one({"uuid": "u2"})["data"] == floats
    with sqlite3.connect(database_path(tmp_path)) as conn:
        size = conn.execute("SELECT max(length(body)) FROM outputs").fetchone()[0]
    assert size < 9 * len(floats)


def test_stored_bytes_are_those_of_every_version():
    """The bytes of a body and of a chunked blob, as written since the first SQLite version: stores
    on disk keep reading, and older versions read what this one writes (one codec for both)."""
    from softening.stores import chunked
    from softening.stores.sqlite import codec, decode, encode

    doc = {"uuid": "u", "at": datetime(2024, 1, 2, 3, 4, 5), "day": date(2024, 1, 2),
           "n": 2**70, "x": [1.5, float("nan")], "b": b"\x00"}  # fmt: skip
    body = (
        b"\x86\xa4uuid\xa1u\xa2at\xc7\x13\x012024-01-02T03:04:05\xa3day\xc7\n\x042024-01-02"
        b"\xa1n\xc7\x16\x031180591620717411303424\xa1x\x92\xcb?\xf8\x00\x00\x00\x00\x00\x00"
        b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\xa1b\xc4\x01\x00"
    )
    assert encode(doc) == (0, body)
    back = decode(0, body)
    assert math.isnan(back["x"].pop()) and back == {**doc, "x": [1.5]}
    assert chunked.pack is codec.pack and chunked.unpack is codec.unpack
    assert chunked.pack([1.5, 2]) == (b"\x92\xcb?\xf8\x00\x00\x00\x00\x00\x00\x02", "msgpack")
    blob = {"x": [1.5], "at": datetime(2024, 1, 2)}
    raw = (
        b",\x00\x00\x00\x03v\x00$\x00\x00\x00\x04x\x00\x10\x00\x00\x00\x010\x00\x00\x00\x00\x00"
        b"\x00\x00\xf8?\x00\tat\x00\x00Px\xc7\x8c\x01\x00\x00\x00\x00"
    )
    assert chunked.pack(blob) == (raw, "bson") and chunked.unpack(raw, "bson") == blob


def test_numpy_values_are_stored_as_lists(tmp_path):
    import numpy as np

    store = _store(tmp_path, "data", key="blob_uuid")
    store.update({"blob_uuid": "b", "data": np.arange(6.0).reshape(2, 3), "n": np.int64(3)})
    back = store.query_one({"blob_uuid": "b"})
    assert back["data"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and back["n"] == 3
    assert store.count({"n": 3}) == 1


def test_upsert_replace_remove(tmp_path):
    store = _store(tmp_path)
    store.update([{"uuid": "a", "index": 1, "v": 1}, {"uuid": "a", "index": 2, "v": 2}],
                 key=["uuid", "index"])  # fmt: skip
    store.update({"uuid": "a", "index": 1, "v": 10}, key=["uuid", "index"])
    assert store.count() == 2
    assert [d["v"] for d in store.query({"uuid": "a"}, sort={"index": 1})] == [10, 2]
    # Replacing drops fields of the old document, and re-indexes it.
    store.update({"uuid": "a", "index": 2, "output": {"content_key": "k"}}, key=["uuid", "index"])
    assert store.query_one({"output.content_key": "k"})["index"] == 2
    assert "v" not in store.query_one({"uuid": "a", "index": 2})
    store.update({"uuid": "a", "index": 2, "w": 1}, key=["uuid", "index"])
    assert store.count({"output.content_key": "k"}) == 0
    # Default key: the store's key.
    store.update({"uuid": "b", "index": 7})
    store.update({"uuid": "b", "index": 8})
    assert store.count({"uuid": "b"}) == 1 and store.query_one({"uuid": "b"})["index"] == 8
    store.remove_docs({"uuid": "a", "index": {"$gte": 2}})
    assert sorted(d["index"] for d in store.query({})) == [1, 8]
    store.remove_docs({})
    assert store.count() == 0
    assert check_integrity(tmp_path) == []


# ---- Mongo query semantics, against mongomock ------------------------------------------------------


def _mongo_docs() -> list[dict]:
    docs = []
    for i in range(40):
        els = [["Cu"], ["Cu", "O"], ["Li", "O"], ["O"], []][i % 5]
        docs.append(
            {
                "i": i,
                "uuid": f"u{i % 13}",
                "index": i % 3,
                "completed_at": f"2024-01-{1 + i % 28:02d}",
                "output": {
                    "@class": "SofteningDoc" if i % 4 else "Other",
                    "material_id": "pooled" if i % 9 == 0 else f"mp-{i % 7}",
                    "elements": els,
                    "scale": 0.5 + i / 40,
                    "model": {"name": ["CHGNet-0.3.0", "chgnet-x", "M3GNet"][i % 3],
                              "family": ["chgnet", "chgnet", "m3gnet"][i % 3]},
                    **({"extra": i} if i % 2 else {}),
                },
            }
        )  # fmt: skip
    docs.append({"i": 99, "uuid": None, "output": {"scale": "text", "elements": "Cu"}})
    return docs


CRITERIA = [
    {},
    {"uuid": "u3"},
    {"uuid": {"$in": ["u1", "u2", "nope"]}},
    {"uuid": None},
    {"index": 1, "output.@class": "SofteningDoc"},
    {"index": 1.0},
    {"output.material_id": {"$ne": "pooled"}},
    {"output.elements": "O"},
    {"output.elements": {"$all": ["Cu", "O"]}},
    {"output.elements": {"$all": ["O"]}, "output.@class": "SofteningDoc"},
    {"output.elements": {"$size": 0}},
    {"output.scale": {"$gte": 0.9, "$lte": 1.2}},
    {"output.scale": {"$gt": 1.0}},
    {"output.scale": {"$lt": 0.7}},
    {"output.extra": {"$exists": True}},
    {"output.extra": {"$exists": False}, "uuid": {"$in": ["u1", "u4"]}},
    {"output.model.name": {"$regex": "^chgnet", "$options": "i"}},
    {
        "$or": [
            {"output.model.name": {"$regex": "^CHGNET-0.3.0$", "$options": "i"}},
            {"output.model.family": "chgnet"},
        ]
    },  # fmt: skip
    {"$or": [{"uuid": "u1"}, {"output.material_id": "mp-3"}], "index": {"$in": [0, 2]}},
    {"$and": [{"uuid": {"$in": ["u1", "u5"]}}, {"output.scale": {"$lte": 1.0}}]},
    {
        "output.@class": "SofteningDoc",
        "output.material_id": {"$ne": "pooled"},
        "output.elements": {"$all": ["O"]},
        "$or": [
            {"output.model.name": {"$regex": "^m3gnet$", "$options": "i"}},
            {"output.model.family": "m3gnet"},
        ],
        "output.scale": {"$gte": 0.6},
    },
]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    import mongomock

    docs = _mongo_docs()
    folder = tmp_path_factory.mktemp("mongo-semantics")
    store = SQLiteStore(str(folder), "outputs", key="i", indexed_fields=list(INDEXED_FIELDS))
    store.connect()
    store.update([dict(d) for d in docs], key="i")
    coll = mongomock.MongoClient().db.outputs
    coll.insert_many([dict(d) for d in docs])
    return store, coll


@pytest.mark.parametrize("criteria", CRITERIA, ids=[json.dumps(c)[:60] for c in CRITERIA])
def test_queries_match_mongomock(both, criteria):
    store, coll = both
    ours = sorted(d["i"] for d in store.query(criteria))
    theirs = sorted(d["i"] for d in coll.find(criteria))
    assert ours == theirs
    assert store.count(criteria) == len(theirs)


def test_sort_skip_limit_projection_distinct_groupby(both):
    store, coll = both
    crit = {"output.@class": "SofteningDoc"}
    sort = {"completed_at": -1, "i": 1}
    ours = [d["i"] for d in store.query(crit, sort=sort, skip=3, limit=5)]
    theirs = [d["i"] for d in coll.find(crit).sort(list(sort.items())).skip(3).limit(5)]
    assert ours == theirs
    doc = store.query_one({"i": 5}, properties=["output.model.name", "i"])
    assert doc == {"i": 5, "output": {"model": {"name": "M3GNet"}}}
    doc = store.query_one({"i": 5}, properties={"output": 0})
    assert set(doc) == {"i", "uuid", "index", "completed_at"}
    assert sorted(store.distinct("output.elements"), key=str) == sorted(
        coll.distinct("output.elements"), key=str
    )
    groups = {g["index"]: len(ds) for g, ds in store.groupby("index", criteria={"i": {"$lt": 40}})}
    assert groups == {0: 14, 1: 13, 2: 13}


# ---- indexes -------------------------------------------------------------------------------------


def test_lookups_use_the_indexes(tmp_path):
    store = _store(tmp_path)
    n = 10_000
    docs = [
        {
            "uuid": f"job-{i}",
            "index": 1,
            "completed_at": f"2024-{i}",
            "output": {"@class": "SofteningDoc", "content_key": f"key-{i}", "material_id": "x"},
        }
        for i in range(n)
    ]
    store.insert_many(docs, batch=5000)
    assert store.count() == n
    before = store.n_decoded
    assert store.query_one({"uuid": "job-7777"}, sort={"index": -1})["index"] == 1
    doc = store.query_one(
        {"output.content_key": "key-4242", "output.@class": "SofteningDoc"},
        properties=["output"],
        sort={"completed_at": -1},
    )
    assert doc["output"]["content_key"] == "key-4242"
    assert store.count({"uuid": {"$in": ["job-1", "job-2", "nope"]}}) == 2
    store.update({**docs[5], "index": 1, "new": True}, key=["uuid", "index"])
    store.remove_docs({"uuid": "job-9"})
    assert store.count() == n - 1
    assert store.n_decoded - before <= 3, store.n_decoded - before
    # ensure_index backfills a field; the lookup then decodes only the match.
    assert store.ensure_index("completed_at")
    before = store.n_decoded
    assert store.query_one({"completed_at": "2024-123"})["uuid"] == "job-123"
    assert store.n_decoded - before == 1
    # Without a usable index the store scans (allowed, the exception).
    before = store.n_decoded
    assert store.count({"new": True}) == 1
    assert store.n_decoded - before == n - 1


def test_jobflow_store_through_factory(tmp_path):
    """A flow run with run_locally into the embedded store, read back with get_output."""
    import numpy as np
    from jobflow import Flow, job, run_locally

    @job(data=["arr"])
    def make(n):
        return {"arr": np.arange(n, dtype=float), "n": n}

    @job
    def add(doc, b):
        return doc["n"] + b

    store = get_job_store(tmp_path / "db")
    assert not database_path(tmp_path / "db").exists()  # nothing written before the first job
    j1 = make(200_000)
    j2 = add(j1.output, 5)
    run_locally(Flow([j1, j2]), store=store, log=False, ensure_success=True)
    store.connect()
    assert store.indexes and all(store.indexes.values()), store.indexes
    assert isinstance(store.docs_store, SQLiteStore)
    assert store.get_output(j2.uuid) == 200_005
    assert store.get_output(j1.uuid, load=True)["arr"] == np.arange(200_000.0).tolist()
    assert store.count({"uuid": j1.uuid}) == 1
    store.remove_docs({"uuid": j1.uuid})
    assert store.additional_stores["data"].count() == 0
    assert check_integrity(tmp_path / "db") == []


def test_pickle_and_fork(tmp_path):
    import multiprocessing
    import pickle

    store = _store(tmp_path)
    store.update({"uuid": "parent"})
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone.count() == 1

    def child():
        store.update({"uuid": "child"})  # the parent's connection must not be used here
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert store.count() == 2 and check_integrity(tmp_path) == []


def test_serialized_store_loads_by_either_module_path(tmp_path):
    """``@module`` names the package, as before it was split into modules; the module that now
    holds the class loads too, alone and inside a serialized JobStore."""
    from monty.json import MontyDecoder, MontyEncoder

    store = SQLiteStore(str(tmp_path), "outputs", indexed_fields=["output.formula"])
    spec = store.as_dict()
    assert spec["@module"] == "softening.stores.sqlite"
    for module in ("softening.stores.sqlite", "softening.stores.sqlite.store"):
        back = MontyDecoder().process_decoded({**spec, "@module": module})
        assert isinstance(back, SQLiteStore) and back == store
        assert back.indexed_fields == ["output.formula"]
    text = json.dumps(get_job_store(tmp_path / "db"), cls=MontyEncoder)
    assert '"softening.stores.sqlite"' in text
    for module in ("softening.stores.sqlite", "softening.stores.sqlite.store"):
        job_store = json.loads(text.replace('"softening.stores.sqlite"', f'"{module}"'),
                               cls=MontyDecoder)  # fmt: skip
        assert isinstance(job_store.docs_store, SQLiteStore)
        assert job_store.docs_store.path == database_path(tmp_path / "db")


# ---- crashes and concurrent writers --------------------------------------------------------------

_WRITER = """
import sys
from softening.stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1], "outputs")
tag = sys.argv[2]
for i in range(int(sys.argv[3])):
    store.update({"uuid": f"{tag}-{i}", "index": 1, "output": {"x": [i] * 50}},
                 key=["uuid", "index"])
    print(f"{tag}-{i}", flush=True)
"""


def test_killed_writer_loses_no_committed_document(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), "w", "100000"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    done = []
    for line in proc.stdout:
        done.append(line.strip())
        if len(done) >= 200:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    store = _store(tmp_path)
    assert store.count({"uuid": {"$in": done}}) == len(done)
    assert store.count() >= len(done)
    with sqlite3.connect(database_path(tmp_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert check_integrity(tmp_path) == []


def test_two_writers_at_once_lose_nothing(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), tag, "300"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = _store(tmp_path)
    assert store.count() == 600
    assert store.count({"uuid": {"$in": [f"a-{i}" for i in range(300)]}}) == 300
    assert check_integrity(tmp_path) == []


# ---- network filesystems -------------------------------------------------------------------------


def test_filesystem_detection(tmp_path, monkeypatch):
    assert filesystem_type("/proc") == "proc"
    assert filesystem_type(tmp_path / "not" / "yet") == filesystem_type(tmp_path)
    monkeypatch.setenv("SOFTENING_STORE_FS", "network")
    assert is_network_filesystem(tmp_path)
    monkeypatch.setenv("SOFTENING_STORE_FS", "local")
    assert not is_network_filesystem(tmp_path)
    monkeypatch.delenv("SOFTENING_STORE_FS")
    monkeypatch.setattr("softening.stores.sqlite.lock.filesystem_type", lambda p: "nfs4")
    assert is_network_filesystem(tmp_path)
    monkeypatch.setattr("softening.stores.sqlite.lock.filesystem_type", lambda p: "fuse.sshfs")
    assert is_network_filesystem(tmp_path)
    monkeypatch.setattr("softening.stores.sqlite.lock.filesystem_type", lambda p: "ext4")
    assert not is_network_filesystem(tmp_path)


def test_network_filesystem_writer_lock(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SOFTENING_STORE_FS", "network")
    lock = tmp_path / LOCK_FILE
    reader = _store(tmp_path)
    assert reader.count() == 0 and not lock.exists()  # reading takes no lock
    with caplog.at_level(logging.WARNING, logger="softening.stores.sqlite"):
        store = _store(tmp_path)
        store.update({"uuid": "first"})
    assert "network filesystem" in caplog.text
    with sqlite3.connect(database_path(tmp_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    info = json.loads(lock.read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    token = os.environ[LOCK_TOKEN_ENV]
    assert info["token"] == token

    # Another run (no token) is refused with one line naming the holder.
    env = {k: v for k, v in os.environ.items() if k != LOCK_TOKEN_ENV}
    code = _WRITER + "\n"
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), "other", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode != 0
    last = other.stderr.strip().splitlines()[-1]
    assert "SofteningError" in last and f"pid {os.getpid()}" in last and str(lock) in last
    assert "wait for it to finish, or delete" in last
    # A worker started by the holder (same token) writes.
    worker = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), "worker", "3"],
        cwd=ROOT, env={**env, LOCK_TOKEN_ENV: token}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert store.count() == 4
    # Released at close.
    reader.close()
    store.close()
    assert not lock.exists()

    # A stale lock (a dead process of this host) is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                "time": "2024-01-01T00:00:00+00:00", "token": "old"}))  # fmt: skip
    monkeypatch.delenv(LOCK_TOKEN_ENV)
    store = _store(tmp_path)
    store.update({"uuid": "after-crash"})
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    store.close()
    # A live holder on another host is not.
    lock.write_text(json.dumps({"host": "node42", "pid": 1, "time": "t", "token": "x"}))
    monkeypatch.delenv(LOCK_TOKEN_ENV)
    store = _store(tmp_path)
    with pytest.raises(SofteningError, match="node42 pid 1") as err:
        store.update({"uuid": "refused"})
    assert "\n" not in str(err.value)
    assert store.count() == 5


# ---- damaged, missing and legacy stores ----------------------------------------------------------


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "softening.cli", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_damaged_store_is_one_line_from_every_command(tmp_path):
    folder = tmp_path / "db"
    store = _store(folder)
    store.insert_many([{"uuid": f"u{i}", "output": {"x": "y" * 1000}} for i in range(300)])
    store.close()
    db = database_path(folder)
    size = db.stat().st_size
    # Truncated: caught by the header check, before any query.
    with open(db, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(SofteningError) as err:
        get_job_store(folder).connect()
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg and "truncated" in msg
    assert "restore it from a backup" in msg and "--store" in msg
    assert check_integrity(folder)
    # Garbage over the file.
    db.write_bytes(os.urandom(size))
    for args in (
        ["query", "--store", folder],
        ["build", "--store", folder],
        ["report", "--store", folder, "--out", tmp_path / "rep"],
    ):
        res = _cli(*args)
        err_lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(err_lines) == 1, res.stderr
        assert "damaged" in err_lines[0] and str(folder) in err_lines[0]
    assert check_integrity(folder)


def test_read_only_use_creates_nothing(tmp_path):
    from softening.stores.queries import query_results

    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="no result store"):
        query_results(missing)
    assert not missing.exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        query_results(tmp_path / "afile")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert query_results(empty) == []
    assert list(empty.iterdir()) == []


def _legacy_folder(folder: Path) -> tuple[list[str], list[float]]:
    """A store as the MontyDB version wrote it (outputs, chunked data, a summary collection)."""
    from maggma.stores import MontyStore

    from softening.stores.chunked import ChunkedStore

    kw = {"database_path": str(folder), "database_name": "softening"}
    folder.mkdir(parents=True, exist_ok=True)
    docs = MontyStore("outputs", key="uuid", **kw)
    data = ChunkedStore(
        MontyStore("data", key="blob_uuid", **kw),
        MontyStore("data_chunks", key="files_key", **kw),
        chunk_bytes=64 * 1024,
        inline_bytes=1024,
    )
    summary = MontyStore("summary_models", key="summary_id", **kw)
    for s in (docs, data, summary):
        s.connect()
    uuids = [str(uuidlib.uuid4()) for _ in range(3)]
    big = [i / 3 for i in range(50_000)]
    for k, u in enumerate(uuids):
        docs.update(
            {"uuid": u, "index": 1, "completed_at": datetime(2024, 1, 1 + k),
             "output": {"@class": "SofteningDoc", "content_key": f"k{k}",
                        "forces": {"blob_uuid": f"b{k}", "store": "data"}}},
            key=["uuid", "index"],
        )  # fmt: skip
        data.update({"blob_uuid": f"b{k}", "job_uuid": u, "job_index": 1, "data": big[k:]})
    summary.update({"summary_id": "m", "n": 3}, key="summary_id")
    for s in (docs, data, summary):
        s.close()
    return uuids, big


def test_legacy_montydb_folder_is_converted(tmp_path, caplog):
    folder = tmp_path / "db"
    uuids, big = _legacy_folder(folder)
    with caplog.at_level(logging.INFO, logger="softening.stores.sqlite"):
        store = get_job_store(folder)
        store.connect()
    lines = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(lines) == 1 and "7 documents" in lines[0]
    assert database_path(folder).exists()
    assert (folder / LEGACY_FOLDER / "softening" / "data_chunks.collection").exists()
    assert not (folder / "softening").exists()
    assert store.count() == 3
    doc = store.query_one({"output.content_key": "k1"}, load=True)
    assert doc["uuid"] == uuids[1] and doc["output"]["forces"] == big[1:]
    assert doc["completed_at"] == datetime(2024, 1, 2)
    from softening.stores.queries import query_summaries

    assert query_summaries(store, "models") == [{"summary_id": "m", "n": 3}]
    # Converting twice does nothing; the function reports what it copied.
    assert migrate_legacy_store(folder) == 0
    other = tmp_path / "db2"
    _legacy_folder(other)
    assert migrate_legacy_store(other) == 7


def test_mongo_store_config_honours_timeout(tmp_path, monkeypatch):
    cfg = tmp_path / "store.yaml"
    cfg.write_text(
        "docs_store: {type: MongoStore, database: x, collection_name: outputs, "
        "host: 127.0.0.1, port: 1}\n"
        "additional_stores:\n  data: {type: GridFSStore, database: x, collection_name: data, "
        "host: 127.0.0.1, port: 1}\n"
    )
    monkeypatch.setenv("SOFTENING_MONGO_TIMEOUT", "1")
    from softening.settings import get_settings

    get_settings.cache_clear()
    store = get_job_store(cfg)
    assert store.docs_store.mongoclient_kwargs["serverSelectionTimeoutMS"] == 1000
    assert store.additional_stores["data"].mongoclient_kwargs["connectTimeoutMS"] == 1000
    t0 = time.perf_counter()
    with pytest.raises(SofteningError) as err:
        store.connect()
    assert time.perf_counter() - t0 < 8
    assert "\n" not in str(err.value) and "cannot use" in str(err.value)


def test_sqlite_store_in_a_store_config(tmp_path):
    """``type: SQLiteStore`` in a jobflow store config; its siblings hold the summaries."""
    from softening.stores.builders import summary_stores

    cfg = tmp_path / "store.yaml"
    cfg.write_text(
        f"docs_store: {{type: SQLiteStore, folder: {tmp_path / 'db'}, collection_name: outputs}}\n"
        f"additional_stores:\n  data: {{type: SQLiteStore, folder: {tmp_path / 'db'}, "
        "collection_name: data}\n"
    )
    store = get_job_store(cfg)
    store.connect()
    store.update({"uuid": "u", "index": 1, "output": {"x": 1}})
    target = summary_stores(store)["models"]
    assert isinstance(target, SQLiteStore) and target.path == store.docs_store.path
    target.update({"summary_id": "m"}, key="summary_id")
    assert get_job_store(tmp_path / "db").query_one({"uuid": "u"})["output"] == {"x": 1}
