"""Which model files may be unpickled: loading a whole pickled model runs code from the file.

CHGNet checkpoints and matgl folders are loaded without unpickling code (``weights_only=True`` and
a check of the classes a matgl folder names). A whole pickled model (a MACE ``.model`` file) is
loaded only when one of these holds:

1. the user opted in: ``--trust-model-file``, the setting ``trust_model_files`` or the variable
   ``SOFTENING_TRUST_MODEL_FILES=1``;
2. its SHA-256 is in :data:`KNOWN_MODEL_SHA256` (published weights, built into the package);
3. its SHA-256 is in the registry the package keeps beside the models it wrote itself
   (``<store>/models/softening-written-models.json``, see :func:`record_written_model`).

A hash file shipped beside a model proves nothing (whoever wrote the model wrote the hash too), so
only the registry of the store this package writes to is consulted, and of folders this process
wrote models into.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
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

_LOCK = threading.Lock()
# Folders this process wrote models into (their registries are consulted even when they are not
# the configured store's, e.g. a CorrectionMaker with its own models_dir).
_WRITTEN_DIRS: set[Path] = set()


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
    as plain weights (``False``), or not a readable torch file at all (``None``)."""
    import torch

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


def store_models_dir() -> Path | None:
    """The :func:`models_folder` of the configured store, or ``None`` for an unusual store spec."""
    try:
        return models_folder()
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
    bytes need no opt-in.

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
            entries[file_sha256(p)] = str(p.relative_to(folder) if p.is_relative_to(folder) else p)
        tmp = folder / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(folder / REGISTRY_FILE)  # atomic: a reader never sees half a file
        _WRITTEN_DIRS.add(folder)


def trust_models_dir(models_dir: str | Path) -> None:
    """Also consult the registry of ``models_dir`` in this process.

    For a folder this package chose itself (a correction job's ``models_dir``, recorded in the
    job's output in the user's store), never for a folder named by a file that came with a model.
    """
    _WRITTEN_DIRS.add(Path(models_dir).resolve())


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
        ``"opt-in"``, ``"known weights: ..."`` or ``"written by softening"``; ``None``: refuse.
    """
    if trust or trust_opted_in():
        return "opt-in"
    sha = file_sha256(path)
    if sha in KNOWN_MODEL_SHA256:
        return f"known weights: {KNOWN_MODEL_SHA256[sha]}"
    folders = set(_WRITTEN_DIRS)
    if (own := store_models_dir()) is not None:
        folders.add(own)
    if any(sha in _registry(folder) for folder in folders):
        return "written by softening"
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
        package wrote; the message says how to opt in.
    """
    reason = why_trusted(path, trust)
    if reason is None:
        raise ModelError(
            f"{what} {str(path)!r} is a whole pickled model: loading it runs code from the file, "
            "and its SHA-256 is not one of known published weights nor of a model softening wrote; "
            "if you trust the file, pass --trust-model-file (or set SOFTENING_TRUST_MODEL_FILES=1)"
        )
    return reason
