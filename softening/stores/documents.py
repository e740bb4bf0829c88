"""Output documents. Every field carries a description with its unit; provenance is recorded."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.core import Structure


def _now() -> datetime:
    return datetime.now(UTC)


def content_key(structure: Structure, code: str, settings: dict[str, Any]) -> str:
    """A hash of a structure and the calculator settings that label it.

    Two frames with the same key give the same result, so a finished result can be reused (resume).
    Positions and lattice are rounded to 1e-6 Å so that a round trip through JSON keeps the key.
    """
    payload = {
        "lattice": np.round(structure.lattice.matrix, 6).tolist(),
        "species": [site.species_string for site in structure],
        "coords": np.round(structure.cart_coords, 6).tolist(),
        "code": code,
        "settings": settings,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class CodeInfo(BaseModel):
    """Which code produced a result, and how."""

    name: str = Field(description="Code name, e.g. 'gpaw', 'emt', 'vasp', 'CHGNet-0.3.0'.")
    version: str | None = Field(None, description="Code or model version string.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Calculator settings (cutoffs in eV, k-spacing in 1/Å)."
    )


class ModelInfo(BaseModel):
    """Provenance of a uMLIP."""

    name: str = Field(description="Canonical model name, e.g. 'CHGNet-0.3.0'.")
    family: str = Field(description="Model family: chgnet, m3gnet, mace, ...")
    version: str | None = Field(None, description="Model (weights) version.")
    weights_sha256: str | None = Field(None, description="SHA-256 of the weights file(s).")
    path: str | None = Field(None, description="Where the weights were loaded from.")


class FrameSpec(BaseModel):
    """A frame chosen for labelling: the structure plus where it came from."""

    frame_id: str = Field(description="Frame identifier, unique within the material.")
    material_id: str = Field(description="Material identifier (or reduced formula).")
    formula: str = Field(description="Reduced formula.")
    structure: Structure = Field(description="The configuration (positions in Å).")
    md_step: int | None = Field(None, description="MD step the frame was taken from.")
    strain: float = Field(
        0.0, description="Isotropic strain applied after MD (fraction, 0.03 = 3 %)."
    )
    energy_per_atom_md: float | None = Field(
        None, description="Potential energy per atom of the MD model at this frame, eV/atom."
    )


class FrameResult(BaseModel):
    """One single-point calculation of one frame (reference DFT or uMLIP)."""

    frame_id: str = Field(description="Frame identifier, unique within the material.")
    material_id: str = Field(description="Material identifier (or reduced formula).")
    formula: str = Field(description="Reduced formula.")
    structure: Structure = Field(description="The configuration (positions in Å).")
    energy: float | None = Field(None, description="Total energy, eV.")
    forces: list[list[float]] | None = Field(None, description="Forces, (n_atoms, 3), eV/Å.")
    stress: list[list[float]] | None = Field(
        None, description="Stress, 3x3, eV/Å^3, ASE sign (positive = tensile)."
    )
    code: CodeInfo = Field(description="The code that produced the result, version and settings.")
    converged: bool = Field(True, description="Whether the calculation converged (SCF for DFT).")
    flags: list[str] = Field(default_factory=list, description="Warnings about this result.")
    content_key: str | None = Field(
        None, description="SHA-256 of structure + code + settings; equal keys = same result."
    )
    region: str | None = Field(
        None, description="Source region (group and temperature, e.g. 'AIMD-NVT 843 K')."
    )
    wall_time: float | None = Field(None, description="Wall time of the calculation, s.")
    reused: bool = Field(False, description="True when taken from the store instead of computed.")
    created_at: datetime = Field(default_factory=_now, description="Creation time (UTC).")


class UMLIPResults(BaseModel):
    """Single points of many frames with one uMLIP."""

    model: ModelInfo = Field(description="The uMLIP and its provenance.")
    frames: list[FrameResult] = Field(description="One result per frame, in input order.")
    wall_time: float | None = Field(None, description="Wall time of all evaluations, s.")


class SofteningDoc(BaseModel):
    """The softening of one uMLIP on one material (or a pooled set), against a reference."""

    material_id: str = Field(
        description="Material identifier (or reduced formula); 'pooled' for all."
    )
    formula: str = Field(description="Reduced formula ('' for pooled results).")
    chemsys: str = Field(
        description="Chemical system, elements joined by '-' in alphabetical order."
    )
    elements: list[str] = Field(description="Elements present, alphabetical.")
    model: ModelInfo = Field(description="uMLIP name, family, version and weights SHA-256.")
    reference: CodeInfo = Field(description="Reference code, version and settings.")
    n_frames: int = Field(description="Frames with both reference and uMLIP results.")
    n_atoms: int = Field(description="Atoms summed over the frames.")
    scale: float = Field(
        description="Softening scale: slope through the origin of uMLIP vs reference force "
        "components (dimensionless; < 1 = softened)."
    )
    scale_ci: tuple[float, float] = Field(
        description="95 % percentile bootstrap interval of `scale` [low, high] (over frames, or "
        "atoms when < 3 frames; dimensionless)."
    )
    scale_with_intercept: float = Field(description="OLS slope with intercept (dimensionless).")
    intercept: float = Field(description="OLS intercept, eV/Å.")
    mae: float = Field(description="Force MAE over components, eV/Å.")
    cmae: float = Field(description="Force MAE after dividing uMLIP forces by `scale`, eV/Å.")
    energy_mae_per_atom: float | None = Field(
        None,
        description="Energy MAE per atom after removing the material's mean offset, eV/atom.",
    )
    per_element_scales: dict[str, float] = Field(
        default_factory=dict, description="`scale` over the force rows of each element."
    )
    frame_ids: list[str] = Field(default_factory=list, description="Frames used.")
    missing_frames: list[str] = Field(
        default_factory=list, description="Frames whose reference or uMLIP result is missing."
    )
    flags: list[str] = Field(default_factory=list, description="Warnings about this result.")
    parent_uuids: list[str] = Field(
        default_factory=list, description="uuids of the jobs whose outputs were compared."
    )
    forces_ml: list[list[float]] | None = Field(
        None, description="Stacked uMLIP force components (n_atoms, 3), eV/Å (data store)."
    )
    forces_ref: list[list[float]] | None = Field(
        None, description="Stacked reference force components (n_atoms, 3), eV/Å (data store)."
    )
    package_version: str = Field(description="softening version that produced the document.")
    created_at: datetime = Field(default_factory=_now, description="Creation time (UTC).")


class MDTrajectory(BaseModel):
    """Strided MD trajectory of the kept (post-equilibration) part; arrays go to the data store."""

    steps: list[int] = Field(description="MD step of each stored frame.")
    positions: list[list[list[float]]] = Field(description="Cartesian positions per frame, Å.")
    cells: list[list[list[float]]] = Field(description="Cell per frame, 3x3, Å.")
    energies: list[float] = Field(description="Potential energy per frame, eV.")
    temperatures: list[float] = Field(description="Instantaneous temperature per frame, K.")


class MDResult(BaseModel):
    """A uMLIP NVT MD run used to sample high-energy frames."""

    material_id: str = Field(description="Material identifier (or reduced formula).")
    formula: str = Field(description="Reduced formula.")
    structure: Structure = Field(description="Starting structure.")
    model: ModelInfo = Field(description="uMLIP that drove the MD.")
    temperature: float = Field(description="Target temperature, K.")
    timestep: float = Field(description="Time step, fs.")
    n_steps: int = Field(description="MD steps run.")
    n_equilibration: int = Field(description="Steps discarded as equilibration.")
    stride: int = Field(description="Steps between stored frames.")
    thermostat: str = Field(description="Thermostat name.")
    seed: int = Field(description="Seed of the initial velocities and the thermostat noise.")
    mean_temperature: float = Field(description="Mean temperature over kept frames, K.")
    trajectory: MDTrajectory = Field(description="Kept, strided trajectory (data store).")
    content_key: str = Field(description="SHA-256 of start structure + MD settings.")
    wall_time: float | None = Field(None, description="Wall time, s.")
    reused: bool = Field(False, description="True when taken from the store instead of run.")


class FrameSelection(BaseModel):
    """Frames picked from an MD trajectory for labelling."""

    material_id: str = Field(description="Material identifier (or reduced formula).")
    formula: str = Field(description="Reduced formula.")
    frames: list[FrameSpec] = Field(description="Selected (and possibly strained) frames.")
    method: str = Field(description="Selection method, e.g. 'stratified-energy'.")


class CorrectionResult(BaseModel):
    """A linear correction or fine-tune of a uMLIP, fitted on a few frames per material."""

    base_model: ModelInfo = Field(description="The uMLIP that was corrected.")
    model: ModelInfo = Field(description="The corrected model (name, path of its folder).")
    mode: str = Field(description="scale (linear), head (readout only) or full fine-tune.")
    method: str | None = Field(
        None, description="Closed form of the scale mode: lstsq, inverse-scale."
    )
    factor: float = Field(
        1.0, description="Scalar c multiplying energy, forces, stress (dimensionless)."
    )
    trained_factor: float | None = Field(
        None, description="c of the paper's trained scalar layer (cross-check), dimensionless."
    )
    train_frames: list[str] = Field(
        description="'material/frame' ids the correction was fitted on."
    )
    held_out_frames: list[str] = Field(description="'material/frame' ids never trained on.")
    frame_choice: str = Field(description="How training frames were chosen per material.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Training settings.")
    training_history: dict[str, Any] = Field(
        default_factory=dict, description="Train/validation MAEs per epoch (eV/atom, eV/Å, GPa)."
    )
    wall_time: float | None = Field(None, description="Wall time of the fit, s.")


class GroupVerification(BaseModel):
    """Held-out figures of one group (material and region) before and after a correction."""

    group: str = Field(description="Material and region, e.g. 'Si AIMD-NVT 843 K'.")
    n_frames: int = Field(description="Held-out frames in the group.")
    scale_before: float = Field(description="Held-out scale of the base model (dimensionless).")
    scale_after: float = Field(description="Held-out scale of the corrected model (dimensionless).")
    mae_before: float = Field(description="Held-out force MAE of the base model, eV/Å.")
    mae_after: float = Field(description="Held-out force MAE of the corrected model, eV/Å.")
    cmae_before: float = Field(description="Held-out cMAE of the base model, eV/Å.")
    cmae_after: float = Field(description="Held-out cMAE of the corrected model, eV/Å.")
    worse: bool = Field(description="True when the correction raised this group's MAE.")


class VerificationDoc(BaseModel):
    """How a correction carries over to frames it never saw (the transferability report)."""

    correction: CorrectionResult = Field(description="The correction that was verified.")
    before: dict[str, float] = Field(description="Pooled held-out scale, mae, cmae (eV/Å) before.")
    after: dict[str, float] = Field(description="Pooled held-out scale, mae, cmae (eV/Å) after.")
    groups: list[GroupVerification] = Field(description="Per material and region.")
    warnings: list[str] = Field(default_factory=list, description="Groups the correction worsens.")
    package_version: str = Field(description="softening version that produced the document.")
    created_at: datetime = Field(default_factory=_now, description="Creation time (UTC).")
