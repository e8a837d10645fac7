"""Child processes that never outlive the auditing process, and the environment they get."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a child: SIGKILL it when its parent dies, so a killed audit leaves no worker, exporter
    or compiler running on. A parent that died between fork and prctl sends no signal, so the
    child checks it still has that parent (an orphan once finished a run into a resumed store)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def dies_with_me():
    """The preexec_fn / pool initializer for a child of this process (picklable for spawn)."""
    return functools.partial(die_with_parent, os.getpid())


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # one core on the board; no idle OpenMP pools
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
