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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pymatgen.core import Structure

from softening.analysis.surfaces import (
    J_PER_M2_PER_EV_PER_A2,
    MIN_VACUUM,
    compare_surface_energies,
    implausible_surface_energy,
    largest_gaps,
    surface_energy,
)
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.properties import (
    BULK,
    DataComparisonFlowMaker,
    PreparedData,
    PropertyFlowMaker,
    PropertySpec,
    default_record,
    register_property,
    relax_frames_job,
    relax_positions,
)
from softening.makers.slabs import generate_slabs, slab_inputs
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
        The bulk frame lacks a reference or model energy (a rerun computes it). Slabs without one,
        or with a surface energy that is not physical on either side
        (:func:`~softening.analysis.surfaces.implausible_surface_energy`), are skipped with the
        reason.
    """
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
        # A broken energy or area gives 1e300 J/m^2: left out with the reason, not averaged.
        why = [
            f"{side} {problem}"
            for side, value in (("reference", g_ref), (umlip.model.name, g))
            if (problem := implausible_surface_energy(value * J_PER_M2_PER_EV_PER_A2))
        ]
        if why:
            skipped.append(f"{s['description'] or fid}: {'; '.join(why)}")
            continue
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
    return SurfaceDoc.create(
        material_id=material,
        composition=refs[BULK].structure,
        model=umlip.model,
        reference=refs[BULK].code,
        ratio=summary.get("mean_ratio"),
        flags=flags,
        sources=list(inputs.get("sources", [])),
        parent_uuids=list(parent_uuids),
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
class SurfaceComparisonFlowMaker(DataComparisonFlowMaker):
    """Surface energies of uMLIPs on existing DFT slabs (same slabs, same bulk frame).

    The loop is :class:`~softening.makers.properties.DataComparisonFlowMaker`'s: every frame of
    every material in one job per model, one comparison per material and model.
    """

    name: str = "surface comparison"

    label: ClassVar[str] = "surfaces"

    def prepare(self, datasets: Sequence) -> list[PreparedData]:
        """Each material's slabs, bulk frame and DFT energies (from :func:`read_surface_data`)."""
        out = []
        for d in datasets:
            inputs = surface_inputs(d)
            out.append(
                PreparedData(
                    key=d.material,
                    frames=surface_frames(d, inputs),
                    inputs=(inputs, reference_results(d, inputs)),
                )
            )
        return out

    def compare(self, prepared: PreparedData, umlip: Any, parent_uuids: list[str]):
        """:func:`surface_compare_job`."""
        inputs, refs = prepared.inputs
        return surface_compare_job(inputs, refs, umlip, parent_uuids=parent_uuids)


@dataclass
class SurfaceMaker(PropertyFlowMaker):
    """Surface energies of one bulk structure with a reference and uMLIPs, on the same slabs.

    The loop is :class:`~softening.makers.properties.PropertyFlowMaker`'s; with ``relax``, each
    method relaxes the slab positions (cell fixed) with its own forces first and the relaxed slabs
    are compared (the bulk frame is not relaxed).

    Attributes
    ----------
    name
        Flow name.
    reference_maker, umlip_maker, models, relax, relax_fmax, relax_steps
        As :class:`~softening.makers.properties.PropertyFlowMaker`.
    max_index
        Largest Miller index of the facets (1: (100), (110), (111) for a cubic crystal).
    miller
        Facets to make instead of all up to ``max_index``.
    min_slab_size
        Smallest slab thickness, Å.
    min_vacuum_size
        Smallest vacuum thickness, Å.
    """

    name: str = "surface"
    max_index: int = 1
    miller: list[list[int]] | None = None
    min_slab_size: float = 8.0
    min_vacuum_size: float = 12.0

    # Relaxed surface energies are the result; the unrelaxed single points are not needed.
    unrelaxed_with_relaxed: ClassVar[bool] = False

    def inputs(self, structure: Structure, material_id: str) -> tuple[dict, list[FrameSpec]]:
        """The slabs of ``structure`` and the bulk frame.

        Raises
        ------
        InputError
            ``structure`` is not a bulk crystal (an empty gap of :data:`MIN_VACUUM` Å or more
            along a cell vector: already a slab, a molecule or atoms in a box), or no facet has a
            symmetric, non-polar, stoichiometric slab.
        """
        gaps = largest_gaps(structure.lattice.matrix, structure.frac_coords)
        if gaps.max() >= MIN_VACUUM:
            axis = "abc"[int(gaps.argmax())]
            raise InputError(
                f"{material_id}: not a bulk crystal: {gaps.max():.1f} Å of empty space along "
                f"{axis} (a slab, a molecule or atoms in a box); surfaces are cut from the bulk "
                "structure: give the bulk crystal"
            )
        slabs, skipped = generate_slabs(
            structure, self.max_index, self.min_slab_size, self.min_vacuum_size, self.miller
        )
        if not slabs:
            raise InputError(f"{material_id}: no symmetric non-polar slab: {'; '.join(skipped)}")
        return slab_inputs(material_id, structure, slabs, skipped)

    def compare(self, inputs, references, umlip, relaxed_references, relaxed_umlip, parent_uuids):
        """:func:`surface_compare_job` on the relaxed results with ``relax``, else unrelaxed."""
        if self.relax:
            return surface_compare_job(
                inputs, relaxed_references, relaxed_umlip, parent_uuids, relaxed=True
            )
        return surface_compare_job(inputs, references, umlip, parent_uuids)


# ---- the registry entry ------------------------------------------------------------------------


def surface_rows(doc: SurfaceDoc) -> list[dict[str, Any]]:
    """Per-slab JSON records of a :class:`SurfaceDoc` (gamma in J/m^2, ``_ev`` in eV/Å^2)."""
    return [
        {
            "material": doc.material_id,
            "facet": r.facet,
            "description": r.description,
            "reconstructed": r.reconstructed,
            "gamma_ref": r.gamma_ref,
            "gamma": r.gamma,
            "gamma_ref_ev": r.gamma_ref_ev,
            "gamma_ev": r.gamma_ev,
            "n_atoms": r.n_atoms,
            "area": r.area,
            "vacuum": r.vacuum,
            "e_slab_ref": r.e_slab_ref,
            "e_slab": r.e_slab,
            "relaxed": r.relaxed,
            "frame_id": r.frame_id,
            "bulk_choice": doc.values.bulk_choice,
        }
        for r in doc.values.rows
    ]


def surface_record(doc: SurfaceDoc) -> dict[str, Any]:
    """Per-material summary: the shared record, the bulk choice and the skipped slabs."""
    v = doc.values
    return default_record(doc) | {
        "bulk_choice": v.bulk_choice,
        "bulk_frame": v.bulk_frame,
        "e_bulk_ref": v.e_bulk_ref,
        "e_bulk": v.e_bulk,
        "mae": v.mae,
        "mean_ratio": v.mean_ratio,
        "fraction_underestimated": v.fraction_underestimated,
        "skipped": v.skipped,
    }


def _surface_items(doc: SurfaceDoc) -> list[tuple[str, float, float, str]]:
    return [
        (
            f"({' '.join(map(str, r.facet or []))})" + (" rec." if r.reconstructed else ""),
            r.gamma_ref,
            r.gamma,
            "J/m²",
        )
        for r in doc.values.rows
    ]


def _surface_maker(reference_maker: Any, models: list[str], options: Any) -> SurfaceMaker:
    return SurfaceMaker(
        reference_maker=reference_maker, models=list(models), relax=bool(options.get("relax"))
    )


SPEC = register_property(
    PropertySpec(
        name="surface",
        doc_class=SurfaceDoc,
        make_maker=_surface_maker,
        pairs=lambda doc: [(r.gamma_ref, r.gamma) for r in doc.values.rows],
        axis="surface energy (J/m$^2$)",
        json_key="surfaces",
        rows=surface_rows,
        record=surface_record,
        items=_surface_items,
        description="surface energies of low-index slabs",
    )
)


__all__ = [
    "BULK",
    "SurfaceComparisonFlowMaker",
    "SurfaceMaker",
    "compare_surface_data",
    "compare_surface_results",
    "relax_frames_job",
    "relax_positions",
    "surface_record",
    "surface_rows",
]
