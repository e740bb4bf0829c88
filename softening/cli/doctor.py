"""``softening doctor``: what this machine and configuration can do, before any job runs.

The checks belong to the layers that own what they check (:mod:`softening.health` says how a
layer contributes them); this module reads them from one list, :data:`CHECKS`, runs each with its
own time limit, so that one unreachable server cannot hang the rest, and prints the report.

Examples
--------
>>> from softening.cli.doctor import run_checks
>>> report = run_checks(vasp=True, structures=["examples/MgO.cif"])  # doctest: +SKIP
>>> report.ok, [c.name for c in report.checks if c.status == "fail"]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from softening.cli.display import out_console, print_json
from softening.cli.options import JsonOpt, StoreOpt
from softening.errors import one_line
from softening.health import (
    DEFAULT_TIMEOUT,
    REINSTALL,
    Check,
    DoctorReport,
    DoctorRequest,
    PlannedCheck,
    Problem,
    Skip,
    Status,
)
from softening.settings import redact

#: Seconds all checks together may take; a check that starts late gets what is left.
TOTAL_BUDGET = 55.0

#: The modules whose ``plan_checks(request)`` contribute the checks, in the report's order. Names,
#: imported when the checks run: importing every layer would slow each start of the command line.
CHECKS: tuple[str, ...] = (
    "softening.health",  # the installed packages
    "softening.models.health",  # torch, the GPU, each model
    "softening.makers.health",  # GPAW, the VASP command, the POTCARs
    "softening.stores.health",  # the result store and its integrity
    "softening.hpc.health",  # the LaunchPad, SLURM, the queue adapter
)


def _run_one(
    name: str, fn: Callable[[], str], *, needed: bool, timeout: float, fix_on_timeout: str = ""
) -> Check:
    """Run ``fn`` in a daemon thread, at most ``timeout`` s; turn its outcome into a Check."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["detail"] = fn()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a line of the table
            box["exc"] = exc

    worker = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    stdout, stderr = sys.stdout, sys.stderr
    start = time.monotonic()
    worker.start()
    worker.join(timeout)
    bad: Status = "fail" if needed else "warn"
    if worker.is_alive():
        # A check left running may hold a redirect of stdout (model libraries' banners are
        # silenced that way): what this process prints next must still reach the terminal.
        sys.stdout, sys.stderr = stdout, stderr
        return Check(name, bad, f"no answer within {timeout:g} s", fix_on_timeout, needed)
    exc = box.get("exc")
    if exc is None:
        detail = box.get("detail", "")
        took = time.monotonic() - start
        if took > 2:
            detail = f"{detail} ({took:.0f} s)"
        return Check(name, "ok", redact(detail), "", needed)
    # Every detail goes through redact(): a store or LaunchPad named in it may carry a password.
    if isinstance(exc, Skip):
        return Check(name, "skip", redact(exc.detail), exc.fix, needed)
    if isinstance(exc, Problem):
        return Check(name, bad, redact(exc.detail), exc.fix, needed)
    return Check(name, bad, redact(one_line(exc, "first")), "", needed)


def plan_checks(request: DoctorRequest) -> list[PlannedCheck]:
    """Every layer's checks for ``request``, in the order of :data:`CHECKS`.

    A layer whose module cannot be imported (a broken dependency) is one failed line instead.

    Raises
    ------
    SofteningError
        When a structure file cannot be read.
    """
    plan: list[PlannedCheck] = []
    for module in CHECKS:
        try:
            contribute = importlib.import_module(module).plan_checks
        except ImportError as exc:
            broken = one_line(exc, "first")

            def fail(broken: str = broken) -> str:
                raise Problem(broken, REINSTALL)

            plan.append(PlannedCheck(f"{module} checks", fail, True, request.timeout))
            continue
        plan += contribute(request)
    return plan


def run_checks(
    *,
    store: str | None = None,
    structures: Iterable[Any] = (),
    vasp: bool = False,
    launchpad: str | None = None,
    qadapter: str | None = None,
    models: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    total: float = TOTAL_BUDGET,
) -> DoctorReport:
    """Check what this machine and configuration can do; each check at most ``timeout`` s.

    Parameters
    ----------
    store
        The result store (default: the ``store`` setting); always needed.
    structures
        Files or pymatgen structures that VASP would label: every POTCAR they need under MP's
        choice is checked, and VASP counts as needed.
    vasp
        Treat VASP as needed even when the ``reference`` setting is not ``vasp``.
    launchpad, qadapter
        The FireWorks files (default: the settings, then ``./launchpad.yaml`` and
        ``./qadapter_slurm.yaml``); needed when given here or named by the settings.
    models
        The uMLIPs to load (default: ``md_model`` and ``models`` of the settings); all needed.
    timeout
        Seconds each check may take (MongoDB checks: at least ``mongo_timeout`` + 2).
    total
        Seconds all checks together may take; checks left when it is spent are skipped.

    Returns
    -------
    DoctorReport
        ``report.ok`` is False when a needed check failed.

    Raises
    ------
    SofteningError
        When a structure file cannot be read.
    """
    request = DoctorRequest(
        store=store,
        structures=tuple(structures),
        vasp=vasp,
        launchpad=launchpad,
        qadapter=qadapter,
        models=None if models is None else tuple(models),
        timeout=timeout,
    )
    plan = plan_checks(request)
    # Needed checks first, so that a slow optional one cannot spend the budget they need; the
    # report keeps the order of the plan.
    results: dict[int, Check] = {}
    deadline = time.monotonic() + max(total, 1.0)
    for i in sorted(range(len(plan)), key=lambda i: not plan[i].needed):
        check = plan[i]
        left = deadline - time.monotonic()
        if left < 1:
            results[i] = Check(
                check.name, "skip", f"not run: the {total:g} s budget is spent", "", check.needed
            )
            continue
        results[i] = _run_one(
            check.name,
            check.run,
            needed=check.needed,
            timeout=min(check.timeout, left),
            fix_on_timeout=check.fix_on_timeout,
        )
    return DoctorReport([results[i] for i in range(len(plan))])


def python_info() -> str:
    """``Python 3.x.y on <platform>`` (the header of the table)."""
    return f"Python {sys.version.split()[0]} on {sys.platform} ({sys.executable})"


#: Colour of each verdict.
STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def doctor(
    structure: Annotated[
        list[Path] | None,
        typer.Option(
            "--structure", help="Check every POTCAR VASP needs for this structure (repeatable)."
        ),
    ] = None,
    vasp: Annotated[bool, typer.Option("--vasp", help="Treat VASP as needed.")] = False,
    store: StoreOpt = None,
    launchpad: Annotated[str | None, typer.Option(help="LaunchPad YAML to check.")] = None,
    qadapter: Annotated[str | None, typer.Option(help="Queue adapter YAML to check.")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each check may take (all together: under a minute).")
    ] = DEFAULT_TIMEOUT,
    as_json: JsonOpt = False,
) -> None:
    """What this machine and configuration can do: one line per check, with what to do."""
    from rich.markup import escape
    from rich.table import Table

    report = run_checks(
        store=store,
        structures=structure or (),
        vasp=vasp,
        launchpad=launchpad,
        qadapter=qadapter,
        timeout=timeout,
    )
    if as_json:
        print_json(report.as_dict())
    else:
        table = Table(title=python_info(), title_justify="left")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            cells = (escape(c.detail), escape(c.fix))  # fixes hold `softening[gpaw]`, not markup
            table.add_row(c.name, f"[{STATUS_STYLE[c.status]}]{c.status}[/]", *cells)
        out_console.print(table, highlight=False)
    if not report.ok:
        raise typer.Exit(1)
