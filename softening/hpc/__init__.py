"""FireWorks and SLURM glue: the LaunchPad, queue adapters, submission, status, reruns, lost runs.

Layering: only the command line imports this package; it imports ``workflows``, ``execution``
(the local executor), ``makers`` and ``stores`` below it, never the other way round.

- :mod:`softening.hpc.config`: ``launchpad.yaml`` / ``qadapter_slurm.yaml`` loading with
  environment-variable expansion (no secret in a file).
- :mod:`softening.hpc.firetask`: the Firetask that runs a jobflow job against the result store the
  settings name (resolved on the worker, credentials never in the LaunchPad).
- :mod:`softening.hpc.submit`: flow -> FireWorks workflow with ``umlip`` / ``dft`` categories,
  queue submission, the ``--single-job`` script.
- :mod:`softening.hpc.run_serialized`: what a ``--single-job`` script runs: a serialised flow into
  the store, with the parallel executor (:mod:`softening.execution.local`).
- :mod:`softening.hpc.status`: flows and jobs with their states.
- :mod:`softening.hpc.rerun`: failed and lost runs (heartbeats, and SLURM's own view).
- :mod:`softening.hpc.slurm`: ``squeue`` / ``scontrol`` / jobcomp log / ``sacct`` / ``sbatch``.
- :mod:`softening.hpc.rlaunch`: the worker entry point a queue job runs.
"""

from __future__ import annotations

from softening.hpc.config import (
    CATEGORIES,
    DFT_CATEGORY,
    UMLIP_CATEGORY,
    QueueGroup,
    load_launchpad,
    load_qadapters,
    resolve_launchpad_path,
    resolve_qadapter_path,
)
from softening.hpc.firetask import to_workflow
from softening.hpc.rerun import LostRun, RerunPlan, apply_rerun, plan_rerun
from softening.hpc.slurm import SlurmJobState, slurm_job_state
from softening.hpc.status import flow_status
from softening.hpc.submit import (
    QueuedJob,
    SingleJob,
    SubmitResult,
    launch_ready,
    submit_flow,
    submit_single_job,
)

__all__ = [
    "CATEGORIES",
    "DFT_CATEGORY",
    "UMLIP_CATEGORY",
    "LostRun",
    "QueueGroup",
    "QueuedJob",
    "RerunPlan",
    "SingleJob",
    "SlurmJobState",
    "SubmitResult",
    "apply_rerun",
    "flow_status",
    "launch_ready",
    "load_launchpad",
    "load_qadapters",
    "plan_rerun",
    "resolve_launchpad_path",
    "resolve_qadapter_path",
    "slurm_job_state",
    "submit_flow",
    "submit_single_job",
    "to_workflow",
]
