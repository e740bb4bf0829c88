"""Hostile store specs: system folders, malformed URIs with passwords, env credentials, read-only stores.

No MongoDB server runs here: URIs are checked by parsing, and the connection parameters by the
lazy pymongo client maggma's MongoStore builds on ``connect()`` (it contacts nobody until a query).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI, ROOT, WBM_XYZ, needs
from documents import _doc, _insert_docs
from typer.testing import CliRunner

from softening.errors import InputError, SofteningError
from softening.settings import get_settings, redact, store_kind
from softening.stores import describe_store, get_job_store

SECRET = "PWs3cret42"
MALFORMED = [
    f"mongodb:/alice:{SECRET}@host/db",
    f"mongodb:alice:{SECRET}@host/db",
    f"mongodb//alice:{SECRET}@host/db",
    f"mongodb+srv:/alice:{SECRET}@cluster0.example.net/db",
    f"alice:{SECRET}@host/db",
    f"./alice:{SECRET}@host/db",
    f"s3://alice:{SECRET}@bucket/x",
]


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``softening ARGS`` in a fresh interpreter, run from ``cwd`` (where nothing may appear)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _one_error_line(res: subprocess.CompletedProcess, *words: str) -> str:
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---- item 11: a store is never the root or a system folder ---------------------------------------


@pytest.mark.parametrize(
    "target", ["/", "/etc", "/usr/lib/softening", "/var/lib/softening", "/proc", "/root"]
)
def test_store_in_a_system_folder_is_refused(tmp_path, target):
    link = tmp_path / "store-link"
    link.symlink_to(target)
    # Opening an existing folder writes nothing before the first write; a missing one would be
    # made by get_job_store (were the check broken): only classified, which creates nothing.
    call = get_job_store if Path(target).exists() else store_kind
    for spec in (str(link), target):
        with pytest.raises(InputError) as err:
            call(spec)
        msg = str(err.value)
        assert "\n" not in msg and "give a folder of its own" in msg
    assert not Path(target, "softening.sqlite").exists()
    assert not Path("/usr/lib/softening").exists() and not Path("/var/lib/softening").exists()


def test_tmp_and_ordinary_folders_stay_stores(tmp_path, monkeypatch):
    from softening.settings import check_store_folder

    monkeypatch.chdir(tmp_path)
    for spec in (
        "softening-db",
        "./a:b",
        str(tmp_path / "x" / "y"),
        "/var/tmp/sft-x",
        "/dev/shm/x",
    ):
        assert store_kind(spec) == "embedded", spec
    assert check_store_folder("softening-db") == tmp_path / "softening-db"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    store = get_job_store(link)
    _insert_docs(store, [_doc("Si", "chgnet", 0.9, ["Si"])])
    store.close()
    assert (tmp_path / "real" / "softening.sqlite").is_file()


@needs(WBM_XYZ)
def test_symlink_to_a_system_folder_through_the_cli_writes_nothing(tmp_path):
    # /proc rather than /: were the check broken, nothing could be written there either.
    (tmp_path / "sys-link").symlink_to("/proc")
    res = _cli(tmp_path, "evaluate", str(WBM_XYZ), "--model", "chgnet", "--store", "sys-link")
    _one_error_line(res, "sys-link", "system folder /proc")
    assert not Path("/proc/softening.sqlite").exists()


# ---- item 12: a URI-like spec is never a folder, and never shows its password --------------------


@pytest.mark.parametrize("spec", MALFORMED)
def test_malformed_uris_are_refused_redacted_without_a_folder(tmp_path, monkeypatch, spec):
    from softening.models.trust import models_folder
    from softening.stores.queries import store_exists

    monkeypatch.chdir(tmp_path)
    for call in (get_job_store, store_kind, store_exists, models_folder, describe_store):
        with pytest.raises(InputError) as err:
            call(spec)
        msg = str(err.value)
        assert SECRET not in msg and "\n" not in msg
        assert "alice:***@" in msg, msg
    assert list(tmp_path.iterdir()) == []


def test_redact_hides_passwords_of_malformed_uris():
    assert redact(f"mongodb:/alice:{SECRET}@host/db") == "mongodb:/alice:***@host/db"
    assert redact(f"x 'alice:{SECRET}@h/db' y") == "x 'alice:***@h/db' y"
    for text in ("mongodb://alice@host/db", "git@github.com:o/r", "a: b@c", "./softening-db"):
        assert redact(text) == text


@needs(WBM_XYZ)
@pytest.mark.parametrize("command", ["query", "build", "report", "evaluate"])
def test_cli_never_prints_the_password_nor_creates_a_folder(tmp_path, command):
    spec = f"mongodb:/alice:{SECRET}@host/db"
    args = [str(WBM_XYZ), "--model", "chgnet"] if command == "evaluate" else []
    res = _cli(tmp_path, command, *args, "--store", spec)
    line = _one_error_line(res, "mongodb:/alice:***@host/db", "not a valid MongoDB URI")
    assert SECRET not in res.stdout + res.stderr, line
    assert list(tmp_path.iterdir()) == []


def test_doctor_reports_a_malformed_uri_as_one_failed_store_line(tmp_path, monkeypatch):
    from softening.cli import app
    from softening.models import health as models_health

    monkeypatch.setattr(models_health, "check_model", lambda spec: lambda: f"{spec} (stub)")
    monkeypatch.setenv("SOFTENING_REFERENCE", "emt")
    monkeypatch.setenv("SOFTENING_MONGO_PASSWORD", "envPWsecret")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    spec = f"mongodb:/alice:{SECRET}@host/db"
    res = CliRunner().invoke(app, ["doctor", "--json", "--store", spec])
    assert SECRET not in res.output and "envPWsecret" not in res.output
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["store"]["status"] == "fail"
    assert "mongodb:/alice:***@host/db" in checks["store"]["detail"]
    assert checks["store integrity"]["status"] == "skip"
    assert res.exit_code == 1 and list(tmp_path.iterdir()) == []


# ---- item 13: SOFTENING_MONGO_PASSWORD joins a URI that names the user ---------------------------


def _credentials(store):
    """The credentials of the pymongo client maggma builds (lazy: no server is contacted)."""
    store.connect()
    # A MongoStore's collection, or a GridFS store's files collection.
    coll = getattr(store, "_files_collection", None)
    coll = store._coll if coll is None else coll
    client = coll.database.client
    try:
        return client.options.pool_options._credentials
    finally:
        client.close()


@pytest.mark.parametrize("password", ["p@ss:w/rd %+&?=#", "plain"])
def test_env_password_joins_a_uri_with_a_user(monkeypatch, password):
    monkeypatch.setenv("SOFTENING_MONGO_PASSWORD", password)
    get_settings.cache_clear()
    uri = "mongodb://alice@db.example.invalid:27017/softening"
    job_store = get_job_store(uri)
    for store in (job_store.docs_store, job_store.additional_stores["data"]):
        cred = _credentials(store)
        assert (cred.username, cred.password, cred.source) == ("alice", password, "softening")
        # The URI (maggma's name of the store) stays without the password.
        assert store.uri == uri and password not in store.name
    assert password not in describe_store(job_store) and password not in repr(get_settings())


def test_env_credentials_precedence(monkeypatch):
    monkeypatch.setenv("SOFTENING_MONGO_USERNAME", "bob")
    monkeypatch.setenv("SOFTENING_MONGO_PASSWORD", "envpw")
    monkeypatch.setenv("SOFTENING_MONGO_AUTH_SOURCE", "users")
    get_settings.cache_clear()
    # A password in the URI wins; the URI's own authSource too.
    cred = _credentials(
        get_job_store("mongodb://alice:uripw@h.invalid/db?authSource=admin").docs_store
    )
    assert (cred.username, cred.password, cred.source) == ("alice", "uripw", "admin")
    # A user in the URI wins over the username setting; the auth source setting applies.
    cred = _credentials(get_job_store("mongodb://carol@h.invalid/db").docs_store)
    assert (cred.username, cred.password, cred.source) == ("carol", "envpw", "users")
    # No user in the URI: both from the settings.
    cred = _credentials(get_job_store("mongodb://h.invalid/db").docs_store)
    assert (cred.username, cred.password, cred.source) == ("bob", "envpw", "users")
    # mongodb+srv would resolve DNS on connect: the client options are checked instead.
    kwargs = get_job_store("mongodb+srv://dave@c.example.net/db").docs_store.mongoclient_kwargs
    assert kwargs["password"] == "envpw" and "username" not in kwargs


# ---- item 14c: a store on a read-only folder is read, and refuses writes in one line ----------------


def _chattr(flag: str, *paths: Path) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    res = subprocess.run([chattr, flag, *map(str, paths)], capture_output=True)
    return res.returncode == 0


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` and its files made read-only: chmod, or as root (whom chmod does not stop)
    ``chattr +i``, which stops root too; skipped when neither can."""
    files = sorted(folder.iterdir())
    if os.geteuid() != 0:
        for p in (*files, folder):
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in (folder, *files):
                p.chmod(0o755 if p.is_dir() else 0o644)
        return
    if not _chattr("+i", *files, folder):
        pytest.skip(
            "running as root, where chmod does not stop writes, and chattr +i is not available "
            "on this filesystem: the read-only store is covered by the monkeypatched test"
        )
    try:
        yield
    finally:
        _chattr("-i", folder, *files)


def _store_with_results(folder: Path):
    store = get_job_store(folder)
    _insert_docs(
        store, [_doc("Si", "chgnet", 0.9, ["Si"]), _doc("MgO", "chgnet", 0.8, ["Mg", "O"])]
    )
    store.close()
    # Closed cleanly: the WAL is folded into the file, no -wal/-shm left (what a copy ships).
    assert sorted(p.name for p in folder.iterdir()) == ["softening.sqlite"]


def test_read_only_store_folder_is_queried_and_refuses_writes(tmp_path):
    from softening.stores.queries import open_store, query_results

    folder = tmp_path / "db"
    _store_with_results(folder)
    with _read_only(folder):
        assert not os.access(folder, os.W_OK)
        store = open_store(str(folder))
        try:
            assert sorted(r["material_id"] for r in query_results(store)) == ["MgO", "Si"]
            assert store.docs_store._database().readonly
            with pytest.raises(SofteningError, match="read-only here") as err:
                _insert_docs(store, [_doc("Cu", "chgnet", 0.7, ["Cu"])])
            assert "\n" not in str(err.value)
        finally:
            store.close()
        res = _cli(tmp_path, "query", "--store", str(folder), "--format", "json")
        assert res.returncode == 0, res.stderr
        assert sorted(r["material_id"] for r in json.loads(res.stdout)) == ["MgO", "Si"]
        _one_error_line(_cli(tmp_path, "build", "--store", str(folder)), "read-only here")
        assert sorted(p.name for p in folder.iterdir()) == ["softening.sqlite"]


def test_read_only_open_without_privileges(tmp_path, monkeypatch):
    """Whoever runs the tests: the store takes the read-only path when it may not write."""
    import softening.stores.sqlite.connection as sqlite_connection

    folder = tmp_path / "db"
    _store_with_results(folder)
    monkeypatch.setattr(sqlite_connection, "_writable", lambda path: False)
    store = get_job_store(folder)
    store.connect()
    try:
        assert store.docs_store._database().readonly
        assert store.docs_store.count() == 2
        with pytest.raises(SofteningError, match="read-only here"):
            _insert_docs(store, [_doc("Cu", "chgnet", 0.7, ["Cu"])])
    finally:
        store.close()


def test_read_only_mount_through_the_cli(tmp_path):
    """The issue's case: a read-only bind mount (needs mount namespaces; skipped without)."""
    unshare = shutil.which("unshare")
    probe = subprocess.run(
        [unshare or "unshare", "-m", "sh", "-c", f"mount --bind -o ro {tmp_path} {tmp_path}"],
        capture_output=True,
    ) if unshare else None  # fmt: skip
    if probe is None or probe.returncode != 0:
        pytest.skip("no `unshare -m` with mount rights here: a read-only mount cannot be made")
    folder = tmp_path / "db"
    _store_with_results(folder)
    query = " ".join([sys.executable, "-c", "'from softening.cli import app; app()'"])
    script = (
        f"mount --bind -o ro {folder} {folder} && cd {tmp_path} && "
        f"{query} query --store {folder} --format json"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(r["material_id"] for r in json.loads(res.stdout)) == ["MgO", "Si"]
