"""Solid-solution energetics of uMLIPs against a reference: formation energies of ordered cells.

The paper's solid-solution benchmark (Fig. 2c of Deng et al. 2025: every Ca/Mg arrangement of
Ca_xMg_(2-x)O_2): each method's formation energies of the same ordered cells, against its **own**
lowest-energy end members; a softened potential compresses their spread towards zero, and the
miscibility gap it predicts closes at too low a temperature.

- Existing data (:func:`~softening.datasets.mixing.read_mixing_data`: cell folders with a
  ``vasprun.xml`` or ``OUTCAR``, extended XYZ, an ASE database): :class:`MixingComparisonFlowMaker`,
  one batched uMLIP job per model over every cell of every data set, one comparison job per data
  set and model; no DFT runs.
- Computed: :class:`MixingMaker` enumerates the symmetry-distinct orderings of a substitution on a
  sublattice (:func:`~softening.analysis.orderings.enumerate_orderings`), then the loop of
  :class:`~softening.makers.properties.PropertyFlowMaker` (reference single points, reused by
  content key; one batched uMLIP job per model; with ``relax``, each method relaxes positions
  and cell with its own forces).

Both give :class:`~softening.schemas.MixingDoc`, one per system and model
(:func:`compare_mixing_results`; the science is :mod:`softening.analysis.mixing`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pymatgen.core import Composition, Structure

from softening import defaults
from softening.analysis.mixing import (
    HULL_TOL,
    compare_formation_energies,
    critical_temperature,
    end_member_energies,
    end_member_fractions,
    energy_above_hull,
    formation_energies,
    regular_solution_omega,
)
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.mixing_setup import mixing_inputs
from softening.makers.properties import (
    DataComparisonFlowMaker,
    PreparedData,
    PropertyFlowMaker,
    PropertySpec,
    register_property,
)
from softening.schemas import (
    CodeInfo,
    FrameResult,
    FrameSpec,
    MixingCell,
    MixingDoc,
    MixingValues,
    UMLIPResults,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MixingComparisonFlowMaker",
    "MixingMaker",
    "compare_mixing_results",
    "mixing_system_record",
]


def _energies(
    results: Any, cells: Sequence[str], side: str, system: str
) -> tuple[list[float], list[bool], dict[str, FrameResult]]:
    """Energies (eV) of ``cells`` of ``system`` from results (FrameResults or a UMLIPResults,
    possibly holding other systems' cells too), whether each relaxation converged, and the
    results by cell; missing cells raise."""
    if isinstance(results, dict) and "frames" in results and "model" not in results:
        results = results["frames"]
    if isinstance(results, UMLIPResults | dict):
        results = UMLIPResults.model_validate(results).frames
    by_id = {}
    for r in results or []:
        if r is None:
            continue
        r = FrameResult.model_validate(r)
        if r.material_id not in (None, system):
            continue  # another system's cell of the same batched job
        if r.energy is not None and np.isfinite(r.energy):
            by_id[r.frame_id] = r
    missing = [c for c in cells if c not in by_id]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise CalculationError(
            f"{system}: {side} energy missing for {shown}; rerun to compute them"
        )
    return [by_id[c].energy for c in cells], [by_id[c].converged for c in cells], by_id


# ---- comparison ------------------------------------------------------------------------------------


def _side(inputs: dict[str, Any], energies: Sequence[float]) -> dict[str, Any]:
    """Formation energies, hull and regular-solution fit of one method."""
    amounts = np.array([c["amounts"] for c in inputs["cells"]], dtype=float)
    n_atoms = [c["n_atoms"] for c in inputs["cells"]]
    mu, em_cells = end_member_energies(energies, amounts)
    e_form = formation_energies(energies, amounts, n_atoms, mu)
    x = end_member_fractions(amounts, inputs["atoms_per_end_member"])
    above = energy_above_hull(x, e_form)
    omega = regular_solution_omega(x[:, 1], e_form) if x.shape[1] == 2 else None
    return {
        "e_form": e_form,
        "x": x,
        "above": above,
        "em_cells": [inputs["cells"][i]["cell"] for i in em_cells],
        "omega": omega,
    }


def compare_mixing_results(
    inputs: dict[str, Any],
    references: Any,
    umlip: UMLIPResults | dict,
    relaxed_references: Any = None,
    relaxed_umlip: Any = None,
    parent_uuids: Sequence[str] = (),
) -> MixingDoc:
    """Formation energies of every cell with the reference and the model, each against its own
    end members, and the system's summary (slope, spread, MAE, hulls, regular-solution T_c).

    With relaxed results (both given), the relaxed energies are compared.

    Raises
    ------
    CalculationError
        A cell without a reference or model energy (a rerun computes it).
    """
    relaxed = relaxed_references is not None and relaxed_umlip is not None
    refs_in, ml_in = (relaxed_references, relaxed_umlip) if relaxed else (references, umlip)
    ml_results = UMLIPResults.model_validate(ml_in)
    system = inputs["system"]
    names = [c["cell"] for c in inputs["cells"]]
    e_ref, ok_ref, ref_by_id = _energies(refs_in, names, "reference", system)
    e_ml, ok_ml, _ = _energies(ml_results, names, ml_results.model.name, system)
    ref, ml = _side(inputs, e_ref), _side(inputs, e_ml)
    mixed = np.array([sum(a > 0 for a in c["amounts"]) > 1 for c in inputs["cells"]])
    members = inputs["end_members"]
    rows = [
        MixingCell(
            cell=c["cell"],
            formula=c["formula"],
            n_atoms=c["n_atoms"],
            fractions={m: float(round(v, 12)) for m, v in zip(members, ref["x"][i], strict=True)},
            e_form_ref=float(ref["e_form"][i]),
            e_form=float(ml["e_form"][i]),
            e_hull_ref=float(ref["above"][i]),
            e_hull=float(ml["above"][i]),
            energy_ref=float(e_ref[i]),
            energy=float(e_ml[i]),
            end_member=not mixed[i],
            relaxed=relaxed,
            converged=bool(ok_ref[i] and ok_ml[i]),
            source=c.get("source"),
        )
        for i, c in enumerate(inputs["cells"])
    ]
    flags = list(inputs.get("flags", []))
    stats: dict[str, Any] = {}
    if mixed.any():
        try:
            stats = compare_formation_energies(ref["e_form"][mixed], ml["e_form"][mixed])
        except ValueError as exc:
            flags.append(f"no_statistics: {exc}")
    else:
        flags.append("no_mixed_cells: only end members; nothing to compare")
    unconverged = [r.cell for r in rows if not r.converged]
    if unconverged:
        flags.append(
            f"unconverged: {len(unconverged)} relaxation(s) did not reach their fmax "
            f"({', '.join(unconverged[:3])}{'...' if len(unconverged) > 3 else ''})"
        )
    std_ratio = stats.get("std_ratio")
    values = MixingValues(
        system=system,
        end_members=members,
        end_member_cells_ref=ref["em_cells"],
        end_member_cells=ml["em_cells"],
        cells=rows,
        n_mixed=int(mixed.sum()),
        slope=stats.get("slope"),
        std_ratio=None if std_ratio is None or not np.isfinite(std_ratio) else std_ratio,
        mae=stats.get("mae"),
        fraction_closer_to_zero=stats.get("fraction_closer_to_zero"),
        hull_ref=[r.cell for r in rows if r.e_hull_ref <= HULL_TOL],
        hull=[r.cell for r in rows if r.e_hull <= HULL_TOL],
        omega_ref=ref["omega"],
        omega=ml["omega"],
        tc_ref=None if ref["omega"] is None else critical_temperature(ref["omega"]),
        tc=None if ml["omega"] is None else critical_temperature(ml["omega"]),
        relaxed=relaxed,
    )
    composition = sum((Composition(m) for m in members), Composition())
    first = ref_by_id[names[0]]
    return MixingDoc.create(
        material_id=system,
        composition=composition,
        model=ml_results.model,
        reference=first.code,
        ratio=values.slope,
        flags=flags,
        sources=sorted({c["source"] for c in inputs["cells"] if c.get("source")})[:1],
        parent_uuids=list(parent_uuids),
        values=values,
    )


@softening_job(MixingDoc, tolerant=True, name="mixing compare")
def mixing_compare_job(
    inputs: dict[str, Any],
    references: Any,
    umlip: Any,
    relaxed_references: Any = None,
    relaxed_umlip: Any = None,
    parent_uuids: Sequence[str] = (),
) -> MixingDoc:
    """jobflow job around :func:`compare_mixing_results`."""
    doc = compare_mixing_results(
        inputs, references, umlip, relaxed_references, relaxed_umlip, parent_uuids
    )
    v = doc.values
    logger.info(
        "%s / %s: %d cells, slope %s, std ratio %s",
        doc.material_id, doc.model.name, len(v.cells),
        "n/a" if v.slope is None else f"{v.slope:.3f}",
        "n/a" if v.std_ratio is None else f"{v.std_ratio:.3f}",
    )  # fmt: skip
    return doc


# ---- existing data ---------------------------------------------------------------------------------


def data_inputs(data: Any, end_members: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`mixing_inputs` of a :class:`~softening.datasets.mixing.MixingData`; the data's
    distinct flags go to every document."""
    flags = sorted({str(f) for c in data.cells for f in c.flags})
    system = None if end_members is None else "-".join(end_members)
    inputs = mixing_inputs(
        system,
        [(c.frame_id, c.structure) for c in data.cells],
        end_members,
        sources=[c.source for c in data.cells],
        flags=flags,
    )
    return inputs


def data_frames(data: Any, system: str) -> list[FrameSpec]:
    """The cells of a data set as frames (material id: the system)."""
    return [
        FrameSpec(frame_id=c.frame_id, material_id=system, formula=c.formula, structure=c.structure)
        for c in data.cells
    ]


def data_references(data: Any, system: str) -> list[FrameResult]:
    """The data's DFT energies as reference :class:`FrameResult` s."""
    code = CodeInfo(name="vasp", settings={"source": str(data.source)})
    return [
        FrameResult(
            frame_id=c.frame_id,
            material_id=system,
            formula=c.formula,
            structure=c.structure,
            energy=float(c.energy),
            code=code,
            flags=list(c.flags),
        )
        for c in data.cells
    ]


@dataclass
class MixingComparisonFlowMaker(DataComparisonFlowMaker):
    """Formation energies of uMLIPs on existing DFT cells (the same final structures).

    The loop is :class:`~softening.makers.properties.DataComparisonFlowMaker`'s: every cell of
    every data set in one job per model, one comparison per data set (system) and model.

    Attributes
    ----------
    name, umlip_maker, models
        As :class:`~softening.makers.properties.DataComparisonFlowMaker`.
    end_members
        End-member formulas for every data set (``None``: each data set's pure elements).
    """

    name: str = "mixing comparison"
    end_members: list[str] | None = None

    label: ClassVar[str] = "mixing"

    def prepare(self, datasets: Sequence[Any]) -> list[PreparedData]:
        """Each data set's cells, end-member amounts and DFT energies (from
        :func:`read_mixing_data`); systems of one name get ``-2``, ``-3``..."""
        inputs = [data_inputs(d, self.end_members) for d in datasets]
        systems = _unique([i["system"] for i in inputs])
        out = []
        for d, i, system in zip(datasets, inputs, systems, strict=True):
            i["system"] = system
            out.append(
                PreparedData(
                    key=system,
                    frames=data_frames(d, system),
                    inputs=(i, data_references(d, system)),
                )
            )
        return out

    def compare(self, prepared: PreparedData, umlip: Any, parent_uuids: list[str]):
        """:func:`mixing_compare_job`."""
        inputs, refs = prepared.inputs
        return mixing_compare_job(inputs, refs, umlip, parent_uuids=parent_uuids)


def _unique(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        name, k = n, 2
        while name in out:
            name, k = f"{n}-{k}", k + 1
        out.append(name)
    return out


# ---- computed ----------------------------------------------------------------------------------------


@dataclass
class MixingMaker(PropertyFlowMaker):
    """Formation energies of the orderings of a substitution, with a reference and uMLIPs.

    Attributes
    ----------
    name
        Flow name.
    reference_maker, umlip_maker, models, relax_fmax, relax_steps
        As :class:`~softening.makers.properties.PropertyFlowMaker`.
    relax
        Relax positions **and cell** of every ordering with each method's own forces (embedded
        references only): end members of different size (MgO, CaO) need their own volume.
        Off: every ordering keeps the parent cell's lattice.
    substitute
        ``HOST:GUEST`` (``Mg:Ca``): the guest replaces the host on its sublattice.
    max_cells
        Largest supercell, in primitive cells of the input structure.
    symprec
        Symmetry tolerance of the enumeration, Å.
    max_structures
        Most orderings before the enumeration refuses (choose a smaller ``max_cells``).
    """

    name: str = "mixing"
    # Orderings of different composition need their own volume.
    relax_cell: ClassVar[bool] = True
    substitute: str | None = None
    max_cells: int = defaults.MAX_CELLS
    symprec: float = 0.01
    max_structures: int = 500

    def inputs(self, structure: Structure, material_id: str) -> tuple[dict, list[FrameSpec]]:
        """The orderings of :attr:`substitute` on ``structure`` (end members included)."""
        from softening.analysis.orderings import enumerate_orderings, parse_substitution

        if not self.substitute:
            raise InputError("--property mixing needs --substitute HOST:GUEST (e.g. Mg:Ca)")
        try:
            host, guest = parse_substitution(self.substitute)
        except ValueError as exc:
            raise InputError(f"--substitute {self.substitute}: {exc}") from None
        orderings = enumerate_orderings(
            structure.get_primitive_structure(),
            host,
            guest,
            self.max_cells,
            symprec=self.symprec,
            max_structures=self.max_structures,
        )
        pure = [o for o in orderings if o.fraction in (0.0, 1.0)]
        members = [
            o.structure.composition.reduced_formula for o in sorted(pure, key=lambda o: o.fraction)
        ]
        system = f"{material_id} {host}:{guest}"
        inputs = mixing_inputs(system, [(o.label, o.structure) for o in orderings], members)
        frames = [
            FrameSpec(
                frame_id=o.label,
                material_id=system,
                formula=o.structure.composition.reduced_formula,
                structure=o.structure,
            )
            for o in orderings
        ]
        return inputs, frames

    compare_job: ClassVar[Any] = mixing_compare_job


# ---- the registry entry ------------------------------------------------------------------------


def mixing_cell_rows(doc: MixingDoc) -> list[dict[str, Any]]:
    """Per-cell ``--json`` records (formation energies eV/atom, fractions per end member)."""
    return [
        {
            "system": doc.values.system,
            "cell": c.cell,
            "formula": c.formula,
            "fractions": c.fractions,
            "e_form_ref": c.e_form_ref,
            "e_form": c.e_form,
            "e_hull_ref": c.e_hull_ref,
            "e_hull": c.e_hull,
            "n_atoms": c.n_atoms,
            "end_member": c.end_member,
            "relaxed": c.relaxed,
        }
        for c in doc.values.cells
    ]


def mixing_system_record(doc: MixingDoc) -> dict[str, Any]:
    """The per-system ``--json`` record (eV/atom, K)."""
    v = doc.values
    return {
        "system": v.system,
        "end_members": v.end_members,
        "n_cells": len(v.cells),
        "n_mixed": v.n_mixed,
        "slope": v.slope,
        "std_ratio": v.std_ratio,
        "mae": v.mae,
        "fraction_closer_to_zero": v.fraction_closer_to_zero,
        "hull_ref": v.hull_ref,
        "hull": v.hull,
        "omega_ref": v.omega_ref,
        "omega": v.omega,
        "tc_ref": v.tc_ref,
        "tc": v.tc,
        "relaxed": v.relaxed,
        "reference": doc.reference.name,
        "flags": [str(f) for f in doc.flags],
    }


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _mixing_cells(doc: MixingDoc) -> list[list[str]]:
    v = doc.values
    return [
        [
            v.system,
            doc.model.name,
            f"{len(v.cells)} ({v.n_mixed} mixed)",
            _fmt(v.slope, ".3f"),
            _fmt(v.std_ratio, ".3f"),
            "n/a" if v.mae is None else f"{1000 * v.mae:.1f}",
            "n/a"
            if v.fraction_closer_to_zero is None
            else f"{100 * v.fraction_closer_to_zero:.0f} %",
            f"{len(v.hull_ref)}/{len(v.hull)}",
            f"{_fmt(v.tc_ref, '.0f')}/{_fmt(v.tc, '.0f')}",
        ]
    ]


def mixing_plots(docs: Sequence[MixingDoc], out: Any) -> dict[str, str]:
    """Per system: formation energy against composition, reference and each model, with hulls.

    Returns
    -------
    dict
        ``{"mixing <system>": PNG}``.
    """
    from pathlib import Path

    from softening.analysis.property_plots import formation_energy_plot
    from softening.naming import safe_filename

    by_system: dict[str, list[MixingDoc]] = {}
    for d in docs:
        by_system.setdefault(d.values.system, []).append(d)
    files = {}
    for system, group in by_system.items():
        v0 = group[0].values
        last = v0.end_members[-1]
        x = [c.fractions[last] for c in v0.cells]
        series = {
            f"DFT ({group[0].reference.name})": (
                x, [c.e_form_ref for c in v0.cells], [c.e_hull_ref <= HULL_TOL for c in v0.cells],
            ),
        }  # fmt: skip
        for d in group:
            cells = d.values.cells
            series[d.model.name] = (
                [c.fractions[last] for c in cells],
                [c.e_form for c in cells],
                [c.e_hull <= HULL_TOL for c in cells],
            )
        path = Path(out) / f"mixing_{safe_filename(system)}.png"
        formation_energy_plot(
            series,
            path,
            x_label=f"fraction of {last}",
            title=f"{system}: formation energies",
            hull_lines=len(v0.end_members) == 2,
        )
        files[f"mixing {system}"] = str(path)
    return files


def _mixing_line(model: str, record: dict[str, Any]) -> str | None:
    if record.get("slope") is None:
        return None
    tc = ""
    if record.get("omega") is not None:
        tc = f"; T_c {_fmt(record['tc'], '.0f')} K (reference {_fmt(record['tc_ref'], '.0f')} K)"
    return (
        f"{model} {record['system']}: slope {record['slope']:.3f}, std ratio "
        f"{_fmt(record['std_ratio'], '.3f')}, MAE {1000 * record['mae']:.1f} meV/atom, "
        f"{100 * record['fraction_closer_to_zero']:.0f} % of {record['n_mixed']} mixed cells "
        f"closer to zero{tc}"
    )


def _mixing_maker(reference_maker: Any, models: list[str], options: Any) -> MixingMaker:
    substitute = options.get("substitute")
    if isinstance(substitute, list | tuple):
        if len(substitute) > 1:
            raise InputError("--property mixing takes one --substitute HOST:GUEST")
        substitute = substitute[0] if substitute else None
    settings = {"max_cells": int(options["max_cells"])} if options.get("max_cells") else {}
    return MixingMaker(
        reference_maker=reference_maker,
        models=list(models),
        relax=bool(options.get("relax")),
        substitute=substitute,
        **settings,
    )


SPEC = register_property(
    PropertySpec(
        name="mixing",
        doc_class=MixingDoc,
        make_maker=_mixing_maker,
        pairs=lambda doc: [(c.e_form_ref, c.e_form) for c in doc.values.cells if not c.end_member],
        axis="formation energy (eV/atom)",
        json_key="cells",
        rows=mixing_cell_rows,
        record=mixing_system_record,
        records_key="systems",
        summarize=False,
        table_title="Solid solutions: formation energies, uMLIP against reference",
        table_columns=(
            "system",
            "model",
            "cells",
            "slope",
            "std ratio",
            "MAE meV/atom",
            "closer to 0",
            "hull ref/model",
            "T_c ref/model K",
            "flags",
        ),  # fmt: skip
        table_cells=_mixing_cells,
        table_caption="slope: through the origin, model on reference, mixed cells; < 1: softened",
        summary_line=_mixing_line,
        figures=mixing_plots,
        description="solid-solution formation energies of the orderings of --substitute",
    )
)
