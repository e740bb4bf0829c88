"""Flow -> FireWorks workflow, and the Firetask that runs one jobflow job on a worker.

How the result store reaches the workers: jobflow's own ``JobFiretask`` either serializes a whole
``JobStore`` into the LaunchPad (a MongoDB password would then sit in every Firework) or falls back
to the worker's ``jobflow`` settings (not the package's). :class:`SofteningJobFiretask` instead
carries a credential-free *store spec* (an absolute folder, ``mongodb``, a URI without password, or
a store config file) and opens it on the worker with the package's one store factory,
:func:`softening.stores.get_job_store`; ``mongodb`` then takes host and credentials from the
worker's ``SOFTENING_MONGO_*`` environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireworks import FWAction, Workflow, explicit_serialize
from jobflow.managers.fireworks import JobFiretask, flow_to_workflow

from softening.errors import InputError
from softening.hpc.config import DFT_CATEGORY, UMLIP_CATEGORY

if TYPE_CHECKING:
    import jobflow

__all__ = ["SofteningJobFiretask", "job_category", "to_workflow", "worker_store_spec"]


@explicit_serialize
class SofteningJobFiretask(JobFiretask):
    """Run a jobflow job against the store named by ``store_spec``, resolved on the worker.

    Other Parameters
    ----------------
    job : Job
        The jobflow job.
    store_spec : str, optional
        A store spec for :func:`softening.stores.get_job_store`; absent: the worker's ``store``
        setting (``SOFTENING_STORE``).
    """

    required_params = ("job",)
    optional_params = ("store_spec",)

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        """Open the store, run the job (jobflow's task does that), re-wrap any new jobs."""
        from softening.stores import get_job_store

        # jobflow's task reads self["store"]; it exists only while the job runs so that nothing
        # serializes the opened store (with its credentials) into the LaunchPad, e.g. the task copy
        # FireWorks stores with a failure.
        self["store"] = get_job_store(self.get("store_spec"))
        try:
            action = super().run_task(fw_spec)
        finally:
            self.pop("store", None)
        category = fw_spec.get("_category")
        for wf in [*(action.detours or []), *(action.additions or [])]:
            _rewrap(wf, self.get("store_spec"), category)
        return action


def job_category(job: jobflow.Job) -> str:
    """``dft`` for reference jobs (embedded or VASP), ``umlip`` for everything else."""
    from softening.makers.reference import ReferenceStaticMaker
    from softening.makers.vasp import VaspReferenceMaker

    maker = job.maker
    if isinstance(maker, ReferenceStaticMaker | VaspReferenceMaker):
        return DFT_CATEGORY
    return UMLIP_CATEGORY


def worker_store_spec(store: str | Path | None = None) -> str:
    """The store spec written into the workflow: absolute, and free of credentials.

    Parameters
    ----------
    store
        A store spec, or ``None`` for the ``store`` setting.

    Raises
    ------
    InputError
        For a URI with a password: it would be stored in the LaunchPad in clear.
    """
    from softening.stores.factory import resolve_store_spec, store_kind

    spec = resolve_store_spec(store).strip()
    kind = store_kind(spec)
    if kind in ("embedded", "config"):
        # Workers run in their own launch folders: a relative path would point elsewhere.
        return str(Path(spec).expanduser().resolve())
    if spec != "mongodb":
        netloc = spec.split("://", 1)[1].split("/", 1)[0]
        if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
            raise InputError(
                "the store URI holds a password, which would be written into the LaunchPad: give "
                "--store mongodb (or a URI without password) and set SOFTENING_MONGO_USERNAME / "
                "SOFTENING_MONGO_PASSWORD on the workers"
            )
    return spec


def to_workflow(
    flow: jobflow.Flow | jobflow.Job,
    store_spec: str | None,
    category: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Workflow:
    """A FireWorks workflow of ``flow`` whose jobs write to ``store_spec``.

    Converted by jobflow's :func:`~jobflow.managers.fireworks.flow_to_workflow` (links,
    ``_allow_fizzled_parents`` for jobs that tolerate missing inputs), then every task becomes a
    :class:`SofteningJobFiretask` and every Firework gets its category in ``spec._category``.

    Parameters
    ----------
    flow
        The flow (or job).
    store_spec
        From :func:`worker_store_spec`, or ``None`` for the worker's ``store`` setting.
    category
        One category for all Fireworks (new jobs a job creates inherit its category); ``None``:
        per job, by :func:`job_category`.
    metadata
        Workflow metadata.
    """
    wf = flow_to_workflow(flow, store=None, metadata=metadata or {})
    _rewrap(wf, store_spec, category)
    return wf


def _rewrap(wf: Workflow, store_spec: str | None, category: str | None) -> None:
    for fw in wf.fws:
        tasks = []
        for t in fw.tasks:
            if isinstance(t, JobFiretask) and not isinstance(t, SofteningJobFiretask):
                job = t["job"]
                fw.spec.setdefault("_category", category or job_category(job))
                kwargs = {"job": job}
                if store_spec is not None:
                    kwargs["store_spec"] = store_spec
                t = SofteningJobFiretask(**kwargs)
            tasks.append(t)
        fw.tasks = tasks
