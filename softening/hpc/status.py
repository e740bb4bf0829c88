"""Flows (FireWorks workflows) and their jobs (Fireworks) with states, for ``softening status``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from softening.errors import InputError

if TYPE_CHECKING:
    from fireworks import LaunchPad

__all__ = ["FW_STATES", "flow_query", "flow_status", "launch_slurm_id", "summary_state"]

#: FireWorks states of a job.
FW_STATES = (
    "ARCHIVED",
    "FIZZLED",
    "DEFUSED",
    "PAUSED",
    "WAITING",
    "READY",
    "RESERVED",
    "RUNNING",
    "COMPLETED",
)


def flow_query(lp: LaunchPad, flow: str | int | None) -> dict[str, Any]:
    """A workflows-collection query for ``flow``: a Firework id in it, or a jobflow flow uuid.

    Raises
    ------
    InputError
        When no workflow matches.
    """
    if flow is None:
        return {}
    text = str(flow).strip()
    if text.isdigit():
        query: dict[str, Any] = {"nodes": int(text)}
    else:
        query = {"metadata.flow_uuid": text}
    if lp.workflows.count_documents(query) == 0:
        raise InputError(
            f"no flow {text} in the LaunchPad (give a flow id from `softening status`)"
        )
    return query


def launch_slurm_id(launch: dict[str, Any]) -> str | None:
    """The SLURM job id of a launch: its reservation id, else the id its worker recorded."""
    for entry in reversed(launch.get("state_history") or []):
        if entry.get("reservation_id"):
            return str(entry["reservation_id"])
    env = (launch.get("fworker") or {}).get("env") or {}
    return str(env["slurm_job_id"]) if env.get("slurm_job_id") else None


def flow_status(
    lp: LaunchPad, state: str | None = None, flow: str | int | None = None
) -> list[dict[str, Any]]:
    """The flows of the LaunchPad with their jobs, newest flow first.

    Parameters
    ----------
    lp
        The LaunchPad.
    state
        Keep only jobs in this state (``FIZZLED``, ``RUNNING``...), and flows that have one.
    flow
        One flow: a Firework id in it, or the jobflow flow uuid.

    Returns
    -------
    list[dict]
        ``{"flow_id", "flow_uuid", "name", "state", "fireworks_state", "created_on",
        "updated_on", "counts",
        "jobs": [{"fw_id", "name", "category", "state", "slurm_job_id", "launch_dir",
        "job_uuid", "updated_on"}]}`` per flow; ``counts`` is ``{state: number}`` over all its jobs,
        ``state`` is :func:`summary_state` of them (FireWorks' own in ``fireworks_state``).
    """
    if state is not None:
        state = state.upper()
        if state not in FW_STATES:
            raise InputError(f"unknown state {state!r}; one of {', '.join(FW_STATES)}")
    query = flow_query(lp, flow)
    flows = []
    for wf in lp.workflows.find(query).sort("created_on", -1):
        nodes = list(wf["nodes"])
        fws = list(
            lp.fireworks.find(
                {"fw_id": {"$in": nodes}},
                {
                    "fw_id": 1,
                    "name": 1,
                    "state": 1,
                    "launches": 1,
                    "spec._category": 1,
                    # Only the job uuid: the task holds the whole serialized job (structures...).
                    "spec._tasks.job.uuid": 1,
                    "updated_on": 1,
                },
            )
        )
        launch_ids = [lid for fw in fws for lid in fw.get("launches", [])]
        launches = {
            d["launch_id"]: d
            for d in lp.launches.find(
                {"launch_id": {"$in": launch_ids}},
                {"launch_id": 1, "state_history": 1, "fworker": 1, "launch_dir": 1},
            )
        }
        counts: dict[str, int] = {}
        jobs = []
        for fw in sorted(fws, key=lambda d: d["fw_id"]):
            counts[fw["state"]] = counts.get(fw["state"], 0) + 1
            if state is not None and fw["state"] != state:
                continue
            last = launches.get(fw["launches"][-1]) if fw.get("launches") else None
            jobs.append(
                {
                    "fw_id": fw["fw_id"],
                    "name": fw.get("name", ""),
                    "category": (fw.get("spec") or {}).get("_category"),
                    "state": fw["state"],
                    "slurm_job_id": launch_slurm_id(last) if last else None,
                    "launch_dir": last.get("launch_dir") if last else None,
                    "job_uuid": _job_uuid(fw),
                    "updated_on": str(fw.get("updated_on", "")),
                }
            )
        if state is not None and not jobs:
            continue
        flows.append(
            {
                "flow_id": min(nodes),
                "flow_uuid": (wf.get("metadata") or {}).get("flow_uuid"),
                "name": wf.get("name", ""),
                "state": summary_state(counts),
                "fireworks_state": wf.get("state"),
                "created_on": str(wf.get("created_on", "")),
                "updated_on": str(wf.get("updated_on", "")),
                "counts": counts,
                "jobs": jobs,
            }
        )
    return flows


def summary_state(counts: dict[str, int]) -> str:
    """One state for a flow from its jobs' states: the one that needs attention first.

    FireWorks calls a workflow COMPLETED once its last jobs complete, even when a job that is
    allowed to fail (a reference frame) FIZZLED on the way; here any FIZZLED job makes the flow
    FIZZLED, so that it shows up for ``rerun --failed``.
    """
    for state in ("FIZZLED", "RUNNING", "RESERVED", "READY", "PAUSED", "DEFUSED", "WAITING"):
        if counts.get(state):
            return state
    return "COMPLETED" if counts.get("COMPLETED") else "ARCHIVED" if counts else "EMPTY"


def _job_uuid(fw: dict[str, Any]) -> str | None:
    tasks = (fw.get("spec") or {}).get("_tasks") or []
    for t in tasks:
        job = t.get("job") if isinstance(t, dict) else None
        if isinstance(job, dict) and job.get("uuid"):
            return job["uuid"]
    return None
