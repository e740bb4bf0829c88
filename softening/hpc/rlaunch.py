"""The worker a queue job runs: ``python -m softening.hpc.rlaunch -l LAUNCHPAD ... singleshot``.

FireWorks' own ``rlaunch`` reads ``launchpad.yaml`` verbatim (no ``${VAR}``) and knows nothing of the
package's store; this entry point loads the LaunchPad with the package's loader, runs FireWorks'
rocket launcher with a FireWorker of the given categories (its ``env`` records the SLURM job id,
which lost-run detection compares with SLURM), and, given ``--qadapter``, finally submits the jobs
its work made READY, so that a flow proceeds from queue job to queue job.

Usage::

    python -m softening.hpc.rlaunch -l launchpad.yaml [-c umlip,dft] [--qadapter q.yaml]
        [--launch-dir DIR] singleshot [--fw_id N]
    python -m softening.hpc.rlaunch -l launchpad.yaml [-c ...] rapidfire
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from softening.errors import SofteningError

__all__ = ["main"]

logger = logging.getLogger("softening.hpc.rlaunch")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m softening.hpc.rlaunch", description=__doc__)
    p.add_argument("-l", "--launchpad", required=True, help="LaunchPad YAML (with ${VAR}s).")
    p.add_argument(
        "-c", "--categories", default="umlip,dft", help="Comma-separated FireWorks categories."
    )
    p.add_argument("--qadapter", help="Queue adapter file: queue the jobs made READY on exit.")
    p.add_argument("--launch-dir", help="Parent of the launch folders of queued jobs.")
    sub = p.add_subparsers(dest="mode", required=True)
    single = sub.add_parser("singleshot", help="Run one job (the reserved one with --fw_id).")
    single.add_argument("--fw_id", type=int, default=None)
    sub.add_parser("rapidfire", help="Run READY jobs of the categories until none is READY.")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the worker; returns the exit status."""
    args = _parser().parse_args(argv)
    # FireWorks and jobflow log through handlers of their own; the package's loggers need one.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    pkg = logging.getLogger("softening")
    pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import launch_rocket
    from fireworks.utilities.fw_utilities import create_datestamp_dir

    from softening.hpc.config import load_launchpad, load_qadapters, worker_name
    from softening.hpc.submit import launch_ready

    try:
        lp = load_launchpad(args.launchpad)
    except SofteningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cats = [c.strip() for c in args.categories.split(",") if c.strip()]
    env = {"slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    fworker = FWorker(name=worker_name(), category=cats[0] if len(cats) == 1 else cats, env=env)
    if args.mode == "singleshot":
        launch_rocket(lp, fworker, fw_id=args.fw_id, strm_lvl="INFO")
    else:
        here = os.getcwd()
        while lp.run_exists(fworker):
            os.chdir(here)
            os.chdir(create_datestamp_dir(here, logger, prefix="launcher_"))
            launch_rocket(lp, fworker, strm_lvl="INFO")
        os.chdir(here)
    if args.qadapter:
        launch_dir = Path(args.launch_dir or Path.cwd().parent.parent)
        try:
            groups = load_qadapters(args.qadapter, args.launchpad, launch_dir)
            for q in launch_ready(lp, groups, launch_dir):
                logger.info("queued SLURM job %s (%s) for %s", q.slurm_job_id, q.group, q.fw_ids)
        except SofteningError as exc:
            print(f"error: could not queue the next jobs: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - the queue script's entry point
    sys.exit(main())
