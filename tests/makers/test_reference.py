"""The embedded DFT reference: GPAW forces against finite differences; MP-compatible settings."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from softening.makers.reference import ReferenceStaticMaker, single_point
from softening.mp_rules import mp_hubbard_u, mp_kpoint_mesh, mp_magmoms

gpaw = pytest.importorskip("gpaw")


@pytest.mark.slow
def test_gpaw_forces_match_finite_differences():
    s = Structure(Lattice.cubic(4.0), ["Si", "Si"], [[0, 0, 0], [0.355, 0.33, 0.34]])
    maker = ReferenceStaticMaker(ecut=300, kspacing=0.8, compute_stress=False)
    assert maker.code_settings(s)["kpts"] == [2, 2, 2]
    calc, version = maker.get_calculator(s)
    assert version.startswith("gpaw-")
    forces = np.array(single_point(s, calc)["forces"])
    h = 0.01  # Å
    energies = []
    for sign in (1, -1):
        d = s.copy()
        d.translate_sites([1], [sign * h, 0, 0], frac_coords=False, to_unit_cell=False)
        energies.append(single_point(d, maker.get_calculator(d)[0], False)["energy"])
    fd = -(energies[0] - energies[1]) / (2 * h)
    assert abs(forces[1, 0]) > 0.05  # a real force, not a symmetric zero
    assert forces[1, 0] == pytest.approx(fd, abs=1e-3)
    assert np.abs(forces.sum(axis=0)).max() < 1e-2  # momentum conservation


def test_kpoint_mesh_from_spacing():
    # |b| = 1/a without 2π; n = ceil(2π/(a·kspacing)).
    assert mp_kpoint_mesh(np.eye(3) * 5.43, 0.25) == (5, 5, 5)
    assert mp_kpoint_mesh(np.diag([5.43, 5.43, 20.0]), 0.25) == (5, 5, 2)


def test_mp_u_values_and_moments():
    fe2o3 = Structure(Lattice.hexagonal(5.0, 13.7), ["Fe", "O"], [[0, 0, 0.35], [0.3, 0, 0.25]])
    assert mp_hubbard_u({"Fe", "O"}) == {"Fe": 5.3}
    assert mp_hubbard_u({"Fe", "Si"}) == {}  # MP applies U only to oxides and fluorides
    assert mp_magmoms(fe2o3) == [5.0, 0.6]
    assert mp_magmoms(Structure(Lattice.cubic(4), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])) is None
    settings = ReferenceStaticMaker().code_settings(fe2o3)
    assert settings["U"] == {"Fe": 5.3} and settings["spinpol"] is True
