"""The checks of ``softening doctor``: their verdicts, and how each layer contributes its own.

A check is a function that returns one line of what it found, or raises :class:`Problem` (missing
or broken) or :class:`Skip` (nothing to check). Each layer that owns something to check lists its
checks in its ``health`` module (:mod:`softening.models.health`, :mod:`softening.makers.health`,
:mod:`softening.stores.health`, :mod:`softening.hpc.health`; the installation's own check is here):
``plan_checks(request)`` returns :class:`PlannedCheck` s, each saying whether the configuration
needs it and how long it may take. The command (:mod:`softening.cli.doctor`) reads these modules
from one list and runs every check with its own time limit. A verdict is a :class:`Check`:

``ok``
    works;
``warn``
    missing or broken, but the current configuration does not need it (no VASP or GPU on a login
    node);
``fail``
    missing or broken and needed: the store always, GPAW when the reference is ``gpaw``, VASP and
    the POTCARs when the reference is ``vasp`` or VASP is asked for, MongoDB when the store or the
    LaunchPad names it, each model the settings name;
``skip``
    not checked (nothing configured to check).

This module imports nothing of the package, so that every layer can contribute checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]

#: Seconds one check may take (a model load on a slow CPU is the longest).
DEFAULT_TIMEOUT = 30.0


@dataclass
class Check:
    """One line of the doctor's table.

    Attributes
    ----------
    name
        What was checked (``store``, ``vasp command``, ``model chgnet``...).
    status
        ``ok``, ``warn``, ``fail`` or ``skip`` (see the module docstring).
    detail
        What was found, one line.
    fix
        What to do when it is not ``ok``; empty otherwise.
    needed
        Whether the current configuration needs it (only a needed check can ``fail``).
    """

    name: str
    status: Status
    detail: str
    fix: str = ""
    needed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "status", "detail", "fix", "needed"}``."""
        return asdict(self)


@dataclass
class DoctorReport:
    """All checks, in the order they ran.

    Attributes
    ----------
    checks
        One :class:`Check` per line.
    """

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a check the configuration needs failed."""
        return not any(c.status == "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """``{"checks": [{"name", "status", "detail", "fix", "needed"}, ...], "ok": bool}``."""
        return {"checks": [c.as_dict() for c in self.checks], "ok": self.ok}

    def by_name(self, name: str) -> Check:
        """The check called ``name``.

        Raises
        ------
        KeyError
            When no check has that name.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


class Problem(Exception):
    """A check's negative verdict: ``detail`` and ``fix``; failing or warning by ``needed``."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class Skip(Exception):
    """Nothing to check."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass(frozen=True)
class DoctorRequest:
    """What ``softening doctor`` was asked to check (see :func:`softening.cli.doctor.run_checks`).

    Attributes
    ----------
    store
        The result store (``None``: the ``store`` setting).
    structures
        Files or pymatgen structures that VASP would label.
    vasp
        Whether VASP was asked for.
    launchpad, qadapter
        The FireWorks files (``None``: the settings, then the files in the current folder).
    models
        The uMLIPs to load (``None``: ``md_model`` and ``models`` of the settings).
    timeout
        Seconds each check may take.
    """

    store: str | None = None
    structures: tuple[Any, ...] = ()
    vasp: bool = False
    launchpad: str | None = None
    qadapter: str | None = None
    models: tuple[str, ...] | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class PlannedCheck:
    """A check a layer contributes, before it runs.

    Attributes
    ----------
    name
        The line's name in the report.
    run
        The check: returns what it found (one line), or raises :class:`Problem` or :class:`Skip`.
    needed
        Whether the current configuration needs it (only a needed check can ``fail``).
    timeout
        Seconds it may take.
    fix_on_timeout
        What to do when it does not answer in time.
    """

    name: str
    run: Callable[[], str]
    needed: bool
    timeout: float
    fix_on_timeout: str = ""


# ---- the installation ----------------------------------------------------------------------------

#: Distributions reported by the ``packages`` check: (distribution, extra that installs it or None).
PACKAGES: tuple[tuple[str, str | None], ...] = (
    ("torch", None),
    ("atomate2", None),
    ("jobflow", None),
    ("pymatgen", None),
    ("chgnet", None),
    ("matgl", None),
    ("maggma", None),
    ("montydb", None),
    ("fireworks", None),
    ("custodian", None),
    ("ase", None),
    ("numpy", None),
    ("gpaw", "gpaw"),
    ("mace-torch", "mace"),
)

#: What to do about a missing or broken dependency.
REINSTALL = 'pip install -U "softening" (or `make setup` in a clone)'


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def check_packages() -> str:
    """Versions of the main dependencies; a missing core one or one outside its range is a problem."""
    found, missing = [], []
    for dist, extra in PACKAGES:
        v = _version(dist)
        if v is not None:
            found.append(f"{dist} {v}")
        elif extra is None:
            missing.append(dist)
    outside = _outside_ranges()
    if missing or outside:
        raise Problem(
            "; ".join(
                ([f"missing: {', '.join(missing)}"] if missing else [])
                + ([f"outside the required range: {', '.join(outside)}"] if outside else [])
            ),
            REINSTALL,
        )
    return ", ".join(found)


def _outside_ranges() -> list[str]:
    """Core requirements of the installed ``softening`` that the environment does not satisfy."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip's tooling
        return []
    try:
        reqs = requires("softening") or []
    except PackageNotFoundError:  # running from a source tree without installing
        return []
    bad = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        v = _version(req.name)
        if v is not None and req.specifier and not req.specifier.contains(v, prereleases=True):
            bad.append(f"{req.name} {v} (needs {req.specifier})")
    return bad


def plan_checks(request: DoctorRequest) -> list[PlannedCheck]:
    """The installation's check: the dependencies' versions (always needed)."""
    return [PlannedCheck("packages", check_packages, True, request.timeout)]
