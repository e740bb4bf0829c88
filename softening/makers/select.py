"""Pick frames from an MD trajectory: stratified by energy (the paper's protocol) or diverse in the
model's structure features (DIRECT), then some strained."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jobflow import Maker
from pymatgen.core import Lattice, Structure

from softening import defaults
from softening.analysis.sampling import assign_strains, stratified_energy_indices
from softening.errors import InputError
from softening.makers.job import softening_job
from softening.schemas import FrameSelection, FrameSpec, MDResult

#: How frames are picked from a trajectory: one per potential-energy bin (the paper), or one per
#: BIRCH cluster of the PCA-reduced structure features of the MD's model (DIRECT, Qi et al. 2024).
SELECTION_METHODS = ("stratified-energy", "diverse")


@dataclass
class FrameSelectionMaker(Maker):
    """Select ``n_frames`` frames, one per potential-energy bin, and strain some isotropically.

    The paper takes 10 frames per trajectory (stratified, DIRECT-style) and strains 4 of them by
    +3 % or -3 % along the three lattice vectors; these are the defaults.

    Attributes
    ----------
    name
        Job name.
    n_frames
        Frames to select.
    n_strained_plus, n_strained_minus
        Frames strained by +``strain`` and by -``strain``.
    strain
        Isotropic strain magnitude (fraction; 0.03 = 3 %).
    seed
        Seed of the choice within energy bins and of the strained frames.
    method
        One of :data:`SELECTION_METHODS`.
    model
        ``diverse``: the uMLIP whose structure features are clustered (default: the one that
        drove the MD).
    """

    name: str = "select frames"
    n_frames: int = defaults.FRAMES
    n_strained_plus: int = defaults.STRAINED
    n_strained_minus: int = defaults.STRAINED
    strain: float = 0.03
    seed: int = defaults.SEED
    method: str = defaults.FRAME_SELECTION
    model: str | None = None

    def __post_init__(self) -> None:
        if self.method not in SELECTION_METHODS:
            raise InputError(
                f"frame selection must be one of {', '.join(SELECTION_METHODS)}, got {self.method!r}"
            )
        if self.n_frames < 1:
            raise InputError(f"frames must be >= 1, got {self.n_frames}")
        if self.n_strained_plus + self.n_strained_minus > self.n_frames:
            raise InputError("more strained frames than frames")

    def check_md(self, md_maker) -> None:
        """Refuse an MD that keeps fewer frames than this selects (before the MD runs).

        Raises
        ------
        InputError
            ``md_maker.stride < 1`` or too few kept frames (see
            :func:`softening.datasets.checks.check_sampling`).
        """
        from softening.datasets.checks import check_sampling

        check_sampling(md_maker, self)

    @softening_job(FrameSelection)
    def make(self, md: MDResult) -> FrameSelection:
        """Select frames of ``md``'s kept trajectory."""
        return select_frames(md, self)


def select_frames(md: MDResult, maker: FrameSelectionMaker) -> FrameSelection:
    """The selection itself (pure apart from building structures)."""
    traj = md.trajectory
    n_atoms = len(md.structure)
    if len(traj.steps) < maker.n_frames:
        raise InputError(
            f"the MD kept {len(traj.steps)} frames, fewer than the {maker.n_frames} requested; "
            "run more steps or lower the stride"
        )
    e_per_atom = np.asarray(traj.energies) / n_atoms
    species = [site.species for site in md.structure]

    def structure(idx: int) -> Structure:
        return Structure(
            Lattice(traj.cells[idx]), species, traj.positions[idx], coords_are_cartesian=True
        )

    if maker.method == "diverse":
        from softening.analysis.learning_curve import direct_select
        from softening.models import load_model

        model = load_model(maker.model or md.model.path or md.model.name)
        features = model.backend.features(model, [structure(i) for i in range(len(traj.steps))])
        picked = direct_select(features, maker.n_frames, seed=maker.seed)
    else:
        picked = stratified_energy_indices(e_per_atom, maker.n_frames, seed=maker.seed)
    strains = assign_strains(
        maker.n_frames, maker.n_strained_plus, maker.n_strained_minus, maker.strain, seed=maker.seed
    )
    frames = []
    for i, (idx, eps) in enumerate(zip(picked, strains, strict=True)):
        s = structure(idx)
        if eps:
            s.apply_strain(eps)  # isotropic: lattice and positions scale by (1 + eps)
        frames.append(
            FrameSpec(
                frame_id=str(i),
                material_id=md.material_id,
                formula=md.formula,
                structure=s,
                md_step=traj.steps[idx],
                strain=eps,
                energy_per_atom_md=float(e_per_atom[idx]),
            )
        )
    return FrameSelection(
        material_id=md.material_id, formula=md.formula, frames=frames, method=maker.method
    )
