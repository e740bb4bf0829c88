"""One cached factory from a model spec to a ready uMLIP.

Specs
-----
``chgnet`` / ``chgnet-0.3.0`` / ``chgnet-0.2.0`` / ``chgnet-r2scan``
    CHGNet weights shipped inside the ``chgnet`` wheel (offline). ``chgnet`` is 0.3.0, the paper's.
``m3gnet`` / a matgl model name (``M3GNet-MP-2021.2.8-PES``)
    matgl; looked up in the ``models_dir`` setting first, then (only with network) the model hub.
``mace-mp-0`` / ``mace-mp-0-medium``
    mace's ``mace_mp`` foundation model (needs network), or
a local path
    a CHGNet ``.pth.tar`` checkpoint, a matgl model folder (``model.json``), a MACE ``.model`` file,
    or a corrected model's folder (also by its id in the models folder).

Which backend a spec belongs to is asked of the registered backends, in order
(:mod:`softening.models.backends`); this module holds what is common to all: the cache, device,
dtype and threads, the trust opt-in. Heavy imports (torch, chgnet, matgl, mace) happen inside the
backends' loaders, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import Path

from softening.errors import ModelError
from softening.models.backends import Backend, LoadedModel, backends, quiet
from softening.settings import get_settings

__all__ = ["LoadedModel", "canonical_name", "load_model", "looks_like_path", "spec_key"]

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()


def _configure_torch(threads: int | None) -> None:
    import torch

    n = threads or get_settings().torch_threads
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _resolve_device(device: str | None) -> str:
    device = device or get_settings().device
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is written as a path: it holds a path separator (``./chgnet``,
    ``/abs/model``), starts with ``~``, is ``.`` or ``..``, or ends with a weights file's suffix
    (``.pth.tar``, ``.model``, ...). Anything else is a model name first."""
    s = spec.strip()
    suffixes = tuple(x for b in backends() for x in b.suffixes)
    return (
        any(ch in s for ch in "/\\")
        or s.startswith("~")
        or s in (".", "..")
        or s.lower().endswith(suffixes)
    )


def _parse_spec(spec: str, warn: bool = True) -> tuple[Backend, Path | None]:
    """The backend of a spec, and the existing local path it names (``None``: a model name).

    A spec is a model name unless it is written as a path (:func:`looks_like_path`): a folder or
    file in the working directory named like a model (``./chgnet/``) never replaces the model of
    that name (a warning says how to use it). A bare name that no backend knows may still name a
    local path.
    """
    s = spec.strip()
    p = Path(s).expanduser()
    registered = backends()
    if not looks_like_path(s):
        for backend in registered:
            if backend.claims(s, None):
                if warn and p.exists():
                    logger.warning(
                        "--model %s is the model of that name; the %s ./%s here is not used "
                        "(give ./%s to use it)",
                        s, "folder" if p.is_dir() else "file", s, s,
                    )  # fmt: skip
                return backend, None
    path = p if p.exists() else None
    if path is not None:
        for backend in registered:
            if backend.claims(s, path):
                return backend, path
    local = ", ".join(b.local for b in registered if b.local)
    if path is not None:
        if path.is_dir():
            raise ModelError(f"model folder {s!r} holds no model this package reads ({local})")
        raise ModelError(f"cannot tell the model type of {s!r} ({local})")
    if looks_like_path(s):
        raise ModelError(f"model file {s!r} does not exist")
    names = ", ".join(n for b in registered for n in b.names)
    raise ModelError(f"unknown model {s!r}; try {names} or a path to weights")


def spec_key(spec: str) -> str:
    """What ``spec`` resolves to, without loading the model: the absolute path of a local model,
    else the backend's key of the name (:meth:`~softening.models.backends.Backend.name_key`), so
    that ``chgnet`` and ``chgnet-0.3.0`` (or a matgl name and its folder) are one model. A spec that
    names no model is its own key (loading it reports the error)."""
    try:
        backend, path = _parse_spec(spec, warn=False)
    except ModelError:
        return spec.strip()
    if path is not None:
        return str(path.resolve())
    return backend.name_key(spec)


@lru_cache(maxsize=8)
def _load_cached(spec: str, device: str, dtype: str, trust: bool = False) -> LoadedModel:
    backend, path = _parse_spec(spec)
    return backend.load(spec.strip(), path, device, dtype, trust)


def load_model(
    spec: str,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    trust_model_file: bool = False,
) -> LoadedModel:
    """Load (once per process) the uMLIP named by ``spec``.

    Parameters
    ----------
    spec
        Model name or local path (see the module docstring).
    device
        ``cpu``, ``cuda`` or ``auto``; default from settings.
    dtype
        ``float32`` or ``float64``; default from settings.
    threads
        Torch intra-op threads; default from settings (1).
    trust_model_file
        Allow unpickling a whole pickled model file (MACE ``.model``) that is neither known
        published weights nor written by this package; also the ``trust_model_files`` setting
        (see :mod:`softening.models.trust`).

    Raises
    ------
    ModelError
        Unknown name, missing, unreadable or untrusted file, or a download without network.
    """
    _configure_torch(threads)
    device = _resolve_device(device)
    dtype = dtype or get_settings().dtype
    # Model libraries print banners on stdout; keep stdout clean for --json output.
    # The opt-in is part of the cache key: a file loaded with it is checked again without it.
    trust = bool(trust_model_file or get_settings().trust_model_files)
    with _LOCK, quiet():
        return _load_cached(spec, device, dtype, trust)


def canonical_name(spec: str) -> str:
    """The canonical name of a spec (loads the model; cached)."""
    return load_model(spec).name
