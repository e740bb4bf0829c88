"""Results commands: ``query``, ``build`` and ``report`` over the results database.

Their filters make one :class:`~softening.stores.queries.ResultFilter`; the work is
:func:`~softening.stores.queries.query_results`, :func:`~softening.stores.builders.build_summaries`,
:func:`~softening.workflows.report.results_report` (PNG) and
:func:`~softening.workflows.html_report.html_report` (``report --html``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from softening.cli.display import (
    CSV_COLUMNS,
    console,
    dumps,
    flat_result,
    out_console,
    print_json,
    with_flag_texts,
)
from softening.cli.options import (
    AllRunsOpt,
    ChemsysOpt,
    ElementOpt,
    FlagOpt,
    FormulaOpt,
    JsonOpt,
    MaterialOpt,
    PooledOpt,
    QueryModelOpt,
    ScaleMaxOpt,
    ScaleMinOpt,
    StoreOpt,
    out_folder,
)
from softening.errors import InputError
from softening.stores.queries import ResultFilter


def _filter(
    formula,
    chemsys,
    element,
    model,
    scale_min,
    scale_max,
    material_id,
    include_pooled,
    all_runs,
    flag=None,
) -> ResultFilter:
    """The filter options of ``query`` and ``report`` as the one filter model."""
    return ResultFilter(
        material_id=material_id, formula=formula, chemsys=chemsys, elements=element, model=model,
        scale_min=scale_min, scale_max=scale_max, include_pooled=include_pooled, flag=flag,
        latest_only=not all_runs,
    )  # fmt: skip


def query(
    store: StoreOpt = None,
    formula: FormulaOpt = None,
    chemsys: ChemsysOpt = None,
    element: ElementOpt = None,
    model: QueryModelOpt = None,
    scale_min: ScaleMinOpt = None,
    scale_max: ScaleMaxOpt = None,
    material_id: MaterialOpt = None,
    include_pooled: PooledOpt = False,
    all_runs: AllRunsOpt = False,
    flag: FlagOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
) -> None:
    """List stored softening results that match the filters (all filters must hold)."""
    import csv

    from softening.cli.tables import results_table
    from softening.stores import describe_store
    from softening.stores.queries import open_store, query_results

    if fmt not in ("table", "csv", "json"):
        raise InputError(f"--format {fmt!r}: use table, csv or json")
    where = _filter(formula, chemsys, element, model, scale_min, scale_max, material_id,
                    include_pooled, all_runs, flag)  # fmt: skip
    job_store = open_store(store)
    results = query_results(job_store, where)
    if fmt == "json":
        print_json([with_flag_texts(r) for r in results], lenient=True)
        return
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat_result(r) for r in results)
        return
    if not results:
        console.print(f"no result matches in {describe_store(job_store)}")
        return
    out_console.print(
        results_table(results, f"{len(results)} result(s) in {describe_store(job_store)}")
    )


def build(
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Update the summary collections (per model, element, chemical system) from the results.

    Incremental: only new or changed results (and those that failed before) are processed.
    """
    from dataclasses import asdict

    from softening.cli.tables import summaries_table
    from softening.stores import describe_store
    from softening.stores.builders import build_summaries
    from softening.stores.queries import open_store, query_summaries

    job_store = open_store(store)
    stats = build_summaries(job_store)
    models = query_summaries(job_store, "models")
    if as_json:
        print_json({"stats": asdict(stats), "models": models}, lenient=True)
        return
    console.print(
        f"{describe_store(job_store)}: processed {stats.processed} result(s) "
        f"({stats.failed} failed, {stats.retried} retried), {stats.unchanged} unchanged, "
        f"{stats.removed} removed; summaries: {stats.summaries.get('models', 0)} model(s), "
        f"{stats.summaries.get('elements', 0)} element(s), "
        f"{stats.summaries.get('chemsys', 0)} chemical system(s)",
        highlight=False,
    )
    for uuid, err in stats.errors.items():
        console.print(f"[yellow]failed:[/] {uuid}: {err}", highlight=False)
    if models:
        out_console.print(summaries_table(models))


#: How many ids a terminal line names before it gives a count (the full lists: report.json).
SHOWN_IDS = 5


def _ids_line(what: str, ids: list[str], full: str | Path) -> str:
    """``what: N: a, b, c, d, e and N-5 more (all in FULL)``: never a paragraph of ids."""
    shown = ", ".join(ids[:SHOWN_IDS])
    more = len(ids) - SHOWN_IDS
    return f"{what}: {len(ids)}: {shown}" + (
        f" and {more} more (all in {full})" if more > 0 else ""
    )


def report(
    store: StoreOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the PNG files and report.json (default softening-report; with "
            "--html, PNG files only when --out is given).",
            callback=out_folder,
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write one self-contained HTML page to explore the results (opens offline) "
            "instead of the PNG files.",
        ),
    ] = None,
    formula: FormulaOpt = None,
    chemsys: ChemsysOpt = None,
    element: ElementOpt = None,
    model: QueryModelOpt = None,
    scale_min: ScaleMinOpt = None,
    scale_max: ScaleMaxOpt = None,
    material_id: MaterialOpt = None,
    include_pooled: PooledOpt = False,
    all_runs: AllRunsOpt = False,
    flag: FlagOpt = None,
    parity_limit: Annotated[
        int,
        typer.Option(
            help="Most parity plots drawn (one per material and model); with --html, most "
            "results whose forces go into the page."
        ),
    ] = 100,
    parity_cap: Annotated[
        int,
        typer.Option(
            help="With --html: most force components per parity plot (a random subset beyond)."
        ),
    ] = 2000,
    as_json: JsonOpt = False,
) -> None:
    """Figures of the stored results: parity per material and model, scale distribution, MAE vs
    cMAE; with --html one page to explore them (table, filters, a parity plot per result)."""
    where = _filter(formula, chemsys, element, model, scale_min, scale_max, material_id,
                    include_pooled, all_runs, flag)  # fmt: skip
    summary: dict = {}
    if html is not None:
        summary["html"] = _html_report(store, html, where, parity_limit, parity_cap, as_json)
    if html is None or out is not None:
        summary.update(_png_report(store, out or Path("softening-report"), where, parity_limit,
                                   as_json))  # fmt: skip
    if as_json:
        print_json(summary, lenient=True)


def _html_report(
    store: str | None, path: Path, where: ResultFilter, parity_limit: int, parity_cap: int,
    quiet: bool,
) -> dict:  # fmt: skip
    """``report --html``: the page, and its counts on the terminal."""
    from softening.workflows.html_report import html_report

    page = html_report(store, path, where, parity_limit=parity_limit, parity_cap=parity_cap)
    excluded = page.selection.excluded
    record = {
        "path": str(page.path),
        "size_bytes": page.size_bytes,
        "n_results": len(page.results),
        "n_parity": page.n_parity,
        "n_capped": page.n_capped,
        "parity_cap": page.parity_cap,
        "n_properties": page.n_properties,
        "mae_vs_cmae_excluded": excluded,
    }
    if quiet:
        return record
    models = len({r["model"]["name"] for r in page.results})
    skipped = page.selection.skipped
    unstored = len(page.selection.parity) - page.n_parity
    console.print(
        f"{page.path}: {len(page.results)} result(s) of {models} model(s), "
        f"{page.n_properties} property result(s), {page.size_bytes / 1e6:.1f} MB; force parity "
        f"for {page.n_parity}"
        + (f" ({skipped} more with a higher --parity-limit)" if skipped else "")
        + (f", {unstored} without stored forces" if unstored else "")
        + (f", {page.n_capped} cut to {page.parity_cap} components" if page.n_capped else ""),
        highlight=False,
        soft_wrap=True,
    )
    if excluded:
        console.print(
            _ids_line(
                "left out of mae_vs_cmae (scale CI includes 0, cMAE meaningless)",
                excluded,
                "the page's table and --json",
            ),
            highlight=False,
            soft_wrap=True,
        )
    return record


def _png_report(
    store: str | None, out: Path, where: ResultFilter, parity_limit: int, quiet: bool
) -> dict:
    """The PNG figures and ``report.json`` in ``out``; counts and the first ids on the terminal."""
    from softening.workflows.report import results_report

    drawn = results_report(store, out, where, parity_limit)
    files = drawn.files
    summary = {
        "n_results": len(drawn.results),
        "files": files,
        "results": [flat_result(r) for r in drawn.results],
    }
    (out / "report.json").write_text(dumps(summary, lenient=True, indent=2))
    if quiet:
        return summary
    skipped = drawn.selection.skipped
    console.print(
        f"{len(drawn.results)} result(s): {len(files['parity'])} parity plot(s) in {out / 'parity'}"
        + (f" ({skipped} more with a higher --parity-limit)" if skipped else ""),
        highlight=False,
    )
    for key in ("scale_distribution", "mae_vs_cmae"):
        if key in files:
            console.print(f"{key}: {files[key]}", highlight=False)
    for prop, path in files["property_plots"].items():
        console.print(f"{prop}: {path}", highlight=False)
    if files.get("mae_vs_cmae_excluded"):
        console.print(
            _ids_line(
                "left out of mae_vs_cmae (scale CI includes 0, cMAE meaningless)",
                files["mae_vs_cmae_excluded"],
                out / "report.json",
            ),
            highlight=False,
            soft_wrap=True,
        )
    return summary
