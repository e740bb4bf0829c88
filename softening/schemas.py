"""Output documents, the one home of every schema the package writes.

Every field carries a description with its unit; provenance is recorded. Every layer may import
this module; it imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import total_ordering
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymatgen.core import Structure

__all__ = [
    "Flag",
    "flag_text",
    "flag_texts",
    "StudyResult",
    "BarrierDoc",
    "BarrierValues",
    "CodeInfo",
    "CorrectionResult",
    "FrameResult",
    "FrameSelection",
    "FrameSpec",
    "GroupVerification",
    "MDResult",
    "MDTrajectory",
    "ModelInfo",
    "DefectDoc",
    "DefectRow",
    "DefectValues",
    "MigrationDoc",
    "MigrationValues",
    "MixingCell",
    "MixingDoc",
    "MixingValues",
    "NEBResult",
    "PhononArrays",
    "PhononDoc",
    "PhononSetup",
    "PhononValues",
    "PropertyDoc",
    "SofteningDoc",
    "SurfaceDoc",
    "SurfaceRow",
    "SurfaceValues",
    "UMLIPResults",
    "VacancyDoc",
    "VacancyRow",
    "VacancyValues",
    "VerificationDoc",
    "content_key",
]


def _now() -> datetime:
    return datetime.now(UTC)


_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


@total_ordering
class Flag(BaseModel):
    """A warning attached to a result: a kind that queries filter on, and a human detail.

    Kinds are snake_case words (``unconverged``, ``hubbard_u``, ``low_precision``, ``missing_frames``,
    ``uncorrelated``, ``nac_ignored``...). Text written as ``"kind: detail"`` (how dataset readers and
    documents stored by earlier versions write flags) is accepted and split.
    """

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="What kind of warning (snake_case; what queries filter on).")
    detail: str = Field("", description="What exactly, for a human (free text).")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return cls.parse(value)
        return value

    @staticmethod
    def parse(text: str) -> dict[str, str]:
        """``"kind: detail"`` -> ``{"kind": ..., "detail": ...}``; other text is a ``note``."""
        kind, sep, detail = text.partition(":")
        kind = kind.strip()
        if _KIND.match(kind):
            return {"kind": kind, "detail": detail.strip() if sep else ""}
        return {"kind": "note", "detail": text.strip()}

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind

    def __lt__(self, other: Flag) -> bool:
        return (self.kind, self.detail) < (other.kind, other.detail)


def flag_text(flag: Flag | dict[str, Any] | str) -> str:
    """A flag as ``"kind: detail"`` text (the ``--json`` and table form): a :class:`Flag`, a stored
    flag's dict, or text as it was written."""
    if isinstance(flag, str):
        return flag
    return str(flag if isinstance(flag, Flag) else Flag.model_validate(flag))


def flag_texts(flags: Iterable[Flag | dict[str, Any] | str] | None) -> list[str]:
    """Flags as ``"kind: detail"`` texts (see :func:`flag_text`)."""
    return [flag_text(f) for f in flags or []]


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
    flags: list[Flag] = Field(
        default_factory=list, description="Warnings about this result (kind, detail)."
    )
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

    #: Fields kept in the JobStore's ``data`` store (large arrays), not in the document.
    data_fields: ClassVar[tuple[str, ...]] = ("forces",)

    model: ModelInfo = Field(description="The uMLIP and its provenance.")
    frames: list[FrameResult] = Field(description="One result per frame, in input order.")
    wall_time: float | None = Field(None, description="Wall time of all evaluations, s.")
    content_key: str | None = Field(
        None, description="SHA-256 of the frames (ids and structures) + model weights + dtype."
    )
    reused: bool = Field(False, description="True when taken from the store instead of computed.")


class SofteningDoc(BaseModel):
    """The softening of one uMLIP on one material (or a pooled set), against a reference."""

    #: Fields kept in the JobStore's ``data`` store (large arrays), not in the document.
    data_fields: ClassVar[tuple[str, ...]] = ("forces_ml", "forces_ref")

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
    flags: list[Flag] = Field(
        default_factory=list, description="Warnings about this result (kind, detail)."
    )
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
    content_key: str | None = Field(
        None,
        description="SHA-256 of the compared inputs (uMLIP and reference content keys, bootstrap "
        "settings); equal keys = same result.",
    )
    reused: bool = Field(False, description="True when taken from the store instead of computed.")
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

    #: Fields kept in the JobStore's ``data`` store (large arrays), not in the document.
    data_fields: ClassVar[tuple[str, ...]] = ("trajectory",)

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


# ---- properties (phonons now; surfaces, vacancies, migration barriers next) ------------------------


class StudyResult(BaseModel):
    """What a softening study flow outputs, typed by role (one container, not a mixed list).

    :class:`~softening.workflows.softening.SofteningFlowMaker` outputs a dict with these keys; the
    resolved outputs validate into this model.
    """

    softening: list[SofteningDoc] = Field(
        default_factory=list,
        description="One comparison per material and model: scale, MAE, cMAE (eV/Å) and more.",
    )
    verification: list[VerificationDoc] = Field(
        default_factory=list,
        description="One held-out check of the correction per material and model (when the "
        "study corrects the models).",
    )


class PhononSetup(BaseModel):
    """What fixes a finite-displacement phonon calculation: cell, supercell and displacements.

    The same setup is used for the reference and for every model, so that only the forces differ.
    """

    unitcell: Structure = Field(
        description="Unit cell the supercell is built from (positions in Å; a 'magmom' site "
        "property, in μB, where phonopy used collinear moments for the symmetry)."
    )
    supercell_matrix: list[list[int]] = Field(
        description="Supercell matrix (rows: supercell vectors in unit-cell vectors)."
    )
    primitive_matrix: list[list[float]] = Field(
        description="Primitive cell vectors in unit-cell vectors (as phonopy resolved them)."
    )
    symprec: float = Field(description="Symmetry tolerance of phonopy, Å.")
    displacements: list[tuple[int, tuple[float, float, float]]] = Field(
        description="Displaced supercell atom (0-based index) and its displacement vector, Å."
    )
    distance: float | None = Field(
        None, description="Displacement amplitude, Å (None: read from existing data)."
    )


class PropertyDoc(BaseModel):
    """A materials property computed with a uMLIP and compared with a reference (one document per
    material, model and property).

    The base of every property document (phonons, surfaces, vacancies, barriers, mixing energies
    and any registered property): the same identity and provenance fields, so that one query by
    ``property``, ``material_id``, ``formula``, ``elements`` or ``model.name`` finds them all; each
    subclass adds its numbers as a typed ``values`` sub-document, and its large arrays as
    ``arrays`` (kept in the JobStore's ``data`` store). :meth:`create` fills the header once.
    """

    property: str = Field(description="Property name, as registered: 'phonon', 'surface', ...")
    material_id: str = Field(description="Material identifier (folder name, file stem or id).")
    formula: str = Field(description="Reduced formula.")
    chemsys: str = Field(description="Chemical system, elements joined by '-' alphabetically.")
    elements: list[str] = Field(description="Elements present, alphabetical.")
    model: ModelInfo = Field(description="uMLIP name, family, version and weights SHA-256.")
    reference: CodeInfo = Field(description="Reference code (DFT), version and settings.")
    ratio: float | None = Field(
        None,
        description="The property's headline uMLIP/reference ratio (phonons: highest-frequency "
        "ratio; dimensionless, < 1 = softened).",
    )
    flags: list[Flag] = Field(
        default_factory=list, description="Warnings about this result (kind, detail)."
    )
    sources: list[str] = Field(
        default_factory=list, description="Input files of the reference data (when read)."
    )
    parent_uuids: list[str] = Field(
        default_factory=list, description="uuids of the jobs whose outputs were compared."
    )
    package_version: str = Field(description="softening version that produced the document.")
    created_at: datetime = Field(default_factory=_now, description="Creation time (UTC).")

    @classmethod
    def create(
        cls,
        *,
        material_id: str,
        composition: Any,
        model: ModelInfo | dict[str, Any],
        reference: CodeInfo | dict[str, Any],
        values: Any,
        **fields: Any,
    ) -> PropertyDoc:
        """The document with its header (formula, chemical system, elements, package version)
        derived once from ``composition`` (a pymatgen Composition, or a Structure's); any other
        field (``ratio``, ``flags``, ``sources``, ``parent_uuids``, ``setup``...) as keyword."""
        from importlib.metadata import PackageNotFoundError, version

        composition = getattr(composition, "composition", composition)
        elements = sorted({el.symbol for el in composition.elements})
        try:
            package_version = version("softening")
        except PackageNotFoundError:  # a source tree that was never installed
            package_version = "unknown"
        return cls(
            material_id=material_id,
            formula=composition.reduced_formula,
            chemsys="-".join(elements),
            elements=elements,
            model=model,
            reference=reference,
            values=values,
            package_version=fields.pop("package_version", package_version),
            **fields,
        )


class PhononValues(BaseModel):
    """The numbers of a phonon comparison (frequencies in THz, forces in eV/Å)."""

    omega_max_ref: float = Field(description="Highest mesh frequency of the reference, THz.")
    omega_max: float = Field(description="Highest mesh frequency of the model, THz.")
    omega_max_ratio: float = Field(
        description="omega_max / omega_max_ref (dimensionless; < 1 = softened)."
    )
    freq_mae: float = Field(
        description="Mean |f_model - f_ref| over mesh points (weighted) and bands, THz."
    )
    freq_max_abs_error: float = Field(description="Largest |f_model - f_ref| on the mesh, THz.")
    imaginary_fraction_ref: float = Field(
        description="Share of reference mesh modes below -imaginary_tol (dimensionless)."
    )
    imaginary_fraction: float = Field(
        description="Share of model mesh modes below -imaginary_tol (dimensionless)."
    )
    imaginary_tol: float = Field(description="Imaginary-mode threshold, THz.")
    scale: float = Field(
        description="Slope through the origin of model vs reference forces on the displaced "
        "supercells, residual forces removed (dimensionless; < 1 = softened)."
    )
    mae: float = Field(description="Force MAE on the displaced supercells, eV/Å.")
    n_displacements: int = Field(description="Displaced supercells.")
    n_supercell_atoms: int = Field(description="Atoms in the supercell.")
    mesh: list[int] = Field(description="q-point mesh (Gamma-centred).")
    residual_force_max: float = Field(
        description="Largest force of the model on the undisplaced supercell (subtracted), eV/Å."
    )
    residual_force_max_ref: float | None = Field(
        None,
        description="Largest reference force on the undisplaced supercell (subtracted), eV/Å; "
        "None when not computed (existing data).",
    )
    temperature: float = Field(description="Temperature of the thermal properties, K.")
    free_energy_ref: float = Field(
        description="Reference harmonic free energy, kJ/mol (per mole of primitive cells)."
    )
    free_energy: float = Field(
        description="Model harmonic free energy, kJ/mol (per mole of primitive cells)."
    )
    entropy_ref: float = Field(description="Reference vibrational entropy, J/(K mol).")
    entropy: float = Field(description="Model vibrational entropy, J/(K mol).")
    heat_capacity_ref: float = Field(description="Reference heat capacity C_v, J/(K mol).")
    heat_capacity: float = Field(description="Model heat capacity C_v, J/(K mol).")


class PhononArrays(BaseModel):
    """Large arrays of a phonon comparison (JobStore ``data`` store)."""

    qpoints: list[list[float]] = Field(
        description="Irreducible mesh points, fractional (primitive reciprocal basis)."
    )
    weights: list[float] = Field(description="Multiplicity of each mesh point.")
    frequencies_ref: list[list[float]] = Field(
        description="Reference mesh frequencies (nq, bands), THz."
    )
    frequencies: list[list[float]] = Field(description="Model mesh frequencies (nq, bands), THz.")
    band_distances: list[float] = Field(
        default_factory=list, description="Band-path distance of each point, 1/Å (no 2π)."
    )
    band_ticks: list[tuple[float, str]] = Field(
        default_factory=list, description="High-symmetry points on the band path (distance, label)."
    )
    band_frequencies_ref: list[list[float]] = Field(
        default_factory=list, description="Reference band frequencies (points, bands), THz."
    )
    band_frequencies: list[list[float]] = Field(
        default_factory=list, description="Model band frequencies (points, bands), THz."
    )
    forces_ref: list[list[list[float]]] = Field(
        description="Reference forces on the displaced supercells (n_disp, n_atoms, 3), eV/Å, "
        "residual removed where known."
    )
    forces: list[list[list[float]]] = Field(
        description="Model forces on the displaced supercells (n_disp, n_atoms, 3), eV/Å, "
        "residual removed."
    )


class PhononDoc(PropertyDoc):
    """Phonons of one material with one uMLIP against a reference (finite displacements)."""

    #: Fields kept in the JobStore's ``data`` store (large arrays), not in the document.
    data_fields: ClassVar[tuple[str, ...]] = ("arrays",)

    property: str = Field("phonon", description="Property name: 'phonon'.")
    values: PhononValues = Field(description="Frequencies, force figures, thermal properties.")
    setup: PhononSetup = Field(description="Cell, supercell and displacements used on both sides.")
    arrays: PhononArrays | None = Field(
        None, description="Frequencies on the mesh and band path, forces (data store)."
    )


# ---- surfaces, vacancies, migration barriers (PropertyDoc subclasses) ---------------------------


class SurfaceRow(BaseModel):
    """One slab: reference and model surface energies on the same geometry."""

    frame_id: str = Field(description="Slab frame id (index in its file, or generated id).")
    description: str = Field(description="Slab description from the data, or the facet made.")
    facet: list[int] | None = Field(None, description="Miller index [h, k, l] (None: unnamed).")
    reconstructed: bool = Field(False, description="Whether the data names a reconstruction.")
    n_atoms: int = Field(description="Atoms in the slab.")
    area: float = Field(description="In-plane area of the slab cell, Å^2.")
    vacuum: float = Field(description="Empty gap along the surface normal, Å.")
    gamma_ref: float = Field(description="Reference surface energy, J/m^2.")
    gamma: float = Field(description="Model surface energy, J/m^2.")
    gamma_ref_ev: float = Field(description="Reference surface energy, eV/Å^2.")
    gamma_ev: float = Field(description="Model surface energy, eV/Å^2.")
    e_slab_ref: float = Field(description="Reference total energy of the slab, eV.")
    e_slab: float = Field(description="Model total energy of the slab, eV.")
    relaxed: bool = Field(False, description="Whether each method relaxed the slab itself.")
    source: str | None = Field(None, description="Where the slab was read from (file@index).")


class SurfaceValues(BaseModel):
    """Surface energies of one material with one model against the reference."""

    rows: list[SurfaceRow] = Field(description="One row per slab.")
    bulk_frame: str = Field(description="The bulk frame both sides take energies per atom from.")
    bulk_choice: str = Field(
        description="How the bulk frame was chosen: 'ground_state' (a frame named so), "
        "'lowest_energy' (lowest reference energy per atom among bulk frames), or 'computed'."
    )
    e_bulk_ref: float = Field(description="Reference bulk energy per atom, eV/atom.")
    e_bulk: float = Field(description="Model bulk energy per atom (same frame), eV/atom.")
    mae: float | None = Field(None, description="Mean |gamma - gamma_ref| over slabs, J/m^2.")
    mean_ratio: float | None = Field(
        None, description="Mean gamma / gamma_ref (dimensionless; < 1 = underestimated)."
    )
    fraction_underestimated: float | None = Field(
        None, description="Share of slabs with gamma < gamma_ref (dimensionless)."
    )
    skipped: list[str] = Field(
        default_factory=list, description="Slabs left out, as '<description>: <reason>'."
    )


class SurfaceDoc(PropertyDoc):
    """Surface energies of one material with one uMLIP against a reference."""

    property: str = Field("surface", description="Property name: 'surface'.")
    values: SurfaceValues = Field(description="Per-slab surface energies and their summary.")


class VacancyRow(BaseModel):
    """One symmetry-distinct vacancy: formation energies of reference and model."""

    site: int = Field(description="Index of the removed site in the bulk supercell (0-based).")
    species: str = Field(description="Element removed.")
    multiplicity: int = Field(description="Symmetry-equivalent sites in the unit cell.")
    n_atoms: int = Field(description="Atoms in the defect supercell.")
    e_vac_ref: float = Field(description="Reference vacancy formation energy, eV.")
    e_vac: float = Field(description="Model vacancy formation energy, eV.")
    e_vac_unrelaxed_ref: float | None = Field(
        None, description="Reference formation energy before relaxation, eV."
    )
    e_vac_unrelaxed: float | None = Field(
        None, description="Model formation energy before relaxation, eV."
    )
    relaxed: bool = Field(False, description="Whether e_vac / e_vac_ref are relaxed values.")
    converged: bool = Field(True, description="Whether every relaxation reached its fmax.")


class VacancyValues(BaseModel):
    """Vacancy formation energies of one material with one model against the reference."""

    rows: list[VacancyRow] = Field(description="One row per symmetry-distinct site.")
    supercell_matrix: list[list[int]] = Field(description="Supercell of the unit cell used.")
    min_image_distance: float = Field(
        description="Shortest distance between a vacancy and its periodic images, Å."
    )
    chemical_potential: str = Field(
        description="Chemical potential of the removed atom: 'bulk' = the element's bulk energy "
        "per atom with the same method (elemental solids)."
    )
    e_bulk_ref: float = Field(description="Reference bulk supercell energy per atom, eV/atom.")
    e_bulk: float = Field(description="Model bulk supercell energy per atom, eV/atom.")
    mae: float = Field(description="Mean |e_vac - e_vac_ref| over sites, eV.")


class VacancyDoc(PropertyDoc):
    """Vacancy formation energies of one material with one uMLIP against a reference."""

    property: str = Field("vacancy", description="Property name: 'vacancy'.")
    values: VacancyValues = Field(description="Per-site formation energies and their summary.")


class BarrierValues(BaseModel):
    """A migration barrier along the model's NEB path (ApproxNEB-like reference)."""

    path: str = Field(description="The hop: species, from-site and to-site, e.g. 'Cu 0->5'.")
    hop_distance: float = Field(description="Distance between the two sites, Å.")
    barrier_ref: float = Field(
        description="Reference barrier on the model's images: highest minus lowest image, eV (as "
        "the paper and emmet's barrier_energy_range)."
    )
    barrier: float = Field(description="Model barrier: highest minus lowest image of its NEB, eV.")
    barrier_initial_ref: float | None = Field(
        None, description="Reference barrier from the initial image (highest minus initial), eV."
    )
    barrier_initial: float | None = Field(
        None, description="Model barrier from the initial image (highest minus initial), eV."
    )
    profile_ref: list[float] = Field(
        description="Reference energies of the images relative to the initial one, eV."
    )
    profile: list[float] = Field(
        description="Model energies of the images relative to the initial one, eV."
    )
    reaction_coordinate: list[float] = Field(
        description="Cumulative path length of the images (mass-unweighted), Å."
    )
    n_images: int = Field(description="Images including both end points.")
    neb_converged: bool | None = Field(
        description="Whether the model's NEB reached its fmax (None: images from existing DFT)."
    )
    neb_steps: int | None = Field(None, description="Optimiser steps of the NEB.")
    neb_fmax: float | None = Field(None, description="Largest NEB force at the end, eV/Å.")
    climb: bool | None = Field(None, description="Whether a climbing image was used.")
    n_atoms: int = Field(description="Atoms in each image.")
    profile_mae: float | None = Field(
        None,
        description="Mean |profile - profile_ref| over the images, eV (both relative to the "
        "initial image).",
    )


class BarrierDoc(PropertyDoc):
    """A vacancy migration barrier of one material with one uMLIP against a reference."""

    property: str = Field("barrier", description="Property name: 'barrier'.")
    values: BarrierValues = Field(description="Barriers and both energy profiles.")


# ---- solid solutions (mixing energies) -------------------------------------------------------------


class MixingCell(BaseModel):
    """One ordered cell of a solid solution: formation energies of reference and model."""

    cell: str = Field(description="Cell name (sub-folder, frame name, or generated ordering id).")
    formula: str = Field(description="Reduced formula of the cell.")
    n_atoms: int = Field(description="Atoms in the cell.")
    fractions: dict[str, float] = Field(
        description="Fraction of each end member (dimensionless; for pure elements, atom "
        "fractions; for compound end members, the share of atoms in that end member)."
    )
    e_form_ref: float = Field(
        description="Reference formation energy against the reference's own end members, eV/atom."
    )
    e_form: float = Field(
        description="Model formation energy against the model's own end members, eV/atom."
    )
    e_hull_ref: float = Field(description="Reference energy above its own hull, eV/atom.")
    e_hull: float = Field(description="Model energy above its own hull, eV/atom.")
    energy_ref: float = Field(description="Reference total energy of the cell, eV.")
    energy: float = Field(description="Model total energy of the cell, eV.")
    end_member: bool = Field(False, description="Whether the cell is one end member alone.")
    relaxed: bool = Field(False, description="Whether each method relaxed the cell itself.")
    converged: bool = Field(True, description="Whether every relaxation reached its fmax.")
    source: str | None = Field(None, description="Where the cell was read from.")


class MixingValues(BaseModel):
    """Formation energies of the cells of one solid-solution system, reference against model."""

    system: str = Field(description="System name: the end members joined by '-'.")
    end_members: list[str] = Field(description="End-member compositions (reduced formulas).")
    end_member_cells_ref: list[str] = Field(
        description="The cell of each end member with the lowest reference energy per formula "
        "unit (the reference's zero)."
    )
    end_member_cells: list[str] = Field(
        description="The cell of each end member with the lowest model energy (the model's zero)."
    )
    cells: list[MixingCell] = Field(description="One row per cell, end members included.")
    n_mixed: int = Field(description="Cells with more than one end member (the statistics' cells).")
    slope: float | None = Field(
        None,
        description="Slope through the origin of model against reference formation energies "
        "over the mixed cells (dimensionless; < 1 = softened).",
    )
    std_ratio: float | None = Field(
        None,
        description="Standard deviation of model formation energies over that of the reference, "
        "mixed cells (dimensionless; < 1 = compressed spread).",
    )
    mae: float | None = Field(
        None, description="Mean |e_form - e_form_ref| over mixed cells, eV/atom."
    )
    fraction_closer_to_zero: float | None = Field(
        None,
        description="Share of mixed cells with |e_form| < |e_form_ref| (dimensionless).",
    )
    hull_ref: list[str] = Field(description="Cells on the reference's lower convex hull.")
    hull: list[str] = Field(description="Cells on the model's lower convex hull.")
    omega_ref: float | None = Field(
        None,
        description="Reference regular-solution parameter of e_form = Omega x (1 - x), eV/atom "
        "(binaries only).",
    )
    omega: float | None = Field(
        None, description="Model regular-solution parameter, eV/atom (binaries only)."
    )
    tc_ref: float | None = Field(
        None,
        description="Reference mean-field miscibility-gap temperature Omega / (2 k_B), K "
        "(binaries with Omega > 0 only).",
    )
    tc: float | None = Field(
        None, description="Model miscibility-gap temperature Omega / (2 k_B), K."
    )
    relaxed: bool = Field(False, description="Whether each method relaxed the cells itself.")


class MixingDoc(PropertyDoc):
    """Solid-solution formation energies of one system with one uMLIP against a reference."""

    property: str = Field("mixing", description="Property name: 'mixing'.")
    values: MixingValues = Field(description="Per-cell formation energies and their summary.")


class MigrationValues(BarrierValues):
    """A working-ion hop in a host: the model's NEB path (or an existing DFT NEB's images), the
    reference on the same images."""

    ion: str = Field(description="The migrating species.")
    mode: str = Field(
        description="'vacancy' (the ion hops into a vacant site of its sublattice), 'interstitial' "
        "(one extra ion between interstitial sites) or 'existing' (a DFT NEB read from folders)."
    )


class MigrationDoc(PropertyDoc):
    """A working-ion migration barrier of one host with one uMLIP against a reference."""

    property: str = Field("migration", description="Property name: 'migration'.")
    values: MigrationValues = Field(description="Barriers and both energy profiles.")


class DefectRow(BaseModel):
    """One neutral point defect, or one composition-conserving combination of them."""

    defect: str = Field(
        description="Name: 'v_O' (vacancy), 'Ni_Al' (Ni on an Al site), 'Li_i' (interstitial), "
        "with '-<k>' for a second symmetry-distinct site; combinations 'schottky', 'frenkel "
        "v_Li+Li_i', 'antisite pair Ni_Al+Al_Ni'."
    )
    kind: str = Field(
        description="'vacancy', 'antisite', 'substitution', 'interstitial' (single defects: "
        "formation energies) or 'schottky', 'frenkel', 'antisite_pair' (combinations: no "
        "chemical potential needed)."
    )
    site: list[float] | None = Field(
        None, description="Fractional coordinates of the defect site in the unit cell."
    )
    multiplicity: int | None = Field(None, description="Equivalent sites in the unit cell.")
    element_changes: dict[str, int] = Field(
        default_factory=dict, description="Atoms added (+) or removed (-) per element."
    )
    n_atoms: int | None = Field(None, description="Atoms in the defect supercell.")
    e_ref: float | None = Field(
        None,
        description="Reference energy, eV: formation energy (single defects; None without "
        "chemical potentials) or the combination's energy.",
    )
    e: float | None = Field(None, description="Model energy, eV (as e_ref).")
    e_unrelaxed_ref: float | None = Field(
        None, description="Reference energy before relaxation, eV (with relaxation)."
    )
    e_unrelaxed: float | None = Field(
        None, description="Model energy before relaxation, eV (with relaxation)."
    )
    relaxed: bool = Field(False, description="Whether e_ref / e are relaxed values.")
    converged: bool = Field(True, description="Whether every relaxation reached its fmax.")
    parts: list[str] = Field(
        default_factory=list, description="The single defects a combination is made of."
    )


class DefectValues(BaseModel):
    """Neutral point-defect energies of one compound with one model against the reference."""

    rows: list[DefectRow] = Field(description="Single defects, then combinations.")
    supercell_matrix: list[list[int]] = Field(description="Supercell of the unit cell used.")
    min_image_distance: float = Field(
        description="Shortest distance between a defect and its periodic images, Å."
    )
    n_bulk: int = Field(description="Atoms in the perfect supercell.")
    e_bulk_ref: float = Field(description="Reference energy of the perfect supercell, eV.")
    e_bulk: float = Field(description="Model energy of the perfect supercell, eV.")
    chemical_potentials_ref: dict[str, float] = Field(
        default_factory=dict,
        description="Reference chemical potential of each element, eV/atom (empty: none given).",
    )
    chemical_potentials: dict[str, float] = Field(
        default_factory=dict, description="Model chemical potential of each element, eV/atom."
    )
    mu_source: str | None = Field(
        None,
        description="Where the chemical potentials come from: 'given' (--mu, the same for both "
        "sides) or 'elemental' (each method's own relaxed elemental ground states); None: no "
        "formation energies, combinations only.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What the numbers mean (e.g. an element whose reference state is a molecule; "
        "charged defects are not computed).",
    )
    mae: float | None = Field(None, description="Mean |e - e_ref| over rows with both, eV.")


class DefectDoc(PropertyDoc):
    """Neutral point defects of one compound with one uMLIP against a reference."""

    property: str = Field("defect", description="Property name: 'defect'.")
    values: DefectValues = Field(description="Defect energies and their references.")


class NEBResult(BaseModel):
    """A uMLIP nudged-elastic-band path (the images the reference then labels)."""

    material_id: str = Field(description="Material identifier.")
    path: str = Field(description="The hop: species, from-site and to-site, e.g. 'Cu 0->5'.")
    hop_distance: float = Field(description="Distance between the two sites, Å.")
    frames: list[FrameSpec] = Field(description="The images, end points included (positions Å).")
    energies: list[float] = Field(description="Model energies of the images, eV.")
    model: ModelInfo = Field(description="The uMLIP that made the path.")
    converged: bool = Field(description="Whether the NEB's largest force fell below fmax.")
    steps: int = Field(description="Optimiser steps taken by the NEB.")
    fmax: float = Field(description="Largest NEB force at the end, eV/Å.")
    climb: bool = Field(description="Whether a climbing image was used.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="NEB settings (images, fmax eV/Å, steps, optimiser)."
    )
    content_key: str | None = Field(
        None, description="SHA-256 of the initial structure + model + settings (reuse)."
    )
    wall_time: float | None = Field(None, description="Wall time of the NEB, s.")
    reused: bool = Field(False, description="True when taken from the store.")


class LearningCurvePoint(BaseModel):
    """One point of a learning curve: a correction fitted on K frames per material, measured on
    the curve's common held-out frames."""

    choice: str = Field(
        description="How the training frames were chosen: highest-energy, largest-force, random "
        "or diverse."
    )
    mode: str = Field(description="Correction mode: scale, head or full.")
    k: int = Field(description="Training frames per material.")
    repeat: int = Field(description="Repeat index (random choices; 0 for deterministic ones).")
    seed: int = Field(description="Seed of the frame choice and the training.")
    train_frames: list[str] = Field(description="Frames trained on, 'material/frame'.")
    factor: float | None = Field(None, description="Scale mode: correction factor c (unitless).")
    scale: float = Field(description="Held-out force scale after the correction (unitless).")
    mae: float = Field(description="Held-out force MAE after the correction, eV/Å.")
    cmae: float = Field(description="Held-out scale-corrected force MAE after, eV/Å.")
    energy_mae: float | None = Field(
        None, description="Held-out offset-free energy MAE after, eV/atom (None: no energies)."
    )
    model_path: str | None = Field(
        None, description="Head/full: the fine-tuned model's folder (None for scale)."
    )
    wall_time: float | None = Field(None, description="Wall time of the point, s.")


class LearningCurveDoc(BaseModel):
    """A learning curve of one uMLIP: points, their statistics over repeats, the held-out set."""

    model: str = Field(description="The uMLIP's name.")
    model_spec: str = Field(description="The spec it was loaded from (name or weights path).")
    points: list[LearningCurvePoint] = Field(description="Every point, in the order run.")
    curves: list[dict[str, Any]] = Field(
        description="Per (choice, mode, k): n_repeats and {scale,mae,cmae,energy_mae}_{mean,std} "
        "(scale unitless, MAE eV/Å, energy MAE eV/atom)."
    )
    held_out: list[str] = Field(
        description="The held-out frames, 'material/frame': identical for every point, disjoint "
        "from every point's training frames."
    )
    held_out_materials: list[str] = Field(description="Materials with held-out frames.")
    before: dict[str, float | None] = Field(
        description="Held-out figures of the uncorrected model: scale (unitless), mae and cmae "
        "(eV/Å), energy_mae (eV/atom)."
    )
    skipped: list[str] = Field(
        default_factory=list,
        description="Materials left out, with why (e.g. too few frames for the largest K).",
    )
    wall_time: float | None = Field(None, description="Wall time of the whole curve, s.")
