"""Vacancy migration barriers of uMLIPs against a reference (elemental solids).

:class:`BarrierMaker`: a vacancy hop between two neighbouring symmetry-equivalent sites: the
uMLIP's climbing-image NEB (ASE, bounded steps; a NEB that does not converge is flagged and its last
path kept), then reference single points on the images of that path (ApproxNEB-like: the reference
does not move the images), both barriers and energy profiles. :class:`PathFlowMaker` is the loop
over a path that :mod:`softening.makers.migration` shares.

Output: :class:`~softening.schemas.BarrierDoc` (a :class:`PropertyDoc`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jobflow import Flow, Maker
from pymatgen.core import Structure

from softening.analysis.defects import (
    barrier_from_initial,
    distinct_sites,
    energy_profile,
    migration_barrier,
    nearest_equivalent_neighbour,
    reaction_coordinate,
)
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.properties import (
    PropertySpec,
    register_property,
)
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.vacancy import (
    check_elemental,
    defect_supercell,
    results_by_id,
    site_in_supercell,
)
from softening.schemas import (
    BarrierDoc,
    FrameResult,
    FrameSpec,
    NEBResult,
    content_key,
)

logger = logging.getLogger(__name__)


# ---- hops and paths ----------------------------------------------------------------------------


def hop_endpoints(
    structure: Structure,
    min_distance: float = 8.0,
    supercell_matrix: Sequence[int] | None = None,
    site: int | None = None,
    symprec: float = 0.01,
) -> tuple[Structure, Structure, str, float]:
    """End points of a vacancy hop between two neighbouring symmetry-equivalent sites.

    The vacancy sits at site ``i`` (the first distinct site, or the unit-cell site ``site``) of the
    supercell; its nearest equivalent neighbour ``j`` jumps into it. Both end points hold the same
    atoms in the same order (NEB images need that): initial = supercell without ``i``; final = the
    same with atom ``j`` moved to ``i``'s position.

    Returns
    -------
    (initial, final, path label, hop distance in Å)
    """
    check_elemental(structure, "barrier")
    supercell, _, _ = defect_supercell(structure, min_distance, supercell_matrix)
    unit_site = distinct_sites(structure, symprec)[0][0] if site is None else int(site)
    if not 0 <= unit_site < len(structure):
        raise InputError(f"site {site}: the structure has {len(structure)} sites")
    i = site_in_supercell(structure, unit_site, supercell)
    j, dist = nearest_equivalent_neighbour(supercell, i, symprec)
    # Move j by its minimum-image vector onto i, so that the path does not cross the cell.
    _, image = supercell[j].distance_and_image(supercell[i])
    target = supercell[i].frac_coords + image
    initial = supercell.copy()
    initial.remove_sites([i])
    jj = j - 1 if j > i else j
    final = initial.copy()
    final.replace(jj, final[jj].species, coords=target, coords_are_cartesian=False)
    label = f"{supercell[i].specie.symbol} {j}->{i}"
    return initial, final, label, float(dist)


def neb_path(
    initial: Structure,
    final: Structure,
    calculator: Callable[[], Any],
    n_images: int = 5,
    fmax: float = 0.05,
    steps: int = 200,
    climb: bool = True,
    optimizer: str = "FIRE",
    relax_endpoints: bool = True,
    endpoint_steps: int = 200,
) -> dict[str, Any]:
    """An ASE nudged-elastic-band path between two end points (positions only, cell fixed).

    Parameters
    ----------
    initial, final
        End points, same atoms in the same order.
    calculator
        Makes a fresh ASE calculator (one per image).
    n_images
        Intermediate images (IDPP interpolation with minimum-image displacements).
    fmax, steps
        NEB convergence (eV/Å) and the most optimiser steps.
    climb
        Climbing image.
    optimizer
        ``FIRE`` or ``BFGS``.
    relax_endpoints
        Relax both end points (BFGS, same ``fmax``) before the NEB.
    endpoint_steps
        Most steps of each end-point relaxation.

    Returns
    -------
    dict
        ``structures`` (pymatgen, end points included), ``energies`` (eV), ``converged``,
        ``steps``, ``fmax`` (largest NEB force at the end, eV/Å).
    """
    from ase.mep import NEB
    from ase.optimize import BFGS, FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    if n_images < 1:
        raise InputError(f"n_images {n_images}: at least 1 intermediate image")
    if optimizer not in ("FIRE", "BFGS"):
        raise InputError(f"optimizer {optimizer!r}: FIRE or BFGS")
    ends = []
    for s in (initial, final):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calculator()
        if relax_endpoints:
            BFGS(atoms, logfile=None).run(fmax=fmax, steps=endpoint_steps)
        ends.append(atoms)
    images = [ends[0]]
    for _ in range(n_images):
        img = ends[0].copy()
        img.calc = calculator()
        images.append(img)
    images.append(ends[1])
    neb = NEB(images, climb=climb)
    neb.interpolate(method="idpp", mic=True)
    opt = (FIRE if optimizer == "FIRE" else BFGS)(neb, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = neb.get_forces()
    final_fmax = float(np.sqrt((forces**2).sum(axis=1)).max()) if len(forces) else 0.0
    energies = [float(img.get_potential_energy()) for img in images]
    return {
        "structures": [AseAtomsAdaptor.get_structure(img) for img in images],
        "energies": energies,
        "converged": converged,
        "steps": int(opt.nsteps),
        "fmax": final_fmax,
    }


@softening_job(NEBResult, store=True, name="neb")
def neb_job(
    initial: Structure,
    final: Structure,
    material_id: str,
    path: str,
    hop_distance: float,
    model: str,
    settings: dict[str, Any],
) -> NEBResult:
    """The uMLIP's NEB path (reused from the store when one with the same end points, model and
    settings finished before); a NEB that did not converge is kept and flagged ``converged=False``."""
    from jobflow import CURRENT_JOB

    from softening.makers.reuse import find_stored_output
    from softening.models import load_model

    loaded = load_model(model)
    final_key = {
        "final": np.round(final.cart_coords, 6).tolist(),
        "weights": loaded.weights_sha256,
        "factor": loaded.factor,
    }
    key = content_key(initial, f"neb:{loaded.name}", {**settings, **final_key})
    stored = find_stored_output(CURRENT_JOB.store, key, "NEBResult", load=True)
    if stored is not None:
        return NEBResult.model_validate({**stored[1], "reused": True})
    t0 = time.perf_counter()
    out = neb_path(initial, final, loaded.calculator, **settings)
    formula = initial.composition.reduced_formula
    frames = [
        FrameSpec(frame_id=f"image-{k:02d}", material_id=material_id, formula=formula, structure=s)
        for k, s in enumerate(out["structures"])
    ]
    if not out["converged"]:
        logger.warning(
            "%s %s: NEB not converged after %d steps (fmax %.3f eV/Å); path kept",
            material_id, loaded.name, out["steps"], out["fmax"],
        )  # fmt: skip
    return NEBResult(
        material_id=material_id,
        path=path,
        hop_distance=hop_distance,
        frames=frames,
        energies=out["energies"],
        model=loaded.info,
        converged=out["converged"],
        steps=out["steps"],
        fmax=out["fmax"],
        climb=bool(settings.get("climb", True)),
        settings=settings,
        content_key=key,
        wall_time=time.perf_counter() - t0,
    )


def path_values(
    structures: Sequence[Structure], e_ref: Sequence[float], e_ml: Sequence[float]
) -> dict[str, Any]:
    """Barriers and profiles of the reference and the model on the same images (eV, Å):
    ``barrier`` highest minus lowest image, ``barrier_initial`` highest minus initial, profiles
    relative to the initial image, the cumulative path length and the profiles' mean difference."""
    coord = reaction_coordinate([s.cart_coords for s in structures], structures[0].lattice.matrix)
    profile_ref, profile = energy_profile(e_ref), energy_profile(e_ml)
    return {
        "barrier_ref": migration_barrier(e_ref),
        "barrier": migration_barrier(e_ml),
        "barrier_initial_ref": barrier_from_initial(e_ref),
        "barrier_initial": barrier_from_initial(e_ml),
        "profile_ref": profile_ref.tolist(),
        "profile": profile.tolist(),
        "reaction_coordinate": coord.tolist(),
        "n_images": len(structures),
        "n_atoms": len(structures[0]),
        "profile_mae": float(np.mean(np.abs(profile - profile_ref))),
    }


def neb_references(neb: NEBResult, references: Sequence[FrameResult | dict | None]) -> list:
    """The reference results of the NEB's images, in order.

    Raises
    ------
    CalculationError
        An image without a reference energy (a rerun computes it).
    """
    refs = results_by_id(references, neb.material_id)
    ids = [f.frame_id for f in neb.frames]
    missing = [i for i in ids if i not in refs]
    if missing:
        raise CalculationError(
            f"{neb.material_id}: reference missing for {', '.join(missing)}; rerun to compute them"
        )
    return [refs[i] for i in ids]


def neb_flags(neb: NEBResult) -> list[str]:
    """The flag of a NEB that stopped before its fmax."""
    if neb.converged:
        return []
    return [
        f"unconverged: NEB stopped after {neb.steps} steps with fmax {neb.fmax:.3f} eV/Å; "
        "the last path is compared"
    ]


def compare_path_results(
    neb: NEBResult | dict,
    references: Sequence[FrameResult | dict | None],
    doc_class: type[BarrierDoc] | type[Any] = BarrierDoc,
    parent_uuids: Sequence[str] = (),
    **values: Any,
) -> Any:
    """Barrier and energy profile of the model's NEB and of the reference on the same images, as
    ``doc_class`` (:class:`BarrierDoc`, or a subclass of its shape such as ``MigrationDoc``, whose
    extra value fields come as keywords).

    Raises
    ------
    CalculationError
        An image without a reference energy (a rerun computes it).
    """
    neb = NEBResult.model_validate(neb)
    refs = neb_references(neb, references)
    structures = [f.structure for f in neb.frames]
    values_class = doc_class.model_fields["values"].annotation
    v = values_class(
        path=neb.path,
        hop_distance=neb.hop_distance,
        neb_converged=neb.converged,
        neb_steps=neb.steps,
        neb_fmax=neb.fmax,
        climb=neb.climb,
        **path_values(structures, [r.energy for r in refs], neb.energies),
        **values,
    )
    return doc_class.create(
        material_id=neb.material_id,
        composition=structures[0],
        model=neb.model,
        reference=refs[0].code,
        ratio=v.barrier / v.barrier_ref if v.barrier_ref > 0 else None,
        flags=neb_flags(neb),
        parent_uuids=list(parent_uuids),
        values=v,
    )


def compare_barrier_results(
    neb: NEBResult | dict,
    references: Sequence[FrameResult | dict | None],
    parent_uuids: Sequence[str] = (),
) -> BarrierDoc:
    """:func:`compare_path_results` of an elemental vacancy hop."""
    return compare_path_results(neb, references, BarrierDoc, parent_uuids)


@softening_job(BarrierDoc, tolerant=True, name="barrier compare")
def barrier_compare_job(
    neb: NEBResult, references: list[FrameResult | None], parent_uuids: Sequence[str] = ()
) -> BarrierDoc:
    """jobflow job around :func:`compare_barrier_results`."""
    doc = compare_barrier_results(neb, references, parent_uuids)
    logger.info(
        "%s / %s barrier %s: %.3f eV (reference %.3f eV)",
        doc.material_id, doc.model.name, doc.values.path, doc.values.barrier,
        doc.values.barrier_ref,
    )  # fmt: skip
    return doc


@dataclass
class PathFlowMaker(Maker):
    """The loop of properties along NEB paths: per path and model, the model's NEB (stored and
    reused), reference single points on its images (ApproxNEB-like: the reference does not move
    them), one comparison.

    Subclasses give :meth:`paths` (the end points, checked before any job exists) and
    :meth:`compare`.

    Attributes
    ----------
    name
        Flow name.
    reference_maker
        :class:`ReferenceStaticMaker` (GPAW; EMT for tests) or a VASP reference maker.
    models
        uMLIP specs; each makes its own path.
    n_images
        Intermediate NEB images.
    fmax
        NEB force threshold, eV/Å.
    steps
        Most NEB optimiser steps (a NEB that does not converge is flagged; its path is kept).
    climb
        Climbing image.
    optimizer
        ``FIRE`` or ``BFGS``.
    relax_endpoints
        Relax both end points with the model before the NEB.
    """

    name: str = "path"
    reference_maker: Any = field(default_factory=ReferenceStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    n_images: int = 5
    fmax: float = 0.05
    steps: int = 200
    climb: bool = True
    optimizer: str = "FIRE"
    relax_endpoints: bool = True

    def settings(self) -> dict[str, Any]:
        """The NEB settings (part of the NEB's content key)."""
        return {
            "n_images": self.n_images,
            "fmax": self.fmax,
            "steps": self.steps,
            "climb": self.climb,
            "optimizer": self.optimizer,
            "relax_endpoints": self.relax_endpoints,
        }

    def paths(
        self, structure: Structure, material_id: str
    ) -> list[tuple[str, Structure, Structure, float]]:
        """``(label, initial, final, hop distance Å)`` of every path (same atoms, same order)."""
        raise NotImplementedError

    def compare(self, neb: Any, references: list[Any], parent_uuids: list[str]) -> Any:
        """The comparison job of one path and model."""
        raise NotImplementedError

    def make(self, structure: Structure, material_id: str | None = None) -> Flow:
        """The flow for ``structure``; output: one document per path and model."""
        mid = material_id or structure.composition.reduced_formula
        jobs, outputs = [], []
        for label, initial, final, dist in self.paths(structure, mid):
            for spec in self.models:
                neb = neb_job(initial, final, mid, label, dist, spec, self.settings())
                neb.append_name(f" {spec} {mid} {label}")
                refs = []
                for k in range(self.n_images + 2):
                    # The images exist once the NEB ran: each reference job takes its frame from
                    # the NEB's output (and is reused by content key on a rerun).
                    r = self.reference_maker.make(neb.output.frames[k])
                    r.append_name(f" {mid} {spec} {label} image-{k:02d}")
                    refs.append(r)
                cmp = self.compare(
                    neb.output, [r.output for r in refs], [neb.uuid, *(r.uuid for r in refs)]
                )
                cmp.append_name(f" {mid} {spec} {label}")
                jobs += [neb, *refs, cmp]
                outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {mid}")


@dataclass
class BarrierMaker(PathFlowMaker):
    """Vacancy migration barrier of one elemental structure: the uMLIP's NEB, the reference on its
    images (the loop is :class:`PathFlowMaker`'s).

    Attributes
    ----------
    name, reference_maker, models, n_images, fmax, steps, climb, optimizer, relax_endpoints
        As :class:`PathFlowMaker`.
    min_image_distance
        Smallest distance between the vacancy and its periodic images, Å (picks the supercell).
    supercell_matrix
        Diagonal supercell ``[n1, n2, n3]`` instead.
    site
        Unit-cell site whose vacancy hops (default: the first symmetry-distinct site).
    symprec
        Symmetry tolerance, Å.
    """

    name: str = "barrier"
    min_image_distance: float = 8.0
    supercell_matrix: list[int] | None = None
    site: int | None = None
    symprec: float = 0.01

    def paths(self, structure: Structure, material_id: str):
        """The hop of a vacancy to its nearest symmetry-equivalent neighbour."""
        initial, final, path, dist = hop_endpoints(
            structure, self.min_image_distance, self.supercell_matrix, self.site, self.symprec
        )
        return [(path, initial, final, dist)]

    def compare(self, neb: Any, references: list[Any], parent_uuids: list[str]):
        """:func:`barrier_compare_job`."""
        return barrier_compare_job(neb, references, parent_uuids)


# ---- the registry entry ---------------------------------------------------------------------------


def barrier_rows(doc: BarrierDoc) -> list[dict[str, Any]]:
    """The JSON record of a :class:`BarrierDoc` (energies in eV, coordinate in Å)."""
    return [
        {
            "material": doc.material_id,
            **doc.values.model_dump(),
            "flags": [str(f) for f in doc.flags],
        }
    ]


def barrier_profiles(docs: Sequence[BarrierDoc], out: Any) -> dict[str, str]:
    """Each barrier's energy profile, reference on the model's images and the model."""
    from pathlib import Path

    from softening.analysis.property_plots import energy_profile_plot
    from softening.naming import safe_filename

    files = {}
    for d in docs:
        v = d.values
        path = Path(out) / (
            f"barrier_{safe_filename(d.material_id)}_{safe_filename(d.model.name)}.png"
        )
        energy_profile_plot(
            {
                f"{d.reference.name} on {d.model.name} images": (
                    v.reaction_coordinate, v.profile_ref,
                ),
                d.model.name: (v.reaction_coordinate, v.profile),
            },
            path,
            title=f"{d.material_id}: vacancy hop {v.path}",
        )  # fmt: skip
        files[f"barrier {d.material_id} {d.model.name}"] = str(path)
    return files


def _barrier_maker(reference_maker: Any, models: list[str], options: Any) -> BarrierMaker:
    # The end points always relax (with the model); no --relax here.
    return BarrierMaker(reference_maker=reference_maker, models=list(models))


BARRIER = register_property(
    PropertySpec(
        name="barrier",
        item_key=lambda d: d["values"]["path"],
        doc_class=BarrierDoc,
        make_maker=_barrier_maker,
        pairs=lambda doc: [(doc.values.barrier_ref, doc.values.barrier)],
        axis="migration barrier (eV)",
        json_key="barriers",
        rows=barrier_rows,
        items=lambda doc: [
            (f"hop {doc.values.path}", doc.values.barrier_ref, doc.values.barrier, "eV")
        ],
        figures=barrier_profiles,
        relaxable=False,
        description="vacancy migration barriers (elemental solids; the model's NEB)",
    )
)
