"""What the commands share for output: the consoles, flags as text, JSON, progress, logging.

Everything a command prints or JSON-dumps about flags goes through :func:`flag_text` (documents
carry :class:`softening.schemas.Flag` objects, stored results their dicts, older ones text).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.console import Console

from softening.errors import SofteningError
from softening.jsonio import dumps as strict_dumps
from softening.schemas import flag_text, flag_texts

# Piped output (CI logs, `| less`) gets 120 columns instead of rich's 80 so that tables stay readable.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
out_console = Console(width=None if sys.stdout.isatty() else 120)


# ---- flags ---------------------------------------------------------------------------------------


def flag_kinds(flags: Iterable[Any] | None) -> str:
    """The distinct kinds of flags, sorted and joined (``-`` for none): a table cell."""
    return ", ".join(sorted({flag_text(f).split(":")[0] for f in flags or []})) or "-"


def dumps(obj: Any, lenient: bool = False, **kwargs: Any) -> str:
    """Strict JSON text of a command's output (:func:`softening.jsonio.dumps`: NaN and infinity
    as ``null``), flags as text (:func:`flag_text`); with ``lenient`` anything else JSON lacks as
    ``str`` (the dates of stored results)."""

    def default(o: Any) -> Any:
        if hasattr(o, "kind") and hasattr(o, "detail"):  # a softening.schemas.Flag
            return flag_text(o)
        if lenient:
            return str(o)
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return strict_dumps(obj, default=default, **kwargs)


def print_json(obj: Any, lenient: bool = False) -> None:
    """Print one JSON object on stdout (``--json``)."""
    print(dumps(obj, lenient=lenient))


def with_flag_texts(row: dict[str, Any]) -> dict[str, Any]:
    """A stored result's row with its ``flags`` as text (as ``--json`` gives them)."""
    return {**row, "flags": flag_texts(row["flags"])} if "flags" in row else row


# ---- messages --------------------------------------------------------------------------------------


def warn(text: str) -> None:
    """A ``warning:`` line on stderr."""
    console.print(f"[yellow]warning:[/] {text}", highlight=False)


def report_failures(failures: list[str], has_result: bool) -> None:
    """Name the failed jobs and how to complete the run; an error when nothing came out at all."""
    for f in failures:
        console.print(f"[yellow]failed:[/] {f}", highlight=False)
    if failures:
        console.print("run the same command again to compute only what failed or is missing")
    if not has_result:
        raise SofteningError("no result: every material failed (see the messages above)")


def setup_logging(quiet: bool) -> None:
    """Package log lines on stderr (INFO, or WARNING when ``quiet``); jobflow's and warnings
    silenced."""
    import warnings

    from rich.logging import RichHandler

    logging.getLogger("jobflow").setLevel(logging.WARNING)
    pkg = logging.getLogger("softening")
    pkg.setLevel(logging.WARNING if quiet else logging.INFO)
    if not pkg.handlers:
        pkg.addHandler(RichHandler(console=console, show_path=False, show_time=True, markup=False))
    pkg.propagate = False
    warnings.filterwarnings("ignore")


def trust_model_files(trust: bool) -> None:
    """Apply ``--trust-model-file`` (to this process and the job processes it starts)."""
    if trust:
        from softening.models.trust import allow_model_files

        allow_model_files()


# ---- progress --------------------------------------------------------------------------------------


@contextlib.contextmanager
def progress(what: str) -> Iterator[Callable[..., None]]:
    """A progress bar with ETA on a terminal (stderr); a no-op when output is piped.

    Yields ``advance(n, total=None)``.
    """
    if not console.is_terminal:
        yield lambda n, total=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def advance(n: int, total: int | None = None) -> None:
            if total is not None and bar.tasks[0].total != total:
                bar.update(task, total=total)
            bar.advance(task, n)

        yield advance


def run_flow(
    flow: Any, store: Any, workers: int | None = None, **run_kwargs: Any
) -> tuple[Any, list[str]]:
    """Run ``flow`` into ``store`` (independent jobs side by side) with a progress bar.

    Returns the flow's resolved outputs (:func:`softening.execution.local.flow_outputs`) and one
    line per failed or unrun job.
    """
    from softening.execution.local import flow_outputs
    from softening.execution.local import run_flow as run

    with progress("jobs") as advance:
        n_jobs = sum(1 for _ in flow.iterflow())

        def done(name: str, ok: bool, seconds: float) -> None:
            logging.getLogger("softening").info(
                "%s %s in %.1f s", name, "finished" if ok else "failed", seconds
            )
            advance(1, n_jobs)

        result = run(flow, store, workers=workers, on_job_done=done, **run_kwargs)
    failures = result.failed + [f"{name}: not run" for name in result.not_run]
    return flow_outputs(flow, store), failures


# ---- result rows (query --format csv, report.json) -------------------------------------------------

CSV_COLUMNS = (
    "material_id",
    "formula",
    "chemsys",
    "model",
    "model_family",
    "reference",
    "scale",
    "scale_ci_low",
    "scale_ci_high",
    "mae",
    "cmae",
    "energy_mae_per_atom",
    "n_frames",
    "n_atoms",
    "missing_frames",
    "flags",
    "uuid",
    "completed_at",
)


def flat_result(r: dict[str, Any]) -> dict[str, Any]:
    """A stored result (:func:`softening.stores.queries.query_results` row) as one flat row."""
    return {
        "material_id": r["material_id"],
        "formula": r.get("formula"),
        "chemsys": r.get("chemsys"),
        "model": r["model"]["name"],
        "model_family": r["model"].get("family"),
        "reference": (r.get("reference") or {}).get("name"),
        "scale": r["scale"],
        "scale_ci_low": r["scale_ci"][0],
        "scale_ci_high": r["scale_ci"][1],
        "mae": r["mae"],
        "cmae": r["cmae"],
        "energy_mae_per_atom": r.get("energy_mae_per_atom"),
        "n_frames": r["n_frames"],
        "n_atoms": r["n_atoms"],
        "missing_frames": ";".join(r.get("missing_frames") or []),
        "flags": ";".join(flag_texts(r.get("flags"))),
        "uuid": r.get("uuid"),
        "completed_at": r.get("completed_at"),
    }
