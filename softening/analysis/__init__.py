"""Pure analysis of softening: force scales, errors, statistics, frame sampling, and plots.

Everything here works on numpy arrays and has no I/O, except :mod:`softening.analysis.plots` and
:mod:`softening.analysis.property_plots`, which write PNG files (matplotlib is imported only when a
plot is made).
"""

from __future__ import annotations

from softening.analysis.metrics import (
    SofteningMetrics,
    bootstrap_scale_ci,
    corrected_force_mae,
    energy_mae_per_atom,
    force_mae,
    is_uncorrelated,
    linear_correction_factor,
    per_element_scales,
    scale_through_origin,
    scale_with_intercept,
    softening_metrics,
)
from softening.analysis.plots import mae_vs_cmae_plot, parity_plot, scale_distribution_plot
from softening.analysis.sampling import assign_strains, stratified_energy_indices

__all__ = [
    "SofteningMetrics",
    "assign_strains",
    "bootstrap_scale_ci",
    "corrected_force_mae",
    "energy_mae_per_atom",
    "force_mae",
    "is_uncorrelated",
    "linear_correction_factor",
    "mae_vs_cmae_plot",
    "parity_plot",
    "per_element_scales",
    "scale_distribution_plot",
    "scale_through_origin",
    "scale_with_intercept",
    "softening_metrics",
    "stratified_energy_indices",
]
