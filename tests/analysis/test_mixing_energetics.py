"""Solid-solution science (softening.analysis.mixing): arrays in, numbers out."""

from __future__ import annotations

import numpy as np
import pytest

from softening.analysis.mixing import (
    K_B,
    _above_hull_lp,
    compare_formation_energies,
    critical_temperature,
    end_member_amounts,
    end_member_energies,
    end_member_fractions,
    energy_above_hull,
    formation_energies,
    regular_solution_omega,
)


def test_amounts_of_elements_and_of_compound_end_members():
    # Elements Al, C, N, Si; end members AlN and SiC (a pseudo-binary).
    em = np.array([[1, 0, 1, 0], [0, 1, 0, 1]])
    counts = np.array([[2, 0, 2, 0], [1, 1, 1, 1], [1, 3, 1, 3]])
    amounts = end_member_amounts(counts, em)
    np.testing.assert_allclose(amounts, [[2, 0], [1, 1], [1, 3]], atol=1e-12)
    x = end_member_fractions(amounts, [2, 2])
    np.testing.assert_allclose(x[:, 1], [0, 0.5, 0.75])
    with pytest.raises(ValueError, match="cell 1:"):  # Al2N: no combination of AlN and SiC
        end_member_amounts(np.array([[1, 0, 1, 0], [2, 0, 1, 0]]), em)
    with pytest.raises(ValueError, match="not independent"):
        end_member_amounts(counts, np.array([[1, 0, 1, 0], [2, 0, 2, 0]]))


def test_formation_energy_against_each_end_member_lowest_cell():
    # Cells: A (two polymorphs), B, AB, A3B; energies in eV per cell.
    amounts = np.array([[1, 0], [2, 0], [0, 1], [1, 1], [3, 1]], dtype=float)
    energies = np.array([-1.0, -2.4, -3.0, -4.5, -7.0])
    mu, cells = end_member_energies(energies, amounts)
    np.testing.assert_allclose(mu, [-1.2, -3.0])  # the 2-atom A polymorph is lower per atom
    assert list(cells) == [1, 2]
    e = formation_energies(energies, amounts, amounts.sum(1), mu)
    np.testing.assert_allclose(e, [0.2, 0.0, 0.0, (-4.5 + 4.2) / 2, (-7.0 + 6.6) / 4])
    with pytest.raises(ValueError, match="end member 1: no cell"):
        end_member_energies(energies[:2], amounts[:2])


def test_binary_hull_by_hand():
    x = np.array([[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1]])
    e = np.array([0.0, -0.05, -0.06, 0.01, 0.0])
    above = energy_above_hull(x, e)
    # Hull: (0, 0) - (0.25, -0.05) - (0.5, -0.06) - (1, 0); at 0.75 the hull is -0.03.
    np.testing.assert_allclose(above, [0, 0, 0, 0.04, 0], atol=1e-12)


@pytest.mark.parametrize("k", [3, 4])
def test_hull_agrees_with_linear_programming(k):
    rng = np.random.default_rng(k)
    x = rng.dirichlet(np.ones(k), size=400)
    e = rng.normal(-0.01, 0.03, size=400)
    vx = np.vstack([np.eye(k), x[e < 0]])
    ve = np.concatenate([np.zeros(k), e[e < 0]])
    np.testing.assert_allclose(energy_above_hull(x, e), _above_hull_lp(vx, ve, x, e), atol=1e-9)


def test_hull_of_flat_data_is_zero():
    x = np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(energy_above_hull(x, np.zeros(4)), 0.0, atol=1e-12)


def test_regular_solution_and_critical_temperature():
    x = np.linspace(0, 1, 11)
    omega = regular_solution_omega(x, 0.1 * x * (1 - x))
    assert omega == pytest.approx(0.1)
    assert critical_temperature(omega) == pytest.approx(0.1 / (2 * K_B))  # about 580 K
    assert 575 < critical_temperature(omega) < 585
    assert critical_temperature(-0.05) is None
    with pytest.raises(ValueError, match="no mixed cell"):
        regular_solution_omega([0.0, 1.0], [0.0, 0.0])


def test_compare_formation_energies_softened_model():
    ref = np.array([-0.04, 0.02, 0.05, -0.01])
    ml = 0.5 * ref
    s = compare_formation_energies(ref, ml)
    assert s["slope"] == pytest.approx(0.5) and s["std_ratio"] == pytest.approx(0.5)
    assert s["mae"] == pytest.approx(np.mean(np.abs(ref)) / 2)
    assert s["fraction_closer_to_zero"] == 1.0 and s["n"] == 4
    with pytest.raises(ValueError, match="every reference formation energy is 0"):
        compare_formation_energies(np.zeros(3), ml[:3])
