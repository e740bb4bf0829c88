"""Model backends: one module per model family behind one small interface, found through a registry.

A :class:`Backend` knows one family of uMLIPs: which specs are its own, how to load them, the ASE
calculator, the two parts of the batched evaluation (graph builder and batched forward), its memory
per atom, fine-tuning and saving. The rest of the package reaches a family only through this
registry; a family's own library (``chgnet``, ``matgl``, ``mace``) is imported by its backend module
alone, and only inside functions, so importing a backend is cheap.

Adding a family (say SevenNet) is one file here plus one line in the registry:

1. ``softening/models/backends/sevennet.py`` defines ``class SevenNetBackend(Backend)`` and
   ``BACKEND = SevenNetBackend()``;
2. ``"sevennet": "softening.models.backends.sevennet",`` goes into :data:`_BUILTIN` (or, from
   outside the package, ``register_backend("sevennet", SevenNetBackend())``).

Models this package saved (corrected models: a scale correction or a fine-tune of another model)
are registered here too (:mod:`softening.models.corrected`); their :class:`LoadedModel` keeps the
family of the model they correct.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from softening.errors import ModelError
from softening.schemas import Flag, ModelInfo

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from softening.models.training import FineTuneSettings, TrainingSet

logger = logging.getLogger(__name__)

#: One frame's result from a batched forward: energy (eV), forces (n, 3) eV/Å, stress 3x3 eV/Å^3
#: (ASE sign) or ``None``.
ForwardResult = tuple[float, np.ndarray, np.ndarray | None]
#: ``(build, forward)``: ``build(structure)`` makes one frame's graph (picklable: it runs in worker
#: processes); ``forward(graphs)`` evaluates a batch of them, one :data:`ForwardResult` per graph.
BatchParts = tuple[Callable[["Structure"], Any], Callable[[list[Any]], list[ForwardResult]]]


class Backend(ABC):
    """One family of uMLIPs.

    Attributes
    ----------
    family
        The key it is registered under; :attr:`LoadedModel.family` of the models it loads.
    gb_per_atom
        Memory per atom in a batch, GB: the first estimate that sizes batches (on a GPU, later
        batches follow the measured peak).
    names
        Example names, for the message about an unknown model.
    suffixes
        Lower-case endings of its weight files (a missing file with one is said not to exist).
    local
        How its local weights look, for messages (``"a CHGNet .pth.tar checkpoint"``).
    """

    family: ClassVar[str]
    gb_per_atom: ClassVar[float] = 0.8 / 64
    names: ClassVar[tuple[str, ...]] = ()
    suffixes: ClassVar[tuple[str, ...]] = ()
    local: ClassVar[str] = ""

    @abstractmethod
    def claims(self, spec: str, path: Path | None) -> bool:
        """Whether ``spec`` names one of this family's models.

        ``path`` is the existing file or folder ``spec`` names, or ``None`` when it names none
        (then ``spec`` is a model name).
        """

    @abstractmethod
    def load(
        self, spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
    ) -> LoadedModel:
        """The model ``spec`` names, on ``device`` in ``dtype``.

        ``trust`` allows unpickling a whole pickled model file (see :mod:`softening.models.trust`).
        Raises :class:`ModelError` for a model that cannot be loaded (the message says why).
        """

    @abstractmethod
    def calculator(self, model: LoadedModel):
        """A fresh ASE calculator around ``model`` (already loaded by this backend)."""

    def batch_parts(self, model: LoadedModel) -> BatchParts | None:
        """Graph builder and batched forward of ``model``; ``None``: frames are evaluated one by
        one with :meth:`calculator`."""
        return None

    def name_key(self, spec: str) -> str:
        """What the model name ``spec`` (one this backend claims) resolves to, without loading it:
        equal for aliases of one model (``chgnet`` and ``chgnet-0.3.0``). Default: the name in
        lower case."""
        return spec.strip().lower()

    def finetune(
        self, model: LoadedModel, train: TrainingSet, settings: FineTuneSettings, workdir: Path
    ) -> tuple[Any, dict]:
        """Fine-tune a copy of ``model`` on ``train`` with the family's trainer (``settings.mode``
        ``head`` or ``full``); returns the trained model (whatever :meth:`save` takes) and the
        training history."""
        raise ModelError(f"no fine-tuning for model family {self.family!r}")

    def save(self, model: LoadedModel, folder: Path, trained: Any = None) -> str:
        """Write ``trained`` (from :meth:`finetune`; default: ``model`` as loaded) into ``folder``
        in the form :meth:`load` reads; returns the weights' name inside ``folder``."""
        raise ModelError(f"no saving for model family {self.family!r}")

    def features(self, model: LoadedModel, structures: list[Structure]) -> np.ndarray:
        """The model's own structure-level features of ``structures``, (n_structures, n_features):
        what ``--choice diverse`` clusters (DIRECT-style frame selection)."""
        raise ModelError(
            f"no structure features for model family {self.family!r}: --choice diverse needs "
            "them (the chgnet, matgl and mace backends have them)"
        )


@dataclass
class LoadedModel:
    """A uMLIP ready to evaluate.

    Attributes
    ----------
    name
        Canonical name (the key in JSON output and documents), e.g. ``CHGNet-0.3.0``.
    family
        The backend family of the network: ``chgnet``, ``matgl`` (M3GNet, TensorNet...) or ``mace``
        (a corrected model keeps the family of the model it corrects).
    model
        The underlying torch model (``CHGNet``, matgl ``Potential``, MACE module).
    elements
        Chemical symbols the model was trained on.
    factor
        The correction factor ``c`` of a scale correction (1: none).
    backend
        What evaluates it (default: the backend of ``family``; a corrected model's applies the
        correction).
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
    backend: Backend = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.backend is None:
            self.backend = get_backend(self.family)
        if self.factor != 1.0 and self.backend.family != "corrected":
            # A factor means a scale correction, whatever built the model (``replace(model,
            # factor=c)`` included): the corrected backend is the one place that applies it.
            self.backend = get_backend("corrected")

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
        with quiet():
            return self.backend.calculator(self)


# ---- the registry ----------------------------------------------------------------------------------

#: Built-in backends: family -> module defining ``BACKEND``, imported on first use. Specs are
#: offered to them in this order (saved corrected models first: their folders hold other weights).
_BUILTIN: dict[str, str] = {
    "corrected": "softening.models.corrected",
    "chgnet": "softening.models.backends.chgnet",
    "mace": "softening.models.backends.mace",
    "matgl": "softening.models.backends.matgl",
}
_REGISTRY: dict[str, Backend | str] = dict(_BUILTIN)


def register_backend(family: str, backend: Backend | str) -> None:
    """Register (or replace) the backend of ``family``.

    Parameters
    ----------
    family
        Its key (:attr:`Backend.family`).
    backend
        A :class:`Backend`, or the dotted name of a module defining ``BACKEND`` (imported when the
        backend is first needed).
    """
    _REGISTRY[family] = backend


def get_backend(family: str) -> Backend:
    """The backend registered for ``family``.

    Raises
    ------
    ModelError
        No backend for that family.
    """
    entry = _REGISTRY.get(family)
    if entry is None:
        raise ModelError(
            f"no backend for model family {family!r}; registered: {', '.join(_REGISTRY)}"
        )
    if isinstance(entry, str):
        entry = importlib.import_module(entry).BACKEND
        _REGISTRY[family] = entry
    return entry


def backends() -> list[Backend]:
    """Every registered backend, in the order specs are offered to them."""
    return [get_backend(family) for family in list(_REGISTRY)]


# ---- what known models were trained on (model/reference compatibility) ---------------------------


@dataclass(frozen=True)
class TrainingData:
    """The DFT settings a model's training data used, as far as a reference's can disagree.

    Attributes
    ----------
    label
        How results name it: ``"PBE without +U (MatPES)"``.
    functional
        ``"PBE"`` or ``"r2SCAN"``.
    mp_hubbard_u
        ``True``: Materials Project's U values (on d states of oxides and fluorides,
        :func:`softening.mp_rules.mp_hubbard_u`); ``False``: no +U anywhere.
    """

    label: str
    functional: str
    mp_hubbard_u: bool


#: Materials Project's PBE/PBE+U relaxations (MPtrj, MPF): CHGNet, M3GNet MP-2021, MACE-MP-0.
MP_PBE = TrainingData("PBE/PBE+U with MP's U values (Materials Project)", "PBE", True)
MATPES_PBE = TrainingData("PBE without +U (MatPES)", "PBE", False)
MATPES_R2SCAN = TrainingData("r2SCAN without +U (MatPES)", "r2SCAN", False)
MP_R2SCAN = TrainingData("r2SCAN without +U (Materials Project)", "r2SCAN", False)

#: Training data of the known models: a regular expression searched in the lower-case canonical
#: name (:attr:`LoadedModel.name`), first match wins. A model none matches (a user's checkpoint)
#: is not compared.
MODEL_TRAINING_DATA: tuple[tuple[str, TrainingData], ...] = (
    (r"matpes-pbe", MATPES_PBE),  # M3GNet-, TensorNet-, CHGNet-MatPES-PBE-*
    (r"matpes-r2scan", MATPES_R2SCAN),
    (r"^chgnet-r2scan", MP_R2SCAN),  # CHGNet 0.3.0 transfer-learned on MP's r2SCAN data
    (r"^chgnet-0\.[23]\.0$", MP_PBE),  # the bundled CHGNet weights (MPtrj)
    (r"^m3gnet-mp-", MP_PBE),  # M3GNet-MP-2021.2.8-PES (MPF)
    (r"^mace-mp-0(-|$)", MP_PBE),  # MACE-MP-0 small/medium/large (MPtrj)
)


def training_data_of(model_name: str) -> TrainingData | None:
    """What the model named ``model_name`` was trained on, or ``None`` when it is not known.

    A scale correction of a known model keeps its training data (``CHGNet-0.3.0+scale-...``); a
    fine-tune (``+head-``, ``+full-``) was trained on other data too, and is not known.
    """
    base, _, correction = model_name.strip().partition("+")
    if correction and not correction.startswith("scale"):
        return None
    low = base.lower()
    return next((data for pattern, data in MODEL_TRAINING_DATA if re.search(pattern, low)), None)


@dataclass(frozen=True)
class ReferenceRun:
    """The settings of a reference DFT run a model's training data may disagree with.

    Attributes
    ----------
    functional
        Exchange-correlation functional, without +U (``"PBE"``, ``"PBEsol"``, ``"R2SCAN"``).
    hubbard_u
        U (eV) applied per element; empty for none.
    elements
        Elements of the structure (MP's U values depend on them).
    """

    functional: str
    hubbard_u: tuple[tuple[str, float], ...]
    elements: frozenset[str]

    @classmethod
    def from_run_info(cls, run_info: dict[str, Any], elements: Iterable[str]) -> ReferenceRun:
        """From a VASP run's :func:`~softening.datasets.vasp_metadata.vasp_run_info` (read files)."""
        from softening.datasets.guards import applied_hubbard_u, run_functional

        u = applied_hubbard_u(run_info)
        return cls(run_functional(run_info)[0], tuple(sorted(u.items())), frozenset(elements))

    @classmethod
    def from_result(cls, result: Any) -> ReferenceRun | None:
        """From a VASP reference's :class:`~softening.schemas.FrameResult` (its ``code.settings``
        ``functional`` and ``hubbard_u``); ``None`` for another code or unknown settings."""
        code = getattr(result, "code", None)
        settings = getattr(code, "settings", None) or {}
        functional = settings.get("functional")
        if getattr(code, "name", None) != "vasp" or not isinstance(functional, str):
            return None
        u = settings.get("hubbard_u") or {}
        applied = tuple(sorted((str(k), float(v)) for k, v in u.items() if abs(float(v)) > 1e-8))
        elements = frozenset(el.symbol for el in result.structure.composition)
        return cls(functional.removesuffix("+U"), applied, elements)


def _same_functional(a: str, b: str) -> bool:
    return a.strip().lower().replace("-", "") == b.strip().lower().replace("-", "")


def training_data_flags(model_name: str, run: ReferenceRun) -> list[Flag]:
    """``training_data`` flags: where the reference ``run`` differs from what the model named
    ``model_name`` was trained on (:func:`training_data_of`): functional, and +U (MP's U values, or
    none). Empty for an unknown model or a compatible run."""
    data = training_data_of(model_name)
    if data is None:
        return []
    trained = f"{model_name} was trained on {data.label}"
    flags = []
    if not _same_functional(run.functional, data.functional):
        flags.append(f"reference is {run.functional}; {trained}")
    applied = dict(run.hubbard_u)
    if data.mp_hubbard_u:
        from softening.mp_rules import mp_hubbard_u

        expected = mp_hubbard_u(run.elements)
        parts = []
        for el in sorted(set(applied) | set(expected)):
            have, want = applied.get(el, 0.0), expected.get(el, 0.0)
            if abs(have - want) > 0.01:
                what = f"U({el})={have:g} eV" if have else f"no U on {el}"
                parts.append(f"{what} (MP: {want:g} eV)")
        if parts:
            flags.append(f"reference has {', '.join(parts)}; {trained}")
    elif applied:
        parts = [f"U({el})={u:g} eV" for el, u in sorted(applied.items())]
        flags.append(f"reference has {', '.join(parts)}; {trained}")
    return [Flag(kind="training_data", detail=d) for d in flags]


def flags_for_model(
    model_name: str, flags: Iterable[Flag | str], runs: Iterable[ReferenceRun | None]
) -> list[Flag]:
    """The references' ``flags`` as a result of the model named ``model_name`` carries them.

    The references' own ``functional`` and ``hubbard_u`` flags judge them against Materials
    Project's settings (:func:`softening.datasets.guards.vasp_setting_flags`); for a model known to
    be trained on other data (MatPES, r2SCAN) they are dropped, and for every known model the
    ``training_data`` flags of each reference run (:func:`training_data_flags`) are added.

    Parameters
    ----------
    model_name
        Canonical name of the model of the result.
    flags
        The flags of the reference frames (:class:`~softening.schemas.Flag` or text).
    runs
        The settings of each reference run whose settings are known (``None`` entries ignored).
    """
    out = {Flag.model_validate(f) for f in flags}
    data = training_data_of(model_name)
    if data is None:
        return sorted(out)
    if data != MP_PBE:
        out = {f for f in out if f.kind not in ("functional", "hubbard_u")}
    for run in {r for r in runs if r is not None}:
        out.update(training_data_flags(model_name, run))
    return sorted(out)


# ---- helpers the backends share ----------------------------------------------------------------


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Model libraries print banners on stdout; keep stdout clean for --json (logged at debug)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    if buf.getvalue().strip():
        logger.debug(buf.getvalue().strip())


def symbols_of(numbers: Iterable[int]) -> frozenset[str]:
    """Chemical symbols of atomic numbers."""
    from pymatgen.core.periodic_table import Element

    return frozenset(Element.from_Z(int(z)).symbol for z in numbers)


def as_numpy(tensor) -> np.ndarray:
    """A torch tensor as a float64 numpy array (detached, on the CPU)."""
    return tensor.detach().cpu().numpy().astype(np.float64)


def require_network(spec: str, hint: str, timeout: float = 3.0) -> None:
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
