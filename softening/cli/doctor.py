"""``softening doctor``: what this machine and configuration can do (:mod:`softening.doctor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softening.cli.display import out_console, print_json
from softening.cli.options import JsonOpt, StoreOpt

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
    ] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """What this machine and configuration can do: one line per check, with what to do."""
    from rich.markup import escape
    from rich.table import Table

    from softening.doctor import python_info, run_checks

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
