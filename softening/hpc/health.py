"""The doctor's checks of the cluster: the LaunchPad's MongoDB, SLURM's commands, the queue adapter
(see :mod:`softening.health`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable

from softening.errors import SofteningError
from softening.health import DoctorRequest, PlannedCheck, Problem, Skip
from softening.settings import get_settings, redact


def check_launchpad(path: str | None = None) -> Callable[[], str]:
    """A check that the LaunchPad's MongoDB answers (``mongo_timeout`` s at most)."""

    def run() -> str:
        from softening.hpc.config import launchpad_dict, load_launchpad, resolve_launchpad_path

        try:
            p = resolve_launchpad_path(path)
        except SofteningError as exc:
            if path is not None or get_settings().launchpad is not None:
                raise Problem(str(exc)) from None
            raise Skip(str(exc).split(":")[0], "only `submit`, `status`, `rerun` need it") from None
        data = launchpad_dict(p)
        try:
            lp = load_launchpad(p, check=True)
        except SofteningError as exc:
            raise Problem(
                str(exc),
                "check SOFTENING_MONGO_HOST/PORT/USERNAME/PASSWORD and that this node may reach "
                "the server (or `softening submit --single-job`, which needs no MongoDB)",
            ) from None
        n = lp.workflows.count_documents({})
        where = f"{data['host']}:{data.get('port', 27017)}/{data.get('name', 'fireworks')}"
        return f"{p}: {redact(where)} answers, {n} flows"

    return run


def check_slurm() -> str:
    """sbatch and squeue on PATH, and squeue answering."""
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        raise Problem(
            f"not on PATH: {', '.join(missing)}",
            "run `softening submit` on a SLURM login node (or load the slurm module)",
        )
    try:
        proc = subprocess.run(
            ["squeue", "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except subprocess.TimeoutExpired:
        raise Problem("squeue --version hangs", "check slurmctld on this cluster") from None
    lines = (proc.stdout + proc.stderr).strip().splitlines() or [f"exit {proc.returncode}"]
    if proc.returncode != 0:
        raise Problem(
            f"squeue --version failed: {lines[-1]}",
            "SLURM has no configuration on this node (slurm.conf, SLURM_CONF): run on a login node",
        )
    return f"{lines[0]}; sbatch at {shutil.which('sbatch')}"


def check_qadapter(path: str | None = None) -> Callable[[], str]:
    """A check that the queue adapter file parses into queue groups."""

    def run() -> str:
        from softening.hpc.config import load_qadapters, resolve_qadapter_path

        p = resolve_qadapter_path(path, required=False)
        if p is None:
            raise Skip(
                "no queue adapter file (./qadapter_slurm.yaml or SOFTENING_QADAPTER)",
                "only `submit --launch` needs it",
            )
        try:
            groups = load_qadapters(p, None, tempfile.gettempdir())
        except SofteningError as exc:
            raise Problem(str(exc), "fix the file (qadapter_slurm.yaml is a template)") from None
        parts = [f"{g.name}: queue {g.params.get('queue') or '(default)'}" for g in groups]
        return f"{p}: {'; '.join(parts)}"

    return run


def plan_checks(request: DoctorRequest) -> list[PlannedCheck]:
    """The LaunchPad (needed when named), SLURM and the queue adapter (needed when a queue adapter
    is named); MongoDB gets ``mongo_timeout`` + 2 s."""
    settings = get_settings()
    lp_named = request.launchpad is not None or settings.launchpad is not None
    qa_named = request.qadapter is not None or settings.qadapter is not None
    mongo_wait = settings.mongo_timeout + 2
    timeout = request.timeout
    return [
        PlannedCheck(
            "launchpad", check_launchpad(request.launchpad), lp_named, max(timeout, mongo_wait)
        ),
        PlannedCheck("slurm", check_slurm, qa_named, timeout),
        PlannedCheck("queue adapter", check_qadapter(request.qadapter), qa_named, timeout),
    ]
