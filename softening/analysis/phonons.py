"""Harmonic phonons from finite displacements, and how a uMLIP's phonons compare with DFT's.

Pure functions, no I/O: arrays in, numbers out; phonopy is the engine (force constants, dynamical
matrices, thermal properties). Units: frequencies in THz (phonopy's default for eV, Å and amu),
forces in eV/Å, displacements in Å.

The protocol is the same for the reference and for every model, so that differences come from the
forces alone: the same supercell, the same displacements, the forces of the undisplaced supercell
subtracted where they are known (a structure that is not at the method's own minimum has residual
forces that would otherwise leak into the force constants), force constants symmetrised
(translational and permutation symmetry, as ``phonopy.load`` does), no non-analytical term correction
(uMLIPs have no Born charges), frequencies on a Gamma-centred mesh (the Gamma point included, and the
mesh keeps the point-group symmetry).

The seed paper's phonon benchmark (Deng et al., npj Comput. Mater. 11, 9 (2025), PhononDB) is the ratio
of the highest frequency of the uMLIP to DFT's, ``omega_max_ratio < 1`` for softened potentials.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from softening.errors import one_line

if TYPE_CHECKING:
    from phonopy import Phonopy

__all__ = [
    "DEFAULT_IMAGINARY_TOL",
    "DEFAULT_MESH",
    "ForceConsistency",
    "PhononComparison",
    "PhononResult",
    "band_path",
    "build_phonopy",
    "compare_phonons",
    "displacement_list",
    "force_consistency",
    "harmonic_phonons",
    "imaginary_fraction",
]

#: Mesh of the frequency comparison (the issue's protocol: 16x16x16, Gamma-centred).
DEFAULT_MESH: tuple[int, int, int] = (16, 16, 16)

#: Frequencies below minus this are counted as imaginary, THz. Acoustic modes at and next to Gamma
#: scatter by a few 0.01 THz around 0 from force noise (float32 models, finite displacements); the
#: lowest non-zero acoustic frequency on a 16^3 mesh is about 0.3 THz and above.
DEFAULT_IMAGINARY_TOL: float = 0.05


#: Least share of displacements whose displaced atom must feel a restoring force (``f·u < 0``): at a
#: (meta)stable structure the on-site force constant is positive, so every displaced atom is pulled
#: back; in phonopy's VASP examples ``f·u`` is -2e-4 to -1e-3 eV for every displacement of 0.01 Å.
MIN_RESTORING_FRACTION: float = 0.5

#: Least cosine (through the origin) between model and reference forces on the displaced supercells:
#: 0.93-0.995 for CHGNet on phonopy's VASP examples, about 0 for forces of shuffled atoms.
MIN_FORCE_CORRELATION: float = 0.5

#: Range of the force scale (model against reference, through the origin) a uMLIP can have: the
#: seed paper's softening is tens of per cent (CHGNet on phonopy's examples: 0.42-0.78); a
#: material's forces put in another's folder (NaCl with MgO's FORCE_SETS): 0.081.
PLAUSIBLE_FORCE_SCALE: tuple[float, float] = (0.2, 5.0)


@dataclass
class ForceConsistency:
    """Whether reference forces of a finite-displacement set can belong to its structure.

    Attributes
    ----------
    n_displacements
        Displaced supercells.
    n_restoring
        Displacements whose displaced atom's reference force opposes its displacement (``f·u < 0``).
    correlation
        Cosine (through the origin) between model and reference forces over every component of the
        displaced supercells; ``None`` without model forces (or when either side is all zero).
    scale
        Least-squares slope through the origin of model against reference forces; ``None`` as above.
    """

    n_displacements: int
    n_restoring: int
    correlation: float | None = None
    scale: float | None = None

    @property
    def restoring_fraction(self) -> float:
        """Share of displacements with a restoring force on the displaced atom."""
        return self.n_restoring / self.n_displacements if self.n_displacements else 1.0

    def problems(self) -> list[str]:
        """What was measured that real data of the structure cannot give, in words (empty: none)."""
        out = []
        if self.restoring_fraction < MIN_RESTORING_FRACTION:
            out.append(
                f"the displaced atom's reference force points along its displacement, not back, "
                f"in {self.n_displacements - self.n_restoring} of {self.n_displacements} "
                "displacement(s)"
            )
        if self.correlation is not None and self.correlation < MIN_FORCE_CORRELATION:
            out.append(
                f"model/reference force correlation {self.correlation:.2f} on the displaced "
                f"supercells (real data: above {MIN_FORCE_CORRELATION:g})"
            )
        low, high = PLAUSIBLE_FORCE_SCALE
        if self.scale is not None and self.scale > 0 and not low <= self.scale <= high:
            out.append(
                f"force scale {self.scale:.3f} (reference forces {1 / self.scale:.3g} times the "
                f"model's; uMLIPs stay within {low:g}-{high:g})"
            )
        return out


def force_consistency(
    displacements: Sequence[tuple[int, Sequence[float]]],
    forces_ref: Any,
    forces_ml: Any = None,
) -> ForceConsistency:
    """Measures of whether finite-displacement reference forces belong to their structure.

    Parameters
    ----------
    displacements
        ``(supercell atom index, displacement vector in Å)`` per displaced supercell.
    forces_ref
        Reference forces ``(n_displacements, n_super, 3)`` eV/Å (residual forces of the
        undisplaced supercell removed where known).
    forces_ml
        Model forces of the same shape (residual removed), or ``None``.

    Returns
    -------
    ForceConsistency
        Counts and measures; :meth:`ForceConsistency.problems` says what is implausible.

    Raises
    ------
    ValueError
        Shapes that do not match the displacements, or an atom index outside the supercell.
    """
    ref = np.asarray(forces_ref, dtype=float)
    if ref.ndim != 3 or ref.shape[0] != len(displacements) or ref.shape[2] != 3:
        raise ValueError(
            f"reference forces of shape {ref.shape} for {len(displacements)} displacement(s)"
        )
    restoring = 0
    for (atom, vector), f in zip(displacements, ref, strict=True):
        if not 0 <= int(atom) < len(f):
            raise ValueError(
                f"displaced atom {int(atom) + 1} is not in the {len(f)}-atom supercell"
            )
        restoring += float(f[int(atom)] @ np.asarray(vector, dtype=float)) < 0
    result = ForceConsistency(n_displacements=len(displacements), n_restoring=int(restoring))
    if forces_ml is not None:
        ml = np.asarray(forces_ml, dtype=float)
        if ml.shape != ref.shape:
            raise ValueError(f"model forces of shape {ml.shape}, reference {ref.shape}")
        a, b = ml.ravel(), ref.ravel()
        norm = float(np.sqrt((a @ a) * (b @ b)))
        if norm > 0:
            result.correlation = float(a @ b) / norm
            result.scale = float(a @ b) / float(b @ b)
    return result


def build_phonopy(
    lattice: Any,
    scaled_positions: Any,
    symbols: Sequence[str],
    supercell_matrix: Any,
    primitive_matrix: Any = "auto",
    symprec: float = 1e-5,
    magmoms: Sequence[float] | None = None,
    displacements: Sequence[tuple[int, Sequence[float]]] | None = None,
    distance: float = 0.01,
) -> Phonopy:
    """A :class:`phonopy.Phonopy` with its displacement dataset.

    Parameters
    ----------
    lattice
        Unit cell vectors as rows, Å.
    scaled_positions
        Fractional coordinates, ``(n, 3)``.
    symbols
        Chemical symbols.
    supercell_matrix
        3x3 integer matrix (or 3 diagonal entries).
    primitive_matrix
        3x3 matrix, or a phonopy keyword (``"auto"``, ``"P"``, ``"F"``, ...).
    symprec
        Symmetry tolerance, Å.
    magmoms
        Collinear initial moments (μB): they lower the symmetry of magnetic structures.
    displacements
        ``(supercell atom index, displacement vector in Å)`` pairs; ``None`` generates phonopy's
        symmetry-reduced set of ``distance``.
    distance
        Displacement amplitude, Å, when generating.

    Returns
    -------
    phonopy.Phonopy
        Without forces.

    Raises
    ------
    ValueError
        When phonopy cannot find the symmetry or build the cells (the message says why).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    try:
        with warnings.catch_warnings():
            # phonopy >= 4 warns that 'auto' resolved to a non-identity primitive matrix: intended.
            warnings.simplefilter("ignore")
            cell = PhonopyAtoms(
                symbols=list(symbols),
                cell=np.asarray(lattice, dtype=float),
                scaled_positions=np.asarray(scaled_positions, dtype=float),
                magnetic_moments=None if magmoms is None else np.asarray(magmoms, dtype=float),
            )
            phonon = Phonopy(
                cell,
                supercell_matrix=np.asarray(supercell_matrix, dtype=int),
                primitive_matrix=primitive_matrix
                if isinstance(primitive_matrix, str)
                else np.asarray(primitive_matrix, dtype=float),
                symprec=symprec,
                log_level=0,
            )
            if displacements is None:
                phonon.generate_displacements(distance=distance)
            else:
                phonon.dataset = {
                    "natom": len(phonon.supercell),
                    "first_atoms": [
                        {"number": int(a), "displacement": np.asarray(v, dtype=float)}
                        for a, v in displacements
                    ],
                }
    except Exception as exc:  # spglib, primitive-cell and supercell errors of many types
        raise ValueError(f"phonopy cannot set up the cell: {one_line(exc, limit=200)}") from exc
    n = len(phonon.supercell)
    bad = [int(a) for a, _ in (displacements or []) if not 0 <= int(a) < n]
    if bad:
        raise ValueError(f"displaced atom {bad[0] + 1} is not in the {n}-atom supercell")
    return phonon


def displacement_list(phonon: Phonopy) -> list[tuple[int, list[float]]]:
    """The ``(supercell atom index, displacement in Å)`` pairs of a phonopy type-1 dataset."""
    dataset = phonon.dataset or {}
    if "first_atoms" not in dataset:
        raise ValueError(
            "only one-atom-at-a-time displacements (phonopy's default) are supported, "
            "not random displacements"
        )
    return [
        (int(d["number"]), np.asarray(d["displacement"], dtype=float).tolist())
        for d in dataset["first_atoms"]
    ]


@dataclass
class PhononResult:
    """Harmonic phonons of one method (reference or model).

    Attributes
    ----------
    qpoints
        Irreducible mesh points, fractional in the primitive reciprocal basis, ``(nq, 3)``.
    weights
        Multiplicity of each mesh point (sum = number of mesh points).
    frequencies
        Mesh frequencies, ``(nq, 3 n_prim)``, THz, ascending per point; imaginary as negative.
    band_distances
        Path length of each band-structure point, ``(nk,)`` (1/Å without 2π), or empty.
    band_frequencies
        Band-structure frequencies, ``(nk, 3 n_prim)``, THz, or empty.
    temperature
        Temperature of the thermal properties, K.
    free_energy
        Harmonic phonon free energy at ``temperature``, kJ/mol (per mole of primitive cells).
    entropy
        Entropy at ``temperature``, J/(K mol).
    heat_capacity
        Isochoric heat capacity at ``temperature``, J/(K mol).
    force_constants
        ``(n_prim, n_super, 3, 3)`` eV/Å^2 (compact form).
    """

    qpoints: np.ndarray
    weights: np.ndarray
    frequencies: np.ndarray
    band_distances: np.ndarray
    band_frequencies: np.ndarray
    temperature: float
    free_energy: float
    entropy: float
    heat_capacity: float
    force_constants: np.ndarray = field(repr=False)


def harmonic_phonons(
    phonon: Phonopy,
    forces: Any,
    residual: Any = None,
    mesh: Sequence[int] = DEFAULT_MESH,
    temperature: float = 300.0,
    band_segments: Sequence[Sequence[Sequence[float]]] | None = None,
    band_points: int = 51,
) -> PhononResult:
    """Force constants, mesh and band frequencies, and thermal properties from displaced forces.

    Parameters
    ----------
    phonon
        From :func:`build_phonopy` (its dataset's displacements); not modified.
    forces
        Forces on each displaced supercell, ``(n_displacements, n_super, 3)``, eV/Å.
    residual
        Forces on the undisplaced supercell, ``(n_super, 3)`` eV/Å, subtracted from each set;
        ``None`` when unknown.
    mesh
        q-point mesh (Gamma-centred).
    temperature
        K.
    band_segments
        Band path: segments of fractional q-points (primitive reciprocal basis), each a list of
        the points it joins; ``None`` for no band structure.
    band_points
        Points per segment of the band structure.

    Raises
    ------
    ValueError
        On forces whose shape does not match the displacements and the supercell, NaN/inf, a
        negative or non-finite temperature, or when phonopy fails (message says why).
    """
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature {temperature} K: give a finite temperature >= 0 K")
    f = np.asarray(forces, dtype=float)
    n_disp = len((phonon.dataset or {}).get("first_atoms", []))
    n_super = len(phonon.supercell)
    if f.shape != (n_disp, n_super, 3):
        raise ValueError(
            f"forces of shape {f.shape} do not match {n_disp} displacement(s) of a "
            f"{n_super}-atom supercell"
        )
    if residual is not None:
        r = np.asarray(residual, dtype=float)
        if r.shape != (n_super, 3):
            raise ValueError(f"residual forces of shape {r.shape}, expected ({n_super}, 3)")
        f = f - r[None]
    if not np.all(np.isfinite(f)):
        raise ValueError("forces contain NaN or inf")
    import copy

    from phonopy import Phonopy

    try:
        # A fresh object (the caller's keeps no forces): same cells, a copy of the dataset.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ph = Phonopy(
                phonon.unitcell,
                supercell_matrix=phonon.supercell_matrix,
                primitive_matrix=phonon.primitive_matrix,
                symprec=phonon.symmetry.tolerance,
                log_level=0,
            )
        ph.dataset = copy.deepcopy(phonon.dataset)
        ph.forces = f
        ph.produce_force_constants()
        ph.symmetrize_force_constants()
        ph.run_mesh(list(mesh), is_gamma_center=True)
        # The three zero-frequency acoustic modes at Gamma carry no heat; left in, phonopy's sums
        # take their ~1e-8 THz noise as modes and shift the free energy by ~1e-3 eV per cell.
        # (A cutoff rather than phonopy 4's exclude_gamma_acoustic: phonopy 2.26 has no such flag.)
        ph.run_thermal_properties(temperatures=[float(temperature)], cutoff_frequency=1e-3)
        tp = ph.thermal_properties
        thermal = {
            "free_energy": tp.free_energy,
            "entropy": tp.entropy,
            "heat_capacity": tp.heat_capacity,
        }
        distances, band = np.zeros(0), np.zeros((0, 3 * len(ph.primitive)))
        if band_segments:
            qpoints = [
                np.linspace(a, b, band_points)
                for seg in band_segments
                for a, b in zip(seg[:-1], seg[1:], strict=True)
            ]
            ph.run_band_structure(qpoints)
            bs = ph.band_structure
            # Each segment's distances start where the last ended; one array for plotting.
            distances = np.concatenate(bs.distances)
            band = np.concatenate(bs.frequencies)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"phonopy failed: {one_line(exc, limit=200)}") from exc
    return PhononResult(
        qpoints=np.asarray(ph.mesh.qpoints, dtype=float),
        weights=np.asarray(ph.mesh.weights, dtype=float),
        frequencies=np.asarray(ph.mesh.frequencies, dtype=float),
        band_distances=np.asarray(distances, dtype=float),
        band_frequencies=np.asarray(band, dtype=float),
        temperature=float(temperature),
        free_energy=float(thermal["free_energy"][0]),
        entropy=float(thermal["entropy"][0]),
        heat_capacity=float(thermal["heat_capacity"][0]),
        force_constants=np.asarray(ph.force_constants, dtype=float),
    )


def imaginary_fraction(
    frequencies: Any, weights: Any = None, tol: float = DEFAULT_IMAGINARY_TOL
) -> float:
    """Share of modes (weighted by mesh multiplicity) with a frequency below ``-tol`` THz."""
    freq = np.asarray(frequencies, dtype=float)
    freq = freq.reshape(len(freq), -1)
    w = np.ones(len(freq)) if weights is None else np.asarray(weights, dtype=float)
    return float(np.sum(w[:, None] * (freq < -tol)) / (np.sum(w) * freq.shape[1]))


@dataclass
class PhononComparison:
    """How a model's mesh frequencies compare with the reference's (THz; ratio dimensionless).

    Attributes
    ----------
    omega_max_ref, omega_max
        Highest mesh frequency of the reference and of the model, THz.
    omega_max_ratio
        ``omega_max / omega_max_ref`` (the seed paper's measure; < 1 = softened).
    freq_mae
        Mean over mesh points (weighted) and bands of ``|f_model - f_ref|``, bands matched by
        order at each point, THz.
    freq_max_abs_error
        Largest ``|f_model - f_ref|``, THz.
    imaginary_fraction_ref, imaginary_fraction
        Share of modes below ``-imaginary_tol``.
    imaginary_tol
        THz.
    """

    omega_max_ref: float
    omega_max: float
    omega_max_ratio: float
    freq_mae: float
    freq_max_abs_error: float
    imaginary_fraction_ref: float
    imaginary_fraction: float
    imaginary_tol: float


def compare_phonons(
    freq_ref: Any,
    freq_ml: Any,
    weights: Any = None,
    imaginary_tol: float = DEFAULT_IMAGINARY_TOL,
) -> PhononComparison:
    """Compare mesh frequencies of a model with the reference's (same mesh, same cell).

    Parameters
    ----------
    freq_ref, freq_ml
        ``(nq, n_bands)`` THz, ascending per point (phonopy's order).
    weights
        Mesh multiplicities ``(nq,)``; ``None`` for equal weights.
    imaginary_tol
        THz.

    Raises
    ------
    ValueError
        Mismatched shapes, empty or non-finite input, or a reference without positive frequency.
    """
    ref = np.asarray(freq_ref, dtype=float)
    ml = np.asarray(freq_ml, dtype=float)
    if ref.shape != ml.shape or ref.ndim != 2 or ref.size == 0:
        raise ValueError(f"frequency arrays of shapes {ref.shape} and {ml.shape} do not match")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(ml))):
        raise ValueError("frequencies contain NaN or inf")
    w = np.ones(len(ref)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(ref),):
        raise ValueError(f"{w.shape[0]} weights for {len(ref)} mesh points")
    top_ref = float(ref.max())
    if top_ref <= 0:
        raise ValueError("the reference has no positive frequency")
    err = np.abs(ml - ref)
    return PhononComparison(
        omega_max_ref=top_ref,
        omega_max=float(ml.max()),
        omega_max_ratio=float(ml.max() / top_ref),
        freq_mae=float(np.sum(w[:, None] * err) / (np.sum(w) * ref.shape[1])),
        freq_max_abs_error=float(err.max()),
        imaginary_fraction_ref=imaginary_fraction(ref, w, imaginary_tol),
        imaginary_fraction=imaginary_fraction(ml, w, imaginary_tol),
        imaginary_tol=float(imaginary_tol),
    )


def band_path(
    lattice: Any, scaled_positions: Any, numbers: Sequence[int], symprec: float = 1e-3
) -> tuple[list[list[list[float]]], list[list[str]]] | None:
    """High-symmetry band path of a primitive cell (Setyawan-Curtarolo, via pymatgen).

    The path's fractional q-points belong to pymatgen's standard primitive cell; they are used as
    they are only when that cell has the same metric (lengths and angles) as the given one, so that
    they mean the same points (a rotation does not change fractional coordinates).

    Returns
    -------
    (segments, labels) or None
        ``segments``: lists of fractional q-points joined in order; ``labels``: their names.
        ``None`` when the cell is not the standard primitive cell (no reliable path).
    """
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.bandstructure import HighSymmKpath

    lat = np.asarray(lattice, dtype=float)
    try:
        kpath = HighSymmKpath(
            Structure(Lattice(lat), list(numbers), np.asarray(scaled_positions, dtype=float)),
            path_type="setyawan_curtarolo",
            symprec=symprec,
        )
    except Exception:  # pymatgen refuses some cells; the figure then shows the DOS only
        return None
    std = kpath.prim.lattice.matrix
    if not np.allclose(std @ std.T, lat @ lat.T, atol=1e-3 * max(1.0, np.abs(lat).max())):
        return None
    points = kpath.kpath["kpoints"]
    segments = [
        [np.asarray(points[k], dtype=float).tolist() for k in seg] for seg in kpath.kpath["path"]
    ]
    labels = [
        [k.replace("\\Gamma", "Γ").replace("\\Sigma", "Σ") for k in seg]
        for seg in kpath.kpath["path"]
    ]
    return segments, labels
