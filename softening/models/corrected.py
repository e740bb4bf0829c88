"""Corrected models: the scale correction as an ASE calculator, and saved corrected models.

A correction (:class:`softening.makers.finetune.CorrectionMaker`) has one of three modes: ``scale``
(the scale correction: one factor ``c`` on energy, forces and stress, ``E' = c E``), ``head`` or
``full`` (fine-tuning). Its result, a corrected model, lives in a folder holding
``softening-model.json`` (provenance: base model and weights hash, correction mode, factor, frames
used, hyper-parameters, metrics) and, for fine-tunes, the new weights.
:func:`softening.models.load_model` loads such a folder by path, or by its id from the models
folder (:func:`softening.models.trust.models_folder`), through :data:`BACKEND`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator, all_changes

from softening.errors import ModelError
from softening.models.backends import Backend, BatchParts, LoadedModel, get_backend
from softening.models.factory import _load_cached, load_model
from softening.models.trust import models_folder, sha256_of

MODEL_FILE = "softening-model.json"


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
    """Write the provenance file of a corrected model; returns the folder."""
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


def read_corrected_model(folder: Path) -> dict[str, Any]:
    """The provenance of a corrected model folder."""
    return json.loads((Path(folder) / MODEL_FILE).read_text())


def saved_model_folder(spec: str) -> Path | None:
    """The corrected model saved in the models folder under the id ``spec``, if there is one."""
    folder = models_folder() / spec
    return folder if (folder / MODEL_FILE).is_file() else None


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
        return saved_model_folder(spec) is not None

    def load(
        self, spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
    ) -> LoadedModel:
        folder = path if path is not None else saved_model_folder(spec)
        try:
            doc = read_corrected_model(folder)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot read {str(folder / MODEL_FILE)!r}: {type(exc).__name__}"
            ) from None
        weights = doc.get("weights")
        if weights and not (folder / weights).resolve().is_relative_to(folder.resolve()):
            # The provenance file names the weights; they must be the folder's own.
            raise ModelError(
                f"model folder {str(folder)!r} names weights outside itself: {weights!r}"
            )
        # The base loads through the factory's cache (its lock is already held by load_model).
        if weights:
            base = _load_cached(str(folder / weights), device, dtype, trust)
            files = [folder / MODEL_FILE, *sorted((folder / weights).glob("*.pt"))]
            if (folder / weights).is_file():
                files = [folder / MODEL_FILE, folder / weights]
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

    def save(self, model: LoadedModel, folder: Path, trained: Any = None) -> str:
        """Saves the weights of the model corrected (``trained``: its fine-tune)."""
        base = self._base(model)
        return base.backend.save(base, folder, trained)


BACKEND = CorrectedBackend()
