"""Neutral point defects in compounds with uMLIPs against a reference (``--property defect``).

The paper's defect benchmark (134 point defects in 32 chemical systems): are defect energies
underestimated, as forces are? :class:`DefectMaker` makes, with pymatgen-analysis-defects'
generators, a vacancy on every symmetry-distinct site of every species, every antisite, the
substitutions the user names (``--substitute Li:Na``: Na on a Li site) and interstitials at Voronoi
sites, each in one supercell of the structure chosen by minimum image distance (as
:class:`~softening.makers.vacancy.VacancyMaker`). The loop is
:class:`~softening.makers.properties.PropertyFlowMaker`'s (reference single points reused by
content key, one batched uMLIP job per model; with ``relax`` each method relaxes the defect
positions with its own forces, and both energies are reported).

Energies, each method with its **own** references:

- combinations that conserve composition need no chemical potential and are always given: the
  Schottky set (a vacancy per atom of one formula unit), Frenkel pairs (vacancy + interstitial of
  one species), antisite pairs (``A_B + B_A``), each defect in its own supercell;
- formation energies ``E_f = E_defect - E_bulk - sum_i n_i mu_i`` when chemical potentials are
  given (``--mu El=eV/atom``, the same numbers for both sides) or taken from each method's own
  relaxed elemental ground states (``--mu elemental``: ASE's reference crystal of each element,
  or its diatomic molecule in a box where the element's ground state is a molecule, noted).

Charged defects are out of scope (no charge corrections): every defect is neutral, and the
documents say so. Output: :class:`~softening.schemas.DefectDoc`, one per material and model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from jobflow import Job, job
from pymatgen.core import Lattice, Structure

from softening.analysis.defects import combination_energy, defect_formation_energy
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.properties import (
    BULK,
    PropertyFlowMaker,
    PropertySpec,
    default_record,
    register_property,
    relax_positions,
)
from softening.makers.vacancy import defect_supercell, results_by_id
from softening.schemas import DefectDoc, DefectRow, DefectValues, FrameSpec, UMLIPResults

logger = logging.getLogger(__name__)

__all__ = [
    "DefectMaker",
    "compare_defect_results",
    "defect_inputs",
    "elemental_ground_state",
    "parse_mu",
]

#: What every defect document says of charge.
NEUTRAL_NOTE = "neutral defects only: charged defects (and their corrections) are not computed"

#: Side of the cubic box of a molecular elemental reference, Å.
MOLECULE_BOX = 10.0


# ---- inputs ----------------------------------------------------------------------------------------


def parse_mu(values: str | Sequence[str] | Mapping[str, float] | None) -> dict | str | None:
    """``--mu`` values: ``["O=-4.95", "Li=-1.91"]`` -> ``{"O": -4.95, "Li": -1.91}``;
    ``"elemental"`` stays; ``None``/empty: no chemical potentials.

    Raises
    ------
    InputError
        Text that is neither ``El=number`` nor ``elemental``.
    """
    if values is None or isinstance(values, Mapping):
        return dict(values) if values else None
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        return None
    if items == ["elemental"]:
        return "elemental"
    out = {}
    from pymatgen.core import Element

    for text in items:
        el, sep, number = text.partition("=")
        try:
            Element(el.strip())
            out[el.strip()] = float(number)
        except (ValueError, KeyError):
            raise InputError(
                f"--mu {text}: give El=eV/atom (e.g. O=-4.95) or 'elemental'"
            ) from None
        if not sep or not np.isfinite(out[el.strip()]):
            raise InputError(f"--mu {text}: give El=eV/atom (e.g. O=-4.95) or 'elemental'")
    return out


def _kind(defect: Any, host_elements: set[str]) -> str:
    name = type(defect).__name__
    if name == "Vacancy":
        return "vacancy"
    if name == "Interstitial":
        return "interstitial"
    added = [el for el, n in _changes(defect).items() if n > 0]
    return "antisite" if set(added) <= host_elements else "substitution"


def _changes(defect: Any) -> dict[str, int]:
    return {el.symbol: int(n) for el, n in defect.element_changes.items()}


def defect_inputs(
    structure: Structure,
    material_id: str,
    min_distance: float = 8.0,
    supercell_matrix: Sequence[int] | None = None,
    substitutions: Sequence[str] = (),
    interstitials: bool = True,
    max_interstitials: int = 2,
    max_atoms: int = 250,
) -> tuple[dict[str, Any], list[FrameSpec]]:
    """The comparison's inputs and frames (``bulk`` + one per defect) of ``structure``.

    Raises
    ------
    InputError
        An elemental structure (use ``--property vacancy``), a supercell over ``max_atoms``, a
        substitution of an element the host lacks.
    """
    from pymatgen.analysis.defects.generators import (
        AntiSiteGenerator,
        SubstitutionGenerator,
        VacancyGenerator,
        VoronoiInterstitialGenerator,
    )

    from softening.analysis.orderings import parse_substitution

    unit = structure.copy()
    unit.remove_oxidation_states()
    formula = unit.composition.reduced_formula
    elements = {el.symbol for el in unit.composition}
    if len(elements) < 2:
        raise InputError(
            f"--property defect: {formula} is elemental; use --property vacancy for its vacancies"
        )
    supercell, matrix, dist = defect_supercell(unit, min_distance, supercell_matrix)
    if len(supercell) > max_atoms:
        raise InputError(
            f"{material_id}: the defect supercell {matrix} has {len(supercell)} atoms, over the "
            f"limit of {max_atoms}: lower the minimum image distance or raise the limit"
        )
    defects = list(VacancyGenerator().generate(unit)) + list(AntiSiteGenerator().generate(unit))
    for text in substitutions:
        try:
            host, guest = parse_substitution(text)
        except ValueError as exc:
            raise InputError(f"--substitute {text}: {exc}") from None
        if host not in elements:
            raise InputError(f"--substitute {text}: {formula} holds no {host}")
        defects += list(SubstitutionGenerator().generate(unit, substitution={host: [guest]}))
    if interstitials:
        for el in sorted(elements):
            found = list(VoronoiInterstitialGenerator().generate(unit, insert_species=[el]))
            defects += found[:max_interstitials]
    sc_mat = np.diag(matrix)
    frames = [FrameSpec(frame_id=BULK, material_id=material_id, formula=formula,
                        structure=supercell)]  # fmt: skip
    rows, seen = [], set()
    for d in defects:
        name, k = d.name, 2
        while name in seen:
            name, k = f"{d.name}-{k}", k + 1
        seen.add(name)
        changes = _changes(d)
        sc = d.get_supercell_structure(sc_mat=sc_mat)
        sc.remove_oxidation_states()
        expected = len(supercell) + sum(changes.values())
        if len(sc) != expected:  # the generator's supercell must be ours plus the defect
            raise CalculationError(f"{material_id} {name}: {len(sc)} atoms, expected {expected}")
        frames.append(
            FrameSpec(frame_id=name, material_id=material_id, formula=formula, structure=sc)
        )
        rows.append(
            {
                "defect": name,
                "kind": _kind(d, elements),
                "site": np.round(d.site.frac_coords, 6).tolist(),
                "multiplicity": int(d.multiplicity),
                "element_changes": changes,
                "n_atoms": len(sc),
            }
        )
    reduced, units = unit.composition.get_reduced_composition_and_factor()
    inputs = {
        "material": material_id,
        "n_bulk": len(supercell),
        "supercell_matrix": np.diag(matrix).tolist(),
        "min_image_distance": dist,
        "defects": rows,
        "combinations": _combinations(rows, {el.symbol: int(n) for el, n in reduced.items()}),
        "units_in_bulk": float(units * int(np.prod(matrix))),
    }
    return inputs, frames


def _combinations(rows: list[dict], formula: dict[str, int]) -> list[dict[str, Any]]:
    """The composition-conserving sets: Schottky, Frenkel pairs, antisite pairs (the first
    symmetry-distinct site of each species stands for it)."""
    first: dict[tuple[str, str], str] = {}
    for r in rows:
        el = next(iter(r["element_changes"])) if len(r["element_changes"]) == 1 else None
        if r["kind"] in ("vacancy", "interstitial") and el:
            first.setdefault((r["kind"], el), r["defect"])
    out = []
    if all(("vacancy", el) in first for el in formula):
        parts = [first[("vacancy", el)] for el, n in formula.items() for _ in range(n)]
        out.append({"defect": "schottky", "kind": "schottky", "parts": parts, "units": 1.0})
    for (kind, el), name in first.items():
        if kind == "vacancy" and ("interstitial", el) in first:
            inter = first[("interstitial", el)]
            out.append({"defect": f"frenkel {name}+{inter}", "kind": "frenkel",
                        "parts": [name, inter], "units": 0.0})  # fmt: skip
    antisites = [r for r in rows if r["kind"] == "antisite"]
    for a in antisites:
        for b in antisites:
            ca, cb = a["element_changes"], b["element_changes"]
            if a["defect"] < b["defect"] and all(cb.get(el) == -n for el, n in ca.items()):
                out.append({"defect": f"antisite pair {a['defect']}+{b['defect']}",
                            "kind": "antisite_pair", "parts": [a["defect"], b["defect"]],
                            "units": 0.0})  # fmt: skip
    return out


# ---- elemental references --------------------------------------------------------------------------


def elemental_ground_state(element: str) -> tuple[Structure, bool, str | None]:
    """A starting structure of ``element``'s ground state from ASE's reference states: its crystal
    (relaxed in cell too), or its diatomic molecule in a cubic box (positions only).

    Returns
    -------
    (Structure, bool, str | None)
        The structure, whether its cell relaxes, and a note (molecules).

    Raises
    ------
    InputError
        No simple reference state is known for the element (give ``--mu`` for it).
    """
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states
    from pymatgen.io.ase import AseAtomsAdaptor

    state = reference_states[atomic_numbers[element]] or {}
    symmetry = state.get("symmetry")
    if symmetry == "diatom":
        d = float(state["d"])
        box = Lattice.cubic(MOLECULE_BOX)
        s = Structure(box, [element, element], [[0, 0, 0], [0, 0, d]], coords_are_cartesian=True)
        note = (
            f"{element}: its ground state is a molecule: mu from the {element}2 molecule in a "
            f"{MOLECULE_BOX:g} Å box, each method as it treats an isolated molecule"
        )
        return s, False, note
    if symmetry in ("fcc", "bcc", "hcp", "diamond", "sc"):
        return AseAtomsAdaptor.get_structure(bulk(element)), True, None
    raise InputError(
        f"--mu elemental: no simple ground state of {element} is known here ({symmetry}); give "
        f"--mu {element}=eV/atom"
    )


@job
def elemental_mu_job(
    elements: list[str],
    reference_maker: Any = None,
    model: str | None = None,
    fmax: float = 0.02,
    steps: int = 300,
) -> dict[str, Any]:
    """Each element's energy per atom in its relaxed ground state, with the reference's embedded
    calculator or with ``model``: ``{"side": "reference"|NAME, "mu": {El: eV/atom}, "notes"}``."""
    notes, mu = [], {}
    if model is not None:
        from softening.models import load_model

        loaded = load_model(model)
        side = loaded.name
    else:
        side = "reference"
    for el in elements:
        s, cell, note = elemental_ground_state(el)
        calc = loaded.calculator() if model is not None else reference_maker.get_calculator(s)[0]
        relaxed, energy, ok = relax_positions(s, calc, fmax, steps, cell=cell)
        mu[el] = energy / len(relaxed)
        if note:
            notes.append(note)
        if not ok:
            notes.append(f"{el}: the {side} relaxation of the ground state did not reach its fmax")
    return {"side": side, "mu": mu, "notes": notes}


# ---- comparison ------------------------------------------------------------------------------------


def _mu(inputs: dict[str, Any], side: str) -> dict[str, float] | None:
    if inputs.get("mu_given"):
        return dict(inputs["mu_given"])
    for out in inputs.get("mu_outputs") or []:
        if out and out.get("side") == side:
            return dict(out["mu"])
    return None


def compare_defect_results(
    inputs: dict[str, Any],
    references: Any,
    umlip: UMLIPResults | dict,
    relaxed_references: Any = None,
    relaxed_umlip: Any = None,
    parent_uuids: Sequence[str] = (),
) -> DefectDoc:
    """Defect energies of the reference and the model, each against its own bulk and chemical
    potentials: formation energies where chemical potentials exist, the composition-conserving
    combinations always; relaxed values with relaxed results (unrelaxed ones kept beside).

    Raises
    ------
    CalculationError
        A frame without a reference or model energy (a rerun computes it).
    """
    umlip = UMLIPResults.model_validate(umlip)
    material = inputs["material"]
    relaxed = relaxed_references is not None and relaxed_umlip is not None
    sides = {
        "reference": results_by_id(references, material),
        umlip.model.name: results_by_id(umlip, material),
    }
    if relaxed:
        sides["relaxed reference"] = results_by_id(relaxed_references, material)
        sides[f"relaxed {umlip.model.name}"] = results_by_id(relaxed_umlip, material)
    ids = [BULK, *(d["defect"] for d in inputs["defects"])]
    for side, got in sides.items():
        missing = [i for i in ids if i not in got]
        if missing:
            raise CalculationError(
                f"{material}: {side} energy missing for {', '.join(missing)}; rerun to compute them"
            )
    refs, mls = sides["reference"], sides[umlip.model.name]
    refs_r = sides.get("relaxed reference", refs)
    mls_r = sides.get(f"relaxed {umlip.model.name}", mls)
    mu_ref, mu_ml = _mu(inputs, "reference"), _mu(inputs, umlip.model.name)
    notes = [NEUTRAL_NOTE, *inputs.get("notes", [])]
    for out in inputs.get("mu_outputs") or []:
        notes += [n for n in (out or {}).get("notes", []) if n not in notes]
    if mu_ref is None:
        notes.append(
            "no chemical potentials (--mu): formation energies of single defects not given"
        )

    def formation(got: dict, d: dict, mu: dict | None) -> float | None:
        if mu is None:
            return None
        try:
            return defect_formation_energy(
                got[d["defect"]].energy, got[BULK].energy, d["element_changes"], mu
            )
        except KeyError as exc:
            raise CalculationError(f"{material}: no chemical potential for {exc.args[0]}") from None

    rows, flags = [], []
    for d in inputs["defects"]:
        row = {k: d[k] for k in ("defect", "kind", "site", "multiplicity", "element_changes",
                                 "n_atoms")}  # fmt: skip
        e_ref, e = formation(refs, d, mu_ref), formation(mls, d, mu_ml)
        if relaxed:
            converged = refs_r[d["defect"]].converged and mls_r[d["defect"]].converged
            if not converged:
                flags.append(f"unconverged: relaxation of {d['defect']} did not reach its fmax")
            row |= {
                "e_unrelaxed_ref": e_ref,
                "e_unrelaxed": e,
                "e_ref": formation(refs_r, d, mu_ref),
                "e": formation(mls_r, d, mu_ml),
                "relaxed": True,
                "converged": converged,
            }
        else:
            row |= {"e_ref": e_ref, "e": e}
        rows.append(DefectRow(**row))
    units = inputs["units_in_bulk"]
    for c in inputs["combinations"]:

        def combo(got: dict, c: dict = c) -> float:
            return combination_energy(
                [got[p].energy for p in c["parts"]], got[BULK].energy, c["units"], units
            )

        row = {"defect": c["defect"], "kind": c["kind"], "parts": c["parts"]}
        if relaxed:
            row |= {"e_unrelaxed_ref": combo(refs), "e_unrelaxed": combo(mls),
                    "e_ref": combo(refs_r), "e": combo(mls_r), "relaxed": True}  # fmt: skip
        else:
            row |= {"e_ref": combo(refs), "e": combo(mls)}
        rows.append(DefectRow(**row))
    both = [r for r in rows if r.e_ref is not None and r.e is not None]
    mae = float(np.mean([abs(r.e - r.e_ref) for r in both])) if both else None
    ratios = [r.e / r.e_ref for r in both if r.e_ref > 0]
    values = DefectValues(
        rows=rows,
        supercell_matrix=inputs["supercell_matrix"],
        min_image_distance=inputs["min_image_distance"],
        n_bulk=inputs["n_bulk"],
        e_bulk_ref=refs_r[BULK].energy,
        e_bulk=mls_r[BULK].energy,
        chemical_potentials_ref=mu_ref or {},
        chemical_potentials=mu_ml or {},
        mu_source=inputs.get("mu_source"),
        notes=notes,
        mae=mae,
    )
    return DefectDoc.create(
        material_id=material,
        composition=refs[BULK].structure,
        model=umlip.model,
        reference=refs[BULK].code,
        ratio=float(np.mean(ratios)) if ratios else None,
        flags=flags,
        parent_uuids=list(parent_uuids),
        values=values,
    )


@softening_job(DefectDoc, tolerant=True, name="defect compare")
def defect_compare_job(
    inputs: dict[str, Any],
    references: Any,
    umlip: UMLIPResults,
    relaxed_references: Any = None,
    relaxed_umlip: Any = None,
    parent_uuids: Sequence[str] = (),
) -> DefectDoc:
    """jobflow job around :func:`compare_defect_results`."""
    return compare_defect_results(
        inputs, references, umlip, relaxed_references, relaxed_umlip, parent_uuids
    )


@dataclass
class DefectMaker(PropertyFlowMaker):
    """Neutral point defects of one compound with a reference and uMLIPs.

    Attributes
    ----------
    name
        Flow name.
    reference_maker, umlip_maker, models, relax, relax_fmax, relax_steps
        As :class:`~softening.makers.properties.PropertyFlowMaker`.
    min_image_distance
        Smallest distance between a defect and its periodic images, Å (picks the supercell).
    supercell_matrix
        Diagonal supercell ``[n1, n2, n3]`` instead.
    substitutions
        ``HOST:GUEST`` substitutions (``Li:Na``: Na on a Li site).
    interstitials
        Also interstitials of every species at Voronoi sites.
    max_interstitials
        Most interstitial sites per species.
    max_atoms
        Largest defect supercell, atoms.
    mu
        Chemical potentials: ``{El: eV/atom}`` (both sides), ``"elemental"`` (each method's own
        relaxed elemental ground states) or ``None`` (combinations only).
    """

    name: str = "defect"
    min_image_distance: float = 8.0
    supercell_matrix: list[int] | None = None
    substitutions: list[str] = field(default_factory=list)
    interstitials: bool = True
    max_interstitials: int = 2
    max_atoms: int = 250
    mu: dict[str, float] | str | None = None

    def inputs(self, structure: Structure, material_id: str) -> tuple[dict, list[FrameSpec]]:
        """The defects of ``structure``, their supercells and combinations."""
        inputs, frames = defect_inputs(
            structure, material_id, self.min_image_distance, self.supercell_matrix,
            self.substitutions, self.interstitials, self.max_interstitials, self.max_atoms,
        )  # fmt: skip
        mu = parse_mu(self.mu)
        changing = sorted({el for d in inputs["defects"] for el in d["element_changes"]})
        if isinstance(mu, dict):
            missing = [el for el in changing if el not in mu]
            if missing:
                raise InputError(
                    f"--mu: no chemical potential for {', '.join(missing)} (give one for every "
                    f"element a defect adds or removes: {', '.join(changing)})"
                )
            inputs |= {"mu_given": mu, "mu_source": "given"}
        elif mu == "elemental":
            for el in changing:  # refused here, before any job, when unknown
                elemental_ground_state(el)
            inputs |= {"mu_source": "elemental", "mu_elements": changing}
        return inputs, frames

    def extra_jobs(self, inputs: dict[str, Any], material_id: str) -> list[Job]:
        """With ``mu="elemental"``: each method relaxes every element's ground state."""
        if inputs.get("mu_source") != "elemental":
            return []
        elements = inputs["mu_elements"]
        jobs = [elemental_mu_job(elements, reference_maker=self.reference_maker)]
        jobs[0].name = f"elemental references {material_id}"
        for spec in self.models:
            j = elemental_mu_job(elements, model=spec)
            j.name = f"elemental references {spec} {material_id}"
            jobs.append(j)
        inputs["mu_outputs"] = [j.output for j in jobs]
        return jobs

    compare_job: ClassVar[Any] = defect_compare_job


# ---- the registry entry ------------------------------------------------------------------------


def defect_rows(doc: DefectDoc) -> list[dict[str, Any]]:
    """The ``--json`` rows of a defect document (eV)."""
    v = doc.values
    return [
        {
            "material": doc.material_id,
            **r.model_dump(),
            "supercell": v.supercell_matrix,
            "n_bulk": v.n_bulk,
            "mu_source": v.mu_source,
        }
        for r in v.rows
    ]


def _defect_maker(reference_maker: Any, models: list[str], options: Any) -> DefectMaker:
    subs = options.get("substitute") or []
    settings = {"mu": options["mu"]} if options.get("mu") else {}
    return DefectMaker(
        reference_maker=reference_maker,
        models=list(models),
        relax=bool(options.get("relax")),
        substitutions=[subs] if isinstance(subs, str) else list(subs),
        **settings,
    )


SPEC = register_property(
    PropertySpec(
        name="defect",
        doc_class=DefectDoc,
        make_maker=_defect_maker,
        pairs=lambda doc: [
            (r.e_ref, r.e) for r in doc.values.rows if r.e_ref is not None and r.e is not None
        ],
        axis="defect energy (eV)",
        json_key="defects",
        rows=defect_rows,
        record=lambda doc: (
            default_record(doc)
            | {
                "mae": doc.values.mae,
                "mu_source": doc.values.mu_source,
                "chemical_potentials_ref": doc.values.chemical_potentials_ref,
                "chemical_potentials": doc.values.chemical_potentials,
                "notes": doc.values.notes,
            }
        ),
        items=lambda doc: [
            (r.defect, r.e_ref, r.e, "eV")
            for r in doc.values.rows
            if r.e_ref is not None and r.e is not None
        ],
        description="neutral point defects in compounds (vacancies, antisites, substitutions, "
        "interstitials; --mu for formation energies)",
    )
)
