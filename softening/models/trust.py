"""Which model files may be unpickled: loading a whole pickled model runs code from the file.

CHGNet checkpoints and matgl folders are loaded without unpickling code (``weights_only=True`` and
a check of the classes a matgl folder names). A whole pickled model (a MACE ``.model`` file) is
loaded only when one of these holds:

1. the user opted in: ``--trust-model-file``, the setting ``trust_model_files`` or the variable
   ``SOFTENING_TRUST_MODEL_FILES=1``;
2. its SHA-256 is in :data:`KNOWN_MODEL_SHA256` (published weights, built into the package);
3. this process wrote the file (:func:`record_written_model`), or vouched for it from a job's output
   in the user's store (:func:`trust_written_files`);
4. its SHA-256 is in the registry the package keeps beside the models it wrote
   (``<store>/models/softening-written-models.json``) of the store the user *named*: ``--store``
   (:func:`name_store`), ``SOFTENING_STORE`` or ``store:`` in the settings file.

A hash file shipped beside a model proves nothing (whoever wrote the model wrote the hash too), and
neither does the registry of the default store ``./softening-db`` found in the working directory:
anyone who can write a folder can write that file there.

Every torch archive is also checked for its unpacked size before it is read
(:func:`check_archive_size`): a small zip bomb would otherwise fill the memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path

from softening.errors import ModelError

#: SHA-256 of published whole-model files that may be unpickled without an opt-in.
#: To add an entry: download the file from its official source (e.g. MACE-MP-0 from
#: https://github.com/ACEsuit/mace-foundations/releases), check it against the checksum the
#: publisher gives, then add ``"<sha256sum of the file>": "<name, version, URL>"`` here. The hash
#: of a file is ``sha256sum FILE`` or ``softening.models.trust.file_sha256(FILE)``.
KNOWN_MODEL_SHA256: dict[str, str] = {}

#: Name of the registry of model files this package wrote, in a store's ``models`` folder.
REGISTRY_FILE = "softening-written-models.json"

#: Variable through which ``--store`` names the store to this process and the job processes it
#: starts (:func:`name_store`): the embedded store folder, absolute.
NAMED_STORE_ENV = "SOFTENING_NAMED_STORE"

_LOCK = threading.Lock()
# SHA-256 of model files this process wrote (or vouched for from a job's output): trusted here
# whatever folder they lie in, and nothing else of that folder.
_WRITTEN_SHA: set[str] = set()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of one file."""
    return sha256_of(path)


def sha256_of(paths: str | Path | Iterable[str | Path]) -> str:
    """SHA-256 over one file or several (in sorted order)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    digest = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def looks_like_torch(path: Path) -> bool:
    """Whether a file starts as torch files do: a zip archive, or a pickle (older torch)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith((b"PK\x03\x04", b"\x80"))


def load_problem(exc: BaseException, path: Path | None = None) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without torch's long advice."""
    text = str(exc)
    if "GLOBAL" in text or "Unsupported global" in text:
        return "it holds pickled code, not only weights (refused: loading it would run that code)"
    if "Weights only load failed" in text or (path is not None and not looks_like_torch(path)):
        return "not a torch weights file (random or corrupted bytes)"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"not a readable torch file, perhaps truncated ({type(exc).__name__}: {first[:160]})"


def is_pickled_code(path: Path) -> bool | None:
    """Whether ``path`` is a torch/pickle file that needs code to load (``True``), one that loads
    as plain weights (``False``), or not a readable torch file at all (``None``).

    Raises :class:`ModelError` for a file over the size limit (:func:`check_archive_size`)."""
    import torch

    check_archive_size(path)
    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        return True if "GLOBAL" in str(exc) or "Unsupported global" in str(exc) else None
    return False


def models_folder(store: str | Path | None = None) -> Path:
    """Where this package saves models (corrected models, their weights, the registry of written
    files): the ``models`` folder of the embedded store ``store`` (default: the ``store``
    setting), or ``./softening-models`` beside a database server.

    Raises
    ------
    InputError
        A store spec of an unknown kind.
    """
    from softening.settings import resolve_store_spec, store_kind

    spec = resolve_store_spec(store)
    if store_kind(spec) != "embedded":
        return Path("softening-models").resolve()
    return (Path(spec).expanduser() / "models").resolve()


def name_store(spec: str | Path) -> None:
    """Record ``spec`` as the store the user named (``--store``), for this process and the job
    processes it starts: the registry of model files softening wrote there is trusted.

    Only an embedded store (a folder) has such a registry; a database server's store names none.
    """
    from softening.settings import store_kind

    try:
        embedded = store_kind(spec) == "embedded"
    except Exception:  # an invalid spec: opening the store reports it
        embedded = False
    if embedded:
        os.environ[NAMED_STORE_ENV] = str(Path(spec).expanduser().resolve())
    else:
        os.environ.pop(NAMED_STORE_ENV, None)


def named_store_models_dir() -> Path | None:
    """The :func:`models_folder` of the store the user named, or ``None``.

    Named: ``--store`` (:func:`name_store`), ``SOFTENING_STORE`` or ``store:`` in the settings file;
    ``None`` for the default store (``./softening-db``, found in the working directory) and for a
    database server's store (its models folder is ``./softening-models``, in the working directory).
    """
    from softening.settings import get_settings, store_kind

    spec = os.environ.get(NAMED_STORE_ENV)
    if not spec:
        settings = get_settings()
        if "store" not in settings.model_fields_set:
            return None
        spec = settings.store
    try:
        if store_kind(spec) != "embedded":
            return None
        return models_folder(spec)
    except Exception:  # an unusual spec: no registry rather than an unrelated error here
        return None


def _registry(folder: Path) -> dict[str, str]:
    path = folder / REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_written_model(models_dir: str | Path, files: Iterable[str | Path]) -> None:
    """Record the SHA-256 of model files this package wrote under ``models_dir``.

    Call it right after writing a model (the fine-tune code does); later loads of those exact
    bytes need no opt-in, in this process, and in any process when ``models_dir`` is the models
    folder of the store the user named (:func:`named_store_models_dir`).

    Parameters
    ----------
    models_dir
        The store's ``models`` folder (the registry file is written there).
    files
        The files written.
    """
    folder = Path(models_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        entries = _registry(folder)
        for f in files:
            p = Path(f).resolve()
            sha = file_sha256(p)
            entries[sha] = str(p.relative_to(folder) if p.is_relative_to(folder) else p)
            _WRITTEN_SHA.add(sha)
        tmp = folder / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(folder / REGISTRY_FILE)  # atomic: a reader never sees half a file


def trust_written_files(files: Iterable[str | Path], sha256: str | None) -> bool:
    """Trust ``files`` in this process when their :func:`sha256_of` is ``sha256``.

    For a model a job of the same flow wrote in another process: ``sha256`` comes from that job's
    output in the user's store, so the files are the bytes the job wrote, not ones put beside them.

    Returns
    -------
    bool
        Whether the hash matched (the files are then trusted).
    """
    files = [Path(f) for f in files]
    if not sha256 or not files or sha256_of(files) != sha256:
        return False
    _WRITTEN_SHA.update(file_sha256(f) for f in files)
    return True


def trust_opted_in() -> bool:
    """Whether the user allowed unpickling model files (setting ``trust_model_files``)."""
    from softening.settings import get_settings

    return bool(get_settings().trust_model_files)


def allow_model_files() -> None:
    """Opt in to unpickling model files, for this process and the processes it starts.

    What ``--trust-model-file`` does: the environment variable reaches job worker processes too.
    """
    from softening.settings import get_settings

    os.environ["SOFTENING_TRUST_MODEL_FILES"] = "1"
    get_settings.cache_clear()


def why_trusted(path: str | Path, trust: bool = False) -> str | None:
    """Why the whole pickled model at ``path`` may be unpickled, or ``None`` when it may not.

    Parameters
    ----------
    path
        The model file.
    trust
        An explicit opt-in by the caller (the setting is consulted too).

    Returns
    -------
    str or None
        ``"opt-in"``, ``"known weights: ..."``, ``"written by softening"`` (this process) or
        ``"written by softening into <store>"``; ``None``: refuse.
    """
    if trust or trust_opted_in():
        return "opt-in"
    sha = file_sha256(path)
    if sha in KNOWN_MODEL_SHA256:
        return f"known weights: {KNOWN_MODEL_SHA256[sha]}"
    if sha in _WRITTEN_SHA:
        return "written by softening"
    named = named_store_models_dir()
    if named is not None and sha in _registry(named):
        return f"written by softening into {named.parent}"
    return None


def check_pickle_allowed(path: str | Path, what: str, trust: bool = False) -> str:
    """Raise :class:`ModelError` unless the pickled model file ``path`` may be loaded.

    Parameters
    ----------
    path
        The model file.
    what
        How to name it (e.g. ``"MACE model file"``).
    trust
        An explicit opt-in by the caller.

    Returns
    -------
    str
        Why it is trusted (see :func:`why_trusted`).

    Raises
    ------
    ModelError
        Not opted in, and the file's hash is neither a known published model's nor one this
        package wrote into the store the user named; the message says how to opt in.
    """
    reason = why_trusted(path, trust)
    if reason is None:
        raise ModelError(
            f"{what} {str(path)!r} is a whole pickled model: loading it runs code from the file, "
            "and its SHA-256 is not one of known published weights nor of a model softening wrote "
            "into the store you named (--store or SOFTENING_STORE; the registry of a default "
            "./softening-db found here is not trusted); if you trust the file, pass "
            "--trust-model-file (or set SOFTENING_TRUST_MODEL_FILES=1)"
        )
    return reason


#: Largest ratio of a model archive's unpacked size to its size on disk (torch stores its members
#: uncompressed, ratio 1; weights compressed by other tools shrink by less than 2x).
MAX_PACKING = 20
#: Unpacked sizes below this are never a bomb worth refusing, bytes.
MIN_PACKED_CHECK = 32 * 1024**2


def max_model_bytes() -> int:
    """The largest unpacked size of a model file, bytes (the setting ``max_model_gb``)."""
    from softening.settings import get_settings

    return int(float(get_settings().max_model_gb) * 1e9)


def check_archive_size(path: str | Path) -> None:
    """Refuse a model file that would unpack to more than ``max_model_gb`` before it is read.

    torch writes zip archives (its members stored, not compressed); the sizes their members
    declare are what torch's reader allocates and inflates, so a few MB of deflated zeros (a zip
    bomb) would take minutes and many GB of memory before any error. Refused: a declared size
    over ``max_model_gb``, or over :data:`MAX_PACKING` times the file's own size (weights do not
    compress like that; only a bomb does). A file that is not a zip archive is judged by its own
    size. Unreadable archives pass: torch's reader says what is wrong.

    Raises
    ------
    ModelError
        One line naming the file, its unpacked size and the limit.
    """
    path = Path(path)
    limit = max_model_bytes()
    try:
        on_disk = path.stat().st_size
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                size = sum(max(0, info.file_size) for info in archive.infolist())
        else:
            size = on_disk
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return
    if size > limit:
        raise ModelError(
            f"model file {str(path)!r} unpacks to {size / 1e9:.3g} GB, over the limit of "
            f"{limit / 1e9:g} GB (setting max_model_gb, SOFTENING_MAX_MODEL_GB): refused before "
            "reading it (a zip bomb, or a model larger than any this package knows)"
        )
    if size > max(MIN_PACKED_CHECK, MAX_PACKING * on_disk):
        raise ModelError(
            f"model file {str(path)!r} unpacks to {size / 1e9:.3g} GB from {on_disk / 1e6:.3g} MB "
            f"(over {MAX_PACKING}x; the limit of model files is {limit / 1e9:g} GB, setting "
            "max_model_gb): a zip bomb, refused before reading it; torch stores weights unpacked"
        )
