"""Guard rails for VASP reference data: which ionic steps are DFT labels a uMLIP can be judged by.

The same rules apply to VASP outputs read from files (:func:`apply_guard_rails`, used by
``softening evaluate``) and to the statics the VASP reference maker runs (:func:`judge_vasp_run`),
both working on the records :func:`~softening.datasets.vasp_metadata.vasp_run_info` and
:func:`~softening.datasets.vasp_metadata.vasp_step_metadata` build.

Per ionic step (pymatgen's ``converged_electronic`` looks only at the last one):

- a step whose SCF did not converge (NELM reached with the last energy change above EDIFF) is
  dropped and counted;
- a step whose energy and forces came from VASP's machine-learned force field is dropped and
  counted as not DFT. In the on-the-fly MLFF runs of VASP 6, those steps are written outside
  ``<calculation>`` blocks and never become frames (``n_md_steps - n_ionic_steps`` of them); a
  ``<calculation>`` block without SCF steps in an MLFF run is one too.

Per run, settings other than the training data of the paper's models (Materials Project: PBE or
PBE+U with MP's U values, MP's POTCARs, spin-polarised, ENCUT 520 eV with PREC=Accurate) are
flagged; a flag is a string ``"<kind>: <detail>"`` with kind one of ``functional``, ``dispersion``,
``hubbard_u``, ``low_precision``, ``potcar``, ``spin``. With ``strict``, a flagged run is refused.
A run with no step left is refused. Refusals raise :class:`~softening.errors.InputError` (files)
with a one-line message naming the file.

:func:`run_functional` and :func:`applied_hubbard_u` give a run's functional and +U, which each result
also compares with what its own model was trained on
(:func:`softening.models.backends.flags_for_model`: ``training_data`` flags).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from softening.datasets.frames import Frame
from softening.errors import InputError
from softening.mp_rules import mp_config, mp_hubbard_u

__all__ = [
    "MIN_ENCUT",
    "GuardReport",
    "applied_hubbard_u",
    "apply_guard_rails",
    "judge_vasp_run",
    "run_functional",
    "vasp_setting_flags",
]

#: Lowest plane-wave cutoff accepted without a ``low_precision`` flag, eV. MP uses 520 eV; forces
#: converge faster with the cutoff than total energies, and 500 eV runs (common in the literature,
#: e.g. ``vasprun.lifepo4``) change forces by far less than the softening being measured.
MIN_ENCUT: float = 450.0

# GGA tags (upper case) -> functional names, as VASP defines them.
_GGA_NAMES = {
    "PE": "PBE",
    "PS": "PBEsol",
    "91": "PW91",
    "RE": "revPBE",
    "RP": "RPBE",
    "AM": "AM05",
    "OR": "optPBE",
    "BO": "optB88",
    "MK": "optB86b",
    "CA": "LDA",
    "PZ": "LDA",
}

# POTCAR TITEL prefixes -> the functional VASP uses when GGA is not set.
_POTCAR_FAMILIES = {"PAW_PBE": "PBE", "PAW_GGA": "PW91", "PAW_LDA": "LDA", "PAW": "LDA"}


@dataclass
class GuardReport:
    """What the guard rails did to one VASP run.

    Attributes
    ----------
    source
        The vasprun file (or calculation folder) judged.
    n_steps
        Ionic steps of the run: those with results in ``<calculation>`` blocks, plus MLFF steps
        written outside them.
    kept
        Steps kept as DFT labels.
    dropped_unconverged
        Steps dropped because their SCF did not converge.
    dropped_mlff
        MLFF steps dropped as not DFT (including those outside ``<calculation>`` blocks).
    flags
        Settings that differ from the models' training data (``"<kind>: <detail>"``).
    refused
        Why the whole run was refused, or ``None``.
    """

    source: str
    n_steps: int
    kept: int
    dropped_unconverged: int = 0
    dropped_mlff: int = 0
    flags: list[str] = field(default_factory=list)
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        return asdict(self)

    def summary(self) -> str:
        """One line: kept and dropped steps, flags."""
        text = f"{self.source}: {self.kept} of {self.n_steps} ionic steps kept"
        if self.dropped_unconverged:
            text += f", {self.dropped_unconverged} with unconverged SCF dropped"
        if self.dropped_mlff:
            text += f", {self.dropped_mlff} MLFF steps dropped (not DFT)"
        if self.flags:
            text += "; flags: " + "; ".join(self.flags)
        return text


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------


def _potcar_name(symbol: str) -> str:
    """``"PAW_PBE Fe_pv 06Sep2000"`` -> ``"Fe_pv"``; a bare ``"Fe_pv"`` is returned as is."""
    parts = symbol.split()
    return parts[1] if len(parts) >= 2 else symbol.strip()


def _element(symbol: str) -> str:
    return re.split(r"[_.]", _potcar_name(symbol))[0]


def _potcar_family(symbols: Sequence[str]) -> str | None:
    """Functional of the POTCARs from their TITEL prefix; ``None`` for bare symbols."""
    prefixes = {s.split()[0] for s in symbols if len(s.split()) >= 2}
    if len(prefixes) != 1:
        return None
    return _POTCAR_FAMILIES.get(prefixes.pop(), None)


def _is_set(value: Any) -> bool:
    """Whether a VASP string tag is set (not missing, ``--`` or ``None``)."""
    return value is not None and str(value).strip().upper() not in ("", "--", "NONE", "FALSE")


def run_functional(run_info: dict[str, Any]) -> tuple[str, str]:
    """The exchange-correlation functional of a VASP run (without +U), and what shows it.

    A hybrid (``LHFCALC``), a meta-GGA (``METAGGA``, e.g. ``R2SCAN``), or the GGA tag (an unset
    GGA means the POTCARs' functional): ``("PBEsol", "GGA=PS")``, ``("PBE", "GGA unset: POTCAR
    functional")``.
    """
    params = run_info.get("parameters", {})
    symbols = list(run_info.get("potcar_symbols") or [])
    gga = str(params.get("GGA") or "--").strip().upper()
    if params.get("LHFCALC"):
        return "hybrid", "LHFCALC=True"
    if _is_set(params.get("METAGGA")):
        return str(params["METAGGA"]).strip(), f"METAGGA={params['METAGGA']}"
    if gga in ("--", ""):
        return _potcar_family(symbols) or "PBE", "GGA unset: POTCAR functional"
    return _GGA_NAMES.get(gga, f"GGA={gga}"), f"GGA={gga}"


def applied_hubbard_u(run_info: dict[str, Any]) -> dict[str, float]:
    """U (eV) per element a VASP run applied (``LDAU`` with non-zero ``LDAUU``); ``{}`` for none."""
    params = run_info.get("parameters", {})
    if not params.get("LDAU"):
        return {}
    applied: dict[str, float] = {}
    symbols = list(run_info.get("potcar_symbols") or [])
    for symbol, u in zip(symbols, list(params.get("LDAUU") or []), strict=False):
        if abs(float(u)) > 1e-8:
            el = _element(symbol)
            applied[el] = max(applied.get(el, 0.0), float(u))
    return applied


def vasp_setting_flags(
    run_info: dict[str, Any], elements: Iterable[str], training_data: str = "mp"
) -> list[str]:
    """Settings of a VASP run that differ from the training data of the models.

    Parameters
    ----------
    run_info
        :func:`~softening.datasets.vasp_metadata.vasp_run_info` of the run.
    elements
        Element symbols of the structure.
    training_data
        ``"mp"``, the only value: Materials Project PBE/PBE+U (``MPRelaxSet``), the data CHGNet,
        M3GNet MP-2021 and MACE-MP-0 were trained on. For a model known to be trained on other
        data (MatPES, r2SCAN), a result drops the ``functional`` and ``hubbard_u`` flags and
        compares the run with that model's own training data instead
        (:func:`softening.models.backends.flags_for_model`).

    Returns
    -------
    list of str
        Flags ``"<kind>: <detail>"``; empty when the run is compatible.
    """
    if training_data != "mp":
        raise InputError(f"unknown training data {training_data!r}; only 'mp' is known")
    params = run_info.get("parameters", {})
    symbols = list(run_info.get("potcar_symbols") or [])
    elements = sorted(set(elements))
    config = mp_config()
    flags: list[str] = []

    # Functional: a hybrid, a meta-GGA, or a GGA tag other than PBE.
    functional, why = run_functional(run_info)
    if functional != "PBE":
        flags.append(
            f"functional: {functional} ({why}); the models were trained on PBE/PBE+U "
            "(Materials Project)"
        )
    ivdw = params.get("IVDW")
    if (ivdw not in (None, 0, "0")) or params.get("LUSE_VDW"):
        flags.append(f"dispersion: IVDW={ivdw}" if ivdw else "dispersion: LUSE_VDW=True")

    # +U: per element, the U actually applied vs MP's.
    expected = mp_hubbard_u(elements)
    applied: dict[str, float] = {}
    problems: list[str] = []
    if params.get("LDAU"):
        uu = list(params.get("LDAUU") or [])
        ll = list(params.get("LDAUL") or [])
        groups = [_element(s) for s in symbols]
        if len(uu) != len(groups):
            problems.append(f"LDAUU has {len(uu)} values for {len(groups)} POTCARs")
        else:
            for i, (el, u) in enumerate(zip(groups, uu, strict=True)):
                if abs(float(u)) > 1e-8:
                    applied[el] = max(applied.get(el, 0.0), float(u))
                    if i < len(ll) and int(ll[i]) != 2:
                        problems.append(f"LDAUL={ll[i]} for {el} (MP: 2, d states)")
            ldautype = params.get("LDAUTYPE")
            if applied and ldautype not in (None, 2, "2", [2]):
                problems.append(f"LDAUTYPE={ldautype} (MP: 2, Dudarev)")
    for el in sorted(set(applied) | set(expected)):
        have, want = applied.get(el, 0.0), expected.get(el, 0.0)
        if abs(have - want) > 0.01:
            problems.append(f"U({el}) = {have:g} eV, MP: {want:g} eV")
    if problems:
        flags.append("hubbard_u: " + "; ".join(problems))

    # Precision: PREC=Low, or a cutoff well below MP's 520 eV (ENMAX when ENCUT is not set).
    prec = str(params.get("PREC") or "Normal").strip()
    encut = params.get("ENCUT")
    if encut is None:
        encut = params.get("ENMAX")
    low = []
    if prec.lower().startswith("low"):
        low.append(f"PREC={prec}")
    if encut is not None and float(encut) < MIN_ENCUT:
        low.append(f"ENCUT {float(encut):g} eV")
    if low:
        flags.append("low_precision: " + ", ".join(low) + "; MP: PREC=Accurate, ENCUT 520 eV")

    # POTCARs: MP's choice per element (e.g. Fe_pv, Li_sv).
    potcar_table = config["POTCAR"]
    wrong = []
    for s in symbols:
        name, el = _potcar_name(s), _element(s)
        if el in potcar_table and name != potcar_table[el]:
            item = f"{name} (MP: {potcar_table[el]})"
            if item not in wrong:
                wrong.append(item)
    if wrong:
        flags.append("potcar: " + ", ".join(wrong))

    # Spin: MP runs spin-polarised; magnetic elements without spin lose their moments.
    magmom = config["INCAR"]["MAGMOM"]
    magnetic = [el for el in elements if float(magmom.get(el, 0.0)) > 1.0]
    if magnetic and int(params.get("ISPIN") or 1) == 1:
        flags.append(f"spin: ISPIN=1 with {', '.join(magnetic)}; MP is spin-polarised")
    return flags


# ------------------------------------------------------------------------------------------------
# Steps and runs
# ------------------------------------------------------------------------------------------------


def _verdict(metadata: dict[str, Any]) -> str:
    """``"ok"``, ``"mlff"`` or ``"unconverged"`` for one step's metadata."""
    if metadata.get("mlff"):
        return "mlff"
    if metadata.get("scf_converged") is True:
        return "ok"
    # False, or None: no SCF steps outside an MLFF run, so nothing shows the labels are converged.
    return "unconverged"


def judge_vasp_run(
    run_info: dict[str, Any],
    steps: Sequence[dict[str, Any]],
    elements: Iterable[str],
    source: str,
    strict: bool = False,
) -> tuple[list[bool], GuardReport]:
    """Apply the guard rails to one VASP run.

    Parameters
    ----------
    run_info
        :func:`~softening.datasets.vasp_metadata.vasp_run_info` of the run.
    steps
        :func:`~softening.datasets.vasp_metadata.vasp_step_metadata` of each ionic step, in order.
    elements
        Element symbols of the structure.
    source
        How to name the run in messages (file path or calculation folder).
    strict
        Refuse the run when any setting is flagged.

    Returns
    -------
    keep, report
        Whether each step is kept, and the :class:`GuardReport` (``refused`` set when the run
        must not be used; the caller raises).
    """
    verdicts = [_verdict(m) for m in steps]
    keep = [v == "ok" for v in verdicts]
    n_md = run_info.get("n_md_steps")
    outside = max(0, int(n_md) - len(steps)) if n_md is not None else 0
    report = GuardReport(
        source=source,
        n_steps=len(steps) + outside,
        kept=sum(keep),
        dropped_unconverged=verdicts.count("unconverged"),
        dropped_mlff=verdicts.count("mlff") + outside,
        flags=vasp_setting_flags(run_info, elements),
    )
    if not report.kept:
        if report.dropped_unconverged:
            params = run_info.get("parameters", {})
            report.refused = (
                f"no ionic step with a converged SCF ({report.dropped_unconverged} of "
                f"{report.n_steps} stopped at NELM={params.get('NELM')} with the energy still changing "
                f"by more than EDIFF={float(params.get('EDIFF')):g} eV)"
            )
        elif report.dropped_mlff:
            report.refused = (
                f"no DFT step: all {report.dropped_mlff} steps are predictions of VASP's "
                "machine-learned force field"
            )
        else:
            report.refused = "no ionic step"
    elif strict and report.flags:
        report.refused = "settings differ from the models' training data (--strict): " + "; ".join(
            report.flags
        )
    return keep, report


def apply_guard_rails(
    frames: Sequence[Frame], strict: bool = False
) -> tuple[list[Frame], list[GuardReport]]:
    """Drop the VASP steps that are not usable DFT labels and flag the runs' settings.

    Frames that do not come from a vasprun (no ``metadata["vasp"]``) pass unchanged. VASP frames
    are judged per run (per file), by :func:`judge_vasp_run`; kept frames get the run's flags
    added to ``Frame.flags``.

    Parameters
    ----------
    frames
        Frames from :func:`~softening.datasets.readers.read_frames`.
    strict
        Refuse runs whose settings are flagged.

    Returns
    -------
    frames, reports
        The kept frames (input order), and one :class:`GuardReport` per VASP run.

    Raises
    ------
    InputError
        A run with no usable step, or (``strict``) with flagged settings: ``refused '<file>':
        <why>``.
    """
    runs: dict[str, list[int]] = {}
    for i, frame in enumerate(frames):
        if "vasp" in frame.metadata:
            runs.setdefault(_run_source(frame), []).append(i)
    dropped: set[int] = set()
    reports = []
    for source, indices in runs.items():
        first = frames[indices[0]]
        elements = {el.symbol for el in first.structure.composition}
        keep, report = judge_vasp_run(
            first.metadata["vasp"], [frames[i].metadata for i in indices], elements, source, strict
        )
        if report.refused:
            raise InputError(f"refused {source!r}: {report.refused}")
        for i, k in zip(indices, keep, strict=True):
            if k:
                frames[i].flags = sorted(set(frames[i].flags) | set(report.flags))
            else:
                dropped.add(i)
        reports.append(report)
    return [f for i, f in enumerate(frames) if i not in dropped], reports


def _run_source(frame: Frame) -> str:
    """The file a VASP frame was read from (its ``source`` without ``@step``)."""
    source = frame.source or "vasprun.xml"
    return source.rsplit("@", 1)[0] if "@" in source else source
