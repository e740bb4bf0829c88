"""Tests of softening.analysis: metrics against analytic cases, sampling, and plots."""

from __future__ import annotations

import numpy as np
import pytest

from softening.analysis import (
    SofteningMetrics,
    assign_strains,
    bootstrap_scale_ci,
    corrected_force_mae,
    energy_mae_per_atom,
    force_mae,
    linear_correction_factor,
    mae_vs_cmae_plot,
    parity_plot,
    per_element_scales,
    scale_distribution_plot,
    scale_through_origin,
    scale_with_intercept,
    softening_metrics,
    stratified_energy_indices,
)


def _frames(n_frames: int, n_atoms: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Random DFT-like forces (eV/Å), one (n_atoms, 3) array per frame."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, size=(n_atoms, 3)) for _ in range(n_frames)]


def _soften(frames: list[np.ndarray], s: float, noise: float, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [s * f + rng.normal(0.0, noise, size=f.shape) for f in frames]


# --------------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------------
def test_scale_through_origin_recovers_known_slope_with_noise():
    dft = _frames(10)
    ml = _soften(dft, 0.8, noise=0.05)
    assert scale_through_origin(ml, dft) == pytest.approx(0.8, abs=0.01)
    # Stacked input gives the same number as per-frame input.
    assert scale_through_origin(np.concatenate(ml), np.concatenate(dft)) == pytest.approx(
        scale_through_origin(ml, dft), rel=1e-12
    )


def test_scale_through_origin_exact():
    f = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    assert scale_through_origin(0.85 * f, f) == pytest.approx(0.85, rel=1e-12)


def test_scale_with_intercept_recovers_slope_and_intercept():
    f = np.concatenate(_frames(3))
    slope, intercept = scale_with_intercept(0.7 * f + 0.1, f)
    assert slope == pytest.approx(0.7, abs=1e-12)
    assert intercept == pytest.approx(0.1, abs=1e-12)


def test_scale_with_intercept_rejects_constant_reference():
    f = np.ones((4, 3))
    with pytest.raises(ValueError, match="all equal"):
        scale_with_intercept(f, f)


def test_per_element_scales_recover_different_slopes():
    dft = np.concatenate(_frames(4, n_atoms=10))
    species = ["Li", "O"] * 20
    ml = dft.copy()
    ml[0::2] *= 0.9
    ml[1::2] *= 0.6
    # A third element with zero reference force (fixed by symmetry) has no slope and is skipped.
    dft = np.vstack([dft, np.zeros((1, 3))])
    ml = np.vstack([ml, [[0.1, 0.0, 0.0]]])
    scales = per_element_scales(ml, dft, [*species, "Zn"])
    assert list(scales) == ["Li", "O"]
    assert scales["Li"] == pytest.approx(0.9, rel=1e-12)
    assert scales["O"] == pytest.approx(0.6, rel=1e-12)


def test_per_element_scales_rejects_wrong_species_length():
    f = np.ones((3, 3))
    with pytest.raises(ValueError, match="species has 2 entries"):
        per_element_scales(f, f, ["Li", "O"])


def test_linear_correction_factor_and_uncentred_r2():
    dft = np.concatenate(_frames(5))
    ml = np.concatenate(_soften(_frames(5), 0.8, noise=0.3))
    assert linear_correction_factor(0.8 * dft, dft) == pytest.approx(1.25, rel=1e-12)
    c = linear_correction_factor(ml, dft)
    r2 = np.sum(ml * dft) ** 2 / (np.sum(ml**2) * np.sum(dft**2))
    assert scale_through_origin(c * ml, dft) == pytest.approx(r2, rel=1e-12)
    assert r2 < 1.0


def test_pooled_scale_is_not_the_mean_of_per_material_scales():
    # Material A: large forces, s = 0.9; material B: small forces, s = 0.5. The pooled slope is
    # weighted by sum(f_dft**2) and sits near A's, far from the plain mean 0.7.
    dft_a = [5.0 * f for f in _frames(3, seed=10)]
    dft_b = [0.2 * f for f in _frames(3, seed=11)]
    ml_a = [0.9 * f for f in dft_a]
    ml_b = [0.5 * f for f in dft_b]
    s_a = scale_through_origin(ml_a, dft_a)
    s_b = scale_through_origin(ml_b, dft_b)
    pooled = softening_metrics(ml_a + ml_b, dft_a + dft_b, n_resamples=50).scale
    wa = sum(np.sum(f**2) for f in dft_a)
    wb = sum(np.sum(f**2) for f in dft_b)
    assert pooled == pytest.approx((0.9 * wa + 0.5 * wb) / (wa + wb), rel=1e-12)
    assert pooled > 0.89
    assert abs(pooled - 0.5 * (s_a + s_b)) > 0.15


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def test_cmae_identity_for_exact_scaling():
    dft = _frames(4)
    s = 0.75
    ml = [s * f for f in dft]
    mean_abs = np.mean(np.abs(np.concatenate(dft)))
    assert corrected_force_mae(ml, dft) == pytest.approx(0.0, abs=1e-12)
    assert force_mae(ml, dft) == pytest.approx(abs(1.0 - s) * mean_abs, rel=1e-12)


def test_cmae_with_given_scale_and_bad_scale():
    f = np.array([[1.0, -1.0, 2.0]])
    assert corrected_force_mae(0.5 * f, f, scale=1.0) == pytest.approx(np.mean(np.abs(0.5 * f)))
    with pytest.raises(ValueError, match="non-zero"):
        corrected_force_mae(f, f, scale=0.0)


def test_force_mae_allows_zero_reference():
    assert force_mae(np.full((2, 3), 0.1), np.zeros((2, 3))) == pytest.approx(0.1)


def test_energy_mae_constant_offset_per_group_is_removed():
    n = np.array([8, 8, 16, 16])
    e_dft = np.array([-40.0, -39.5, -80.0, -79.0])
    # Per-atom offsets: 0.3 eV/atom for material A, -1.2 eV/atom for material B.
    offsets = np.array([0.3, 0.3, -1.2, -1.2])
    e_ml = e_dft + offsets * n
    groups = ["A", "A", "B", "B"]
    assert energy_mae_per_atom(e_ml, e_dft, n, groups) == pytest.approx(0.0, abs=1e-12)
    # One group: the offsets differ, so their spread remains: mean |d - mean(d)| = 0.75 eV/atom.
    assert energy_mae_per_atom(e_ml, e_dft, n) == pytest.approx(0.75, rel=1e-12)
    # Same offset for all frames: zero even without groups.
    assert energy_mae_per_atom(e_dft + 0.3 * n, e_dft, n) == pytest.approx(0.0, abs=1e-12)


def test_energy_mae_residual_and_single_frame():
    n = [4, 4]
    # Per-atom errors 0.1 and 0.3 -> mean 0.2, residuals 0.1 each.
    assert energy_mae_per_atom([0.4, 1.2], [0.0, 0.0], n) == pytest.approx(0.1, rel=1e-12)
    assert energy_mae_per_atom([5.0], [1.0], 4) == 0.0
    with pytest.raises(ValueError, match="empty"):
        energy_mae_per_atom([], [], [])
    with pytest.raises(ValueError, match="e_ml contains NaN"):
        energy_mae_per_atom([np.nan], [1.0], [1])
    with pytest.raises(ValueError, match="groups has 1 entries"):
        energy_mae_per_atom([1.0, 2.0], [1.0, 2.0], [1, 1], ["A"])


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------
def test_bootstrap_ci_contains_true_slope_and_narrows_with_more_data():
    dft_small = _frames(5, seed=3)
    dft_large = _frames(60, seed=4)
    ml_small = _soften(dft_small, 0.8, noise=0.3, seed=5)
    ml_large = _soften(dft_large, 0.8, noise=0.3, seed=6)
    lo_s, hi_s = bootstrap_scale_ci(ml_small, dft_small, n_resamples=500)
    lo_l, hi_l = bootstrap_scale_ci(ml_large, dft_large, n_resamples=500)
    assert lo_s < 0.8 < hi_s
    assert lo_l < 0.8 < hi_l
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)
    # Deterministic for a given seed.
    assert bootstrap_scale_ci(ml_small, dft_small, n_resamples=500) == (lo_s, hi_s)


def test_bootstrap_over_atoms_with_few_frames():
    dft = _frames(2, n_atoms=30, seed=7)
    ml = _soften(dft, 0.8, noise=0.3, seed=8)
    lo, hi = bootstrap_scale_ci(ml, dft, n_resamples=400, seed=0)
    s = scale_through_origin(ml, dft)
    assert np.isfinite(lo) and np.isfinite(hi)
    assert lo < s < hi
    # Below min_frames the atoms are resampled: identical to passing the stacked atoms directly.
    assert bootstrap_scale_ci(np.concatenate(ml), np.concatenate(dft), n_resamples=400) == (lo, hi)
    assert bootstrap_scale_ci(ml, dft, n_resamples=400, seed=1) != (lo, hi)


def test_bootstrap_rejects_bad_parameters():
    f = _frames(3)
    with pytest.raises(ValueError, match="level"):
        bootstrap_scale_ci(f, f, level=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_scale_ci(f, f, n_resamples=0)


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------
def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"shapes differ: \(2, 3\) vs \(3, 3\)"):
        scale_through_origin(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="frame 1: force shapes differ"):
        force_mae([np.ones((2, 3)), np.ones((3, 3))], [np.ones((2, 3)), np.ones((4, 3))])
    with pytest.raises(ValueError, match="numbers of frames differ"):
        force_mae([np.ones((2, 3))], [np.ones((2, 3)), np.ones((2, 3))])


def test_nan_inf_empty_and_zero_reference_raise():
    good = np.ones((2, 3))
    bad = good.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="f_dft contains NaN"):
        scale_through_origin(good, bad)
    with pytest.raises(ValueError, match="f_ml contains NaN or inf"):
        force_mae(np.where(bad == 1.0, 1.0, np.inf), good)
    with pytest.raises(ValueError, match="empty"):
        scale_through_origin(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="f_dft is all zero"):
        scale_through_origin(good, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="f_ml is all zero"):
        linear_correction_factor(np.zeros((2, 3)), good)


# --------------------------------------------------------------------------------------------------
# All metrics in one call
# --------------------------------------------------------------------------------------------------
def test_softening_metrics_one_call():
    dft = _frames(4, n_atoms=6, seed=20)
    ml = _soften(dft, 0.85, noise=0.05, seed=21)
    species = [["Mg", "Mg", "O", "O", "O", "O"]] * 4
    n = 6
    e_dft = [-30.0, -29.8, -29.5, -30.2]
    e_ml = [e + 2.0 * n for e in e_dft]  # a pure offset: zero offset-free error
    m = softening_metrics(ml, dft, species, e_ml, e_dft, n_resamples=200)
    assert isinstance(m, SofteningMetrics)
    assert m.scale == pytest.approx(scale_through_origin(ml, dft))
    assert m.scale_ci[0] < m.scale < m.scale_ci[1]
    assert m.scale_with_intercept == pytest.approx(0.85, abs=0.03)
    assert abs(m.intercept) < 0.05
    assert m.mae == pytest.approx(force_mae(ml, dft))
    assert m.cmae == pytest.approx(corrected_force_mae(ml, dft))
    assert m.energy_mae_per_atom == pytest.approx(0.0, abs=1e-12)
    assert set(m.per_element_scales) == {"Mg", "O"}
    assert (m.n_frames, m.n_atoms, m.n_components) == (4, 24, 72)
    # A missing energy disables the energy error; no species, no per-element scales.
    m2 = softening_metrics(ml, dft, e_ml=[*e_ml[:3], None], e_dft=e_dft, n_resamples=20)
    assert m2.energy_mae_per_atom is None
    assert m2.per_element_scales == {}


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def test_stratified_sampling_picks_one_frame_per_cluster():
    rng = np.random.default_rng(0)
    centres = np.repeat(np.arange(5.0), 20)  # five clusters of 20 frames at 0, 1, ..., 4 eV/atom
    energies = centres + rng.uniform(-0.01, 0.01, size=centres.size)
    picked = stratified_energy_indices(energies, 5, seed=1)
    assert sorted(int(c) for c in centres[picked]) == [0, 1, 2, 3, 4]
    assert picked == sorted(picked)
    assert stratified_energy_indices(energies, 5, seed=1) == picked
    assert any(stratified_energy_indices(energies, 5, seed=s) != picked for s in range(2, 6))


def test_stratified_sampling_fills_up_and_edge_cases():
    energies = np.array([0.0] * 5 + [1.0] * 5)  # only two bins occupied
    picked = stratified_energy_indices(energies, 4, seed=0)
    assert len(set(picked)) == 4
    assert {float(energies[i]) for i in picked} == {0.0, 1.0}
    assert len(stratified_energy_indices(np.zeros(6), 3)) == 3
    assert stratified_energy_indices(energies, 10) == list(range(10))
    with pytest.raises(ValueError, match="n_frames must be between 1 and 10"):
        stratified_energy_indices(energies, 11)
    with pytest.raises(ValueError, match="n_frames must be between"):
        stratified_energy_indices(energies, 0)
    with pytest.raises(ValueError, match="NaN"):
        stratified_energy_indices([0.0, np.nan], 1)


def test_assign_strains_counts_and_seed():
    strains = assign_strains(10, seed=3)
    assert len(strains) == 10
    assert strains.count(0.03) == 2
    assert strains.count(-0.03) == 2
    assert strains.count(0.0) == 6
    assert assign_strains(10, seed=3) == strains
    assert assign_strains(5, n_plus=1, n_minus=3, magnitude=0.05).count(-0.05) == 3
    with pytest.raises(ValueError, match="exceeds n_frames"):
        assign_strains(3, n_plus=2, n_minus=2)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------
def _is_png(path) -> bool:
    return (
        path.is_file() and path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )


def test_plots_write_png_files(tmp_path):
    dft = _frames(3, n_atoms=20)
    ml = _soften(dft, 0.85, noise=0.1)
    big_dft = _frames(1, n_atoms=2000, seed=2)
    big_ml = _soften(big_dft, 0.9, noise=0.1)

    p1 = parity_plot(dft, ml, tmp_path / "a" / "parity.png", title="one", label="CHGNet")
    p2 = parity_plot(big_dft, big_ml, tmp_path / "parity_hexbin.png")
    p3 = parity_plot(
        {"CHGNet": (dft, ml), "M3GNet": (big_dft, big_ml)},
        path=tmp_path / "parity_overlay.png",
        scale={"CHGNet": 0.85},
    )
    p4 = scale_distribution_plot(
        {"CHGNet": [0.8, 0.9, 0.95, 1.02], "MACE": [0.85, 0.9, 1.1]}, tmp_path / "dist.png"
    )
    p5 = mae_vs_cmae_plot([0.2, 0.1], [0.15, 0.09], tmp_path / "mae.png", labels=["a", "b"])
    p6 = mae_vs_cmae_plot({"CHGNet": ([0.2, 0.1], [0.15, 0.09])}, path=tmp_path / "mae2.png")
    for p in (p1, p2, p3, p4, p5, p6):
        assert _is_png(p)
    with pytest.raises(ValueError, match="shapes differ"):
        parity_plot(np.ones((2, 3)), np.ones((3, 3)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        scale_distribution_plot({"CHGNet": []}, tmp_path / "bad.png")
