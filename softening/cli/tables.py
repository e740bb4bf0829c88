"""The rich tables the commands print (pure formatting: every number comes from the library)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from softening.cli.display import flag_kinds

#: Colour of each FireWorks state.
STATE_STYLE = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "RESERVED": "cyan",
    "READY": "blue",
    "WAITING": "dim",
    "FIZZLED": "bold red",
    "DEFUSED": "magenta",
    "PAUSED": "magenta",
}


def _columns(table: Table, names: Iterable[str], left: Iterable[str]) -> Table:
    left = set(left)
    for col in names:
        table.add_column(col, justify="left" if col in left else "right")
    return table


def scale_table(docs: Sequence[Any], title: str) -> Table:
    """Per material and model: scale, its 95 % CI, MAE, cMAE (n/a where the CI reaches 0 or lies
    below it), frames, flag kinds."""
    from softening.analysis.metrics import is_uncorrelated

    cols = ("material", "model", "scale", "95% CI", "MAE eV/Å", "cMAE eV/Å", "frames", "missing",
            "flags")  # fmt: skip
    table = _columns(Table(title=title), cols, ("material", "model", "flags"))
    for d in docs:
        table.add_row(
            d.material_id,
            d.model.name,
            f"{d.scale:.3f}",
            f"{d.scale_ci[0]:.3f}-{d.scale_ci[1]:.3f}",
            f"{d.mae:.3f}",
            "n/a" if is_uncorrelated(d.scale_ci) else f"{d.cmae:.3f}",
            str(d.n_frames),
            ", ".join(d.missing_frames) or "-",
            flag_kinds(d.flags),
        )
    if any(is_uncorrelated(d.scale_ci) for d in docs):
        table.caption = (
            "cMAE n/a: the scale's 95 % CI includes 0 (uncorrelated) or lies below it "
            "(anticorrelated)"
        )
    return table


def models_table(models: dict[str, Any]) -> Table:
    """The paper's side-by-side table: pooled figures of every model (``evaluate --json``)."""
    cols = ("model", "scale", "95% CI", "MAE eV/Å", "cMAE eV/Å", "frames", "softened")
    table = Table(title="Pooled softening per model (one slope over all force components)")
    _columns(table, cols, ("model",))
    for name, v in models.items():
        p = v["pooled"]
        table.add_row(
            name,
            f"{p['scale']:.3f}",
            f"{p['scale_ci'][0]:.3f}-{p['scale_ci'][1]:.3f}",
            f"{p['mae']:.3f}",
            f"{p['cmae']:.3f}",
            str(p["n_frames"]),
            f"{100 * p['fraction_softened']:.1f} %",
        )
    return table


def groups_table(doc: Any) -> Table:
    """Per group of held-out frames of a correction: scale and MAE before and after (red: worse)."""
    c = doc.correction
    cols = ("group", "frames", "scale before", "scale after", "MAE before", "MAE after")
    table = Table(title=f"{c.base_model.name} -> {c.model.name} on held-out frames")
    _columns(table, cols, ("group",))
    for g in doc.groups:
        table.add_row(
            g.group,
            str(g.n_frames),
            f"{g.scale_before:.3f}",
            f"{g.scale_after:.3f}",
            f"{g.mae_before:.3f}",
            f"[red]{g.mae_after:.3f}[/]" if g.worse else f"{g.mae_after:.3f}",
        )
    return table


def results_table(results: list[dict[str, Any]], title: str) -> Table:
    """Stored results (query rows): material, model, reference, scale, CI, MAE, cMAE, frames."""
    cols = ("material", "model", "reference", "scale", "95% CI", "MAE eV/Å", "cMAE eV/Å",
            "frames", "completed")  # fmt: skip
    table = _columns(Table(title=title), cols, ("material", "model", "reference", "completed"))
    for r in results:
        # The formula only where the id does not already say it (WBM and run ids are formulas).
        formula = r.get("formula") or ""
        shown = r["material_id"]
        if formula not in ("", shown):
            shown += f" ({formula})"
        table.add_row(
            shown,
            r["model"]["name"],
            (r.get("reference") or {}).get("name", ""),
            f"{r['scale']:.3f}",
            f"{r['scale_ci'][0]:.3f}-{r['scale_ci'][1]:.3f}",
            f"{r['mae']:.3f}",
            f"{r['cmae']:.3f}",
            str(r["n_frames"]),
            str(r.get("completed_at") or "")[:10],
        )
    return table


def summaries_table(models: list[dict[str, Any]]) -> Table:
    """The per-model summaries of ``build``: materials, share softened, scale quantiles, MAEs."""
    cols = ("model", "materials", "softened", "median scale", "5-95 %", "MAE eV/Å", "cMAE eV/Å")
    table = Table(title="Softening per model (latest result per material)")
    _columns(table, cols, ("model",))
    for m in models:
        q = m["scale_quantiles"]
        table.add_row(
            m["model"],
            str(m["n_materials"]),
            f"{100 * m['fraction_softened']:.1f} %",
            f"{q['p50']:.3f}",
            f"{q['p05']:.3f}-{q['p95']:.3f}",
            f"{m['mae_mean']:.3f}",
            f"{m['cmae_mean']:.3f}",
        )
    return table


def flow_table(f: dict[str, Any]) -> Table:
    """One flow of ``status``: its jobs with their FireWorks states and SLURM job ids."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(f["counts"].items()))
    style = STATE_STYLE.get(f["state"], "")
    table = Table(
        title=f"flow {f['flow_id']} {f['name']}: [{style}]{f['state']}[/] ({counts})",
        title_justify="left",
    )
    cols = ("job", "name", "category", "state", "SLURM job")
    _columns(table, cols, ("name", "category", "state"))
    for j in f["jobs"]:
        st = j["state"]
        table.add_row(
            str(j["fw_id"]),
            j["name"],
            j["category"] or "-",
            f"[{STATE_STYLE.get(st, '')}]{st}[/]" if STATE_STYLE.get(st) else st,
            j["slurm_job_id"] or "-",
        )
    return table


def plan_table(plan: Any) -> Table:
    """The jobs ``rerun`` would rerun, and why (FIZZLED, or lost and how it was found)."""
    table = Table(title="Jobs to rerun", title_justify="left")
    _columns(table, ("job", "name", "why", "SLURM job"), ("name", "why"))
    for d in plan.fizzled:
        table.add_row(str(d["fw_id"]), d["name"], "FIZZLED", d["slurm_job_id"] or "-")
    for r in plan.lost:
        why = f"lost ({r.state}; {r.detected_by}" + (
            f": {r.slurm_state})" if r.slurm_state else ")"
        )
        table.add_row(str(r.fw_id), r.name, why, r.slurm_job_id or "-")
    return table


def property_tables(docs: Sequence[Any]) -> list[Table]:
    """The tables of property documents, one per table title of their registry entries (in the
    order the documents come): an entry's own columns (``table_cells``), or the item-style
    columns (``items``: reference and uMLIP values and their ratio); flags last."""
    from softening.makers.properties import get_property

    tables: dict[str, Table] = {}
    for d in docs:
        spec = get_property(d.property)
        table = tables.get(spec.table_title)
        if table is None:
            left = {"material", "model", "property", "item", "system", "flags"}
            table = _columns(Table(title=spec.table_title), spec.table_columns, left)
            table.caption = spec.table_caption
            tables[spec.table_title] = table
        if spec.table_cells is not None:
            for cells in spec.table_cells(d):
                table.add_row(*cells, flag_kinds(d.flags))
            continue
        for item, ref, ml, unit in spec.items(d) if spec.items else []:
            table.add_row(
                d.material_id,
                d.model.name,
                d.property,
                item,
                f"{ref:.3f} {unit}",
                f"{ml:.3f} {unit}",
                f"{ml / ref:.3f}" if ref else "-",
                flag_kinds(d.flags),
            )
    return list(tables.values())
