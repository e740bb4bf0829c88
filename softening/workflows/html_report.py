"""The results page of ``softening report --html``: one self-contained HTML file to explore.

:func:`html_report` writes one HTML file that opens offline (plotly.js and the data inlined; no
network, no server): a summary per model, the scale distribution per model, MAE against cMAE, a
sortable and filterable table of every result, and per result its force parity plot and its stored
property results (phonon bands, surface/defect/mixing/migration parity, any registered property).

It reports the same results as the PNG report (:func:`~softening.workflows.report.results_report`):
one :class:`~softening.stores.queries.ResultFilter` selects them, and
:func:`~softening.stores.queries.report_selection` says which get parity data (the first
``parity_limit``) and which are left out of MAE vs cMAE. The page stays usable at scale: the table
shows 100 rows a page and filters the in-memory data, the scatter plots use WebGL
(``scattergl``, SVG where a browser has none), and force data are capped per result
(``parity_cap`` components, a seeded random subset, with a note in the page).

The layout and the scripts of the page are the package data file ``html_report.html`` next to
this module; :func:`page_data` builds its data (no store needed), :func:`write_page` writes it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softening.analysis.metrics import fraction_softened
from softening.jsonio import rounded
from softening.workflows.html_properties import DIGITS, property_docs, property_entry

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np
    from jobflow import JobStore

    from softening.stores.queries import ReportSelection, ResultFilter

__all__ = [
    "DEFAULT_PARITY_CAP",
    "HtmlReport",
    "check_html_path",
    "html_report",
    "page_data",
    "write_page",
]

log = logging.getLogger(__name__)

#: Most force components inlined per result (a seeded random subset beyond it).
DEFAULT_PARITY_CAP = 2000
#: The page's template (layout, style and scripts), a package data file beside this module.
TEMPLATE = "html_report.html"
#: The columns of ``rows`` in the page data, in order.
ROW_FIELDS = (
    "material_id",
    "formula",
    "chemsys",
    "elements",
    "model",  # index into ``models``
    "reference",
    "scale",
    "ci_low",
    "ci_high",
    "mae",
    "cmae",
    "n_frames",
    "n_atoms",
    "energy_mae_per_atom",
    "flags",  # "kind: detail" texts
    "missing_frames",  # count
    "per_element_scales",
    "uuid",
    "completed_at",
    "pooled",  # 1: a pooled result (one slope over a dataset), not a material
    "in_cmae",  # 1: drawn in MAE vs cMAE (scale CI clear of 0)
)


@dataclass
class HtmlReport:
    """What :func:`html_report` wrote.

    Attributes
    ----------
    path
        The HTML file.
    results
        The query rows reported (:func:`~softening.stores.queries.query_results`, no forces).
    selection
        Which result went into which figure (as the PNG report chooses).
    n_parity
        Results whose force data are in the page (at most ``parity_limit``).
    n_capped
        Of those, how many were cut to ``parity_cap`` force components.
    parity_cap
        Most force components inlined per result.
    n_properties
        Property results (latest per property, material and model) in the page.
    size_bytes
        Size of the file.
    """

    path: Path
    results: list[dict[str, Any]]
    selection: ReportSelection
    n_parity: int
    n_capped: int
    parity_cap: int
    n_properties: int
    size_bytes: int

    @property
    def no_parity(self) -> int:
        """Results without force data in the page (beyond ``parity_limit``, or none stored)."""
        return len(self.results) - self.n_parity


def check_html_path(path: str | Path) -> Path:
    """The page's path, checked before anything is read: not a folder, and its folder writable.

    Missing parent folders are created (as ``--out`` creates its folder).

    Raises
    ------
    InputError
        A folder, a parent that is a file, or a folder that cannot be written.
    """
    from softening.errors import InputError

    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"--html {path}: is a folder; give a file name such as report.html")
    parent = path.parent
    above = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"--html {path}: {above} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--html {path}: cannot create its folder ({_reason(exc)})") from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"--html {path}: cannot write there (permission denied)")
    return path


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def html_report(
    store: JobStore | str | Path | None,
    path: str | Path,
    where: ResultFilter | None = None,
    parity_limit: int = 100,
    parity_cap: int = DEFAULT_PARITY_CAP,
    title: str | None = None,
) -> HtmlReport:
    """Write the results page of the stored results that ``where`` selects to ``path``.

    Parameters
    ----------
    store
        A JobStore or a store spec (an embedded folder must exist).
    path
        The HTML file to write (its folder is created; an existing file is replaced).
    where
        Which results (default: the latest per material, model and reference, no pooled ones);
        its ``model`` and ``material_id`` select the property documents too.
    parity_limit
        Most results whose force data go into the page (their parity plots): the first ones in
        query order, as the PNG report's parity plots.
    parity_cap
        Most force components inlined per result (a seeded random subset beyond it).
    title
        Page title (default: ``softening results``).

    Returns
    -------
    HtmlReport
        The file, the results and what the page holds.

    Raises
    ------
    InputError
        When nothing matches (no result and no property document), or ``path`` cannot be written.
    """
    from softening.errors import InputError
    from softening.stores import describe_store
    from softening.stores.queries import (
        ResultFilter,
        load_forces,
        open_store,
        query_results,
        report_selection,
    )

    path = check_html_path(path)
    if parity_cap < 1:
        raise InputError(f"--parity-cap {parity_cap}: give at least 1 force component")
    where = where or ResultFilter()
    job_store = open_store(store)
    results = query_results(job_store, where)
    properties = property_docs(job_store, where)
    if not results and not properties:
        raise InputError("no stored result matches the filters: nothing to report")
    selection = report_selection(results, parity_limit)
    forces: dict[str, tuple[Any, Any]] = {}
    for r in selection.parity:
        f_ref, f_ml = load_forces(job_store, r["uuid"])
        if f_ref.ndim and f_ref.size and f_ref.shape == f_ml.shape:  # none stored: a 0-d NaN
            forces[r["uuid"]] = (f_ref, f_ml)
    data = page_data(
        results, selection, forces, properties, pooled=_pooled(job_store, where),
        parity_cap=parity_cap, parity_limit=parity_limit, title=title,
        source=describe_store(job_store), filters=_filter_text(where),
    )  # fmt: skip
    size = write_page(data, path)
    return HtmlReport(
        path=path,
        results=results,
        selection=selection,
        n_parity=len(data["parity"]),
        n_capped=sum(1 for p in data["parity"].values() if p["n"] > len(p["x"])),
        parity_cap=parity_cap,
        n_properties=len(data["properties"]),
        size_bytes=size,
    )


# ---- the page's data ------------------------------------------------------------------------------


def page_data(
    results: Sequence[dict[str, Any]],
    selection: ReportSelection,
    forces: Mapping[str, tuple[Any, Any]],
    properties: Sequence[Any] = (),
    pooled: Mapping[str, dict[str, Any]] | None = None,
    parity_cap: int = DEFAULT_PARITY_CAP,
    parity_limit: int | None = None,
    title: str | None = None,
    source: str = "",
    filters: str = "",
) -> dict[str, Any]:
    """The data the page draws, as one JSON-able dict (what :func:`write_page` inlines).

    Parameters
    ----------
    results
        Query rows (:func:`~softening.stores.queries.query_results`, no forces needed).
    selection
        :func:`~softening.stores.queries.report_selection` of ``results``.
    forces
        ``{uuid: (forces_ref, forces_ml)}`` of the results whose parity data go in.
    properties
        Property documents (the registry's document classes), latest per property, material and
        model.
    pooled
        ``{model name: pooled result row}``: the stored pooled result of each model.
    parity_cap
        Most force components per result.
    parity_limit
        The limit that chose ``selection.parity`` (shown in the page's notes).
    title, source, filters
        Page title, the store's description and the filters, for the page's header.

    Returns
    -------
    dict
        ``rows`` (lists in :data:`ROW_FIELDS` order), ``models``, ``summary``, ``parity``
        (``{row index: {"x", "y", "n"}}``), ``properties``, ``notes`` and the header texts.
    """
    import numpy as np

    from softening.stores.queries import is_pooled

    models: dict[str, int] = {}
    for r in results:
        models.setdefault(r["model"]["name"], len(models))
    in_cmae = {id(r) for rs in selection.mae_vs_cmae.values() for r in rs}
    rows = [_row(r, models, id(r) in in_cmae) for r in results]
    index = {r.get("uuid"): k for k, r in enumerate(results)}
    rng = np.random.default_rng(0)
    parity: dict[str, dict[str, Any]] = {}
    for uuid, (f_ref, f_ml) in forces.items():
        if uuid in index:
            parity[str(index[uuid])] = _parity(f_ref, f_ml, parity_cap, rng)
    props = [p for p in (property_entry(d) for d in properties) if p is not None]
    for p in props:
        models.setdefault(p["model"], len(models))
    summary = _summaries(results, list(models), pooled or {}, parity, index)
    notes = _notes(results, selection, parity, parity_cap, parity_limit)
    return {
        "title": title or "softening results",
        "source": source,
        "filters": filters,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "fields": list(ROW_FIELDS),
        "models": list(models),
        "rows": rows,
        "summary": summary,
        "parity": parity,
        "parity_cap": parity_cap,
        "parity_limit": parity_limit,
        "n_pooled": sum(1 for r in results if is_pooled(r)),
        "excluded": len(selection.excluded),
        "properties": props,
        "notes": notes,
    }


def _num(x: Any, digits: int = DIGITS) -> float | None:
    """A finite number rounded to ``digits`` significant digits; ``None`` for anything else."""
    return rounded(x, digits)


def _row(r: dict[str, Any], models: dict[str, int], in_cmae: bool) -> list[Any]:
    from softening.schemas import flag_texts
    from softening.stores.queries import is_pooled

    ci = list(r.get("scale_ci") or (None, None))
    completed = r.get("completed_at")
    return [
        r["material_id"],
        r.get("formula") or "",
        r.get("chemsys") or "",
        list(r.get("elements") or []),
        models[r["model"]["name"]],
        (r.get("reference") or {}).get("name") or "",
        _num(r.get("scale")),
        _num(ci[0]),
        _num(ci[1]),
        _num(r.get("mae")),
        _num(r.get("cmae")),
        r.get("n_frames"),
        r.get("n_atoms"),
        _num(r.get("energy_mae_per_atom")),
        flag_texts(r.get("flags")),
        len(r.get("missing_frames") or []),
        {k: _num(v, 4) for k, v in (r.get("per_element_scales") or {}).items()},
        r.get("uuid"),
        str(completed)[:19] if completed else "",
        int(is_pooled(r)),
        int(in_cmae),
    ]


def _parity(f_ref: Any, f_ml: Any, cap: int, rng: np.random.Generator) -> dict[str, Any]:
    """Force components (reference, model) for a parity plot; a seeded random subset of ``cap``
    beyond it (a stride would pick one Cartesian axis only, since components come in threes)."""
    import numpy as np

    x = np.asarray(f_ref, dtype=float).ravel()
    y = np.asarray(f_ml, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n > cap:
        pick = np.sort(rng.choice(n, size=cap, replace=False))
        x, y = x[pick], y[pick]
    return {"x": [_num(v, 4) for v in x], "y": [_num(v, 4) for v in y], "n": n}


def _summaries(
    results: Sequence[dict[str, Any]],
    models: list[str],
    pooled: Mapping[str, dict[str, Any]],
    parity: Mapping[str, Any],
    index: Mapping[Any, int],
) -> list[dict[str, Any]]:
    """One summary per model over its material results (pooled ones apart)."""
    import numpy as np

    from softening.stores.queries import is_pooled

    by_model: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    for r in results:
        if not is_pooled(r):
            by_model[r["model"]["name"]].append(r)
    out = []
    for m in models:
        rs = by_model[m]
        scales = np.array([r["scale"] for r in rs if _num(r["scale"]) is not None], dtype=float)
        mae = np.array([r["mae"] for r in rs if _num(r["mae"]) is not None], dtype=float)
        cmae = np.array([r["cmae"] for r in rs if _num(r["cmae"]) is not None], dtype=float)
        kinds = Counter(
            k for r in rs for k in {_kind(f) for f in r.get("flags") or []}
        )  # each kind once per result
        p = pooled.get(m)
        n_pooled_rows = sum(1 for r in results if is_pooled(r) and r["model"]["name"] == m)
        out.append(
            {
                "model": m,
                "n_results": len(rs),
                "n_materials": len({r["material_id"] for r in rs}),
                "n_pooled": n_pooled_rows,
                "scale_median": _num(np.median(scales)) if scales.size else None,
                "scale_p05": _num(np.quantile(scales, 0.05)) if scales.size else None,
                "scale_p95": _num(np.quantile(scales, 0.95)) if scales.size else None,
                "fraction_softened": _num(fraction_softened(scales)),
                "mae_mean": _num(np.mean(mae)) if mae.size else None,
                "cmae_mean": _num(np.mean(cmae)) if cmae.size else None,
                "n_flagged": sum(1 for r in rs if r.get("flags")),
                "flags": dict(sorted(kinds.items())),
                "n_parity": sum(1 for r in rs if str(index.get(r.get("uuid"), -1)) in parity),
                "pooled": None
                if p is None
                else {
                    "scale": _num(p["scale"]),
                    "ci": [_num(c) for c in p.get("scale_ci") or (None, None)],
                    "mae": _num(p.get("mae")),
                    "n_frames": p.get("n_frames"),
                    "reference": (p.get("reference") or {}).get("name"),
                },
            }
        )
    return out


def _kind(flag: Any) -> str:
    from softening.schemas import flag_text

    return flag_text(flag).split(":")[0]


def _notes(
    results: Sequence[dict[str, Any]],
    selection: ReportSelection,
    parity: Mapping[str, Any],
    cap: int,
    limit: int | None,
) -> list[str]:
    """What the page leaves out, in words (shown in its header)."""
    notes = []
    unstored = len(selection.parity) - len(parity)
    if selection.skipped:
        notes.append(
            f"Force parity plots for {len(parity)} of {len(results)} result(s): only the first "
            f"{len(selection.parity)} in query order carry force data"
            + (f" (parity limit {limit})" if limit is not None else "")
            + "; narrow the filters (e.g. --material-id) or raise --parity-limit for others."
        )
    if unstored:
        notes.append(f"{unstored} result(s) have no stored forces: no parity plot.")
    capped = sum(1 for p in parity.values() if p["n"] > len(p["x"]))
    if capped:
        notes.append(
            f"{capped} parity plot(s) show a random {cap:,} of their force components "
            "(--parity-cap); the scale and MAE are over all of them."
        )
    if selection.excluded:
        notes.append(
            f"{len(selection.excluded)} result(s) left out of MAE vs cMAE: their scale CI "
            "reaches 0 or lies below it (forces uncorrelated or anticorrelated, cMAE "
            "meaningless); they are in the table (flag filter: 'not in MAE vs cMAE')."
        )
    return notes


# ---- pooled results, filters -----------------------------------------------------------------------


def _pooled(job_store: JobStore, where: ResultFilter) -> dict[str, dict[str, Any]]:
    """The latest stored pooled result per model (one slope over a whole dataset), for the
    models ``where`` selects; none when it names one material."""
    from softening.stores.queries import POOLED_ID, ResultFilter, query_results

    if where.material_id is not None:
        return {}
    rows = query_results(
        job_store, ResultFilter(material_id=POOLED_ID, model=where.model, include_pooled=True)
    )
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = r["model"]["name"]
        if m not in latest or str(r["completed_at"]) > str(latest[m]["completed_at"]):
            latest[m] = r
    return latest


def _filter_text(where: ResultFilter) -> str:
    """The filters that differ from the defaults, as ``name=value`` text for the page header."""
    default = type(where)()
    parts = []
    for f in fields(where):
        value = getattr(where, f.name)
        if value != getattr(default, f.name):
            if isinstance(value, list | tuple):
                value = ",".join(map(str, value))
            parts.append(f"{f.name}={value}")
    return "; ".join(parts)


# ---- the file -------------------------------------------------------------------------------------


def _json_text(data: Any) -> str:
    """Compact strict JSON (non-finite numbers as ``null``) safe inside a ``<script>`` element (no
    ``<`` at all, so no ``</script>``)."""
    from softening.jsonio import dumps

    return dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def _template() -> str:
    """The page template, a package data file (``[tool.setuptools.package-data]`` ships it)."""
    from importlib.resources import files

    from softening.errors import SofteningError

    try:
        return files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SofteningError(
            f"the page template {TEMPLATE} is missing from this installation of softening "
            "(reinstall it)"
        ) from None


def write_page(data: Mapping[str, Any], path: str | Path) -> int:
    """Write the page of ``data`` (:func:`page_data`) to ``path``, plotly.js inlined.

    The file is written beside ``path`` first and moved into place, so a failed write never
    leaves half a page.

    Returns
    -------
    int
        The file's size in bytes.

    Raises
    ------
    InputError
        When the file cannot be written.
    """
    from html import escape

    from plotly.offline import get_plotlyjs

    from softening.errors import InputError

    path = Path(path)
    values = {
        "__SOFTENING_TITLE__": escape(str(data.get("title") or "softening results")),
        "/*__SOFTENING_PLOTLY_JS__*/": get_plotlyjs(),
        "__SOFTENING_DATA__": _json_text(data),
    }
    # One pass over the template only: nothing inserted is searched for tokens again.
    page = re.sub("|".join(re.escape(k) for k in values), lambda m: values[m[0]], _template())
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it private)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise InputError(f"--html {path}: cannot write it ({_reason(exc)})") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path.stat().st_size
