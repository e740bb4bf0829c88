"""SLURM's own view of a job: ``squeue``, ``scontrol show job``, the jobcomp log, ``sacct``.

A job leaves ``squeue`` only once it has ended, so "not alive in ``squeue``" is the test for an
ended job; the other sources say how it ended. ``scontrol show job`` knows a job for ``MinJobAge``
seconds after it ends; the jobcomp log (``JobCompType=jobcomp/filetxt``, file ``JobCompLoc``) keeps
every ended job; ``sacct`` needs ``slurmdbd`` and is tried last (it may be absent).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from softening.errors import SofteningError

__all__ = [
    "ALIVE_STATES",
    "SlurmJobState",
    "jobcomp_log",
    "sbatch",
    "slurm_available",
    "slurm_job_state",
]

#: States of a job that still holds (or waits for) an allocation.
ALIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)

_TIMEOUT = 30


@dataclass(frozen=True)
class SlurmJobState:
    """What SLURM says about one job.

    Attributes
    ----------
    job_id
        The SLURM job id.
    state
        ``RUNNING``, ``PENDING``, ``COMPLETED``, ``CANCELLED``, ``FAILED``, ``TIMEOUT``,
        ``NODE_FAIL``, ``OUT_OF_MEMORY``..., ``ENDED`` when SLURM no longer lists the job and no
        source says how it ended, or ``UNKNOWN`` when SLURM could not be asked.
    source
        ``squeue``, ``scontrol``, ``jobcomp``, ``sacct``, or ``none``.
    """

    job_id: str
    state: str
    source: str

    @property
    def alive(self) -> bool:
        """The job is queued or running."""
        return self.state in ALIVE_STATES

    @property
    def ended(self) -> bool:
        """SLURM says the job has ended (``UNKNOWN`` is neither alive nor ended)."""
        return not self.alive and self.state != "UNKNOWN"


def slurm_available() -> bool:
    """``squeue`` and ``sbatch`` are on the PATH."""
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _base_state(text: str) -> str:
    # "CANCELLED by 0" (sacct), "RUNNING+" or "FAILED," variants: keep the word.
    m = re.match(r"[A-Z_]+", text.strip())
    return m.group(0) if m else text.strip()


def slurm_job_state(job_id: str | int) -> SlurmJobState:
    """SLURM's state of ``job_id``, asking ``squeue``, then ``scontrol``, the jobcomp log, ``sacct``.

    Parameters
    ----------
    job_id
        The SLURM job id (FireWorks' reservation id).

    Returns
    -------
    SlurmJobState
        ``UNKNOWN`` when ``squeue`` cannot reach the controller (then nothing is concluded).
    """
    jid = str(job_id).strip()
    res = _run(["squeue", "-h", "-t", "all", "-j", jid, "-o", "%i|%T"])
    if res is None:
        return SlurmJobState(jid, "UNKNOWN", "none")
    if res.returncode == 0:
        for line in res.stdout.splitlines():
            parts = line.strip().split("|")
            # An array or het job lists several lines; the one with our id is ours.
            if len(parts) == 2 and parts[0] == jid:
                # Within MinJobAge squeue also lists ended jobs (COMPLETED, CANCELLED...).
                return SlurmJobState(jid, _base_state(parts[1]), "squeue")
    elif "Invalid job id" not in (res.stderr + res.stdout):
        # The controller did not answer: we know nothing.
        return SlurmJobState(jid, "UNKNOWN", "none")
    # Not (or no longer) in the controller's memory: the job has ended. How?
    for probe in (_scontrol_state, _jobcomp_state, _sacct_state):
        state = probe(jid)
        if state is not None:
            return state
    return SlurmJobState(jid, "ENDED", "none")


def _scontrol_state(jid: str) -> SlurmJobState | None:
    res = _run(["scontrol", "-o", "show", "job", jid])
    if res is None or res.returncode != 0:
        return None
    m = re.search(r"\bJobState=(\S+)", res.stdout)
    return SlurmJobState(jid, _base_state(m.group(1)), "scontrol") if m else None


@lru_cache(maxsize=8)
def _config_value(key: str, conf: str | None) -> str | None:
    res = _run(["scontrol", "show", "config"])
    if res is None or res.returncode != 0:
        return None
    for line in res.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def jobcomp_log() -> Path | None:
    """The jobcomp text log (``JobCompLoc`` with ``JobCompType=jobcomp/filetxt``), if readable."""
    conf = os.environ.get("SLURM_CONF")
    if _config_value("JobCompType", conf) != "jobcomp/filetxt":
        return None
    loc = _config_value("JobCompLoc", conf)
    if not loc:
        return None
    p = Path(loc)
    return p if p.is_file() else None


def _jobcomp_state(jid: str) -> SlurmJobState | None:
    path = jobcomp_log()
    if path is None:
        return None
    found = None
    pattern = re.compile(rf"^JobId={re.escape(jid)}\s.*?\bJobState=(\S+)")
    try:
        with path.open(errors="replace") as fh:
            for line in fh:
                m = pattern.match(line)
                if m:
                    found = m.group(1)  # the last line wins: a requeued job ends several times
    except OSError:
        return None
    return SlurmJobState(jid, _base_state(found), "jobcomp") if found else None


def _sacct_state(jid: str) -> SlurmJobState | None:
    if shutil.which("sacct") is None:
        return None
    res = _run(["sacct", "-n", "-X", "-P", "-j", jid, "-o", "JobID,State"])
    if res is None or res.returncode != 0:
        return None
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 2 and parts[0] == jid:
            return SlurmJobState(jid, _base_state(parts[1]), "sacct")
    return None


def sbatch(script: Path, cwd: Path | None = None) -> str:
    """Submit ``script`` with ``sbatch`` and return the job id.

    Raises
    ------
    SofteningError
        When ``sbatch`` is missing or refuses the script (its message, one line).
    """
    if shutil.which("sbatch") is None:
        raise SofteningError("sbatch is not on the PATH: run this on a SLURM login node")
    # The script's relative #SBATCH --output paths are relative to where sbatch runs.
    res = _run(["sbatch", "--parsable", str(script)], cwd=cwd or script.parent)
    if res is None:
        raise SofteningError("sbatch did not answer within 30 s")
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise SofteningError(f"sbatch refused {script}: {msg[-1] if msg else res.returncode}")
    return res.stdout.strip().split(";")[0]
