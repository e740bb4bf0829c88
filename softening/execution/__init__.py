"""Running flows on this machine: the local executor and the sizing of its worker processes.

Not HPC: a workstation, or the inside of one SLURM allocation (what a ``--single-job`` script runs).
FireWorks and SLURM stay in :mod:`softening.hpc`, which uses this package.

- :mod:`softening.execution.local`: :func:`~softening.execution.local.run_flow` (a flow's jobs side
  by side in worker processes, outputs into the store) and
  :func:`~softening.execution.local.flow_outputs` (a finished flow's outputs as documents).
- :mod:`softening.execution.resources`: how many workers and threads fit the allocated cores and
  the memory.
"""

from __future__ import annotations

from softening.execution.local import FlowRun, flow_outputs, run_flow
from softening.execution.resources import resolve_workers
from softening.processes import allocated_cores, default_workers

__all__ = [
    "FlowRun",
    "allocated_cores",
    "default_workers",
    "flow_outputs",
    "resolve_workers",
    "run_flow",
]
