"""Reference single points with an embedded code: GPAW plane-wave PBE by default, or any ASE calculator.

One job per frame, so a failed frame fails alone and a rerun of the flow computes only that frame.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jobflow import Maker
from pymatgen.core import Structure

from softening import defaults
from softening.errors import InputError, SofteningError
from softening.makers.job import softening_job
from softening.makers.reuse import stored_frame_result
from softening.mp_rules import mp_hubbard_u, mp_kpoint_mesh, mp_magmoms
from softening.schemas import CodeInfo, FrameResult, FrameSpec, content_key

logger = logging.getLogger(__name__)

EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"})


@dataclass
class ReferenceStaticMaker(Maker):
    """A reference single point of one frame with an embedded calculator.

    Defaults: GPAW plane waves, PBE, 500 eV cutoff, Monkhorst-Pack k-spacing 0.25 1/Å, Fermi-Dirac
    smearing 0.05 eV, spin-polarised with MP initial moments where magnetic elements occur, MP's U
    values through GPAW's +U setups for oxides and fluorides.

    Attributes
    ----------
    name
        Job name.
    calculator
        ``gpaw``, ``emt`` (elements Al Cu Ag Au Ni Pd Pt; fast, for tests), or ``module:Class`` of any
        ASE calculator.
    ecut
        Plane-wave cutoff, eV (GPAW).
    kspacing
        Largest k-point spacing, 1/Å including 2π (GPAW).
    smearing
        Fermi-Dirac width, eV (GPAW).
    hubbard
        ``mp`` for MP's U values, ``none`` for plain PBE (GPAW).
    force_convergence
        SCF stops only when forces change by less than this between iterations, eV/Å (GPAW).
    compute_stress
        Also compute the stress tensor.
    calculator_kwargs
        Passed to the calculator (overrides the defaults above).
    """

    name: str = "reference static"
    calculator: str = "gpaw"
    ecut: float = defaults.ECUT
    kspacing: float = defaults.KSPACING
    smearing: float = 0.05
    hubbard: str = "mp"
    force_convergence: float = 1e-3
    compute_stress: bool = True
    calculator_kwargs: dict[str, Any] = field(default_factory=dict)

    def code_settings(self, structure: Structure | None = None) -> dict[str, Any]:
        """The settings that determine the result (recorded, and part of the content key)."""
        if self.calculator == "gpaw":
            settings = {
                "mode": "pw",
                "xc": "PBE",
                "ecut": self.ecut,
                "kspacing": self.kspacing,
                "smearing": self.smearing,
                "hubbard": self.hubbard,
                "force_convergence": self.force_convergence,
            }
            if structure is not None:
                elements = {el.symbol for el in structure.composition}
                settings["kpts"] = list(mp_kpoint_mesh(structure.lattice.matrix, self.kspacing))
                settings["U"] = mp_hubbard_u(elements) if self.hubbard == "mp" else {}
                settings["spinpol"] = mp_magmoms(structure) is not None
        else:
            settings = {}
        settings.update(self.calculator_kwargs)
        settings["compute_stress"] = self.compute_stress
        return settings

    @softening_job(FrameResult, store=True)
    def make(self, frame: FrameSpec) -> FrameResult:
        """Label ``frame`` (or reuse a stored result with the same content key)."""

        structure = frame.structure
        settings = self.code_settings(structure)
        key = content_key(structure, self.calculator, settings)
        cached = stored_frame_result(key, frame)
        if cached is not None:
            return FrameResult.model_validate(cached)
        t0 = time.perf_counter()
        calc, version = self.get_calculator(structure)
        result = single_point(structure, calc, self.compute_stress)
        logger.info(
            "reference %s of frame %s/%s: %.1f s",
            self.calculator,
            frame.material_id,
            frame.frame_id,
            time.perf_counter() - t0,
        )
        return FrameResult(
            frame_id=frame.frame_id,
            material_id=frame.material_id,
            formula=frame.formula,
            structure=structure,
            energy=result["energy"],
            forces=result["forces"],
            stress=result["stress"],
            code=CodeInfo(name=self.calculator, version=version, settings=settings),
            converged=True,
            content_key=key,
            wall_time=time.perf_counter() - t0,
        )

    def get_calculator(self, structure: Structure):
        """The ASE calculator and its code version for ``structure``."""
        elements = {el.symbol for el in structure.composition}
        if self.calculator == "emt":
            from ase import __version__
            from ase.calculators.emt import EMT

            bad = sorted(elements - EMT_ELEMENTS)
            if bad:
                raise InputError(f"EMT has no parameters for {', '.join(bad)}")
            return EMT(**self.calculator_kwargs), f"ase-{__version__}"
        if self.calculator == "gpaw":
            return self._gpaw(structure, elements)
        if ":" in self.calculator:
            module, _, cls = self.calculator.partition(":")
            try:
                calc_cls = getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError) as exc:
                raise InputError(f"cannot import calculator {self.calculator!r}: {exc}") from exc
            mod = importlib.import_module(module.split(".")[0])
            return calc_cls(**self.calculator_kwargs), getattr(mod, "__version__", None)
        raise InputError(
            f"unknown reference calculator {self.calculator!r}; use gpaw, emt, vasp or module:Class"
        )

    def _gpaw(self, structure: Structure, elements: set[str]):
        try:
            import gpaw
            from gpaw import GPAW, PW, FermiDirac
        except ImportError as exc:
            raise SofteningError(
                'GPAW is not installed: pip install "softening[gpaw]", or choose --reference emt'
            ) from exc
        kwargs: dict[str, Any] = {
            "mode": PW(self.ecut),
            "xc": "PBE",
            "kpts": {
                "size": mp_kpoint_mesh(structure.lattice.matrix, self.kspacing),
                "gamma": True,
            },
            "occupations": FermiDirac(self.smearing),
            "txt": None,
            "parallel": {"domain": 1, "band": 1},
            # GPAW's default energy criterion (5e-4 eV/electron) leaves forces noisy at the 0.05 eV/Å
            # level; this is tighter than MP's EDIFF 1e-5 eV per cell for cells of ~10 atoms.
            "convergence": {"energy": 1e-6, "density": 1e-5, "forces": self.force_convergence},
        }
        if self.hubbard == "mp":
            u = mp_hubbard_u(elements)
            if u:
                kwargs["setups"] = {el: f":d,{val}" for el, val in u.items()}
        if mp_magmoms(structure) is not None:
            kwargs["spinpol"] = True
        kwargs.update(self.calculator_kwargs)
        return GPAW(**kwargs), f"gpaw-{gpaw.__version__}"


def single_point(structure: Structure, calc, compute_stress: bool = True) -> dict[str, Any]:
    """Free energy (eV), forces (eV/Å) and optionally stress (eV/Å^3, ASE sign) of one structure."""
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    magmoms = mp_magmoms(structure)
    if magmoms is not None and type(calc).__name__ == "GPAW":
        atoms.set_initial_magnetic_moments(magmoms)
    atoms.calc = calc
    # The free energy (force-consistent) is the one the forces are derivatives of with smearing;
    # GPAW's default return value is extrapolated to zero width. The vasprun reader takes VASP's
    # free energy (TOTEN) for the same reason.
    from ase.calculators.calculator import PropertyNotImplementedError

    try:
        energy = float(atoms.get_potential_energy(force_consistent=True))
    except PropertyNotImplementedError:  # calculators without a free energy
        energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces(), dtype=float)
    stress = np.asarray(atoms.get_stress(voigt=False), dtype=float) if compute_stress else None
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise SofteningError(
            f"reference calculation of {structure.formula} gave non-finite results"
        )
    return {
        "energy": energy,
        "forces": forces.tolist(),
        "stress": stress.tolist() if stress is not None else None,
    }
