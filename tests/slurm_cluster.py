"""A private single-node SLURM cluster for the tests: munged, slurmctld and slurmd started as root.

The configuration is the one that works in these containers (``../shared/DESIGN.md``):
``proctrack/linuxproc``, ``task/none``, ``select/cons_tres``, ``jobcomp/filetxt``, no accounting
storage, no cgroup.conf, one node at 127.0.0.1. The node has one CPU, so SLURM runs one job at a
time: that is what lets FireWorks use a mongomock file (no locking) across queue jobs. Free ports and
a private munge socket keep it apart from any other SLURM on the machine; only the daemons started
here are stopped (by their PIDs).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


def unavailable_reason() -> str | None:
    """Why a private SLURM cannot start here, or ``None``."""
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    missing = [b for b in BINARIES if not os.access(b, os.X_OK)]
    missing += [c for c in CLIENTS if shutil.which(c) is None]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing): "
            "apt-get install slurmctld slurmd slurm-client munge (scripts/setup.sh does as root)"
        )
    if not Path("/etc/munge/munge.key").exists():
        return "/etc/munge/munge.key is missing (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running private cluster.

    Attributes
    ----------
    root
        Its folder (configuration, state, logs, munge socket).
    conf
        ``slurm.conf``; clients find it through ``SLURM_CONF``.
    partitions
        Partition names (all on the one node; ``umlip`` is the default).
    """

    root: Path
    conf: Path
    partitions: tuple[str, ...] = ("umlip", "dft")
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def jobcomp(self) -> Path:
        """The jobcomp log (one line per ended job)."""
        return self.root / "log" / "jobcomp.txt"

    @property
    def env(self) -> dict[str, str]:
        """Environment of a SLURM client of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        res = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip() or res.stdout.strip()}")
        return res

    def jobs(self) -> list[tuple[str, str, str, str]]:
        """Jobs in the queue now: ``(id, state, name, partition)``."""
        out = self.run("squeue", "-h", "-o", "%i|%T|%j|%P").stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]

    def wait_idle(self, timeout: float = 300) -> None:
        """Wait until no job is queued or running (a job may queue the next one before it ends)."""
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            if self.jobs():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 1.5:
                return
            time.sleep(0.5)
        raise TimeoutError(f"SLURM queue still busy after {timeout} s: {self.jobs()}")

    def ended_jobs(self) -> list[dict[str, str]]:
        """The jobcomp log: one ``{JobId, JobState, Partition, Name, ...}`` per ended job."""
        if not self.jobcomp.exists():
            return []
        rows = []
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields:
                rows.append(fields)
        return rows

    def stop(self) -> None:
        """Cancel this cluster's jobs and stop the daemons started here (by PID)."""
        try:
            self.run("scancel", "--user", "root", check=False)
        except Exception:
            pass
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def _read_pid(path: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        time.sleep(0.1)
    raise RuntimeError(f"no PID file {path}")


def start_cluster() -> SlurmCluster:
    """Start munged, slurmctld and slurmd on a fresh configuration; wait for an idle node."""
    # Not under pytest's basetemp: munged (user munge) must traverse the path to its socket.
    root = Path(tempfile.mkdtemp(prefix="softening-slurm-"))
    root.chmod(0o755)
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    munge_dir = root / "munge"
    shutil.chown(munge_dir, "munge", "munge")
    munge_dir.chmod(0o755)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=softeningtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_dir / "munge.socket"}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/filetxt
JobCompLoc={root / "log" / "jobcomp.txt"}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN
PartitionName=umlip Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=dft Nodes={host} MaxTime=INFINITE State=UP
"""
    )
    cluster = SlurmCluster(root=root, conf=conf)
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "/usr/sbin/munged",
                f"--socket={munge_dir / 'munge.socket'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                "--key-file=/etc/munge/munge.key",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        cluster.pids["munged"] = _read_pid(munge_dir / "munged.pid")
        env = cluster.env
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(conf)], check=True, env=env, timeout=30)
        cluster.pids["slurmctld"] = _read_pid(root / "slurmctld.pid")
        subprocess.run(
            ["/usr/sbin/slurmd", "-f", str(conf), "-N", host], check=True, env=env, timeout=30
        )
        cluster.pids["slurmd"] = _read_pid(root / "slurmd.pid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            res = cluster.run("sinfo", "-h", "-o", "%T", check=False)
            if (
                res.returncode == 0
                and res.stdout.split()
                and all(s.startswith("idle") for s in res.stdout.split())
            ):
                return cluster
            time.sleep(0.3)
        log = (root / "log" / "slurmctld.log").read_text()[-2000:]
        raise RuntimeError(f"the SLURM node did not become idle; slurmctld log:\n{log}")
    except BaseException:
        cluster.stop()
        raise
