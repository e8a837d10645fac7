"""A board (or any Linux machine) reached over ssh: `ssh://user@host[:port]`.

One SSH connection per device (device_runner.ssh_connection: paramiko, the auditor's own
known_hosts at `<cache_root()>/ssh/known_hosts`, key or password-less login) carries every
command and copy, so a run of many commands pays for one handshake. Files move through
`cat` on the device, which needs nothing there but a POSIX shell and says "No space left
on device" when the disk is full. close() removes the device's working directory and ends
the connection.
"""

from __future__ import annotations

import math
import os
import platform
import posixpath
import re
import select
import shlex
import time
import weakref
from pathlib import Path

from device_runner.device import Completed, Device, DeviceError
from device_runner.ssh_connection import CONNECT_TIMEOUT_S, DEFAULT_PORT, Output, SshConnection

EXITED = "auditor: the command exited with status"
KILL_AFTER_S = 2  # the device's `timeout` sends SIGTERM, then SIGKILL this much later
LOCAL_GRACE_S = 5.0  # how long past the remote deadline the local side waits before killing
TIMEOUT_EXIT_CODES = (124, 137, 143)  # GNU timeout (TERM/KILL), busybox timeout
SUPPORTED = "armv7l (-> armv7-cortex-a8) or this machine's own architecture"

_SPEC = re.compile(r"^ssh://(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@"
                   r"(?P<host>\[[0-9A-Fa-f:.%a-z0-9]+\]|[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?/?$")


def parse_spec(spec: str) -> tuple[str, str, int]:
    """`ssh://user@host[:port]` -> (user, host, port); DeviceError when malformed."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise DeviceError(f"bad device {spec!r}: expected ssh://user@host[:port], "
                          "e.g. ssh://root@192.168.7.2 or ssh://root@board.local:2222")
    port = int(m["port"]) if m["port"] else DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise DeviceError(f"bad device {spec!r}: port {port} is not in 1-65535")
    return m["user"], m["host"].strip("[]"), port


def target_for_machine(machine: str, local_machine: str | None = None) -> str:
    """The ground.targets.TARGETS key of code that runs on a device whose `uname -m` is
    `machine`; DeviceError for an architecture nothing is built for."""
    local_machine = local_machine or platform.machine()
    if machine.startswith("armv7"):
        return "armv7-cortex-a8"
    if machine == "x86_64" and local_machine == "x86_64":
        return "host"
    if machine == local_machine:
        raise DeviceError(f"the device is {machine}: the 'host' target is built for x86_64 only")
    raise DeviceError(f"the device's architecture {machine!r} is not supported (supported: {SUPPORTED}, "
                      f"which is {local_machine})")


def _last_line(text: str, default: str = "no output") -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else default


def classify_copy_error(stderr: str) -> str | None:
    """'disk full' when a copy's stderr (`cat` on the device) says it ran out of space, else None."""
    if re.search(r"No space left on device|Disk quota exceeded", stderr or ""):
        return "disk full"
    return None


def _free_kb(df_output: str) -> int | None:
    """Available KiB from `df -Pk <dir>` output (last line), None if unreadable."""
    m = re.search(r"\s(\d+)\s+(\d+)\s+(\d+)\s+\d+%\s", _last_line(df_output, "") + " ")
    return int(m[3]) if m else None


class Background:
    """A command SshDevice.start() left running on the device."""

    def __init__(self, device: SshDevice, channel, pidfile: str, argv: list[str]) -> None:
        self.device, self.channel, self.pidfile, self.argv = device, channel, pidfile, argv
        self.output = ""  # stdout and stderr as read so far, interleaved

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match | None:
        """Read the command's output until a line matches pattern (the match), it exits or
        timeout_s passes (None)."""
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern)
        seen = 0
        while True:
            self.drain()
            for line in self.output[seen:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                seen += len(line)
                m = regex.search(line)
                if m:
                    return m
                if line.startswith(EXITED):
                    return None
            if self.channel.exit_status_ready() and not (self.channel.recv_ready()
                                                         or self.channel.recv_stderr_ready()):
                return None
            if time.monotonic() > deadline:
                return None
            select.select([self.channel], [], [], 0.2)

    def drain(self) -> None:
        """Read what the command wrote since (a server's log must not fill the channel's window)."""
        while self.channel.recv_ready():
            self.output += self.channel.recv(65536).decode(errors="replace")
        while self.channel.recv_stderr_ready():
            self.output += self.channel.recv_stderr(65536).decode(errors="replace")

    def running(self) -> bool:
        self.drain()
        return EXITED not in self.output and not self.channel.exit_status_ready()

    def stop(self) -> None:
        """Kill what the command started on the device (never raises for an unreachable one):
        its stdin closes, on which the device's shell kills it; the pid file is the fallback."""
        try:
            self.channel.shutdown_write()
            deadline = time.monotonic() + 10
            while not self.channel.exit_status_ready() and time.monotonic() < deadline:
                select.select([self.channel], [], [], 0.2)
                self.drain()
            if not self.channel.exit_status_ready():
                self.device._kill_remote(self.pidfile, self.argv[0], 0)
        except (DeviceError, OSError) as e:
            self.device.notes.append(f"could not stop {self.argv[0]} on the device: {e}")
        finally:
            self.channel.close()


class SshDevice(Device):
    """A device reached over one SSH connection; see device_runner.ssh_connection for host
    keys and login. Nothing connects until the first command, copy or `target_name`."""

    def __init__(self, user: str, host: str, port: int = DEFAULT_PORT, spec: str | None = None,
                 key: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        super().__init__(spec or f"ssh://{user}@{host}:{port}")
        self._target: str | None = None  # asked of the device on first use
        self.user, self.host, self.port = user, host, port
        self.where = f"{user}@{host}:{port}"
        self.key = os.path.expanduser(key) if key else None
        self.connect_timeout_s = connect_timeout_s
        self.local_grace_s = LOCAL_GRACE_S
        from device_runner.build import cache_root

        # AUDITOR_SSH_KNOWN_HOSTS: another file (the tests' throw-away sshd uses one per session)
        self.known_hosts = Path(os.environ.get("AUDITOR_SSH_KNOWN_HOSTS")
                                or cache_root() / "ssh" / "known_hosts")
        self.connection = SshConnection(user, host, port, self.key, self.known_hosts, connect_timeout_s)
        # closes the connection when the device is dropped unclosed or at exit: a live
        # paramiko transport can otherwise hang the interpreter's shutdown
        self._finalizer = weakref.finalize(self, self.connection.close)
        self.machine: str | None = None  # `uname -m` of the device, set on connect
        self._timeout_mode: str | None = None  # how the device's `timeout` is called
        self._dir: str | None = None
        self._mktemp_error = ""
        self._runs = 0

    @classmethod
    def from_spec(cls, spec: str, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> SshDevice:
        user, host, port = parse_spec(spec)
        return cls(user, host, port, spec=spec.strip(), key=os.environ.get("AUDITOR_SSH_KEY") or None,
                   connect_timeout_s=connect_timeout_s)

    @property
    def target_name(self) -> str:
        if self._target is None:
            self._connect()
            self._target = target_for_machine(self.machine or "?")
        return self._target

    # --- plumbing -------------------------------------------------------------------------

    def _ssh(self, remote_command: str, timeout_s: float, what: str, **streams) -> Output:
        """Run one of the device class's own shell commands; DeviceError when the device
        cannot be reached or does not answer in time."""
        remote = f"exec sh -c {shlex.quote(remote_command)}"  # POSIX sh whatever the login shell
        done = self.connection.run_command(remote, timeout_s, **streams)
        if done.timed_out:
            raise DeviceError(f"{self.where} did not answer within {timeout_s:.0f} s ({what})")
        return done

    def _connect(self) -> None:
        """Open the connection and probe the device (once)."""
        if self.machine is not None:
            return
        # one round trip: the architecture, how `timeout` is called there, a working directory
        probe = ("echo machine=$(uname -m); "
                 "if timeout -k 1 5 true 2>/dev/null; then echo timeout=k; "
                 "elif timeout -s KILL 5 true 2>/dev/null; then echo timeout=s; "
                 "elif timeout -t 5 -s KILL true 2>/dev/null; then echo timeout=t; "
                 "else echo timeout=none; fi; "
                 "echo dir=$(mktemp -d /tmp/auditor.XXXXXX 2>&1)")
        done = self._ssh(probe, timeout_s=self.connect_timeout_s + 30, what="connecting")
        said = dict(ln.split("=", 1) for ln in done.stdout.splitlines() if "=" in ln)
        if done.status != 0 or not said.get("machine"):
            raise DeviceError(f"{self.where} did not run `uname -m`: {_last_line(done.stderr)}")
        self.machine = said["machine"].strip()
        self._timeout_mode = said.get("timeout", "none").strip()
        note = ("no usable `timeout` on the device: runs past their deadline are killed "
                "through their pid after the local deadline")
        if self._timeout_mode == "none" and note not in self.notes:
            self.notes.append(note)
        made = said.get("dir", "").strip()
        if made.startswith("/tmp/auditor."):
            self._dir = made
        else:
            self._mktemp_error = made or _last_line(done.stderr)

    # --- Device interface -------------------------------------------------------------------

    def workdir(self) -> str:
        """A fresh `mktemp -d` directory under the device's /tmp (made when connecting)."""
        if self._dir is None:
            self._connect()
        if self._dir is None:
            raise DeviceError(f"cannot create a working directory under /tmp on {self.where}: "
                              f"{self._mktemp_error}")
        return self._dir

    def _dest(self, remote_name: str) -> str:
        parts = Path(remote_name).parts
        if not parts or Path(remote_name).is_absolute() or ".." in parts:
            raise DeviceError(f"bad remote name {remote_name!r}: a relative path inside the working directory")
        return posixpath.join(self.workdir(), *parts)

    def put(self, local: Path, remote_name: str) -> str:
        local = Path(local)
        if not local.is_file():
            raise DeviceError(f"cannot stage {local}: no such file")
        dest = self._dest(remote_name)
        parent = posixpath.dirname(dest)
        need_kb = math.ceil(local.stat().st_size / 1024) + 16  # + a few blocks of slack

        def free_kb() -> int | None:
            done = self._ssh(f"mkdir -p {shlex.quote(parent)} && df -Pk {shlex.quote(parent)}", timeout_s=60,
                             what="checking free space")
            if done.status != 0:
                raise DeviceError(f"cannot prepare {parent} on {self.where}: {_last_line(done.stderr)}")
            return _free_kb(done.stdout)

        def full(detail: str) -> DeviceError:
            return DeviceError(f"the device {self.where} is out of disk space: staging {local.name} "
                               f"needs {need_kb} KB and {detail} (check with df -Pk {parent})")

        free = free_kb()
        if free is not None and free < need_kb:
            raise full(f"{parent} has {free} KB free")
        mode = local.stat().st_mode & 0o7777  # exec bits kept, as scp -p did
        q = shlex.quote(dest)
        timeout_s = 120 + local.stat().st_size / 100_000
        with open(local, "rb") as source:
            done = self._ssh(f"cat > {q} && chmod {mode:o} {q}", timeout_s=timeout_s,
                             what=f"copying {local.name}", stdin=source)
        if done.status != 0:
            self._ssh(f"rm -f {q}", timeout_s=60, what="removing a partial copy")
            if classify_copy_error(done.stderr):
                raise full(f"the device said: {_last_line(done.stderr)}")
            free = free_kb()  # something else filled it meanwhile
            if free is not None and free < need_kb:
                raise full(f"{parent} has {free} KB free")
            raise DeviceError(f"cannot copy {local.name} to {self.where}:{dest}: {_last_line(done.stderr)}")
        return dest

    def get(self, remote_path: str, local: Path) -> None:
        """Copy remote_path (relative: inside workdir()) from the device to local."""
        if not remote_path.startswith("/"):
            remote_path = posixpath.join(self.workdir(), remote_path)
        self._connect()
        local = Path(local)
        with open(local, "wb") as sink:
            done = self._ssh(f"cat {shlex.quote(remote_path)}", timeout_s=600,
                             what=f"fetching {remote_path}", stdout_to=sink)
        if done.status != 0:
            local.unlink(missing_ok=True)
            raise DeviceError(f"cannot fetch {remote_path} from {self.where}: {_last_line(done.stderr)}")

    def _timeout_prefix(self, secs: int) -> str:
        return {"k": f"timeout -k {KILL_AFTER_S} {secs} ", "s": f"timeout -s KILL {secs} ",
                "t": f"timeout -t {secs} -s KILL "}.get(self._timeout_mode or "none", "")

    def _launch(self, verb: str, argv: list[str], timeout_s: float) -> tuple[list[str], str, str, int]:
        """What run() and start() share: the argv as text, the work dir, a pid file of the
        launch's own (quoted) and the device-side timeout in whole seconds."""
        if not argv:
            raise ValueError(f"{verb}() needs a command")
        wd = self.workdir()
        self._runs += 1
        return [str(a) for a in argv], wd, shlex.quote(f"{wd}/.run-{self._runs}.pid"), max(1, math.ceil(timeout_s))

    def run(self, argv: list[str], timeout_s: float, cwd: str | None = None) -> Completed:
        """Run argv on the device under `timeout` (killed there at the deadline) and locally
        bounded too; cwd defaults to workdir(). Never raises for a non-zero exit or a
        timeout; DeviceError only when the device cannot be reached."""
        argv, wd, pidfile, secs = self._launch("run", argv, timeout_s)
        # A shell stays the parent (no exec) so a runner killed by a signal comes back as
        # exit 128+N. Its pid (sshd made it a session leader) lets the local side kill
        # everything it started if the remote timeout never fires.
        script = (f"echo $$ > {pidfile}; cd {shlex.quote(cwd or wd)} || exit 126; "
                  f"{self._timeout_prefix(secs)}{shlex.join(argv)}; rc=$?; rm -f {pidfile}; exit $rc")
        if self._timeout_mode == "none":
            local_deadline = timeout_s + 0.5
        else:
            local_deadline = secs + KILL_AFTER_S + self.local_grace_s
        done = self.connection.run_command(f"exec sh -c {shlex.quote(script)}", local_deadline)
        if done.timed_out:
            self._kill_remote(pidfile, argv[0], timeout_s)
            return Completed(argv, None, done.stdout, done.stderr, done.wall_s, timed_out=True)
        if done.status in TIMEOUT_EXIT_CODES and self._timeout_mode != "none" and done.wall_s >= timeout_s:
            return Completed(argv, None, done.stdout, done.stderr, done.wall_s, timed_out=True)
        return Completed(argv, done.status, done.stdout, done.stderr, done.wall_s)

    def start(self, argv: list[str], timeout_s: float, cwd: str | None = None) -> Background:
        """Start argv on the device and return at once (a server the caller talks to while
        it runs): under the device's `timeout` like run(), its output readable line by
        line; Background.stop() kills what it started (its process group and session)."""
        argv, wd, pidfile, secs = self._launch("start", argv, timeout_s)
        # The command runs in the background of a shell that reads its stdin, the channel:
        # when the channel closes (stop(), or this process dying with its connection) `cat`
        # ends and the shell kills the command's process group (GNU timeout makes one of
        # its own, whose id is the command's pid) and its own. The command's exit is said
        # on stderr as EXITED.
        jobfile = shlex.quote(f"{wd}/.run-{self._runs}.job")
        script = (f"echo $$ > {pidfile}; cd {shlex.quote(cwd or wd)} || exit 126; "
                  f"{{ {self._timeout_prefix(secs)}{shlex.join(argv)} </dev/null & echo $! > {jobfile}; "
                  f"wait $!; echo \"{EXITED} $?\" >&2; }} & "
                  f"cat >/dev/null; kill -KILL -$(cat {jobfile}) 2>/dev/null; rm -f {pidfile} {jobfile}; kill -KILL 0")
        channel = self.connection.start(f"exec sh -c {shlex.quote(script)}", keep_stdin=True)
        return Background(self, channel, pidfile, argv)

    def _kill_remote(self, pidfile: str, program: str, timeout_s: float) -> None:
        """Kill what a run left on the device: its shell's process group and session."""
        script = (f'p=$(cat {pidfile} 2>/dev/null) || exit 0; [ -n "$p" ] || exit 0; '
                  f'kill -KILL -"$p" 2>/dev/null; pkill -KILL -s "$p" 2>/dev/null; '
                  f'kill -KILL "$p" 2>/dev/null; rm -f {pidfile}; exit 0')
        try:
            self._ssh(script, timeout_s=30, what="killing a run past its deadline")
        except DeviceError as e:
            raise DeviceError(f"{program} ran past its {timeout_s:g} s timeout on {self.where} and the "
                              f"device did not answer the kill: {e}") from None

    def tool_problem(self, tool: str) -> str | None:
        """Why `tool` cannot be used on the device, or None when it runs. For perf this
        also runs `perf --version`: Debian's /usr/bin/perf is a wrapper that exists even
        when no perf matches the running kernel."""
        check = f"command -v {shlex.quote(tool)} >/dev/null 2>&1 || {{ echo missing; exit 1; }}"
        if tool == "perf":
            check += '; out=$(perf --version 2>&1); rc=$?; echo "$out" | head -n 3; exit $rc'
        done = self.run(["sh", "-c", check], timeout_s=30)
        if done.returncode == 0:
            return None
        hint = " (Debian: apt-get install linux-perf)" if tool == "perf" else ""
        if done.stdout.strip() == "missing":
            return f"{tool} is not installed on {self.where}{hint}"
        return f"{tool} does not run on {self.where}: {_last_line(done.stdout + done.stderr)}{hint}"

    def which(self, tool: str) -> bool:
        return self.tool_problem(tool) is None

    def require_tool(self, tool: str) -> None:
        """DeviceError saying what is missing when `tool` (e.g. perf) cannot run on the device."""
        problem = self.tool_problem(tool)
        if problem:
            raise DeviceError(problem)

    def close(self) -> None:
        """Remove the working directory on the device and end the connection.
        Never raises: an unreachable device only leaves its /tmp folder behind."""
        if self._dir is not None and self.machine is not None:
            try:
                self._ssh(f"rm -rf -- {shlex.quote(self._dir)}", timeout_s=60, what="removing the working directory")
            except DeviceError as e:
                self.notes.append(f"could not remove {self._dir} on the device: {e}")
        self._dir = None
        self.machine = None
        self.connection.close()
