"""Worker processes that end with their parent.

A worker process (a job of :func:`softening.execution.local.run_flow`, a graph builder of
:func:`softening.models.evaluate.iter_graphs`) is re-parented to init when its parent is killed
(``kill -9``, the out-of-memory killer, a lost SLURM step): nothing would ever send it more work,
yet it would keep its memory, its GPU and any job it was running. :func:`exit_with_parent`, called
from a pool's initializer, ends the worker when its parent ends.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["exit_with_parent"]

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1

#: Seconds between two looks of the watchdog thread at the parent.
POLL_SECONDS = 0.5


def exit_with_parent(parent: int, poll: float = POLL_SECONDS) -> None:
    """End this process when process ``parent`` (the one that started it) ends.

    On Linux the kernel sends ``SIGTERM`` the moment the parent dies (``prctl(PR_SET_PDEATHSIG)``).
    Everywhere, a daemon thread also checks every ``poll`` seconds that the parent is still this
    process's parent, and exits the process when not: this covers systems without ``prctl``, a
    ``SIGTERM`` that a library catches, and a parent that died before this call (the kernel's
    signal would then never come).

    Parameters
    ----------
    parent
        Process id of the parent, as the parent saw it (``os.getpid()`` there, passed in the
        pool's ``initargs``).
    poll
        Seconds between two checks of the watchdog thread.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl (an unusual libc)
            pass
    if os.getppid() != parent:
        os._exit(1)  # the parent is already gone
    threading.Thread(
        target=_watch, args=(parent, poll), name="softening-parent-watchdog", daemon=True
    ).start()


def _watch(parent: int, poll: float) -> None:
    while True:
        time.sleep(poll)
        if os.getppid() != parent:
            # No cleanup: the parent that would read this worker's results is gone.
            os._exit(1)
