"""Run a serialised flow into a store: what a ``softening submit --single-job`` script runs.

::

    python -m softening.hpc.run_serialized FLOW.json --store SPEC [--out DIR] [--workers N]

``FLOW.json`` (:func:`write_serialized`) holds the jobflow flow as JSON (``Flow.as_dict``, monty's
encoder) and, for a softening study, its :class:`~softening.workflows.study.StudyOptions`. The
flow runs with the parallel executor (:func:`softening.execution.local.run_flow`: independent jobs
side by side on the allocation's cores), results into the store; a study also writes the
``softening run`` summary (``summary.json``, ``parity.png``) into ``--out`` and prints it as JSON.
Every input was checked when the file was written: nothing is rebuilt here. Exit status: 0 when
the flow ran (a study: when some result came out; failed jobs are listed), 1 on an error, which is
one ``error:`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softening.errors import SofteningError
from softening.jsonio import dumps as strict_dumps

if TYPE_CHECKING:
    import jobflow

    from softening.execution.local import FlowRun
    from softening.workflows.study import StudyOutcome

__all__ = ["SerializedRun", "main", "read_serialized", "run_serialized", "write_serialized"]

logger = logging.getLogger(__name__)

#: Format marker of the file (bumped if its layout changes).
FORMAT = "softening-serialized-flow/1"


def write_serialized(
    path: str | Path, flow: jobflow.Flow, study: dict[str, Any] | None = None
) -> Path:
    """Write ``flow`` (and a study's options) as JSON that :func:`read_serialized` reads back.

    Parameters
    ----------
    path
        The file to write.
    flow
        A jobflow Flow (its makers, structures and references are serialised with it).
    study
        The :class:`~softening.workflows.study.StudyOptions` of a study flow, as a dict.

    Returns
    -------
    Path
        ``path``, absolute.
    """
    from monty.json import MontyEncoder

    from softening import __version__

    path = Path(path).resolve()
    payload = {"format": FORMAT, "softening": __version__, "flow": flow, "study": study}
    path.write_text(json.dumps(payload, cls=MontyEncoder))
    return path


def read_serialized(path: str | Path) -> tuple[jobflow.Flow, dict[str, Any] | None]:
    """The flow and study options written by :func:`write_serialized`.

    Raises
    ------
    InputError
        An unreadable file, or one this version did not write.
    """
    from jobflow import Flow
    from monty.json import MontyDecoder

    from softening.errors import InputError

    try:
        payload = json.loads(Path(path).read_text(), cls=MontyDecoder)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the serialised flow {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a flow written by softening ({FORMAT})")
    flow = payload["flow"]
    if not isinstance(flow, Flow):
        flow = Flow.from_dict(flow)
    return flow, payload.get("study")


@dataclass
class SerializedRun:
    """What :func:`run_serialized` did.

    Attributes
    ----------
    run
        Which jobs finished, failed or never ran.
    failures
        One line per failed or unrun job.
    outcome
        For a study: its documents and summary.
    parity
        For a study: the parity plot written, if any.
    """

    run: FlowRun
    failures: list[str] = field(default_factory=list)
    outcome: StudyOutcome | None = None
    parity: Path | None = None


def run_serialized(
    path: str | Path,
    store: str | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
) -> SerializedRun:
    """Run the flow of a serialised file into ``store``; for a study, write its summary.

    Parameters
    ----------
    path
        The file written by :func:`write_serialized`.
    store
        Store spec (default: the ``store`` setting).
    out
        A study's summary folder (default ``./softening-results``); VASP jobs run in
        ``<out>/vasp-runs``.
    workers
        Jobs at once (default: from the allocation's cores and memory).

    Raises
    ------
    SofteningError
        An unreadable file or store; for a study, no result at all.
    """
    from softening.execution.local import flow_outputs, run_flow
    from softening.stores import get_job_store
    from softening.workflows.inputs import job_folders
    from softening.workflows.study import StudyOptions, collect_study

    flow, study = read_serialized(path)
    options = StudyOptions(**study) if study is not None else None
    out = Path(out) if out is not None else Path("softening-results")
    job_store = get_job_store(store)

    def done(name: str, ok: bool, seconds: float) -> None:
        logger.info("%s %s in %.1f s", name, "finished" if ok else "failed", seconds)

    folders = job_folders(options.reference, out) if options is not None else {}
    result = run_flow(flow, job_store, workers=workers, on_job_done=done, **folders)
    failures = result.failed + [f"{name}: not run" for name in result.not_run]
    ran = SerializedRun(run=result, failures=failures)
    if options is not None:
        outputs = flow_outputs(flow, job_store)
        ran.outcome = collect_study(flow, job_store, outputs, failures, options)
        ran.parity = ran.outcome.save(out)
    return ran


def main(argv: list[str] | None = None) -> int:
    """The command line of this module; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m softening.hpc.run_serialized",
        description="Run a flow serialised by `softening submit --single-job` into a store.",
    )
    parser.add_argument("flow", type=Path, help="The serialised flow (flow.json).")
    parser.add_argument("--store", help="Result store spec. [default: the store setting]")
    parser.add_argument("--out", type=Path, help="Folder of a study's summary and plots.")
    parser.add_argument("--workers", type=int, help="Jobs run at once.")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    logging.getLogger("softening").setLevel(logging.INFO)
    try:
        ran = run_serialized(args.flow, store=args.store, out=args.out, workers=args.workers)
        for f in ran.failures:
            print(f"failed: {f}", file=sys.stderr)
        if ran.outcome is None:
            return 1 if ran.failures else 0
        print(strict_dumps(ran.outcome.summary))
        if not ran.outcome.docs:
            raise SofteningError("no result: every material failed (see the messages above)")
        return 0
    except SofteningError as exc:
        from softening.settings import redact

        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover - the batch script's entry point
    sys.exit(main())
