"""Submission: a flow into the LaunchPad, READY jobs into the SLURM queue, or one ``--single-job``.

Queue jobs (FireWorks' queue launcher, :func:`fireworks.queue.queue_launcher.launch_rocket_to_queue`):

- ``rocket_launch`` with ``singleshot`` (the default): *reservation mode*, one SLURM job per
  FireWorks job, its SLURM id stored as the launch's reservation id (what lost-run detection
  compares with SLURM);
- ``rapidfire``: one SLURM job per queue group runs every READY job of its categories in turn.

Children become READY only when their parents complete, so every queue job, before it exits,
submits what its work made READY (``--qadapter`` of :mod:`softening.hpc.rlaunch`); no daemon on the
login node is needed. ``softening submit --launch`` without structures queues what is READY now.

``--single-job`` (no MongoDB): the flow is written as JSON into a launch folder and one SLURM job
runs it there (:mod:`softening.hpc.run_serialized`) with the parallel executor.
"""

from __future__ import annotations

import datetime
import logging
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softening.errors import SofteningError
from softening.hpc.config import CATEGORIES, QueueGroup, worker_name
from softening.hpc.firetask import to_workflow, worker_store_spec

if TYPE_CHECKING:
    import jobflow
    from fireworks import LaunchPad

__all__ = [
    "QueuedJob",
    "SingleJob",
    "SubmitResult",
    "launch_ready",
    "submit_flow",
    "submit_single_job",
]

logger = logging.getLogger(__name__)


@dataclass
class QueuedJob:
    """One queue job submitted by the package.

    Attributes
    ----------
    slurm_job_id
        SLURM's id.
    group
        The queue group (``umlip``, ``dft`` or ``all``).
    fw_ids
        The FireWorks jobs reserved for it (reservation mode; empty for ``rapidfire``).
    """

    slurm_job_id: str
    group: str
    fw_ids: list[int] = field(default_factory=list)


@dataclass
class SubmitResult:
    """What ``softening submit`` did.

    Attributes
    ----------
    flow_id
        The FireWorks id of the workflow (its first Firework's id; ``status --flow`` takes it).
    flow_uuid
        The jobflow flow's uuid.
    name
        Workflow name.
    fw_ids
        ``{job uuid: fw_id}``.
    categories
        ``{category: number of jobs}``.
    store
        The store spec the workers write to.
    queued
        Queue jobs submitted with ``--launch``.
    """

    flow_id: int
    flow_uuid: str
    name: str
    fw_ids: dict[str, int]
    categories: dict[str, int]
    store: str
    queued: list[QueuedJob] = field(default_factory=list)


def submit_flow(
    lp: LaunchPad,
    flow: jobflow.Flow,
    store: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> SubmitResult:
    """Convert ``flow`` (jobflow's ``flow_to_workflow``) and add it to the LaunchPad.

    Parameters
    ----------
    lp
        The LaunchPad.
    flow
        The flow (e.g. from :class:`softening.workflows.SofteningFlowMaker`).
    store
        Store spec the jobs write to (default: the ``store`` setting), made absolute; a URI with a
        password is refused (it would be stored in clear in the LaunchPad).
    metadata
        Extra workflow metadata.
    """
    spec = worker_store_spec(store)
    _initialize_if_new(lp)
    meta = {"softening": True, "flow_uuid": flow.uuid, **(metadata or {})}
    wf = to_workflow(flow, spec, metadata=meta)
    old_to_new = lp.add_wf(wf)
    uuid_to_fw = {}
    counts = dict.fromkeys(CATEGORIES, 0)
    for fw in wf.fws:
        job = fw.tasks[0]["job"]
        uuid_to_fw[job.uuid] = old_to_new.get(fw.fw_id, fw.fw_id)
        cat = fw.spec.get("_category")
        counts[cat] = counts.get(cat, 0) + 1
    return SubmitResult(
        flow_id=min(uuid_to_fw.values()),
        flow_uuid=flow.uuid,
        name=wf.name,
        fw_ids=uuid_to_fw,
        categories=counts,
        store=spec,
    )


def _initialize_if_new(lp: LaunchPad) -> None:
    """Set up the id counters of a new, empty FireWorks database (what ``lpad reset`` does)."""
    if lp.fw_id_assigner.count_documents({}) == 0:
        if lp.fireworks.count_documents({}) or lp.workflows.count_documents({}):
            raise SofteningError(
                "the LaunchPad database holds Fireworks but no id counters: repair it, or use "
                "another database (SOFTENING_LAUNCHPAD_DATABASE)"
            )
        lp.reset(None, require_password=False, max_reset_wo_password=0)


def launch_dir_default() -> Path:
    """Where queue scripts and launch folders go by default: ``./softening-launches``."""
    return Path("softening-launches").resolve()


def launch_ready(
    lp: LaunchPad,
    groups: list[QueueGroup],
    launch_dir: str | Path,
    max_jobs: int = 0,
) -> list[QueuedJob]:
    """Submit the READY FireWorks jobs to the queue, per queue group.

    Parameters
    ----------
    lp
        The LaunchPad.
    groups
        From :func:`softening.hpc.config.load_qadapters`.
    launch_dir
        Parent of the launch folders (one ``block_*`` folder per call, one ``launcher_*`` per queue
        job); created if missing.
    max_jobs
        Stop after this many queue jobs (0: no limit).

    Returns
    -------
    list[QueuedJob]
        The queue jobs submitted (none when nothing is READY).

    Raises
    ------
    SofteningError
        When ``sbatch`` refuses a script (the reservation is then released).
    """
    base = Path(launch_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # FireWorks' queue launcher uses monty's deprecated `cd`: not the user's concern.
        warnings.simplefilter("ignore", FutureWarning)
        return _launch_groups(lp, groups, base, max_jobs)


def _launch_groups(
    lp: LaunchPad, groups: list[QueueGroup], base: Path, max_jobs: int
) -> list[QueuedJob]:
    from fireworks import FWorker
    from fireworks.queue.queue_launcher import launch_rocket_to_queue
    from fireworks.utilities.fw_utilities import create_datestamp_dir

    queued: list[QueuedJob] = []
    block: Path | None = None
    for g in groups:
        cats = g.categories[0] if len(g.categories) == 1 else list(g.categories)
        fworker = FWorker(name=worker_name(), category=cats)
        adapter = g.adapter()
        while lp.run_exists(fworker) and (not max_jobs or len(queued) < max_jobs):
            if block is None:
                block = Path(create_datestamp_dir(str(base), logger, prefix="block_"))
            rid = launch_rocket_to_queue(
                lp,
                fworker,
                adapter,
                str(block),
                reserve=g.reserve,
                strm_lvl="ERROR",
                create_launcher_dir=True,
            )
            if rid is None:
                break  # nothing READY after all
            if not rid:
                raise SofteningError(
                    f"the queue refused the {g.name} job script (see the error above; the script "
                    f"is in {block})"
                )
            fw_ids = sorted(lp.get_fw_ids_from_reservation_id(rid)) if g.reserve else []
            queued.append(QueuedJob(str(rid), g.name, fw_ids))
            if not g.reserve:
                break  # one rapidfire worker per group runs all its READY jobs
    return queued


# ---- --single-job ---------------------------------------------------------------------------------


@dataclass
class SingleJob:
    """The ``--single-job`` submission.

    Attributes
    ----------
    script
        The SLURM script written.
    slurm_job_id
        SLURM's id.
    store
        The store the run writes to.
    out
        Folder of the run's summary and plots (``summary.json``, ``parity.png``).
    flow_file
        The serialised flow the script runs (:mod:`softening.hpc.run_serialized`).
    """

    script: Path
    slurm_job_id: str
    store: str
    out: Path
    flow_file: Path | None = None


def submit_single_job(
    flow: jobflow.Flow,
    store: str | None,
    group: QueueGroup | None,
    launch_dir: str | Path,
    study: dict[str, Any] | None = None,
) -> SingleJob:
    """Write ``flow`` into a new launch folder, and sbatch one script that runs it there.

    For users without a MongoDB for FireWorks: the whole flow, serialised (jobflow objects are
    JSON-serialisable), runs inside one allocation with the parallel executor
    (:func:`softening.execution.local.run_flow`), its results in the store (an embedded folder on
    the shared filesystem by default). Check everything before calling this: nothing is rebuilt on the
    compute node.

    Parameters
    ----------
    flow
        The flow, e.g. ``StudyOptions(...).build(files, local_checks=False).flow``.
    store
        Store spec (default: the ``store`` setting), made absolute and credential-free.
    group
        Queue parameters (partition, walltime, account...; the ``rocket_launch`` is replaced), or
        ``None`` for one node, one task and no walltime.
    launch_dir
        Parent folder of the job's folder (script, ``flow.json``, SLURM output, ``results/``).
    study
        The :class:`~softening.workflows.study.StudyOptions` of a study flow (as a dict): the job
        then also writes the ``softening run`` summary and parity plot into ``results/``.
    """
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

    from softening.hpc.run_serialized import write_serialized
    from softening.hpc.slurm import sbatch

    spec = worker_store_spec(store)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f")
    folder = Path(launch_dir).resolve() / f"single_{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "results"
    flow_file = write_serialized(folder / "flow.json", flow, study=study)
    cmd = [
        sys.executable,
        "-m",
        "softening.hpc.run_serialized",
        str(flow_file),
        "--store",
        spec,
        "--out",
        str(out),
    ]
    params: dict[str, Any] = dict(group.params) if group else {"nodes": 1, "ntasks": 1}
    params.pop("q_type", None)
    template = params.pop("template_file", None)
    params.setdefault("job_name", "softening")
    params["rocket_launch"] = shlex.join(cmd)
    adapter = CommonAdapter("SLURM", template_file=template, **params)
    script = folder / "softening-run.sh"
    script.write_text(adapter.get_script_str(str(folder)))
    job_id = sbatch(script, cwd=folder)
    return SingleJob(script=script, slurm_job_id=job_id, store=spec, out=out, flow_file=flow_file)
