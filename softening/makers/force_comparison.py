"""The force comparison: pair reference and uMLIP results by frame and fit the softening scale of
the forces (a :class:`~softening.schemas.SofteningDoc` per material and model)."""

from __future__ import annotations

import logging

import numpy as np

from softening.analysis.metrics import (
    ZERO_FORCE,
    correlation,
    force_outliers,
    softening_metrics,
)
from softening.errors import InputError
from softening.makers.job import softening_job
from softening.models.backends import ReferenceRun, flags_for_model
from softening.schemas import (
    CodeInfo,
    Flag,
    FrameResult,
    ModelInfo,
    SofteningDoc,
    UMLIPResults,
)

logger = logging.getLogger(__name__)

#: Flag kinds of a result whose cMAE is not meaningful: its scale CI includes 0
#: (``uncorrelated``) or lies below it (``anticorrelated``); see
#: :func:`softening.analysis.metrics.correlation`.
UNCORRELATED_KINDS = ("uncorrelated", "anticorrelated")


class NoForceSignal(InputError):
    """Every reference force component of a material is zero: its softening scale is undefined."""


def correlation_flag(scale_ci: tuple[float, float]) -> Flag | None:
    """The ``uncorrelated`` / ``anticorrelated`` flag of a scale CI (its words say what was
    measured, with the CI), or ``None`` when the CI lies above 0."""
    kind = correlation(scale_ci)
    if kind is None:
        return None
    ci = f"scale CI [{scale_ci[0]:.3g}, {scale_ci[1]:.3g}]"
    what = (
        f"{ci} lies below 0: the uMLIP's forces point against the reference's"
        if kind == "anticorrelated"
        else f"{ci} includes 0: the uMLIP's forces do not follow the reference's"
    )
    return Flag(kind=kind, detail=f"{what}; cMAE not meaningful")


def outlier_flag(keys: list[tuple[str, str]], f_ml: list, f_ref: list) -> Flag | None:
    """The ``outlier_forces`` flag naming the atoms and frames whose force components lie far
    beyond the rest (:func:`softening.analysis.metrics.force_outliers`), or ``None``."""
    found = force_outliers(f_ml, f_ref)
    if not found:
        return None
    frames = list(dict.fromkeys(i for i, _ in found))
    names = ", ".join("/".join(keys[i]) for i in frames[:3]) + (" ..." if len(frames) > 3 else "")
    largest = max(float(np.abs(f_ref[i]).max()) for i in frames)
    largest_ml = max(float(np.abs(f_ml[i]).max()) for i in frames)
    return Flag(
        kind="outlier_forces",
        detail=f"{len(found)} atom(s) in {len(frames)} frame(s) ({names}) with force components "
        f"far beyond the rest (largest |F|: reference {largest:.3g}, uMLIP {largest_ml:.3g} "
        "eV/Å); they dominate the scale and MAE",
    )


def compare_results(
    references: list[FrameResult | dict | None],
    umlip: UMLIPResults,
    material_id: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    expected_frames: list[str] | None = None,
) -> SofteningDoc:
    """Pair frames by (material, frame id), fit, and return the :class:`SofteningDoc`.

    ``references`` may hold ``None`` for reference jobs that failed (jobflow ``OnMissing.NONE``);
    those frames are named in ``missing_frames`` so that a rerun of the failed jobs completes it.
    """
    refs = [FrameResult.model_validate(r) for r in references if r is not None]
    ml_by_id = {(f.material_id, f.frame_id): f for f in umlip.frames}
    if material_id is not None:
        ml_by_id = {k: v for k, v in ml_by_id.items() if k[0] == material_id}
        refs = [r for r in refs if r.material_id == material_id]
    ref_by_id = {(r.material_id, r.frame_id): r for r in refs if r.forces is not None}
    expected = set(ml_by_id)
    if expected_frames is not None and material_id is not None:
        expected |= {(material_id, fid) for fid in expected_frames}
    paired = sorted(set(ref_by_id) & set(ml_by_id), key=lambda k: (k[0], _natural(k[1])))
    missing = sorted(expected - set(paired), key=lambda k: (k[0], _natural(k[1])))
    if not paired:
        raise InputError(
            f"no frame of {material_id or 'the dataset'} has both a reference and a uMLIP result"
        )
    flags = sorted({fl for k in paired for fl in ref_by_id[k].flags})
    # The references' settings against what this model was trained on (training_data flags).
    runs = [ReferenceRun.from_result(ref_by_id[k]) for k in paired]
    flags = flags_for_model(umlip.model.name, flags, runs)
    if any(not ref_by_id[k].converged for k in paired):
        flags.append(Flag(kind="unconverged", detail="reference"))
    return softening_doc(
        keys=paired,
        f_ml=[np.asarray(ml_by_id[k].forces, dtype=float) for k in paired],
        f_ref=[np.asarray(ref_by_id[k].forces, dtype=float) for k in paired],
        species=[[s.specie.symbol for s in ref_by_id[k].structure] for k in paired],
        e_ml=[ml_by_id[k].energy for k in paired],
        e_ref=[ref_by_id[k].energy for k in paired],
        formula=ref_by_id[paired[0]].formula,
        model=umlip.model,
        reference=_reference_code([ref_by_id[k] for k in paired]),
        flags=flags,
        missing=missing,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


def softening_doc(
    *,
    keys: list[tuple[str, str]],
    f_ml: list[np.ndarray],
    f_ref: list[np.ndarray],
    species: list[list[str]],
    e_ml: list[float | None],
    e_ref: list[float | None],
    formula: str,
    model: ModelInfo,
    reference: CodeInfo,
    flags: list[Flag] | None = None,
    missing: list[tuple[str, str]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> SofteningDoc:
    """The :class:`SofteningDoc` of paired frames: one material, or pooled when several.

    Parameters
    ----------
    keys
        ``(material id, frame id)`` of each paired frame.
    f_ml, f_ref
        uMLIP and reference forces per frame, ``(n_atoms, 3)`` eV/Å.
    species
        Element symbols per frame.
    e_ml, e_ref
        Total energies per frame, eV (``None`` where unknown).
    formula
        Reduced formula of the material (ignored when pooled).
    model, reference
        Provenance of both sides.
    flags
        Flags of the inputs; the result's own (missing frames, uncorrelated or anticorrelated,
        outlier forces) are added.
    missing
        ``(material id, frame id)`` of frames expected but without a pair.
    n_bootstrap, seed
        Bootstrap of the scale's interval.

    Raises
    ------
    NoForceSignal
        Every reference force component is zero: no slope exists.
    """
    from softening import __version__

    missing = list(missing or [])
    if max((float(np.abs(f).max()) for f in f_ref if np.size(f)), default=0.0) <= ZERO_FORCE:
        names = ", ".join(sorted({k[0] for k in keys}))
        raise NoForceSignal(
            f"{names}: every reference force component is zero ({len(keys)} frame(s); e.g. "
            "1-atom cells, or atoms on sites fixed by symmetry): the softening scale is undefined"
        )
    # Energies are compared only as differences between frames of one material (offsets removed),
    # so they say something only when some material has two frames or more.
    n_materials = len({k[0] for k in keys})
    has_energy = all(e is not None for e in e_ml + e_ref) and len(keys) > n_materials
    m = softening_metrics(
        f_ml,
        f_ref,
        species_frames=species,
        e_ml=e_ml if has_energy else None,
        e_dft=e_ref if has_energy else None,
        groups=[k[0] for k in keys],
        n_resamples=n_bootstrap,
        seed=seed,
    )
    elements = sorted({el for sp in species for el in sp})
    materials = sorted({k[0] for k in keys})
    pooled = len(materials) > 1
    flags = list(flags or [])
    if missing:
        flags.append(Flag(kind="missing_frames", detail=f"{len(missing)} frame(s) missing"))
    for flag in (correlation_flag(m.scale_ci), outlier_flag(keys, f_ml, f_ref)):
        if flag is not None:
            flags.append(flag)
    return SofteningDoc(
        material_id="pooled" if pooled else materials[0],
        formula="" if pooled else formula,
        chemsys="-".join(elements),
        elements=elements,
        model=model,
        reference=reference,
        n_frames=len(keys),
        n_atoms=int(sum(len(f) for f in f_ref)),
        scale=m.scale,
        scale_ci=m.scale_ci,
        scale_with_intercept=m.scale_with_intercept,
        intercept=m.intercept,
        mae=m.mae,
        cmae=m.cmae,
        energy_mae_per_atom=m.energy_mae_per_atom,
        per_element_scales=m.per_element_scales,
        frame_ids=[k[1] if not pooled else f"{k[0]}/{k[1]}" for k in keys],
        missing_frames=[k[1] if not pooled else f"{k[0]}/{k[1]}" for k in missing],
        flags=flags,
        forces_ml=np.concatenate(f_ml).tolist(),
        forces_ref=np.concatenate(f_ref).tolist(),
        package_version=__version__,
    )


def compare_content_key(
    references: list[FrameResult | dict | None],
    umlip: UMLIPResults | dict,
    material_id: str | None,
    n_bootstrap: int,
    seed: int,
    expected_frames: list[str] | None,
) -> str | None:
    """Content key of a comparison, or ``None`` when an input has none (then no reuse)."""
    import hashlib
    import json

    def _key(x):
        return x.get("content_key") if isinstance(x, dict) else getattr(x, "content_key", None)

    ref_keys = [None if r is None else _key(r) for r in references]
    ml_key = _key(umlip)
    if ml_key is None or any(
        r is not None and k is None for r, k in zip(references, ref_keys, strict=True)
    ):
        return None
    payload = [ref_keys, ml_key, material_id, n_bootstrap, seed, expected_frames]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _reference_code(refs: list[FrameResult]) -> CodeInfo:
    codes = {(r.code.name, r.code.version) for r in refs}
    if len(codes) == 1:
        return refs[0].code
    return CodeInfo(name="+".join(sorted({c[0] for c in codes})), version=None, settings={})


@softening_job(SofteningDoc, tolerant=True, store=True, replaces=True, name="compare")
def compare_job(
    references: list[FrameResult | None],
    umlip: UMLIPResults,
    material_id: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    expected_frames: list[str] | None = None,
    parent_uuids: list[str] | None = None,
) -> SofteningDoc:
    """jobflow job around :func:`compare_results`; tolerates failed reference jobs.

    A comparison of exactly the same inputs stored before is reused: its forces are referenced,
    not stored again (see :mod:`softening.makers.reuse`). ``parent_uuids`` (the reference and uMLIP
    jobs, recorded as provenance) are not part of the content key: a rerun of the same inputs from
    another flow reuses the result and records its own parents.
    """

    from softening.makers.reuse import reuse_stored

    key = compare_content_key(references, umlip, material_id, n_bootstrap, seed, expected_frames)
    parents = list(parent_uuids or [])
    what = f"comparison of {material_id or 'all frames'}"
    reused = reuse_stored(key, "SofteningDoc", what, parent_uuids=parents)
    if reused is not None:
        return reused
    doc = compare_results(references, umlip, material_id, n_bootstrap, seed, expected_frames)
    doc = doc.model_copy(update={"content_key": key, "parent_uuids": parents})
    if doc.missing_frames:
        logger.warning(
            "%s / %s: reference missing for frame(s) %s; rerun to complete",
            doc.material_id,
            doc.model.name,
            ", ".join(doc.missing_frames),
        )
    return doc
