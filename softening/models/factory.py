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
    a CHGNet ``.pth.tar`` checkpoint, a matgl model folder (``model.json``), a MACE ``.model`` file.

Heavy imports (torch, chgnet, matgl, mace) happen inside the loaders, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from softening.errors import ModelError
from softening.schemas import ModelInfo
from softening.settings import get_settings

CHGNET_VERSIONS = {"0.3.0", "0.2.0", "r2scan"}
_LOCK = threading.Lock()
logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A uMLIP ready to evaluate.

    Attributes
    ----------
    name
        Canonical name (the key in JSON output and documents), e.g. ``CHGNet-0.3.0``.
    family
        ``chgnet``, ``m3gnet`` (any matgl potential) or ``mace``.
    model
        The underlying torch model (``CHGNet``, matgl ``Potential``, MACE module).
    elements
        Chemical symbols the model was trained on.
    """

    name: str
    family: str
    model: Any
    elements: frozenset[str]
    device: str
    dtype: str
    version: str | None = None
    path: str | None = None
    weights_sha256: str | None = None
    factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> ModelInfo:
        """Provenance for documents."""
        return ModelInfo(
            name=self.name,
            family=self.family,
            version=self.version,
            weights_sha256=self.weights_sha256,
            path=self.path,
        )

    def check_elements(self, elements: Iterable[str]) -> None:
        """Raise :class:`ModelError` naming the elements this model lacks."""
        missing = sorted(set(elements) - self.elements)
        if missing:
            raise ModelError(f"model {self.name} has no parameters for {', '.join(missing)}")

    def calculator(self):
        """A fresh ASE calculator around the (shared, already loaded) model."""
        with _quiet():
            calc = self._calculator()
        if self.factor != 1.0:
            from softening.models.corrected import ScaledCalculator

            calc = ScaledCalculator(calc, self.factor)
        return calc

    def _calculator(self):
        if self.family == "chgnet":
            from chgnet.model.dynamics import CHGNetCalculator

            return CHGNetCalculator(model=self.model, use_device=self.device)
        if self.family == "matgl":
            from matgl.ext.ase import PESCalculator

            return PESCalculator(self.model, stress_unit="eV/A3")
        if self.family == "mace":
            MACECalculator = _import_mace().MACECalculator  # noqa: N806

            return MACECalculator(models=self.model, device=self.device, default_dtype=self.dtype)
        raise ModelError(f"no calculator for model family {self.family!r}")  # pragma: no cover


@contextlib.contextmanager
def _quiet():
    """Model libraries print banners on stdout; keep stdout clean for --json (logged at debug)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    if buf.getvalue().strip():
        logger.debug(buf.getvalue().strip())


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


def _symbols(numbers: Iterable[int]) -> frozenset[str]:
    from pymatgen.core.periodic_table import Element

    return frozenset(Element.from_Z(int(z)).symbol for z in numbers)


# ---- loaders -----------------------------------------------------------------------------------


def _load_chgnet(version: str | None, path: Path | None, device: str, dtype: str) -> LoadedModel:
    import chgnet

    if path is not None:
        model = chgnet_from_checkpoint(path)
        weights = path
        name = f"CHGNet-{path.stem.split('.')[0]}"
        version = getattr(model, "version", None) or path.stem
    else:
        version = version or "0.3.0"
        if version not in CHGNET_VERSIONS:
            raise ModelError(
                f"unknown CHGNet version {version!r}; bundled: {', '.join(sorted(CHGNET_VERSIONS))}"
            )
        weights = next((Path(chgnet.__file__).parent / "pretrained" / version).glob("*.pth.tar"))
        # As CHGNet.load, but without unpickling code (CHGNet.from_file uses weights_only=False).
        model = chgnet_from_checkpoint(weights, mlp_out_bias=version == "0.2.0", version=version)
        name = f"CHGNet-{version}"
    if dtype == "float64":
        # CHGNet's graph converter and composition model hard-code float32 tensors
        # (chgnet.model.model.TORCH_DTYPE); a float64 model fails inside CHGNet itself.
        raise ModelError("CHGNet runs in float32 only; use --dtype float32 (the default)")
    model = model.to(device)
    model.eval()
    # CHGNet's embedding covers atomic numbers 1-94.
    n_elements = model.atom_embedding.embedding.num_embeddings
    return LoadedModel(
        name=name,
        family="chgnet",
        model=model,
        elements=_symbols(range(1, n_elements + 1)),
        device=device,
        dtype=dtype,
        version=str(version),
        path=str(weights),
        weights_sha256=sha256_of(weights),
    )


def chgnet_from_checkpoint(path: str | Path, **kwargs: Any):
    """A CHGNet from a ``.pth.tar`` checkpoint, loaded without unpickling code.

    CHGNet's checkpoints are dicts of tensors and plain data (``{"model": {"state_dict",
    "model_args"}, ...}``): ``torch.load(weights_only=True)`` reads them, then the model is built
    from its arguments and state dict, as ``CHGNet.from_file`` does with ``weights_only=False``.

    Parameters
    ----------
    path
        The checkpoint (CHGNet's own, its trainer's, or one saved by :mod:`softening`).
    **kwargs
        Passed to ``CHGNet(...)`` (e.g. ``mlp_out_bias``, ``version``).

    Raises
    ------
    ModelError
        A file that is not a CHGNet checkpoint (random, truncated, or holding pickled code).
    """
    import torch
    from chgnet.model import CHGNet

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"cannot load CHGNet checkpoint {str(path)!r}: {_load_problem(exc, path)}"
        ) from None
    model_dict = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(model_dict, dict) or not {"state_dict", "model_args"} <= set(model_dict):
        raise ModelError(
            f"cannot load CHGNet checkpoint {str(path)!r}: no model state_dict and model_args in it"
        )
    try:
        with _quiet():
            return CHGNet.from_dict(model_dict, **kwargs)
    except Exception as exc:
        raise ModelError(
            f"cannot load CHGNet checkpoint {str(path)!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from None


def _looks_like_torch(path: Path) -> bool:
    """Whether a file starts as torch files do: a zip archive, or a pickle (older torch)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith((b"PK\x03\x04", b"\x80"))


def _load_problem(exc: BaseException, path: Path | None = None) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without torch's long advice."""
    text = str(exc)
    if "GLOBAL" in text or "Unsupported global" in text:
        return "it holds pickled code, not only weights (refused: loading it would run that code)"
    if "Weights only load failed" in text or (path is not None and not _looks_like_torch(path)):
        return "not a torch weights file (random or corrupted bytes)"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"not a readable torch file, perhaps truncated ({type(exc).__name__}: {first[:160]})"


def _is_pickled_code(path: Path) -> bool | None:
    """Whether ``path`` is a torch/pickle file that needs code to load (``True``), one that loads
    as plain weights (``False``), or not a readable torch file at all (``None``)."""
    import torch

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        return True if "GLOBAL" in str(exc) or "Unsupported global" in str(exc) else None
    return False


def _matgl_modules(obj: Any) -> Iterable[str]:
    """Every ``@module`` named in a matgl model description (nested dicts and lists)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("@module"), str):
            yield obj["@module"]
        for v in obj.values():
            yield from _matgl_modules(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _matgl_modules(v)


def check_matgl_folder(folder: Path) -> None:
    """Refuse a matgl folder whose description names classes outside matgl.

    matgl imports the ``@module``/``@class`` that ``model.json`` and ``model.pt`` name and calls
    them with the file's arguments: a crafted folder could name any importable callable. Its
    tensors are loaded with ``weights_only=True`` by matgl itself.

    Raises
    ------
    ModelError
        Unreadable files, or a module outside ``matgl``.
    """
    import json

    import torch

    try:
        described = json.loads((folder / "model.json").read_text())
    except Exception as exc:
        raise ModelError(
            f"cannot read {str(folder / 'model.json')!r}: {type(exc).__name__}"
        ) from None
    modules = list(_matgl_modules(described))
    if (folder / "model.pt").is_file():
        try:
            args = torch.load(str(folder / "model.pt"), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"cannot load {str(folder / 'model.pt')!r}: {_load_problem(exc, folder / 'model.pt')}"
            ) from None
        modules += list(_matgl_modules(args))
    bad = sorted({m for m in modules if m != "matgl" and not m.startswith("matgl.")})
    if bad:
        raise ModelError(
            f"matgl model folder {str(folder)!r} names code outside matgl ({', '.join(bad)}); "
            "refused: loading it would import and call that code"
        )


def _find_matgl_folder(spec: str) -> Path | None:
    p = Path(spec).expanduser()
    if (p / "model.json").is_file():
        return p
    models_dir = get_settings().models_dir
    if models_dir is not None and (Path(models_dir) / spec / "model.json").is_file():
        return Path(models_dir) / spec
    return None


def _load_matgl(spec: str, device: str, dtype: str) -> LoadedModel:
    folder = _find_matgl_folder(spec)
    if folder is None:
        if spec.lower() == "m3gnet":
            spec = "M3GNet-MP-2021.2.8-PES"
            folder = _find_matgl_folder(spec)
    if folder is None:
        _require_network(spec, hint="a local matgl model folder (with model.json)")
    import matgl

    os.environ.setdefault("HF_HUB_OFFLINE", "0" if folder is None else "1")
    if folder is not None:
        check_matgl_folder(folder)
    try:
        potential = matgl.load_model(str(folder or spec))
    except Exception as exc:  # matgl raises many kinds for a bad folder
        raise ModelError(f"cannot load matgl model {spec!r}: {exc}") from exc
    if dtype == "float64":
        potential = potential.double()
    potential = potential.to(device).eval()
    name = folder.name if folder is not None else spec
    element_types = getattr(potential.model, "element_types", None) or ()
    files = sorted(folder.glob("*.pt")) if folder is not None else []
    return LoadedModel(
        name=name,
        family="matgl",
        model=potential,
        elements=frozenset(element_types),
        device=device,
        dtype=dtype,
        version=name,
        path=str(folder) if folder is not None else None,
        weights_sha256=sha256_of(files) if files else None,
        extra={"architecture": type(potential.model).__name__},
    )


def load_mace_module(path: Path, device: str, trust: bool = False):
    """Load a whole pickled MACE model file (how MACE-MP-0 and mace's trainer save models).

    torch >= 2.6 defaults to ``weights_only=True``, which refuses pickled modules; mace's own
    calculator does not pass ``weights_only``. Unpickling runs code from the file, so it happens
    only for files :func:`softening.models.trust.check_pickle_allowed` accepts (an opt-in, known
    published weights, or a model this package wrote).

    Raises
    ------
    ModelError
        The file is not trusted (the message says how to opt in), or it is not a MACE model
        (random or truncated bytes, another pickled object).
    """
    import torch

    from softening.models.trust import check_pickle_allowed

    # Unreadable bytes are said to be so (not "untrusted"): the restricted unpickler reads them
    # without running anything.
    if _is_pickled_code(path) is None:
        raise ModelError(
            f"cannot load MACE model file {str(path)!r}: not a readable torch file (random, "
            "truncated or corrupted bytes)"
        )
    check_pickle_allowed(path, "MACE model file", trust=trust)
    try:
        module = torch.load(str(path), map_location=device, weights_only=False)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise ModelError(
            f"cannot load MACE model file {str(path)!r}: not a readable torch file "
            f"({type(exc).__name__}: {first[:160]})"
        ) from None
    if not isinstance(module, torch.nn.Module) or not hasattr(module, "atomic_numbers"):
        raise ModelError(
            f"cannot load MACE model file {str(path)!r}: it holds a {type(module).__name__}, "
            "not a MACE model"
        )
    return module


def _import_mace():
    """Import ``mace.calculators`` without keeping its process-wide side effect.

    mace sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` on import, which silently turns off torch's
    safe loading for every later ``torch.load`` in the process; this package passes
    ``weights_only=False`` explicitly where a whole model is loaded, so the variable is restored.
    """
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        import mace.calculators
    except ImportError as exc:
        if importlib.util.find_spec("mace") is not None:
            raise  # installed but broken: keep the real error
        raise ModelError('MACE is not installed: pip install "softening[mace]"') from exc

    if before is None:
        os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    return mace.calculators


def _load_mace(
    spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
) -> LoadedModel:
    _import_mace()
    if path is None:
        _require_network(spec, hint="a local MACE .model file")
        from mace.calculators import mace_mp

        size = spec.lower().removeprefix("mace-mp-0").strip("-") or "medium"
        calc = mace_mp(model=size, device=device, default_dtype=dtype)
        module = calc.models[0]
        name, weights = f"MACE-MP-0-{size}", None
    else:
        module = load_mace_module(path, device, trust=trust)
        name, weights = f"MACE-{path.stem}", path
    module = module.double() if dtype == "float64" else module.float()
    module = module.to(device).eval()
    z_table = getattr(module, "atomic_numbers", None)
    elements = _symbols(z_table.tolist()) if z_table is not None else frozenset()
    return LoadedModel(
        name=name,
        family="mace",
        model=module,
        elements=elements,
        device=device,
        dtype=dtype,
        version=path.stem if path is not None else spec,
        path=str(path) if path is not None else None,
        weights_sha256=sha256_of(weights) if weights is not None else None,
    )


def _require_network(spec: str, hint: str, timeout: float = 3.0) -> None:
    """Fail fast, with a helpful message, when a named model needs a download and there's no network.

    Hub clients retry for minutes without network; one short TCP connection decides instead.
    """
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        reachable = False
    else:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            reachable = True
        except OSError:
            reachable = False
    if not reachable:
        raise ModelError(
            f"model {spec!r} needs a download and there is no network; pass {hint} instead "
            f"(e.g. --model /path/to/weights)"
        )


def _load_corrected(folder: Path, device: str, dtype: str, trust: bool = False) -> LoadedModel:
    """A corrected or fine-tuned model saved by this package (see :mod:`.corrected`)."""
    from dataclasses import replace

    from softening.models.corrected import MODEL_FILE, read_model_folder

    try:
        doc = read_model_folder(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read {str(folder / MODEL_FILE)!r}: {type(exc).__name__}"
        ) from None
    weights = doc.get("weights")
    if weights and not (folder / weights).resolve().is_relative_to(folder.resolve()):
        # The provenance file names the weights; they must be the folder's own.
        raise ModelError(f"model folder {str(folder)!r} names weights outside itself: {weights!r}")
    if doc.get("weights"):
        base = _load_cached(str(folder / doc["weights"]), device, dtype, trust)
        files = [folder / MODEL_FILE, *sorted((folder / doc["weights"]).glob("*.pt"))]
        if (folder / doc["weights"]).is_file():
            files = [folder / MODEL_FILE, folder / doc["weights"]]
    else:
        base = _load_cached(doc["base"]["spec"], device, dtype, trust)
        files = [folder / MODEL_FILE]
    return replace(
        base,
        name=doc["name"],
        version=f"{doc['mode']} of {doc['base'].get('name')}",
        path=str(folder),
        weights_sha256=sha256_of(files),
        factor=float(doc.get("factor", 1.0)),
        extra={**base.extra, "correction": {k: doc[k] for k in ("mode", "base", "train_frames")}},
    )


def _saved_model_folder(spec: str) -> Path | None:
    """A corrected model saved under the store's ``models`` folder, looked up by id."""
    from softening.models.corrected import MODEL_FILE
    from softening.stores.factory import store_kind

    store = get_settings().store
    folder = (
        Path(store).expanduser() / "models" / spec
        if store_kind(store) == "embedded"
        else Path("softening-models") / spec
    )
    return folder if (folder / MODEL_FILE).is_file() else None


def _parse_spec(spec: str) -> tuple[str, str | None, Path | None]:
    """(family, version, local path) of a spec."""
    from softening.models.corrected import MODEL_FILE

    s = spec.strip()
    p = Path(s).expanduser()
    low = s.lower()
    if not p.exists() and (saved := _saved_model_folder(s)) is not None:
        p = saved
    if p.exists():
        if p.is_dir() and (p / MODEL_FILE).is_file():
            return "corrected", None, p
        if p.is_dir():
            if (p / "model.json").is_file():
                return "matgl", None, p
            raise ModelError(f"model folder {s!r} holds no model.json (not a matgl model)")
        if low.endswith((".pth.tar", ".pth")):
            return "chgnet", None, p
        if low.endswith(".model") or low.endswith(".pt"):
            return "mace", None, p
        raise ModelError(
            f"cannot tell the model type of {s!r} (.pth.tar, .model or a matgl folder)"
        )
    if low == "chgnet" or low.startswith("chgnet-") or low.startswith("chgnet_"):
        version = low[7:] or None
        return "chgnet", version, None
    if low.startswith("mace"):
        return "mace", None, None
    if low.startswith(("m3gnet", "tensornet", "matgl")) or "-pes" in low:
        return "matgl", None, None
    if any(ch in s for ch in "/\\") or low.endswith((".model", ".pth.tar", ".pt")):
        raise ModelError(f"model file {s!r} does not exist")
    raise ModelError(f"unknown model {s!r}; try chgnet, m3gnet, mace-mp-0 or a path to weights")


@lru_cache(maxsize=8)
def _load_cached(spec: str, device: str, dtype: str, trust: bool = False) -> LoadedModel:
    family, version, path = _parse_spec(spec)
    if family == "corrected":
        return _load_corrected(path, device, dtype, trust)
    if family == "chgnet":
        return _load_chgnet(version, path, device, dtype)
    if family == "matgl":
        return _load_matgl(str(path) if path else spec, device, dtype)
    return _load_mace(spec, path, device, dtype, trust)


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
    with _LOCK, _quiet():
        return _load_cached(spec, device, dtype, trust)


def canonical_name(spec: str) -> str:
    """The canonical name of a spec (loads the model; cached)."""
    return load_model(spec).name
