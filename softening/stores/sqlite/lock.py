"""Filesystem detection and the writer lock of a store folder on a network filesystem.

SQLite's WAL needs shared memory and its locks are unreliable over NFS, Lustre, GPFS...
(:func:`is_network_filesystem`): there the journal is ``DELETE`` and one process (with the worker
processes it starts) writes at a time, guarded by a lock file taken at the first write
(:class:`WriterLock`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import time
import uuid as uuidlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from softening.errors import SofteningError

__all__ = [
    "LOCK_FILE",
    "LOCK_TOKEN_ENV",
    "NETWORK_FILESYSTEMS",
    "STORE_FS_ENV",
    "WriterLock",
    "filesystem_type",
    "is_network_filesystem",
]

# The store's one logger (log lines name the store, not one of its modules).
logger = logging.getLogger("softening.stores.sqlite")

#: ``network`` or ``local``: overrides the filesystem detection (tests, unusual mounts).
STORE_FS_ENV = "SOFTENING_STORE_FS"
#: The network-filesystem writer lock, in the store folder.
LOCK_FILE = "softening.lock"
#: Run token of the network-filesystem writer lock, inherited by the writer's child processes.
LOCK_TOKEN_ENV = "SOFTENING_STORE_LOCK_TOKEN"

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "glusterfs",
        "sshfs", "afs", "9p_network", "pvfs2", "orangefs", "panfs", "ocfs2", "gfs2", "davfs",
    }
)  # fmt: skip


def filesystem_type(path: str | Path) -> str:
    """The filesystem type (``ext4``, ``nfs4``, ``lustre``, ``fuse.sshfs``...) holding ``path``.

    Reads ``/proc/self/mountinfo`` (else ``/proc/mounts``) and takes the longest mount point that
    contains the path (or its nearest existing parent). ``""`` when unknown.
    """
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    target = os.path.realpath(p)
    mounts: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and rfields:
                    mounts.append((_unescape(fields[4]), rfields[0]))
    except OSError:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    f = line.split()
                    if len(f) >= 3:
                        mounts.append((_unescape(f[1]), f[2]))
        except OSError:
            return ""
    best, kind = "", ""
    for mount, fstype in mounts:
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def _unescape(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040...).
    return text.encode().decode("unicode_escape") if "\\" in text else text


def is_network_filesystem(path: str | Path) -> bool:
    """Whether ``path`` is on a network filesystem, where SQLite's WAL and locks are unsafe.

    ``SOFTENING_STORE_FS=network`` or ``local`` overrides the detection.
    """
    forced = os.environ.get(STORE_FS_ENV, "").strip().lower()
    if forced in ("network", "local"):
        return forced == "network"
    kind = filesystem_type(path).lower()
    base = kind.split(".", 1)[1] if kind.startswith("fuse.") else kind
    return base in NETWORK_FILESYSTEMS or base.startswith(("nfs", "ceph", "gluster", "lustre"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


class WriterLock:
    """The writer lock of a store folder on a network filesystem.

    The lock file (created with ``O_CREAT | O_EXCL``) holds host, pid, time and a run token. The
    first writer puts the token in ``os.environ[LOCK_TOKEN_ENV]``, so the worker processes it starts
    inherit it and may write too. A lock of a dead process on this host is taken over; any other
    holder makes :meth:`acquire` raise a one-line :class:`SofteningError`.

    Parameters
    ----------
    path
        The lock file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.owned = False
        self.joined = False
        self.token: str | None = None

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content, ``None`` when there is none (``{}`` when unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            info = json.loads(text)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> None:
        """Take the lock, or join it (same token), or raise :class:`SofteningError`."""
        if self.owned or self.joined:
            return
        token = os.environ.get(LOCK_TOKEN_ENV) or None
        host = socket.gethostname()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released meanwhile
                if not info:
                    # Being written by its creator right now, or damaged: look again shortly.
                    time.sleep(0.05)
                    info = self.holder()
                    if not info:
                        if info is None:
                            continue
                        raise SofteningError(
                            f"the store lock {self.path} is unreadable; delete it if no process "
                            "is writing to the store"
                        ) from None
                if token and info.get("token") == token:
                    self.token, self.joined = token, True  # a worker of the holder
                    return
                pid = info.get("pid")
                if info.get("host") == host and isinstance(pid, int) and not _pid_alive(pid):
                    logger.warning("taking over the lock of a finished process: %s", self.path)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise SofteningError(
                    f"the store folder {self.path.parent} is on a network filesystem and "
                    f"{info.get('host', '?')} pid {info.get('pid', '?')} has been writing to it "
                    f"since {info.get('time', '?')}; wait for it to finish, or delete "
                    f"{self.path} if that process is gone"
                ) from None
            else:
                token = token or uuidlib.uuid4().hex
                os.environ[LOCK_TOKEN_ENV] = token
                info = {
                    "host": host,
                    "pid": os.getpid(),
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    "token": token,
                }
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(info, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                self.owned, self.token = True, token
                _OWNED_LOCKS.add(self)
                return
        raise SofteningError(f"cannot take the store lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock file if this process created it."""
        self.joined = False
        if not self.owned:
            return
        self.owned = False
        _OWNED_LOCKS.discard(self)
        info = self.holder()
        if info and info.get("pid") == os.getpid() and info.get("token") == self.token:
            with contextlib.suppress(OSError):
                self.path.unlink()


_OWNED_LOCKS: set[WriterLock] = set()


@atexit.register
def _release_locks() -> None:
    for lock in list(_OWNED_LOCKS):
        with contextlib.suppress(Exception):
            lock.release()
