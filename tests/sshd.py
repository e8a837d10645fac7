"""A private sshd on 127.0.0.1 for tests of the ssh device (needs root and openssh-server).

`sshd_server` (session scope) starts `/usr/sbin/sshd -D` on a free loopback port with a
host key, a client key and an authorized_keys file generated in a temporary folder, and
ignores the system's sshd_config; it is stopped when the session ends. `ssh_spec` (per
test) yields `ssh://root@127.0.0.1:PORT` with AUDITOR_SSH_KEY set to the client key and
AUDITOR_SSH_KNOWN_HOSTS pointed at the test's tmp folder, so the device's known_hosts file
(which gets this run's throwaway host key) never touches the user's cache.

`start_sshd(..., empty_root_password=True)` serves logins the way a stock Bela image does:
root with an empty password and no key. This machine's root account is left alone: the
sshd runs in a mount namespace of its own (`unshare --mount`) where a one-line shadow file
giving root an empty password is bind-mounted over /etc/shadow, seen by that sshd only.

Register the fixtures in conftest.py: `from tests.sshd import sshd_server, ssh_spec`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass
class SshdServer:
    host: str
    port: int
    client_key: Path  # private key whose public half is in authorized_keys
    folder: Path
    log: Path
    proc: subprocess.Popen

    @property
    def spec(self) -> str:
        return f"ssh://root@{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def why_no_sshd() -> str | None:
    """Why a private sshd cannot run here, or None when it can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} missing (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "a private sshd that logs in as root needs the tests to run as root"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen missing (apt-get install openssh-client)"
    return None


def why_no_private_mounts() -> str | None:
    """Why an sshd cannot get a private /etc/shadow here, or None when it can."""
    if shutil.which("unshare") is None:
        return "unshare missing (util-linux)"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot make a mount namespace here: {done.stderr.strip() or done.returncode}"
    return None


def keygen(path: Path) -> Path:
    """A new passphrase-less ed25519 key at path (and path.pub)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "auditor-test",
                    "-f", str(path)], check=True, capture_output=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(folder: Path, host: str = "127.0.0.1", ready_s: float = 10.0,
               empty_root_password: bool = False) -> SshdServer:
    """Start a private sshd serving root logins by key (or, empty_root_password, with an
    empty password and no key); returns once it accepts connections."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "host_ed25519")
    client_key = keygen(folder / "client_ed25519")
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation dir
    log = folder / "sshd.log"
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        login = (["PermitRootLogin=yes", "PasswordAuthentication=yes", "PermitEmptyPasswords=yes",
                  "AuthorizedKeysFile=none"] if empty_root_password else
                 ["PermitRootLogin=prohibit-password", "PasswordAuthentication=no",
                  f"AuthorizedKeysFile={authorized}"])
        argv = [SSHD, "-D", "-e", "-f", "/dev/null", "-p", str(port),
                *(o for opt in login for o in ("-o", opt)),
                "-o", f"ListenAddress={host}", "-o", f"HostKey={host_key}", "-o", "StrictModes=no",
                "-o", f"PidFile={folder / 'sshd.pid'}", "-o", "UsePAM=no",
                "-o", "KbdInteractiveAuthentication=no", "-o", "Subsystem=sftp internal-sftp",
                "-o", "MaxSessions=50", "-o", "MaxStartups=50",
                # bash sources ~/.bashrc for every command it runs for sshd unless it thinks
                # it is nested; root's here runs `pyenv init` (0.4 s a command)
                "-o", "SetEnv=SHLVL=1"]
        if empty_root_password:
            shadow = folder / "shadow"
            shadow.write_text("root::20000:0:99999:7:::\n")  # root only, no password
            shadow.chmod(0o600)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /etc/shadow && exec "$@"', str(shadow), *argv]
        with open(log, "w") as log_file:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return SshdServer(host, port, client_key, folder, log, proc)
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last_error = (log.read_text().strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"private sshd did not start: {last_error} (log: {log})")


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory):
    """A private sshd on 127.0.0.1 for the whole session (skips when it cannot run here)."""
    reason = why_no_sshd()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_spec(sshd_server, monkeypatch, tmp_path):
    """`ssh://root@127.0.0.1:PORT` of the private sshd, with AUDITOR_SSH_KEY set to its client key."""
    monkeypatch.setenv("AUDITOR_SSH_KEY", str(sshd_server.client_key))
    monkeypatch.setenv("AUDITOR_SSH_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    yield sshd_server.spec
