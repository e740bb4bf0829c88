"""The results database: store kinds, large blobs, indexes, query, report, and the summary builder.

MongoDB cannot be installed here: the MongoDB store kind runs on mongomock (maggma's MongoStore and
GridFS with pymongo's MongoClient replaced by a mongomock client that shares one in-memory server).
``SOFTENING_TEST_MONGODB_URI`` runs the same checks against a real server.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid as uuidlib
from datetime import datetime
from pathlib import Path

import bson
import numpy as np
import pytest
from conftest import WBM_XYZ, needs
from documents import _doc, _insert_docs
from jobflow import job, run_locally
from monty.json import jsanitize

from softening.errors import InputError, SofteningError
from softening.settings import SofteningSettings, get_settings, redact
from softening.stores import get_job_store
from softening.stores.chunked import ChunkedStore
from softening.stores.queries import load_forces, query_results

MOCK_URI = "mongodb://alice:s3cret-pw@mockhost:27017/softening_test"
MONGO_LIMIT = 16 * 1024 * 1024  # MongoDB's document size limit, bytes
SQLITE_LIMIT = 1_000_000_000  # SQLite's default largest blob, bytes


# ---- mongomock as a MongoDB server ---------------------------------------------------------------


@pytest.fixture
def mongomock_server(monkeypatch):
    """pymongo's MongoClient in maggma's stores -> mongomock clients sharing one server.

    GridFS checks that it is given pymongo databases and collections; mongomock's own integration
    patches those checks process-wide, here they are patched for the test only.
    """
    import gridfs.synchronous.grid_file as grid_file
    import mongomock_ng
    import mongomock_ng.gridfs
    import pymongo.collection
    import pymongo.database
    from mongomock_ng.store import ServerStore

    server = ServerStore()

    class Client(mongomock_ng.MongoClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, _store=server, **kwargs)

        def close(self):
            pass  # a real server keeps its data when one client disconnects

    monkeypatch.setattr("maggma.stores.mongolike.MongoClient", Client)
    monkeypatch.setattr("maggma.stores.gridfs.MongoClient", Client)
    db_types = (pymongo.database.Database, mongomock_ng.Database)
    monkeypatch.setattr(grid_file, "Database", db_types)
    coll_types = (pymongo.collection.Collection, mongomock_ng.Collection)
    monkeypatch.setattr(grid_file, "Collection", coll_types)
    monkeypatch.setattr(grid_file, "GridOutCursor", mongomock_ng.gridfs._create_grid_out_cursor)
    return Client


def _database(kind: str, spec: str, client_cls=None):
    """The database object behind a Mongo-like store (to inspect every collection)."""
    if kind == "mongomock":
        return client_cls()["softening_test"]
    import pymongo

    return pymongo.MongoClient(spec)[pymongo.uri_parser.parse_uri(spec)["database"]]


def _largest_rows(folder: str) -> dict[str, tuple[int, int]]:
    """``{collection: (documents, largest stored body in bytes)}`` of the embedded SQLite store."""
    import sqlite3

    from softening.stores.sqlite import database_path

    with sqlite3.connect(database_path(folder)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _collections")]
        return {
            n: tuple(conn.execute(f'SELECT count(*), max(length(body)) FROM "{n}"').fetchone())
            for n in names
        }


def _largest_documents(db) -> dict[str, tuple[int, int]]:
    """``{collection: (documents, largest BSON size in bytes)}`` over every collection."""
    sizes = {}
    for name in db.list_collection_names():
        lengths = [len(bson.encode(d)) for d in db[name].find({})]
        sizes[name] = (len(lengths), max(lengths, default=0))
    return sizes


# ---- redaction, settings and store specs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown", "hidden"),
    [
        ("mongodb://bob:pa55@db.example.org:27017/soft?authSource=admin", "bob:***@db", "pa55"),
        ("mongodb+srv://bob:p%40ss@cluster0.ab.mongodb.net/x", "bob:***@cluster0", "p%40ss"),
        ("mongodb://bob:p@ss@host/db", "bob:***@host/db", "p@ss"),
        ("mongodb://host:1/db?password=zz&w=1", "password=***&w=1", "zz"),
        (
            "error: cannot reach mongodb://u:topsecret@h/x (timeout)",
            "u:***@h/x (timeout)",
            "topsecret",
        ),
    ],
)
def test_redact_hides_passwords(text, shown, hidden):
    out = redact(text)
    assert shown in out and hidden not in out


def test_redact_leaves_other_text_alone():
    for text in ("./softening-db", "mongodb://db.example.org/x", "mongodb://bob@h/x", "a b"):
        assert redact(text) == text


def test_settings_repr_hides_credentials():
    s = SofteningSettings(store="mongodb://bob:pa55@h/x", mongo_password="pa66")
    assert "pa55" not in repr(s) and "pa66" not in repr(s) and "pa66" not in str(s)
    assert s.mongo_password.get_secret_value() == "pa66"


def test_mongo_settings_from_environment(monkeypatch, mongomock_server):
    from softening.stores import describe_store

    monkeypatch.setenv("SOFTENING_STORE", "mongodb")
    monkeypatch.setenv("SOFTENING_MONGO_HOST", "db.example.org")
    monkeypatch.setenv("SOFTENING_MONGO_PORT", "27018")
    monkeypatch.setenv("SOFTENING_MONGO_DATABASE", "soft")
    monkeypatch.setenv("SOFTENING_MONGO_USERNAME", "bob")
    monkeypatch.setenv("SOFTENING_MONGO_PASSWORD", "pa55")
    get_settings.cache_clear()
    store = get_job_store()
    docs = store.docs_store
    assert (docs.host, docs.port, docs.database, docs.username) == (
        "db.example.org",
        27018,
        "soft",
        "bob",
    )
    assert docs.password == "pa55"
    assert describe_store(store) == "mongodb://bob@db.example.org:27018/soft"
    # A URI without credentials takes them from the settings (not from the command line).
    uri_store = get_job_store("mongodb://db.example.org/other")
    kwargs = uri_store.docs_store.mongoclient_kwargs
    assert (kwargs["username"], kwargs["password"], uri_store.docs_store.database) == (
        "bob",
        "pa55",
        "other",
    )
    uri_store.connect()  # mongomock accepts anything: checks the wiring only
    assert "pa55" not in describe_store(uri_store)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("ftp://u:pw@host/x", ["ftp", "u:***@host"]),
        ("mongodb://u:pw@", ["mongodb://u:***@"]),
        ("{tmp}/missing.yaml", ["missing.yaml", "does not exist"]),
        ("{tmp}/plain-file", ["is a file"]),
        ("{tmp}/nodata.yaml", ["no additional store named 'data'"]),
        ("{tmp}/badtype.yaml", ["unknown store type", "NoSuchStore"]),
        ("{tmp}/notyaml.yaml", ["store config"]),
    ],
)
def test_bad_store_specs_are_one_line_errors(tmp_path, spec, words):
    (tmp_path / "plain-file").write_text("x")
    (tmp_path / "nodata.yaml").write_text(
        "docs_store: {type: MemoryStore, collection_name: outputs}\n"
    )
    (tmp_path / "badtype.yaml").write_text(
        "docs_store: {type: NoSuchStore, collection_name: outputs}\n"
    )
    (tmp_path / "notyaml.yaml").write_text("[1, 2\n")
    with pytest.raises(InputError) as err:
        get_job_store(spec.format(tmp=tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "pw" not in msg.replace("***", "")
    for w in words:
        assert w in msg


def test_unreachable_mongodb_is_one_line_without_password(tmp_path):
    """Through the CLI: a real pymongo client, no server (port 1), a short timeout."""
    import subprocess
    import sys

    env = {**os.environ, "SOFTENING_MONGO_TIMEOUT": "0.3"}
    res = subprocess.run(
        [sys.executable, "-m", "softening.cli", "query", "--store",
         "mongodb://carol:hunter2@127.0.0.1:1/softening"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 1
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: cannot use mongodb://carol:***@127.0.0.1:1/softening")
    assert "hunter2" not in res.stderr + res.stdout


def test_yaml_store_configs(tmp_path):
    """jobflow's JobStore file layout (plain, and under JOB_STORE); a Mongo-like data store gets chunked."""
    plain = tmp_path / "store.yaml"
    plain.write_text(
        f"docs_store:\n  type: MontyStore\n  collection_name: outputs\n"
        f"  database_path: {tmp_path / 'db'}\n"
        f"additional_stores:\n  data:\n    type: MontyStore\n    collection_name: blobs\n"
        f"    database_path: {tmp_path / 'db'}\n"
    )
    store = get_job_store(plain)
    data = store.additional_stores["data"]
    assert isinstance(data, ChunkedStore) and data.chunks.collection_name == "blobs_chunks"
    nested = tmp_path / "jobflow.yaml"
    nested.write_text(
        "JOB_STORE:\n  docs_store: {type: MemoryStore, collection_name: outputs}\n"
        "  additional_stores:\n    data: {type: MemoryStore, collection_name: data}\n"
    )
    store2 = get_job_store(nested)
    assert isinstance(store2.additional_stores["data"], ChunkedStore)
    # And the arrays round-trip through it.
    out = run_locally(_trajectory(50, 20, 3), store=store, log=False, ensure_success=True)
    doc = store.query_one({"uuid": next(iter(out))}, load=True)
    assert np.array_equal(np.asarray(doc["output"]["forces"]), _expected(50, 20, 3)["forces"])


# ---- the chunking data store ---------------------------------------------------------------------


@pytest.fixture
def chunked(tmp_path):
    from maggma.stores import MontyStore

    kw = {"database_path": str(tmp_path), "database_name": "t"}
    store = ChunkedStore(
        MontyStore("data", key="blob_uuid", **kw),
        MontyStore("data_chunks", key="files_key", **kw),
        chunk_bytes=64 * 1024,
        inline_bytes=16 * 1024,
    )
    store.connect()
    return store


def test_chunked_store_small_docs_stay_plain(chunked):
    chunked.update({"blob_uuid": "a", "data": [1.0, 2.0], "job_uuid": "j"})
    assert chunked.store.query_one({"blob_uuid": "a"})["data"] == [1.0, 2.0]
    assert chunked.chunks.count() == 0


def test_chunked_store_round_trip_replace_remove(chunked):
    rng = np.random.default_rng(3)
    big = rng.normal(size=(400, 30, 3))
    big[0, 0, 0], big[0, 0, 1], big[0, 0, 2] = np.nan, np.inf, -0.0
    chunked.update({"blob_uuid": "b", "data": big.tolist(), "job_uuid": "j", "job_index": 1})
    n_chunks = chunked.chunks.count({"files_key": "b"})
    assert n_chunks > 2
    head = chunked.store.query_one({"blob_uuid": "b"})
    assert "data" not in head and head["job_uuid"] == "j"
    back = np.asarray(chunked.query_one({"blob_uuid": {"$in": ["b"]}})["data"])
    assert np.array_equal(back, big, equal_nan=True) and np.signbit(back[0, 0, 2])
    # properties without the payload do not read the chunks
    assert "data" not in chunked.query_one({"blob_uuid": "b"}, properties=["job_uuid"])
    # a smaller replacement drops the surplus chunks
    chunked.update({"blob_uuid": "b", "data": big[:150].tolist(), "job_uuid": "j"})
    assert 0 < chunked.chunks.count({"files_key": "b"}) < n_chunks
    assert np.array_equal(
        np.asarray(chunked.query_one({"blob_uuid": "b"})["data"]), big[:150], equal_nan=True
    )
    # what jobflow calls when it removes a job's outputs
    chunked.remove_docs({"job_uuid": "j"})
    assert chunked.count() == 0 and chunked.chunks.count() == 0


def test_chunked_store_other_types_and_damage(chunked):

    when = datetime(2025, 1, 2, 3, 4, 5)
    payload = {"t": when, "x": list(range(20000))}
    chunked.update({"blob_uuid": "c", "data": payload})
    assert chunked.query_one({"blob_uuid": "c"})["data"] == payload  # BSON fallback
    chunked.chunks.remove_docs({"files_key": "c", "n": 0})
    with pytest.raises(OSError, match="chunks found"):
        chunked.query_one({"blob_uuid": "c"})


# ---- trajectory-size arrays through jobflow, in each store kind ----------------------------------

N_FRAMES, N_ATOMS = 10_000, 200  # 20 ps at 2 fs per frame, 200 atoms


@job(data=["positions", "forces", "velocities"])
def _trajectory_job(n_frames: int, n_atoms: int, seed: int) -> dict:
    return _expected(n_frames, n_atoms, seed)


def _trajectory(n_frames: int, n_atoms: int, seed: int):
    return _trajectory_job(n_frames, n_atoms, seed)


def _expected(n_frames: int, n_atoms: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (n_frames, n_atoms, 3)
    return {
        "positions": rng.uniform(0.0, 15.0, size=shape),  # Å
        "forces": rng.normal(0.0, 1.5, size=shape),  # eV/Å
        "velocities": rng.normal(0.0, 0.05, size=shape),  # Å/fs
    }


def _store_trajectory_and_check(spec: str, kind: str, client_cls=None) -> dict[str, float]:
    store = get_job_store(spec)
    j = _trajectory(N_FRAMES, N_ATOMS, 7)
    t0 = time.perf_counter()
    run_locally(j, store=store, log=False, ensure_success=True)
    t1 = time.perf_counter()
    doc = store.query_one({"uuid": j.uuid}, load=True)
    t2 = time.perf_counter()
    expected = _expected(N_FRAMES, N_ATOMS, 7)
    for name, arr in expected.items():
        assert np.array_equal(np.asarray(doc["output"][name], dtype=float), arr), name
    del doc
    # The outputs document holds references only; the arrays went to the data store.
    raw = store.query_one({"uuid": j.uuid}, load=False)["output"]
    assert all("blob_uuid" in raw[name] for name in expected)
    if kind == "embedded":
        sizes, limit = _largest_rows(spec), SQLITE_LIMIT
    else:
        sizes, limit = _largest_documents(_database(kind, spec, client_cls)), MONGO_LIMIT
    assert sizes, "no collection found"
    largest = max(s for _, s in sizes.values())
    assert largest < limit, sizes
    timings = {"write_s": t1 - t0, "read_s": t2 - t1, "largest_doc_MB": largest / 1e6}
    print(f"\n{kind}: {timings} {sizes}")
    return timings


@pytest.mark.slow  # ~30-40 s each, nearly all in jobflow's sanitising of 18 million floats
def test_trajectory_arrays_embedded_store(tmp_path):
    timings = _store_trajectory_and_check(str(tmp_path / "db"), "embedded")
    # One compressed row per blob (no chunks): three 10,000 x 200 x 3 float arrays.
    assert timings["largest_doc_MB"] < 200.0


@pytest.mark.slow
def test_trajectory_arrays_mongomock_gridfs(mongomock_server):
    _store_trajectory_and_check(MOCK_URI, "mongomock", mongomock_server)


REAL_URI = os.environ.get("SOFTENING_TEST_MONGODB_URI")


@pytest.mark.skipif(
    not REAL_URI,
    reason="SOFTENING_TEST_MONGODB_URI is not set: no MongoDB server to test against "
    "(none can be installed on these machines)",
)
def test_real_mongodb_server():
    """Blobs, indexes, query and builder on a real server, in a throw-away database."""
    import pymongo
    from pymongo import uri_parser

    parsed = uri_parser.parse_uri(REAL_URI)
    db_name = f"softening_test_{uuidlib.uuid4().hex[:8]}"
    head, _, tail = REAL_URI.partition("?")
    base = head.rstrip("/")
    if parsed["database"]:
        base = base[: -len(parsed["database"]) - 1]
    uri = f"{base}/{db_name}" + (f"?{tail}" if tail else "")
    client = pymongo.MongoClient(uri)
    try:
        _store_trajectory_and_check(uri, "mongodb")
        store = get_job_store(uri)
        store.connect()
        assert all(store.indexes.values()), store.indexes
        _check_builder(store)
    finally:
        client.drop_database(db_name)


# ---- indexes -------------------------------------------------------------------------------------


def test_indexes_on_mongomock(mongomock_server):
    store = get_job_store(MOCK_URI)
    store.connect()
    assert store.indexes and all(store.indexes.values()), store.indexes
    info = store.docs_store._collection.index_information()
    for field in ("output.material_id", "output.formula", "output.chemsys", "output.elements",
                  "output.model.name", "output.scale"):  # fmt: skip
        assert f"{field}_1" in info


def test_embedded_store_has_indexes_and_queries(tmp_path):
    from softening.stores.factory import INDEXED_FIELDS

    store = get_job_store(tmp_path / "db")
    store.connect()
    # The embedded SQLite store indexes every field the factory asks for.
    assert store.indexes and all(store.indexes.values()), store.indexes
    _insert_docs(store, [_doc("Cu", "m1", 0.9, ["Cu"])])
    assert set(INDEXED_FIELDS) <= set(store.docs_store.indexes())
    assert {"blob_uuid", "job_uuid"} <= set(store.additional_stores["data"].indexes())
    assert [r["material_id"] for r in query_results(store, elements=["Cu"])] == ["Cu"]


def test_query_api_filters(tmp_path):
    store = get_job_store(tmp_path / "db")
    _insert_docs(
        store,
        [
            _doc("mp-1", "CHGNet-0.3.0", 0.85, ["Cu", "O"], formula="CuO"),
            _doc("mp-2", "CHGNet-0.3.0", 1.02, ["Cu"], formula="Cu"),
            _doc("mp-3", "M3GNet-MP-2021.2.8-PES", 0.7, ["Li", "O"], formula="Li2O"),
            _doc("pooled", "CHGNet-0.3.0", 0.9, ["Cu", "O"], formula=""),
        ],
    )

    def ids(**kw):
        return [r["material_id"] for r in query_results(store, **kw)]

    assert ids() == ["mp-1", "mp-2", "mp-3"]
    assert ids(include_pooled=True) == ["mp-1", "mp-2", "mp-3", "pooled"]
    assert ids(formula="OCu") == ["mp-1"]
    assert ids(chemsys="O-Cu") == ["mp-1"] and ids(chemsys="Cu") == ["mp-2"]
    assert ids(elements=["O"]) == ["mp-1", "mp-3"]
    assert ids(elements=["O", "Cu"]) == ["mp-1"]
    assert ids(model="chgnet") == ["mp-1", "mp-2"] and ids(model="chgnet-0.3.0") == ["mp-1", "mp-2"]
    assert ids(model="M3GNet-MP-2021.2.8-PES") == ["mp-3"]
    assert ids(scale_min=0.8, scale_max=1.0) == ["mp-1"]
    assert ids(scale_max=0.8) == ["mp-3"]
    r = query_results(store, material_id="mp-1")[0]
    assert r["forces_ml"] is None and "@class" not in r and r["uuid"]
    with pytest.raises(InputError, match="not an element"):
        query_results(store, elements=["Xx"])


# ---- the builder ---------------------------------------------------------------------------------


def _check_builder(store) -> None:
    """Incremental processing, failure recording and retry; summaries checked against numpy."""
    from softening.stores import builders
    from softening.stores.builders import build_summaries
    from softening.stores.queries import query_summaries

    docs = [
        _doc("A", "CHGNet-0.3.0", 0.80, ["Cu", "O"], mae=0.3),
        _doc("B", "CHGNet-0.3.0", 0.90, ["Cu"], mae=0.2),
        _doc("C", "CHGNet-0.3.0", 1.05, ["Li", "O"], mae=0.1),
        _doc("D", "M3GNet-MP-2021.2.8-PES", 0.70, ["Cu", "O"], mae=0.4),
    ]
    uuids = _insert_docs(store, docs)
    stats = build_summaries(store)
    assert (stats.processed, stats.failed, stats.unchanged) == (4, 0, 0)
    assert stats.summaries == {"models": 2, "elements": 5, "chemsys": 4}
    chg = query_summaries(store, "models", model="CHGNet-0.3.0")[0]
    s = np.array([0.80, 0.90, 1.05])
    assert chg["n_materials"] == 3 and chg["fraction_softened"] == pytest.approx(2 / 3)
    assert chg["scale_quantiles"]["p50"] == pytest.approx(np.median(s))
    assert chg["scale_mean"] == pytest.approx(s.mean()) and sum(chg["histogram"]["counts"]) == 3
    assert chg["mae_mean"] == pytest.approx(0.2) and chg["softest"][0] == "A"
    o = next(d for d in query_summaries(store, "elements") if d["summary_id"] == "CHGNet-0.3.0|O")
    assert o["n_materials"] == 2 and o["scale_mean"] == pytest.approx((0.80 + 1.05) / 2)

    # Nothing changed: nothing processed.
    stats = build_summaries(store)
    assert (stats.processed, stats.unchanged) == (0, 4)

    # One new document: only it is processed; its groups are updated.
    (new,) = _insert_docs(store, [_doc("E", "CHGNet-0.3.0", 0.60, ["Cu", "O"])])
    stats = build_summaries(store)
    assert stats.processed_uuids == [new] and stats.unchanged == 4
    assert query_summaries(store, "models", model="CHGNet-0.3.0")[0]["n_materials"] == 4

    # One modified document: only it is processed.
    _insert_docs(store, [_doc("B", "CHGNet-0.3.0", 0.95, ["Cu"])], uuids=[uuids[1]])
    stats = build_summaries(store)
    assert stats.processed_uuids == [uuids[1]] and stats.unchanged == 4
    cu = next(d for d in query_summaries(store, "chemsys") if d["summary_id"] == "CHGNet-0.3.0|Cu")
    assert cu["scale_mean"] == pytest.approx(0.95)

    # A bad document fails, is recorded with its error, and the build goes on.
    bad = jsanitize(_doc("F", "CHGNet-0.3.0", 0.5, ["Cu"]), strict=True, allow_bson=True)
    bad["scale"] = "not a number"
    (bad_uuid,) = _insert_docs(store, [bad])
    stats = build_summaries(store)
    assert stats.processed_uuids == [bad_uuid] and stats.failed == 1
    assert "scale" in stats.errors[bad_uuid]
    inputs = builders.summary_stores(store)["inputs"]
    inputs.connect()
    record = inputs.query_one({"uuid": bad_uuid})
    assert record["state"] == "failed" and "scale" in record["error"]
    # Unfixed, it is retried (and fails again, counted as a second attempt).
    stats = build_summaries(store)
    assert (stats.processed, stats.failed, stats.retried) == (1, 1, 1)
    assert inputs.query_one({"uuid": bad_uuid})["attempts"] == 2
    # Fixed, it succeeds.
    bad["scale"] = 0.5
    _insert_docs(store, [bad], uuids=[bad_uuid])
    stats = build_summaries(store)
    assert (stats.processed, stats.failed, stats.retried) == (1, 0, 1)
    assert query_summaries(store, "models", model="CHGNet-0.3.0")[0]["n_materials"] == 5

    # A transient failure (the document itself is fine) is retried without any change to it.
    (flaky,) = _insert_docs(store, [_doc("G", "CHGNet-0.3.0", 0.99, ["Cu"])])
    real = builders.summary_record
    calls = {"n": 0}

    def fail_once(output):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return real(output)

    builders.summary_record = fail_once
    try:
        assert build_summaries(store).errors == {flaky: "RuntimeError: database hiccup"}
        stats = build_summaries(store)
        assert stats.processed_uuids == [flaky] and stats.retried == 1 and not stats.errors
    finally:
        builders.summary_record = real

    # A removed document is dropped, and so are the groups only it had.
    store.docs_store.remove_docs({"uuid": uuids[3]})
    stats = build_summaries(store)
    assert stats.removed == 1 and stats.processed == 0
    assert [d["model"] for d in query_summaries(store, "models")] == ["CHGNet-0.3.0"]
    assert not query_summaries(store, "elements", model="M3GNet-MP-2021.2.8-PES")


def test_builder_incremental_embedded(tmp_path):
    _check_builder(get_job_store(tmp_path / "db"))


def test_builder_incremental_mongomock(mongomock_server):
    _check_builder(get_job_store(MOCK_URI))


# ---- query, build and report on results of `softening run` and `softening evaluate` --------------


def _cli(*args):
    from typer.testing import CliRunner

    from softening.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _write_results(spec: str, tmp: Path, evaluate: bool = True) -> None:
    """`softening run` (EMT references, short MD) and `softening evaluate` (WBM frames) into a store."""
    from pymatgen.core import Lattice, Structure

    cif = tmp / "Cu.cif"
    (Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)).to(
        filename=str(cif)
    )
    _cli("run", cif, "--reference", "emt", "--steps", "30", "--stride", "2", "--frames", "4",
         "--strained", "1", "--store", spec, "--out", tmp / "run-out", "--json")  # fmt: skip
    if evaluate:
        _cli("evaluate", WBM_XYZ, "--model", "chgnet", "--store", spec, "--json")


def _check_query_and_report(spec: str, tmp: Path) -> None:
    results = query_results(spec)
    ids = {r["material_id"] for r in results}
    # The Cu run (id: formula plus structure hash) and 14 WBM compositions.
    (cu_id,) = [i for i in ids if re.fullmatch(r"Cu-[0-9a-f]{6}", i)]
    assert len(ids) == 15
    assert all(r["model"]["name"] == "CHGNet-0.3.0" for r in results)
    cu = query_results(spec, material_id=cu_id, with_forces=True)[0]
    assert np.asarray(cu["forces_ref"]).shape == (32, 3) and cu["reference"]["name"] == "emt"
    assert len(query_results(spec, include_pooled=True)) == 16

    # CLI query: json, csv and table agree.
    as_json = json.loads(_cli("query", "--store", spec, "--format", "json").stdout)
    assert sorted(r["material_id"] for r in as_json) == sorted(ids)
    lines = _cli("query", "--store", spec, "--format", "csv", "--element", "Y").stdout.splitlines()
    assert lines[0].startswith("material_id,formula,chemsys,model")
    with_y = [r for r in results if "Y" in r["elements"]]
    assert len(lines) - 1 == len(with_y) > 0
    soft = _cli("query", "--store", spec, "--scale-max", "0.999", "--format", "json").stdout
    assert all(r["scale"] <= 0.999 for r in json.loads(soft))
    table = _cli("query", "--store", spec, "--formula", "Cu", "--model", "chgnet").stdout
    assert "Cu" in table and "CHGNet-0.3.0" in table and "emt" in table

    # Builder over the same results.
    built = json.loads(_cli("build", "--store", spec, "--json").stdout)
    assert built["stats"]["processed"] == 15 and built["models"][0]["n_materials"] == 15

    # Report: a parity plot per material and model, Fig. 5b and Fig. 6b.
    out = tmp / "report"
    rep = json.loads(_cli("report", "--store", spec, "--out", out, "--json").stdout)
    assert len(rep["files"]["parity"]) == 15
    for f in [
        *rep["files"]["parity"],
        rep["files"]["scale_distribution"],
        rep["files"]["mae_vs_cmae"],
    ]:
        assert Path(f).stat().st_size > 5000
    assert (out / "parity" / f"parity_{cu_id}_CHGNet-0.3.0.png").is_file()
    # Fig. 6b leaves out exactly the results whose scale CI reaches 0 (cMAE meaningless there).
    uncorrelated = [
        f"{r['material_id']} ({r['model']['name']})" for r in results if r["scale_ci"][0] <= 0
    ]
    assert sorted(rep["files"]["mae_vs_cmae_excluded"]) == sorted(uncorrelated)


@needs(WBM_XYZ)
def test_query_report_embedded_store(tmp_path):
    spec = str(tmp_path / "db")
    _write_results(spec, tmp_path)
    _check_query_and_report(spec, tmp_path)


@needs(WBM_XYZ)
def test_query_report_mongomock_store(tmp_path, mongomock_server):
    _write_results(MOCK_URI, tmp_path)
    _check_query_and_report(MOCK_URI, tmp_path)
    # Nothing of the password in the run summary either.
    summary = (tmp_path / "run-out" / "summary.json").read_text()
    assert "s3cret" not in summary and "alice:***@mockhost" in summary


@needs(WBM_XYZ)
def test_evaluate_into_yaml_store_config(tmp_path):
    db = tmp_path / "db"
    cfg = tmp_path / "store.yaml"
    cfg.write_text(
        f"docs_store: {{type: MontyStore, collection_name: outputs, database_path: {db}}}\n"
        f"additional_stores:\n  data: {{type: MontyStore, collection_name: data, "
        f"database_path: {db}}}\n"
    )
    _cli("evaluate", WBM_XYZ, "--model", "chgnet", "--store", cfg, "--json")
    rows = json.loads(_cli("query", "--store", cfg, "--format", "json", "-e", "Y").stdout)
    assert sorted(r["material_id"] for r in rows) == ["Y2Ge", "Y2SiAg", "YCo3Pt2"]
    f_ref, f_ml = load_forces(str(cfg), rows[0]["uuid"])
    assert f_ref.shape == f_ml.shape and f_ref.shape[1] == 3


def test_query_needs_an_existing_embedded_store(tmp_path):
    from typer.testing import CliRunner

    from softening.cli import app

    res = CliRunner().invoke(app, ["query", "--store", str(tmp_path / "nope")])
    assert res.exit_code != 0 and isinstance(res.exception, SofteningError)
    assert not (tmp_path / "nope").exists()


def test_chunked_store_projection_and_groupby(chunked):
    big = np.arange(30000.0).tolist()
    chunked.update(
        [{"blob_uuid": "p", "data": big, "g": 1}, {"blob_uuid": "q", "data": [1.0], "g": 1}]
    )
    assert chunked.query_one({"blob_uuid": "p"}, properties=["data"])["data"] == big
    ((group, docs),) = list(chunked.groupby("g", properties=["data"]))
    assert group == {"g": 1} and sorted(len(d["data"]) for d in docs) == [1, 30000]
    assert chunked.distinct("blob_uuid") == ["p", "q"] and chunked.count({"g": 1}) == 2
