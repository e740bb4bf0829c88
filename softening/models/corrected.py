"""Corrected uMLIPs: a scalar rescaling of any model, and saved corrected / fine-tuned models.

A corrected model lives in a folder holding ``softening-model.json`` (provenance: base model and
weights hash, correction mode, factor, frames used, hyper-parameters, metrics) and, for fine-tunes,
the new weights. :func:`softening.models.load_model` loads such a folder by path, or by its id from
the ``models`` folder of the embedded store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator, all_changes

MODEL_FILE = "softening-model.json"
SCALED_PROPERTIES = ("energy", "free_energy", "forces", "stress", "energies", "stresses")


class ScaledCalculator(Calculator):
    """Multiplies energy, forces and stress of any ASE calculator by ``factor`` (``E' = c E``).

    Usable in ASE MD and in atomate2's force-field makers, e.g.
    ``ForceFieldStaticMaker(force_field_name={"@module": "softening.models.corrected",
    "@callable": "ScaledCalculator"}, calculator_kwargs={"model": "chgnet", "factor": 1.16})``.

    Parameters
    ----------
    calculator
        The calculator to wrap, or ``None`` to build one from ``model``.
    factor
        The scalar ``c`` (dimensionless).
    model
        A model spec for :func:`softening.models.load_model` (when ``calculator`` is ``None``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calculator=None, factor: float = 1.0, model: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if calculator is None:
            if model is None:
                raise ValueError("ScaledCalculator needs a calculator or a model spec")
            from softening.models.factory import load_model

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


def write_model_folder(
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


def read_model_folder(folder: Path) -> dict[str, Any]:
    """The provenance of a corrected model folder."""
    return json.loads((Path(folder) / MODEL_FILE).read_text())
