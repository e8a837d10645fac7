"""Child processes: the one way to run one (timeout, phases, die with the parent, one failure
text), and the environment a Python child of ours gets."""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


def signal_name(returncode: int | None) -> str | None:
    """The signal that ended a child (a negative return code), e.g. "SIGSEGV"; else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


@dataclass
class Ended:
    """How a child ended and what it wrote (what was not sent to a file)."""

    argv: list[str]
    returncode: int | None  # None: killed as a group at its timeout or when watch said so
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False
    last_line: str = ""  # the last line it wrote on stderr (or stdout), for a failure text

    def failure(self, who: str, timeout_s: float | None = None) -> str | None:
        """One line saying how `who` failed, or None when it exited 0."""
        if self.timed_out:
            limit = self.wall_s if timeout_s is None else timeout_s
            return f"no result within {limit:.0f} s; {who} killed"
        if self.returncode == 0:
            return None
        last = f": {self.last_line[:200]}" if self.last_line else ""
        name = signal_name(self.returncode)
        if name:
            return f"{who} died with {name}{last}"
        return f"{who} exited with code {self.returncode}{last}"


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()
    return ""


class Child:
    """A started child in its own session (a timeout kills its whole group) that dies with
    this process. Output is drained by threads so a chatty child never blocks on a pipe;
    stdout lines `phase NAME` go to on_phase in the thread that waits. With stdin=PIPE a
    long-lived child is given work line by line (send) and followed until it announces that
    a piece is done (until)."""

    POLL_S = 0.2

    def __init__(self, argv: list[str], *, cwd=None, env: dict[str, str] | None = None,
                 stdout: IO | None = None, stderr: IO | None = None, merge_stderr: bool = False,
                 timeout_s: float | None = None, on_phase: Callable[[str], None] | None = None,
                 watch: Callable[[], bool] | None = None, stdin: int | None = None) -> None:
        self.argv = [str(a) for a in argv]
        self.timeout_s = timeout_s
        self._on_phase = on_phase
        self._watch = watch
        self._stderr_file = stderr
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env, text=True, errors="replace", stdin=stdin,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.STDOUT if merge_stderr else (subprocess.PIPE if stderr is None else stderr),
            preexec_fn=dies_with_me(), start_new_session=True)
        self._out: list[str] = []
        self._err: list[str] = []
        self._phases: queue.Queue = queue.Queue()
        self._readers = [threading.Thread(target=self._drain, args=(stream, into, into is self._out),
                                          daemon=True)
                         for stream, into in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))
                         if stream is not None]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream, into: list[str], phases: bool) -> None:
        for line in stream:
            into.append(line)
            if phases and line.startswith("phase "):
                self._phases.put(line.split(" ", 1)[1].strip())

    def _deliver_phases(self, wait_s: float) -> None:
        try:
            phase = self._phases.get(timeout=max(0.0, wait_s))
        except queue.Empty:
            return
        while True:
            if self._on_phase:
                self._on_phase(phase)
            try:
                phase = self._phases.get_nowait()
            except queue.Empty:
                return

    def stdout_lines(self) -> list[str]:
        """Every line the child has written on stdout so far (when not sent to a file)."""
        return self._out

    def send(self, line: str) -> bool:
        """Write one line to the child's stdin (started with stdin=PIPE); False when it is gone."""
        try:
            self.proc.stdin.write(line.rstrip("\n") + "\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def until(self, phase: str, timeout_s: float | None = None,
              on_phase: Callable[[str], None] | None = None) -> Ended | None:
        """Hand the child's phases to on_phase until it announces `phase`: None, it lives on.
        When it ends first, or timeout_s passes (it is then killed as a group): how it Ended."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                got = self._phases.get(timeout=self.POLL_S)
            except queue.Empty:
                got = None
            if got == phase:
                return None
            if got is not None:
                if on_phase:
                    on_phase(got)
                continue
            if self.proc.poll() is not None:
                self._on_phase = on_phase
                return self._ended(False)
            if end is not None and time.monotonic() >= end:
                self.kill()
                return self._ended(True)

    def close(self) -> Ended:
        """Close the child's stdin (a line-fed child then ends) and wait for it."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        return self.wait()

    def wait(self) -> Ended:
        end = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        timed_out = False
        while self.proc.poll() is None:
            left = self.POLL_S if end is None else min(self.POLL_S, end - time.monotonic())
            self._deliver_phases(left)
            if (end is not None and time.monotonic() >= end) or (self._watch and self._watch()):
                self.kill()
                timed_out = True
                break
        return self._ended(timed_out)

    def _ended(self, timed_out: bool) -> Ended:
        for reader in self._readers:
            reader.join(timeout=5)  # a grandchild still holding the pipe does not hold us
        self._deliver_phases(0)
        out, err = "".join(self._out), "".join(self._err)
        if self._stderr_file is not None and getattr(self._stderr_file, "name", None):
            self._stderr_file.flush()
            err_text = Path(self._stderr_file.name).read_text(errors="replace")
        else:
            err_text = err
        return Ended(self.argv, None if timed_out else self.proc.returncode, out, err,
                     time.perf_counter() - self._t0, timed_out, _last_line(err_text, out))

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def run_child(argv: list[str], **kwargs) -> Ended:
    """Start a child (see Child for the keyword arguments) and wait for its end."""
    return Child(argv, **kwargs).wait()
