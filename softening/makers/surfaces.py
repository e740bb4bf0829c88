"""Surface energies of uMLIPs against a reference, on the same slabs and the same bulk frame.

- Existing DFT data (mlearn slabs, :func:`~softening.datasets.surfaces.read_surface_data`):
  :class:`SurfaceComparisonFlowMaker`: one batched uMLIP job per model over every slab and bulk
  frame, one comparison job per material and model; no DFT runs.
- From a bulk structure: :class:`SurfaceMaker`: pymatgen's ``SlabGenerator`` makes one symmetric,
  non-polar, stoichiometric slab per low-index facet; one reference job per frame
  (:class:`~softening.makers.reference.ReferenceStaticMaker`, reused by content key, so a rerun
  computes only what is missing), one uMLIP job per model, one comparison job per model; with
  ``relax``, each method relaxes the slab positions with its own forces first (embedded
  references only).

Outputs are :class:`~softening.schemas.SurfaceDoc` (a :class:`PropertyDoc`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jobflow import Flow, Maker, job
from pymatgen.core import Structure

from softening.analysis.surfaces import (
    J_PER_M2_PER_EV_PER_A2,
    MIN_VACUUM,
    bulk_units,
    compare_surface_energies,
    surface_area,
    surface_energy,
    vacuum_axis,
)
from softening.errors import CalculationError, InputError
from softening.makers.base import softening_job
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    SurfaceDoc,
    SurfaceRow,
    SurfaceValues,
    UMLIPResults,
)

logger = logging.getLogger(__name__)

BULK = "bulk"


# ---- inputs ----------------------------------------------------------------------------------------


def _slab_id(source: str | None, fallback: str) -> str:
    # "…/Si/training.json@12" -> "training-12": unique across the files of one material.
    if not source or "@" not in source:
        return fallback
    path, _, index = source.rpartition("@")
    return f"{Path(path).stem}-{index}"


def surface_inputs(data) -> dict[str, Any]:
    """JSON-friendly description of a :class:`~softening.datasets.surfaces.SurfaceData`: the bulk
    frame, each slab's geometry, and the slabs skipped with their reason."""
    bulk = data.bulk.frame
    ids: list[str] = []
    for i, s in enumerate(data.slabs):
        fid, k = _slab_id(s.frame.source, f"slab-{i}"), 2
        while fid in ids:  # two files with one name (a/test.json, b/test.json)
            fid, k = f"{_slab_id(s.frame.source, f'slab-{i}')}-{k}", k + 1
        ids.append(fid)
    return {
        "material": data.material,
        "bulk": {
            "frame_id": BULK,
            "description": bulk.description or BULK,
            "n_atoms": len(bulk.structure),
            "choice": data.bulk.choice,
            "source": bulk.source,
        },
        "slabs": [
            {
                "frame_id": fid,
                "description": s.frame.description or "",
                "facet": s.facet,
                "reconstructed": s.reconstructed,
                "n_atoms": s.n_atoms,
                "area": s.area,
                "vacuum": s.vacuum,
                "source": s.frame.source,
            }
            for fid, s in zip(ids, data.slabs, strict=True)
        ],
        "skipped": [f"{d}: {r}" for d, r in data.skipped],
        "sources": list(data.sources),
    }


def surface_frames(data, inputs: dict[str, Any] | None = None) -> list[FrameSpec]:
    """The frames every method labels: the bulk frame and each slab."""
    inputs = inputs or surface_inputs(data)
    structures = [data.bulk.frame.structure, *(s.frame.structure for s in data.slabs)]
    ids = [BULK, *(s["frame_id"] for s in inputs["slabs"])]
    return [
        FrameSpec(frame_id=fid, material_id=data.material, formula=data.material, structure=s)
        for fid, s in zip(ids, structures, strict=True)
    ]


def reference_results(data, inputs: dict[str, Any] | None = None) -> list[FrameResult]:
    """The data's DFT energies as reference :class:`FrameResult` s (bulk first)."""
    inputs = inputs or surface_inputs(data)
    frames = [data.bulk.frame, *(s.frame for s in data.slabs)]
    code = CodeInfo(name="vasp", settings={"source": ", ".join(data.sources)})
    return [
        FrameResult(
            frame_id=spec.frame_id,
            material_id=data.material,
            formula=data.material,
            structure=spec.structure,
            energy=float(f.energy),
            code=code,
            flags=list(f.flags),
        )
        for spec, f in zip(surface_frames(data, inputs), frames, strict=True)
    ]


# ---- comparison ------------------------------------------------------------------------------------


def compare_surface_results(
    inputs: dict[str, Any],
    references: Sequence[FrameResult | dict | None],
    umlip: UMLIPResults | dict,
    parent_uuids: Sequence[str] = (),
    relaxed: bool = False,
) -> SurfaceDoc:
    """Surface energies of the reference and the model on the same slabs and bulk frame.

    ``gamma = (E_slab - N e_bulk) / (2 A)`` on each side, ``e_bulk`` each side's own energy per
    atom of the same bulk frame.

    Raises
    ------
    CalculationError
        The bulk frame lacks a reference or model energy (a rerun computes it). Slabs without one
        are skipped with the reason.
    """
    from softening import __version__

    umlip = UMLIPResults.model_validate(umlip)
    material = inputs["material"]
    refs = {
        r.frame_id: r
        for r in (FrameResult.model_validate(x) for x in references if x is not None)
        if r.material_id == material and r.energy is not None
    }
    mls = {
        f.frame_id: f for f in umlip.frames if f.material_id == material and f.energy is not None
    }
    bulk = inputs["bulk"]
    if BULK not in refs or BULK not in mls:
        side = "reference" if BULK not in refs else umlip.model.name
        raise CalculationError(f"{material}: no {side} energy of the bulk frame; rerun")
    n_bulk = bulk["n_atoms"]
    e_bulk_ref = refs[BULK].energy / n_bulk
    e_bulk = mls[BULK].energy / n_bulk
    rows, skipped = [], list(inputs.get("skipped", []))
    for s in inputs["slabs"]:
        fid = s["frame_id"]
        if fid not in refs or fid not in mls:
            side = "reference" if fid not in refs else umlip.model.name
            skipped.append(f"{s['description'] or fid}: no {side} energy (failed job)")
            continue
        g_ref = surface_energy(refs[fid].energy, s["n_atoms"], e_bulk_ref, s["area"])
        g = surface_energy(mls[fid].energy, s["n_atoms"], e_bulk, s["area"])
        rows.append(
            SurfaceRow(
                frame_id=fid,
                description=s["description"],
                facet=s["facet"],
                reconstructed=s["reconstructed"],
                n_atoms=s["n_atoms"],
                area=s["area"],
                vacuum=s["vacuum"],
                gamma_ref=g_ref * J_PER_M2_PER_EV_PER_A2,
                gamma=g * J_PER_M2_PER_EV_PER_A2,
                gamma_ref_ev=g_ref,
                gamma_ev=g,
                e_slab_ref=refs[fid].energy,
                e_slab=mls[fid].energy,
                relaxed=relaxed,
                source=s.get("source"),
            )
        )
    summary = (
        compare_surface_energies([r.gamma_ref for r in rows], [r.gamma for r in rows])
        if rows
        else {}
    )
    flags = []
    if bulk["choice"] == "lowest_energy":
        flags.append(
            f"bulk: no ground-state frame; e_bulk from the bulk frame lowest in reference energy "
            f"per atom ({bulk['description']})"
        )
    if skipped:
        flags.append(f"skipped: {len(skipped)} slab(s) left out (see values.skipped)")
    elements = sorted({el.symbol for el in refs[BULK].structure.composition})
    values = SurfaceValues(
        rows=rows,
        bulk_frame=str(bulk.get("source") or bulk["description"]),
        bulk_choice=bulk["choice"],
        e_bulk_ref=e_bulk_ref,
        e_bulk=e_bulk,
        mae=summary.get("mae"),
        mean_ratio=summary.get("mean_ratio"),
        fraction_underestimated=summary.get("fraction_underestimated"),
        skipped=skipped,
    )
    return SurfaceDoc(
        material_id=material,
        formula=refs[BULK].structure.composition.reduced_formula,
        chemsys="-".join(elements),
        elements=elements,
        model=umlip.model,
        reference=refs[BULK].code,
        ratio=summary.get("mean_ratio"),
        flags=flags,
        sources=list(inputs.get("sources", [])),
        parent_uuids=list(parent_uuids),
        package_version=__version__,
        values=values,
    )


@softening_job(SurfaceDoc, tolerant=True, name="surface compare")
def surface_compare_job(
    inputs: dict[str, Any],
    references: list[FrameResult | None],
    umlip: UMLIPResults,
    parent_uuids: Sequence[str] = (),
    relaxed: bool = False,
) -> SurfaceDoc:
    """jobflow job around :func:`compare_surface_results` (runs when some reference jobs failed)."""
    doc = compare_surface_results(inputs, references, umlip, parent_uuids, relaxed)
    logger.info(
        "%s / %s: %d slabs, mean gamma ratio %s",
        doc.material_id,
        doc.model.name,
        len(doc.values.rows),
        "n/a" if doc.ratio is None else f"{doc.ratio:.3f}",
    )
    return doc


def umlip_results(frames: Sequence[FrameSpec], model) -> UMLIPResults:
    """Single points of ``frames`` with an already loaded model (a :class:`LoadedModel`, e.g. one
    with a linear correction ``factor``), batched; no jobflow."""
    from softening.models.evaluate import evaluate_structures

    t0 = time.perf_counter()
    preds = evaluate_structures(model, [f.structure for f in frames])
    code = CodeInfo(name=model.name, version=model.version, settings={"factor": model.factor})
    results = [
        FrameResult(
            frame_id=f.frame_id,
            material_id=f.material_id,
            formula=f.formula,
            structure=f.structure,
            energy=p.energy,
            code=code,
        )
        for f, p in zip(frames, preds, strict=True)
    ]
    return UMLIPResults(model=model.info, frames=results, wall_time=time.perf_counter() - t0)


def compare_surface_data(data, model) -> SurfaceDoc:
    """Surface energies of existing data (a ``SurfaceData``) with a loaded model, in this process."""
    inputs = surface_inputs(data)
    frames = surface_frames(data, inputs)
    return compare_surface_results(
        inputs, reference_results(data, inputs), umlip_results(frames, model)
    )


# ---- flows -----------------------------------------------------------------------------------------


@dataclass
class SurfaceComparisonFlowMaker(Maker):
    """Surface energies of uMLIPs on existing DFT slabs (same slabs, same bulk frame).

    Attributes
    ----------
    name
        Flow name.
    umlip_maker
        Template of the uMLIP jobs (device, dtype, memory budget); one copy per model.
    models
        uMLIP specs.
    """

    name: str = "surface comparison"
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])

    def make(self, datasets: Sequence) -> Flow:
        """The flow over ``datasets`` (from :func:`read_surface_data`); output: one
        :class:`SurfaceDoc` per material and model, materials first."""
        inputs = {d.material: surface_inputs(d) for d in datasets}
        # Every frame of every material in one job per model: the model loads once.
        frames = [f for d in datasets for f in surface_frames(d, inputs[d.material])]
        refs = {d.material: reference_results(d, inputs[d.material]) for d in datasets}
        jobs, outputs = [], {}
        for spec in self.models:
            ml = replace(self.umlip_maker, model=spec).make(frames)
            ml.append_name(f" {spec} surfaces")
            jobs.append(ml)
            for d in datasets:
                cmp = surface_compare_job(
                    inputs[d.material], refs[d.material], ml.output, parent_uuids=[ml.uuid]
                )
                cmp.append_name(f" {d.material} {spec}")
                jobs.append(cmp)
                outputs[(d.material, spec)] = cmp.output
        ordered = [outputs[(d.material, s)] for d in datasets for s in self.models]
        return Flow(jobs, output=ordered, name=self.name)


def miller_indices(structure: Structure, max_index: int) -> list[tuple[int, int, int]]:
    """Symmetrically distinct Miller indices up to ``max_index`` (pymatgen), lowest first."""
    from pymatgen.core.surface import get_symmetrically_distinct_miller_indices

    found = get_symmetrically_distinct_miller_indices(structure, max_index)
    return sorted((tuple(int(x) for x in m) for m in found), key=lambda m: (sum(map(abs, m)), m))


def generate_slabs(
    structure: Structure,
    max_index: int = 1,
    min_slab_size: float = 8.0,
    min_vacuum_size: float = 12.0,
    miller: Sequence[Sequence[int]] | None = None,
) -> tuple[list[tuple[tuple[int, int, int], Structure]], list[str]]:
    """One slab per facet: the first termination that is symmetric (two equal faces), non-polar and
    stoichiometric; facets without one are skipped with the reason.

    Returns
    -------
    (slabs, skipped)
        ``[(miller, slab structure)]`` (orthogonal c, vacuum along c, centred) and
        ``["(h k l): reason"]``.
    """
    from pymatgen.core.surface import SlabGenerator

    conventional = _conventional(structure)
    facets = (
        [tuple(int(x) for x in m) for m in miller]
        if miller
        else miller_indices(conventional, max_index)
    )
    slabs, skipped = [], []
    bulk_counts = conventional.composition.get_el_amt_dict()
    # Slab.is_polar counts dipoles from oxidation states: without them every slab looks non-polar.
    charged = conventional.copy()
    try:
        charged.add_oxidation_state_by_guess()
    except Exception:  # noqa: BLE001 - no guess (e.g. an intermetallic): treated as neutral
        charged = conventional
    for hkl in facets:
        gen = SlabGenerator(
            charged, hkl, min_slab_size, min_vacuum_size, center_slab=True, primitive=True,
            lll_reduce=True, in_unit_planes=False,
        )  # fmt: skip
        reasons = []
        chosen = None
        for slab in gen.get_slabs(symmetrize=False):
            if slab.is_polar():
                reasons.append("polar")
                continue
            if not slab.is_symmetric():
                reasons.append("asymmetric faces")
                continue
            try:
                bulk_units(slab.composition.get_el_amt_dict(), bulk_counts)
            except ValueError:
                reasons.append("non-stoichiometric")
                continue
            chosen = Structure.from_sites(slab.get_sorted_structure(), to_unit_cell=True)
            chosen.remove_oxidation_states()
            break
        label = f"({' '.join(map(str, hkl))})"
        if chosen is None:
            why = ", ".join(sorted(set(reasons))) or "no termination"
            skipped.append(f"{label}: every termination is {why}")
        else:
            slabs.append((hkl, chosen))
    return slabs, skipped


def _conventional(structure: Structure) -> Structure:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure).get_conventional_standard_structure()
    except Exception:  # noqa: BLE001 - symmetry search failed: the structure as given
        return structure


def slab_inputs(
    material_id: str,
    bulk: Structure,
    slabs: Sequence[tuple[tuple[int, int, int], Structure]],
    skipped: Sequence[str],
) -> tuple[dict[str, Any], list[FrameSpec]]:
    """Comparison inputs and frames of generated slabs (the bulk frame is ``bulk`` as given)."""
    formula = bulk.composition.reduced_formula
    rows, frames = [], [FrameSpec(frame_id=BULK, material_id=material_id, formula=formula,
                                  structure=bulk)]  # fmt: skip
    for hkl, s in slabs:
        axis, vac = vacuum_axis(s.lattice.matrix, s.frac_coords, MIN_VACUUM)
        fid = "slab-" + "".join(str(x) for x in hkl).replace("-", "m")
        rows.append(
            {
                "frame_id": fid,
                "description": f"{formula} ({' '.join(map(str, hkl))})",
                "facet": list(hkl),
                "reconstructed": False,
                "n_atoms": len(s),
                "area": surface_area(s.lattice.matrix, axis),
                "vacuum": vac,
                "source": None,
            }
        )
        frames.append(
            FrameSpec(frame_id=fid, material_id=material_id, formula=formula, structure=s)
        )
    inputs = {
        "material": material_id,
        "bulk": {"frame_id": BULK, "description": "input structure", "n_atoms": len(bulk),
                 "choice": "computed", "source": None},
        "slabs": rows,
        "skipped": list(skipped),
        "sources": [],
    }  # fmt: skip
    return inputs, frames


@dataclass
class SurfaceMaker(Maker):
    """Surface energies of one bulk structure with a reference and uMLIPs, on the same slabs.

    Attributes
    ----------
    name
        Flow name.
    reference_maker
        :class:`ReferenceStaticMaker` (GPAW; EMT for tests) or a VASP reference maker.
    umlip_maker
        Template of the uMLIP jobs; each model gets a copy with its ``model`` set.
    models
        uMLIP specs.
    max_index
        Largest Miller index of the facets (1: (100), (110), (111) for a cubic crystal).
    miller
        Facets to make instead of all up to ``max_index``.
    min_slab_size
        Smallest slab thickness, Å.
    min_vacuum_size
        Smallest vacuum thickness, Å.
    relax
        Relax the slab positions (cell fixed) with each method's own forces first (BFGS; embedded
        references only); the bulk frame is not relaxed.
    relax_fmax
        Force threshold of that relaxation, eV/Å.
    relax_steps
        Most optimiser steps of that relaxation.
    """

    name: str = "surface"
    reference_maker: Any = field(default_factory=ReferenceStaticMaker)
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    max_index: int = 1
    miller: list[list[int]] | None = None
    min_slab_size: float = 8.0
    min_vacuum_size: float = 12.0
    relax: bool = False
    relax_fmax: float = 0.05
    relax_steps: int = 200

    def make(self, structure: Structure, material_id: str | None = None) -> Flow:
        """The flow for ``structure``; output: one :class:`SurfaceDoc` per model."""
        mid = material_id or structure.composition.reduced_formula
        slabs, skipped = generate_slabs(
            structure, self.max_index, self.min_slab_size, self.min_vacuum_size, self.miller
        )
        if not slabs:
            raise InputError(f"{mid}: no symmetric non-polar slab: {'; '.join(skipped)}")
        inputs, frames = slab_inputs(mid, structure, slabs, skipped)
        if self.relax:
            return self._make_relaxed(inputs, frames, mid)
        jobs = []
        for frame in frames:
            j = self.reference_maker.make(frame)
            j.append_name(f" {mid} {frame.frame_id}")
            jobs.append(j)
        refs = [j.output for j in jobs]
        outputs = []
        for spec in self.models:
            ml = replace(self.umlip_maker, model=spec).make(frames)
            ml.append_name(f" {spec} {mid} surfaces")
            cmp = surface_compare_job(
                inputs, refs, ml.output, parent_uuids=[*(j.uuid for j in jobs), ml.uuid]
            )
            cmp.append_name(f" {mid} {spec}")
            jobs += [ml, cmp]
            outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {mid}")

    def _make_relaxed(self, inputs: dict[str, Any], frames: list[FrameSpec], mid: str) -> Flow:
        if not isinstance(self.reference_maker, ReferenceStaticMaker) or (
            self.reference_maker.calculator == "vasp"
        ):
            raise InputError("relax: only embedded references (gpaw, emt) relax here")
        ref = relax_frames_job(
            frames, self.reference_maker, None, self.relax_fmax, self.relax_steps
        )
        ref.name = f"relax slabs {self.reference_maker.calculator} {mid}"
        jobs, outputs = [ref], []
        for spec in self.models:
            ml = relax_frames_job(frames, None, spec, self.relax_fmax, self.relax_steps)
            ml.name = f"relax slabs {spec} {mid}"
            cmp = surface_compare_job(
                inputs, ref.output["frames"], ml.output, parent_uuids=[ref.uuid, ml.uuid],
                relaxed=True,
            )  # fmt: skip
            cmp.append_name(f" {mid} {spec} relaxed")
            jobs += [ml, cmp]
            outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {mid} relaxed")


def relax_positions(
    structure: Structure, calc, fmax: float, steps: int
) -> tuple[Structure, float, bool]:
    """``structure`` with positions relaxed (cell fixed; BFGS), its energy (eV) and whether the
    largest force fell below ``fmax`` eV/Å within ``steps``."""
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calc
    converged = bool(BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps))
    return AseAtomsAdaptor.get_structure(atoms), float(atoms.get_potential_energy()), converged


@job(data=["frames"])
def relax_frames_job(
    frames: list[FrameSpec],
    reference_maker: ReferenceStaticMaker | None,
    model: str | None,
    fmax: float = 0.05,
    steps: int = 200,
) -> UMLIPResults | dict[str, Any]:
    """Relax the positions of every frame but the bulk one with the reference's embedded calculator
    or with ``model``; the bulk frame gets a single point. A model returns a
    :class:`UMLIPResults`, the reference ``{"frames": [FrameResult, ...]}``; frames that did not
    reach ``fmax`` are flagged ``unconverged``."""
    results = []
    if model is not None:
        from softening.models import load_model

        loaded = load_model(model)
        calc = loaded.calculator()
        code = CodeInfo(name=loaded.name, version=loaded.version, settings={"relax_fmax": fmax})
    for f in frames:
        if model is None:
            calc, version = reference_maker.get_calculator(f.structure)
            code = CodeInfo(
                name=reference_maker.calculator,
                version=version,
                settings={**reference_maker.code_settings(f.structure), "relax_fmax": fmax},
            )
        if f.frame_id == BULK:
            s, e, ok = f.structure, None, True
            from softening.makers.reference import single_point

            e = single_point(f.structure, calc, compute_stress=False)["energy"]
        else:
            s, e, ok = relax_positions(f.structure, calc, fmax, steps)
        results.append(
            FrameResult(
                frame_id=f.frame_id,
                material_id=f.material_id,
                formula=f.formula,
                structure=s,
                energy=e,
                code=code,
                converged=ok,
                flags=[] if ok else ["unconverged"],
            )  # fmt: skip
        )
    if model is not None:
        return UMLIPResults(model=loaded.info, frames=results)
    return {"frames": results}


def surface_energy_of(e_slab: float, slab: Structure, e_bulk_per_atom: float) -> float:
    """Surface energy of one slab structure (vacuum axis found from its positions), J/m^2."""
    axis, _ = vacuum_axis(slab.lattice.matrix, slab.frac_coords)
    area = surface_area(slab.lattice.matrix, axis)
    return surface_energy(e_slab, len(slab), e_bulk_per_atom, area) * J_PER_M2_PER_EV_PER_A2


__all__ = [
    "SurfaceComparisonFlowMaker",
    "SurfaceMaker",
    "compare_surface_data",
    "compare_surface_results",
    "generate_slabs",
]
