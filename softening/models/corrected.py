"""Corrected models: the scale correction as an ASE calculator, and saved corrected models.

A correction (:class:`softening.makers.correction.CorrectionMaker`) is of two kinds: a linear
scale (mode ``scale``: one factor ``c`` on energy, forces and stress, ``E' = c E``) or a fine-tune
(mode ``head`` or ``full``). Its result, a corrected model, lives in a folder holding
``softening-model.json`` (provenance: base model and weights hash, correction mode, factor, frames
used, hyper-parameters, metrics) and, for fine-tunes, the new weights.
:func:`softening.models.load_model` loads such a folder by path, or by its id from the models
folder (:func:`softening.models.trust.models_folder`), through :data:`BACKEND`.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator, all_changes

from softening.errors import ModelError
from softening.models.backends import Backend, BatchParts, LoadedModel, backends, get_backend
from softening.models.factory import _load_cached, load_model
from softening.models.trust import models_folder, sha256_of
from softening.schemas import ModelInfo

MODEL_FILE = "softening-model.json"
# Corrected model folders being loaded (the factory's lock is held meanwhile): a base leading back
# to one of them is a cycle.
_LOADING: set[Path] = set()


class ScaledCalculator(Calculator):
    """The scale correction of any ASE calculator: energy, forces and stress times ``factor``
    (``E' = c E``).

    Usable in ASE MD and in atomate2's force-field makers, e.g.
    ``ForceFieldStaticMaker(force_field_name={"@module": "softening.models.corrected",
    "@callable": "ScaledCalculator"}, calculator_kwargs={"model": "chgnet", "factor": 1.16})``.

    Parameters
    ----------
    calculator
        The calculator to wrap, or ``None`` to build one from ``model``.
    factor
        The correction factor ``c`` (dimensionless).
    model
        A model spec for :func:`softening.models.load_model` (when ``calculator`` is ``None``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calculator=None, factor: float = 1.0, model: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if calculator is None:
            if model is None:
                raise ValueError("ScaledCalculator needs a calculator or a model spec")
            calculator = load_model(model).calculator()
        self.base = calculator
        self.factor = float(factor)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        base_atoms = self.atoms.copy()
        base_atoms.calc = self.base
        self.results = {}
        for prop in properties:
            getter = {
                "energy": base_atoms.get_potential_energy,
                "forces": base_atoms.get_forces,
                "stress": base_atoms.get_stress,
            }.get(prop)
            if getter is not None:
                self.results[prop] = self.factor * getter()
        if "energy" in self.results:
            self.results["free_energy"] = self.results["energy"]


def write_corrected_model(
    folder: Path,
    *,
    name: str,
    base: dict[str, Any],
    mode: str,
    factor: float,
    weights: str | None,
    train_frames: list[str],
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the provenance file of a corrected model; returns the folder.

    Raises :class:`ModelError` for a factor that is not a finite number above 0."""
    factor = check_factor(factor, f"corrected model {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "base": base,
        "mode": mode,
        "factor": factor,
        "weights": weights,
        "train_frames": train_frames,
        "hyperparameters": hyperparameters,
        "metrics": metrics or {},
        "created_at": datetime.now(UTC).isoformat(),
    }
    (folder / MODEL_FILE).write_text(json.dumps(doc, indent=2, default=str))
    return folder


def check_factor(factor: Any, where: str) -> float:
    """A correction factor as a float: a finite number above 0 (a scale correction divides forces
    by a scale ``s > 0``; ``c <= 0`` would turn them round or off).

    Raises
    ------
    ModelError
        ``factor`` is not a number, not finite, or not above 0; the message names ``where``.
    """
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise ModelError(f"{where}: key 'factor' must be a number, not {factor!r}")
    if not math.isfinite(factor) or factor <= 0:
        raise ModelError(
            f"{where}: key 'factor' must be a finite number above 0 (E' = c E), got {factor!r}"
        )
    return float(factor)


def read_corrected_model(folder: Path) -> dict[str, Any]:
    """The provenance of a corrected model folder, checked.

    Raises
    ------
    ModelError
        One line naming the file and the key: an unreadable file or not a JSON object, a missing or
        empty ``name``, a ``mode`` other than scale/head/full, a ``factor`` that is not a finite
        number above 0 (:func:`check_factor`), no ``base`` object (with a ``spec`` when the folder
        holds no weights of its own), ``weights`` or ``train_frames`` of the wrong type.
    """
    from softening.models.training import CORRECTION_MODES

    path = Path(folder) / MODEL_FILE
    where = repr(str(path))
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {where}: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{where} must hold a JSON object, not {type(doc).__name__}")
    if not isinstance(doc.get("name"), str) or not doc["name"].strip():
        raise ModelError(f"{where}: key 'name' must be a non-empty string")
    if doc.get("mode") not in CORRECTION_MODES:
        raise ModelError(
            f"{where}: key 'mode' must be one of {', '.join(CORRECTION_MODES)}, "
            f"not {doc.get('mode')!r}"
        )
    doc["factor"] = check_factor(doc.get("factor", 1.0), where)
    weights = doc.get("weights")
    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise ModelError(f"{where}: key 'weights' must be a file or folder name, or null")
    base = doc.get("base")
    if not isinstance(base, dict):
        raise ModelError(f"{where}: key 'base' (the model corrected) is missing or not an object")
    if not weights and (not isinstance(base.get("spec"), str) or not base["spec"].strip()):
        raise ModelError(f"{where}: key 'base.spec' (the model corrected) is missing")
    frames = doc.setdefault("train_frames", [])
    if not isinstance(frames, list):
        raise ModelError(f"{where}: key 'train_frames' must be a list")
    return doc


def saved_model_folder(spec: str) -> Path | None:
    """The corrected model saved under the id ``spec`` in the models folder of the store named
    (``--store``; else of the ``store`` setting), if there is one."""
    from softening.models.trust import named_store_models_dir

    folder = (named_store_models_dir() or models_folder()) / spec
    return folder if (folder / MODEL_FILE).is_file() else None


def model_files(folder: Path, weights: str | None) -> list[Path]:
    """The files of a corrected model whose SHA-256 is its ``weights_sha256``: the provenance
    file, and its own weights (a file, or a folder's ``*.pt``)."""
    if not weights:
        return [folder / MODEL_FILE]
    if (folder / weights).is_file():
        return [folder / MODEL_FILE, folder / weights]
    return [folder / MODEL_FILE, *sorted((folder / weights).glob("*.pt"))]


def trust_saved_model(info: ModelInfo) -> bool:
    """Trust, in this process, the files of the corrected model ``info`` describes, when they still
    hash as ``info.weights_sha256`` (recorded by the job that wrote them, in the user's store).

    Returns
    -------
    bool
        Whether they did (otherwise loading a pickled model among them needs another reason).
    """
    from softening.models.trust import trust_written_files

    if not info.path:
        return False
    folder = Path(info.path)
    try:
        doc = json.loads((folder / MODEL_FILE).read_text())
        weights = doc.get("weights") if isinstance(doc, dict) else None
        return trust_written_files(
            model_files(folder, weights if isinstance(weights, str) else None),
            info.weights_sha256,
        )
    except (OSError, ValueError):
        return False


class CorrectedBackend(Backend):
    """Corrected models this package saved: a folder holding :data:`MODEL_FILE`, by path or id.

    A corrected model is its base model (the saved fine-tuned weights, or the base spec of a scale
    correction) with the correction factor; it keeps the base's family, and evaluates through the
    base family's backend with the factor applied once (calculator and batched path alike).
    """

    family = "corrected"

    def claims(self, spec: str, path: Path | None) -> bool:
        if path is not None:
            return path.is_dir() and (path / MODEL_FILE).is_file()
        if saved_model_folder(spec) is None:
            return False
        # Ids softening writes hold a "+" (CHGNet-0.3.0+scale-...); a saved folder named like
        # another family's model (chgnet, m3gnet) never replaces that model.
        return "+" in spec or not any(
            b.claims(spec, None) for b in backends() if b.family != self.family
        )

    def name_key(self, spec: str) -> str:
        folder = saved_model_folder(spec.strip())  # an id: the same key as the folder's path
        return str(folder.resolve()) if folder is not None else spec.strip()

    def load(
        self, spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
    ) -> LoadedModel:
        folder = path if path is not None else saved_model_folder(spec)
        doc = read_corrected_model(folder)
        key = folder.resolve()
        if key in _LOADING:  # a base that is, through other corrected models, this folder again
            raise ModelError(f"{str(folder / MODEL_FILE)!r}: key 'base' leads back to this model")
        _LOADING.add(key)
        try:
            return self._load(folder, doc, device, dtype, trust)
        finally:
            _LOADING.discard(key)

    def _load(
        self, folder: Path, doc: dict[str, Any], device: str, dtype: str, trust: bool
    ) -> LoadedModel:
        weights = doc.get("weights")
        if weights and not (folder / weights).resolve().is_relative_to(folder.resolve()):
            # The provenance file names the weights; they must be the folder's own.
            raise ModelError(
                f"model folder {str(folder)!r} names weights outside itself: {weights!r}"
            )
        # The base loads through the factory's cache (its lock is already held by load_model).
        if weights:
            base = _load_cached(str(folder / weights), device, dtype, trust)
        else:
            base = _load_cached(doc["base"]["spec"], device, dtype, trust)
        files = model_files(folder, weights)
        return replace(
            base,
            name=doc["name"],
            version=f"{doc['mode']} of {doc['base'].get('name')}",
            path=str(folder),
            weights_sha256=sha256_of(files),
            factor=doc["factor"],
            extra={
                **base.extra,
                "correction": {k: doc[k] for k in ("mode", "base", "train_frames")},
                "base_path": base.path,
            },
            backend=self,
        )

    @staticmethod
    def _base(model: LoadedModel) -> LoadedModel:
        """The model ``model`` corrects, as its own backend loaded it (weights path, no factor)."""
        return replace(
            model, path=model.extra.get("base_path"), factor=1.0, backend=get_backend(model.family)
        )

    def calculator(self, model: LoadedModel):
        calc = get_backend(model.family).calculator(model)
        return ScaledCalculator(calc, model.factor) if model.factor != 1.0 else calc

    def batch_parts(self, model: LoadedModel) -> BatchParts | None:
        parts = get_backend(model.family).batch_parts(model)
        if parts is None or model.factor == 1.0:
            return parts
        build, forward = parts
        c = model.factor

        def scaled(graphs):
            return [(c * e, c * f, None if s is None else c * s) for e, f, s in forward(graphs)]

        return build, scaled

    def finetune(self, model, train, settings, workdir):
        """Fine-tunes the network of the model corrected (a scale correction's factor is not
        carried over)."""
        base = self._base(model)
        return base.backend.finetune(base, train, settings, workdir)

    def features(self, model: LoadedModel, structures: list) -> Any:
        """The structure features of the network corrected (a factor scales outputs only)."""
        base = self._base(model)
        return base.backend.features(base, structures)

    def save(self, model: LoadedModel, folder: Path, trained: Any = None) -> str:
        """Saves the weights of the model corrected (``trained``: its fine-tune)."""
        base = self._base(model)
        return base.backend.save(base, folder, trained)


BACKEND = CorrectedBackend()
