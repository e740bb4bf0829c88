"""Failed and lost runs, for ``softening rerun --failed``.

A job is rerun when it is FIZZLED (its task raised) or *lost*: its launch is RESERVED or RUNNING in
the LaunchPad but nothing runs it any more. FireWorks finds lost runs by stale heartbeats
(:meth:`LaunchPad.detect_lostruns`, 4 h by default); the package also asks SLURM about the queue job
of each RESERVED or RUNNING launch (its reservation id, or the job id the worker recorded) and calls
the launch lost as soon as SLURM says that job has ended (cancelled, timed out, node failure...).

A lost RUNNING launch is marked FIZZLED and its job rerun; a lost RESERVED launch (its queue job
ended before starting the worker) has its reservation cancelled, which makes the job READY again.
COMPLETED jobs are never selected; the jobs that depend on a rerun job are reset with it
(FireWorks' rerun), which is what completes a comparison that had missing frames.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from softening.hpc.slurm import slurm_available, slurm_job_state
from softening.hpc.status import flow_query, launch_slurm_id

if TYPE_CHECKING:
    from fireworks import LaunchPad

__all__ = ["LostRun", "RerunPlan", "apply_rerun", "find_lost_runs", "plan_rerun", "select_fw_ids"]


@dataclass
class LostRun:
    """A launch that is RESERVED or RUNNING in the LaunchPad while nothing runs it.

    Attributes
    ----------
    launch_id, fw_id
        FireWorks ids.
    name
        The job's name.
    state
        The launch's state in the LaunchPad (``RUNNING`` or ``RESERVED``).
    slurm_job_id
        The queue job that was to run it (``None`` when unknown).
    slurm_state
        SLURM's state of that job (``CANCELLED``, ``TIMEOUT``...; ``None`` for heartbeat detection).
    detected_by
        ``slurm:<squeue|scontrol|jobcomp|sacct|none>`` or ``heartbeat``.
    """

    launch_id: int
    fw_id: int
    name: str
    state: str
    slurm_job_id: str | None
    slurm_state: str | None
    detected_by: str


@dataclass
class RerunPlan:
    """What ``rerun --failed`` would do.

    Attributes
    ----------
    fizzled
        ``{"fw_id", "name", "flow_id", "slurm_job_id"}`` of the FIZZLED jobs selected.
    lost
        The lost runs selected.
    unchecked
        RESERVED / RUNNING launches SLURM could not be asked about (``{"fw_id", "name",
        "slurm_job_id", "reason"}``): left alone.
    """

    fizzled: list[dict[str, Any]] = field(default_factory=list)
    lost: list[LostRun] = field(default_factory=list)
    unchecked: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fw_ids(self) -> list[int]:
        """Every job this plan reruns."""
        return sorted({d["fw_id"] for d in self.fizzled} | {r.fw_id for r in self.lost})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "fizzled": self.fizzled,
            "lost": [asdict(r) for r in self.lost],
            "unchecked": self.unchecked,
            "fw_ids": self.fw_ids,
        }


def select_fw_ids(
    lp: LaunchPad,
    flow: str | int | None = None,
    name: str | None = None,
    fw_ids: list[int] | None = None,
) -> set[int] | None:
    """The Firework ids the filters allow (``None``: no filter, all of them).

    ``name`` is a glob (``reference*Cu*``) or, without wildcards, a substring of the job name.
    """
    if flow is None and name is None and not fw_ids:
        return None
    query: dict[str, Any] = {}
    if flow is not None:
        nodes = [
            n for wf in lp.workflows.find(flow_query(lp, flow), {"nodes": 1}) for n in wf["nodes"]
        ]
        query["fw_id"] = {"$in": nodes}
    if fw_ids:
        wanted = [int(i) for i in fw_ids]
        if "fw_id" in query:
            wanted = sorted(set(wanted) & set(query["fw_id"]["$in"]))
        query["fw_id"] = {"$in": wanted}
    ids = set()
    for d in lp.fireworks.find(query, {"fw_id": 1, "name": 1}):
        if name is None or _name_matches(d.get("name", ""), name):
            ids.add(d["fw_id"])
    return ids


def _name_matches(job_name: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(job_name, pattern)
    return pattern in job_name


def find_lost_runs(
    lp: LaunchPad,
    fw_ids: set[int] | None = None,
    expiration_secs: int | None = None,
    use_slurm: bool = True,
) -> tuple[list[LostRun], list[dict[str, Any]]]:
    """Lost runs by heartbeat (FireWorks) and by SLURM's state of their queue jobs.

    Returns
    -------
    tuple[list[LostRun], list[dict]]
        The lost runs, and the launches SLURM could not be asked about.
    """
    from fireworks.fw_config import RUN_EXPIRATION_SECS

    query = {"fw_id": {"$in": sorted(fw_ids)}} if fw_ids is not None else None
    lost: dict[int, LostRun] = {}
    names = {
        d["fw_id"]: d.get("name", "")
        for d in lp.fireworks.find(query or {}, {"fw_id": 1, "name": 1})
    }
    launch_ids, _, _ = lp.detect_lostruns(
        expiration_secs=expiration_secs or RUN_EXPIRATION_SECS, query=query
    )
    for d in lp.launches.find({"launch_id": {"$in": launch_ids}}):
        lost[d["launch_id"]] = LostRun(
            d["launch_id"],
            d["fw_id"],
            names.get(d["fw_id"], ""),
            d["state"],
            launch_slurm_id(d),
            None,
            "heartbeat",
        )
    unchecked: list[dict[str, Any]] = []
    active_fws = {
        d["fw_id"]
        for d in lp.fireworks.find(
            {**(query or {}), "state": {"$in": ["RESERVED", "RUNNING"]}}, {"fw_id": 1}
        )
    }
    launch_query: dict[str, Any] = {
        "state": {"$in": ["RESERVED", "RUNNING"]},
        "fw_id": {"$in": sorted(active_fws)},
    }
    for d in lp.launches.find(launch_query):
        if d["launch_id"] in lost:
            continue
        jid = launch_slurm_id(d)
        if jid is None:
            continue  # not run through a queue the package knows (e.g. a local rlaunch)
        if not use_slurm:
            unchecked.append(_unchecked(d, names, jid, "SLURM commands are not available"))
            continue
        st = slurm_job_state(jid)
        if st.state == "UNKNOWN":
            unchecked.append(_unchecked(d, names, jid, "the SLURM controller did not answer"))
        elif st.ended:
            lost[d["launch_id"]] = LostRun(
                d["launch_id"],
                d["fw_id"],
                names.get(d["fw_id"], ""),
                d["state"],
                jid,
                st.state,
                f"slurm:{st.source}",
            )
    return sorted(lost.values(), key=lambda r: r.fw_id), unchecked


def _unchecked(d: dict[str, Any], names: dict[int, str], jid: str, reason: str) -> dict[str, Any]:
    return {
        "fw_id": d["fw_id"],
        "name": names.get(d["fw_id"], ""),
        "slurm_job_id": jid,
        "reason": reason,
    }


def plan_rerun(
    lp: LaunchPad,
    flow: str | int | None = None,
    name: str | None = None,
    fw_ids: list[int] | None = None,
    expiration_secs: int | None = None,
) -> RerunPlan:
    """The FIZZLED and lost jobs the filters select (nothing is changed)."""
    allowed = select_fw_ids(lp, flow, name, fw_ids)
    lost, unchecked = find_lost_runs(lp, allowed, expiration_secs, use_slurm=slurm_available())
    query: dict[str, Any] = {"state": "FIZZLED"}
    if allowed is not None:
        query["fw_id"] = {"$in": sorted(allowed)}
    flow_of = {}
    for wf in lp.workflows.find({}, {"nodes": 1}):
        for n in wf["nodes"]:
            flow_of[n] = min(wf["nodes"])
    fizzled = []
    for d in lp.fireworks.find(query, {"fw_id": 1, "name": 1, "launches": 1}).sort("fw_id", 1):
        last = d.get("launches") or []
        launch = lp.launches.find_one({"launch_id": last[-1]}) if last else None
        fizzled.append(
            {
                "fw_id": d["fw_id"],
                "name": d.get("name", ""),
                "flow_id": flow_of.get(d["fw_id"]),
                "slurm_job_id": launch_slurm_id(launch) if launch else None,
            }
        )
    return RerunPlan(fizzled=fizzled, lost=lost, unchecked=unchecked)


def apply_rerun(lp: LaunchPad, plan: RerunPlan) -> list[int]:
    """Mark the lost runs, rerun every selected job; returns the Firework ids rerun.

    FireWorks resets the jobs that depend on them too (they wait for the rerun jobs again).
    """
    reset: set[int] = set()
    to_rerun = {d["fw_id"] for d in plan.fizzled}
    for r in plan.lost:
        launch = lp.launches.find_one({"launch_id": r.launch_id}, {"state": 1})
        if launch is None:
            continue
        if launch["state"] == "RESERVED":
            # The queue job never started the worker: release the reservation (job READY again).
            lp.cancel_reservation(r.launch_id)
            reset.add(r.fw_id)
        elif launch["state"] == "RUNNING":
            lp.mark_fizzled(r.launch_id)
            to_rerun.add(r.fw_id)
    for fw_id in sorted(to_rerun):
        doc = lp.fireworks.find_one({"fw_id": fw_id}, {"state": 1})
        if doc and doc["state"] == "FIZZLED":
            reset.update(lp.rerun_fw(fw_id))
    return sorted(reset)
