"""The ssh device against a private sshd on 127.0.0.1 (tests/sshd.py): staging, running,
timeouts, and the one-line errors for what goes wrong with a real board."""

import errno
import logging
import os
import platform
import shutil
import socket
import subprocess
import threading
import time

import pytest

from device_runner import ssh_device
from device_runner.device import Completed, DeviceError
from device_runner.devices import parse_device
from device_runner.ssh_connection import refused, unreachable
from device_runner.ssh_device import SshDevice, classify_copy_error, target_for_machine
from tests.sshd import free_port, keygen, start_sshd, why_no_private_mounts


@pytest.fixture
def dev(ssh_spec):
    device = parse_device(ssh_spec)
    yield device
    device.close()


def remote_alive(dev, pid: int) -> bool:
    """Whether pid runs on the device (a zombie waiting for its reaper counts as gone)."""
    done = dev.run(["sh", "-c", f"[ -d /proc/{pid} ] && ! grep -q '^State:[[:space:]]*Z' "
                                f"/proc/{pid}/status && echo alive || echo gone"], timeout_s=10)
    return done.stdout.strip() == "alive"


def wait_gone(dev, pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while remote_alive(dev, pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- spec parsing and classification (no connection) ----------------------------------------

@pytest.mark.parametrize("spec", ["ssh://", "ssh://127.0.0.1", "ssh://root@", "ssh://root@host:0",
                                  "ssh://root@host:70000", "ssh://root@host:22/tmp", "ssh://root@ho st"])
def test_malformed_spec_is_a_clear_error(spec):
    with pytest.raises(DeviceError, match=r"bad device .*ssh://user@host\[:port\]|port \d+ is not in"):
        parse_device(spec)


def test_spec_parses_without_connecting(monkeypatch):
    monkeypatch.setenv("AUDITOR_SSH_KEY", "/nonexistent/key")
    d = parse_device("ssh://root@192.0.2.7:2222")
    assert isinstance(d, SshDevice) and (d.user, d.host, d.port) == ("root", "192.0.2.7", 2222)
    assert d.key == "/nonexistent/key" and d.spec == "ssh://root@192.0.2.7:2222"
    assert repr(d) == "SshDevice('ssh://root@192.0.2.7:2222')"  # no connection attempted
    assert parse_device("ssh://pi@[fe80::1]").host == "fe80::1"
    assert parse_device("ssh://pi@board.local").port == 22
    with pytest.raises(DeviceError, match="AUDITOR_SSH_KEY=/nonexistent/key: no such file"):
        d.workdir()


def test_without_the_ssh_library_an_ssh_device_is_one_line(monkeypatch):
    import sys

    for name in ("device_runner.ssh_device", "device_runner.ssh_connection"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "paramiko", None)  # as if it were not installed
    with pytest.raises(DeviceError, match=r"^ssh:// devices need the Python package 'paramiko', which is "
                                          r"not installed \(pip install paramiko\)$"):
        parse_device("ssh://root@board.local")
    assert parse_device("local").spec == "local"  # the other kinds never load it


def test_target_for_machine():
    assert target_for_machine("armv7l", "x86_64") == "armv7-cortex-a8"
    assert target_for_machine("x86_64", "x86_64") == "host"
    with pytest.raises(DeviceError, match="'aarch64' is not supported"):
        target_for_machine("aarch64", "x86_64")
    with pytest.raises(DeviceError, match="'x86_64' is not supported"):
        target_for_machine("x86_64", "aarch64")


def test_ssh_messages_that_need_a_network_to_reproduce():
    # what socket.create_connection raises for a DNS failure, an unanswered SYN, no route
    where = "root@board:22"
    assert unreachable(where, socket.gaierror(socket.EAI_NONAME, "Name or service not known"), 10) == \
        "cannot reach root@board:22: host name not found (Name or service not known)"
    assert unreachable(where, TimeoutError("timed out"), 10) == \
        "cannot reach root@board:22: connection timed out after 10 s"
    assert unreachable(where, OSError(errno.EHOSTUNREACH, "No route to host"), 10) == \
        "cannot reach root@board:22: no route to host"
    assert "ssh's default keys" in refused(where, None)


def test_a_programs_own_permission_denied_is_its_failure_not_a_login_error(dev):
    done = dev.run(["sh", "-c", "echo 'open: Permission denied' >&2; exit 1"], timeout_s=10)
    assert done.failure() == "exit 1: open: Permission denied"
    done = dev.run(["sh", "-c", "exit 255"], timeout_s=10)  # says nothing, exits 255: still the program's
    assert (done.returncode, done.stderr) == (255, "")


def test_missing_library_and_old_glibc_in_failure():
    done = Completed(["./runner"], 127, "", "./runner: error while loading shared libraries: libopenblas.so.0: "
                     "cannot open shared object file: No such file or directory\n", 0.01)
    assert done.failure() == "the device lacks libopenblas.so.0 needed by ./runner"
    done = Completed(["./runner"], 1, "", "./runner: /lib/libc.so.6: version `GLIBC_2.34' not found "
                     "(required by ./runner)\n", 0.01)
    assert "older than GLIBC_2.34, which ./runner needs" in done.failure()


def test_copy_disk_full_text_is_classified():
    # what `cat > file` printed here when a 64 KB tmpfs filled up (the live test below also checks it)
    assert classify_copy_error("cat: write error: No space left on device\n") == "disk full"
    assert classify_copy_error("sh: 1: cannot create /tmp/x/y: Directory nonexistent\n") is None


# --- against the private sshd ----------------------------------------------------------------

def test_stage_run_and_fetch(dev, tmp_path):
    data = tmp_path / "input.txt"
    data.write_text("hello board\n")
    script = tmp_path / "show.sh"
    script.write_text("#!/bin/sh\ncat \"$1\" > copy.txt\necho \"read $(wc -c < \"$1\") bytes\"\n")
    script.chmod(0o755)
    staged = dev.put(data, "input.txt")
    runner = dev.put(script, "bin/show.sh")
    assert staged == f"{dev.workdir()}/input.txt" and dev.workdir().startswith("/tmp/auditor.")
    done = dev.run([runner, "input.txt"], timeout_s=10)
    assert (done.returncode, done.stdout, done.failure()) == (0, "read 12 bytes\n", None), done
    done = dev.run(["cat", staged], timeout_s=10, cwd="/")
    assert done.stdout == "hello board\n"
    dev.get("copy.txt", tmp_path / "back.txt")  # relative: in the working directory
    assert (tmp_path / "back.txt").read_text() == "hello board\n"
    mode = dev.run(["stat", "-c", "%a", runner], timeout_s=10).stdout.strip()
    assert mode == "755"  # exec bits kept
    with pytest.raises(DeviceError, match="cannot fetch /nonexistent from root@127.0.0.1"):
        dev.get("/nonexistent", tmp_path / "x")


def test_exit_codes_stderr_and_signals_come_back(dev):
    done = dev.run(["sh", "-c", "echo out; echo 'it broke' >&2; exit 3"], timeout_s=10)
    assert (done.returncode, done.stdout, done.stderr, done.timed_out) == (3, "out\n", "it broke\n", False)
    assert done.failure() == "exit 3: it broke"
    done = dev.run(["sh", "-c", "exit 255"], timeout_s=10)  # the program's 255, not ssh's
    assert done.returncode == 255
    done = dev.run(["sh", "-c", "kill -SEGV $$"], timeout_s=10)
    assert done.returncode == 139 and done.failure().startswith("crashed (SIGSEGV)")
    done = dev.run(["printf", "%s|", "a b", "$HOME", "'q'", "*"], timeout_s=10)
    assert done.stdout == "a b|$HOME|'q'|*|"  # argv quoted, not re-split by the remote shell


def test_timeout_kills_the_remote_process(dev):
    t0 = time.monotonic()
    done = dev.run(["sh", "-c", "echo $$ > sleeper.pid; exec sleep 30"], timeout_s=1)
    assert done.timed_out and done.returncode is None, done
    assert done.failure().startswith("timed out after")
    assert time.monotonic() - t0 < 5
    pid = int(dev.run(["cat", "sleeper.pid"], timeout_s=10).stdout)
    assert wait_gone(dev, pid), f"pid {pid} still runs on the device"


def test_timeout_without_timeout_on_the_device(dev):
    dev.workdir()
    dev._timeout_mode = "none"  # as on a board whose busybox has no `timeout`
    done = dev.run(["sh", "-c", "echo $$ > sleeper.pid; exec sleep 30"], timeout_s=0.5)
    assert done.timed_out and done.returncode is None
    pid = int(dev.run(["cat", "sleeper.pid"], timeout_s=10).stdout)
    assert wait_gone(dev, pid), f"pid {pid} still runs on the device"


def logins(server) -> list[str]:
    return [ln for ln in server.log.read_text().splitlines() if ln.startswith("Accepted ")]


def test_one_connection_is_shared_and_close_cleans_up(dev, sshd_server, tmp_path):
    before = len(logins(sshd_server))
    (tmp_path / "f").write_text("x")
    dev.put(tmp_path / "f", "f")
    wd = dev.workdir()
    assert os.path.isdir(wd)  # loopback: the device's /tmp is ours
    local_port = dev.connection.transport.sock.getsockname()[1]
    t0 = time.perf_counter()
    for _ in range(5):
        assert dev.run(["true"], timeout_s=10).returncode == 0
    assert (time.perf_counter() - t0) / 5 < 1.0
    dev.get("f", tmp_path / "back")
    new = logins(sshd_server)[before:]
    assert len(new) == 1 and f"port {local_port} " in new[0], new  # one login for every command and copy
    assert dev.connection.connections == 1
    transport = dev.connection.transport
    dev.close()
    assert not os.path.exists(wd)
    assert not transport.is_active()
    dev.close()  # twice is fine


def test_a_dropped_connection_is_one_line_and_the_next_command_reconnects(dev):
    dev.workdir()
    with pytest.raises(DeviceError, match=r"^lost the connection to root@127.0.0.1:\d+: "):
        # the sshd process serving us: the parent of the run's shell, whose pid it wrote down
        dev.run(["sh", "-c", "kill -KILL $(ps -o ppid= -p $(cat .run-*.pid))"], timeout_s=10)
    assert dev.run(["true"], timeout_s=10).returncode == 0
    assert dev.connection.connections == 2


def test_facts_and_target_on_loopback(dev):
    assert dev.target_name == "host"
    facts = dev.facts()
    assert facts["device"] == dev.spec and facts["emulated"] is False
    assert facts["machine"] == platform.machine()
    assert facts["uname"].startswith("Linux") and facts["cores"] >= 1  # nproc: affinity-limited
    assert "libc" in facts


def test_which_and_require_tool(dev):
    assert dev.which("sh")
    assert not dev.which("no-such-tool-here")
    with pytest.raises(DeviceError, match="no-such-tool-here is not installed on root@127.0.0.1"):
        dev.require_tool("no-such-tool-here")
    perf = shutil.which("perf")
    works = perf is not None and subprocess.run([perf, "--version"], capture_output=True).returncode == 0
    assert dev.which("perf") == works
    if not works:
        with pytest.raises(DeviceError, match="linux-perf"):
            dev.require_tool("perf")


def test_wrong_port_is_unreachable(ssh_spec):
    port = free_port()
    d = parse_device(f"ssh://root@127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as e:
        d.run(["true"], timeout_s=10)
    assert time.monotonic() - t0 < 2  # a closed port answers at once: no waiting out a timeout
    assert str(e.value).startswith(f"cannot reach root@127.0.0.1:{port}: connection refused")
    assert "\n" not in str(e.value)
    d.close()


def test_failed_handshakes_log_no_traceback(ssh_spec, caplog):
    # a port that accepts and hangs up at once: paramiko logs that failure with a traceback
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        d = parse_device(f"ssh://root@127.0.0.1:{port}")
        server.settimeout(5)

        def hang_up():
            conn, _ = server.accept()
            conn.close()

        closer = threading.Thread(target=hang_up)
        closer.start()
        with caplog.at_level(logging.DEBUG), pytest.raises(DeviceError) as e:
            d.workdir()
        closer.join()
    assert str(e.value) == (f"cannot reach root@127.0.0.1:{port}: the connection was closed during the ssh "
                            "handshake (is an ssh server listening there?)")
    assert not [r for r in caplog.records if r.name.startswith("paramiko") and r.levelno >= logging.ERROR]


def test_a_server_that_never_answers_times_out_in_one_line(ssh_spec):
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts (the kernel's backlog), says nothing
        port = server.getsockname()[1]
        d = SshDevice.from_spec(f"ssh://root@127.0.0.1:{port}", connect_timeout_s=1)
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as e:
            d.workdir()
    assert time.monotonic() - t0 < 3
    assert str(e.value) == f"cannot reach root@127.0.0.1:{port}: no ssh handshake within 1 s " \
                           "(is an ssh server listening there?)"


def test_unauthorized_key_says_which_key_and_how_to_set_it(ssh_spec, tmp_path, monkeypatch):
    stranger = keygen(tmp_path / "stranger")
    monkeypatch.setenv("AUDITOR_SSH_KEY", str(stranger))
    d = parse_device(ssh_spec)
    with pytest.raises(DeviceError) as e:
        _ = d.target_name
    msg = str(e.value)
    assert "refused key authentication" in msg and str(stranger) in msg and "AUDITOR_SSH_KEY=" in msg
    assert "\n" not in msg
    d.close()


def test_a_key_that_is_no_key_is_one_line(ssh_spec, tmp_path, monkeypatch):
    (tmp_path / "not_a_key").write_text("hello\n")
    monkeypatch.setenv("AUDITOR_SSH_KEY", str(tmp_path / "not_a_key"))
    with pytest.raises(DeviceError, match=r"^AUDITOR_SSH_KEY=.*not_a_key is not a private key paramiko can read"):
        parse_device(ssh_spec).workdir()


# --- a board that lets root in with an empty password (a stock Bela image) ------------------

@pytest.fixture(scope="module")
def bela_sshd(tmp_path_factory, sshd_server):
    """A private sshd where root has an empty password and no key is authorized."""
    reason = why_no_private_mounts()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("bela-sshd"), empty_root_password=True)
    yield server
    server.stop()


@pytest.fixture
def no_client_keys(monkeypatch, tmp_path):
    """No AUDITOR_SSH_KEY, no agent, a home without ~/.ssh: the client has nothing to offer."""
    monkeypatch.delenv("AUDITOR_SSH_KEY", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUDITOR_SSH_KNOWN_HOSTS", str(tmp_path / "known_hosts"))


def test_root_with_an_empty_password_logs_in_without_a_key(bela_sshd, no_client_keys, tmp_path):
    d = parse_device(bela_sshd.spec)
    try:
        assert d.target_name == "host"
        (tmp_path / "x").write_text("ok")
        staged = d.put(tmp_path / "x", "x")
        assert d.run(["cat", staged], timeout_s=10).stdout == "ok"
        port = d.connection.transport.sock.getsockname()[1]
    finally:
        d.close()
    assert any(ln.startswith(f"Accepted none for root from 127.0.0.1 port {port} ") for ln in logins(bela_sshd))


def test_a_given_key_is_what_a_key_only_board_checks(sshd_server, no_client_keys, monkeypatch):
    # the key server with no key offered: `none` does not get in
    with pytest.raises(DeviceError) as e:
        parse_device(sshd_server.spec).workdir()
    assert "refused key authentication with ssh's default keys" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("AUDITOR_SSH_KEY", str(sshd_server.client_key))
    d = parse_device(sshd_server.spec)
    assert d.run(["true"], timeout_s=10).returncode == 0
    d.close()


def test_changed_host_key_is_refused(ssh_spec, sshd_server, tmp_path):
    d = parse_device(ssh_spec)
    other = keygen(tmp_path / "other_host").with_suffix(".pub").read_text().split()[:2]
    d.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    d.known_hosts.write_text(f"[127.0.0.1]:{sshd_server.port} {' '.join(other)}\n")
    with pytest.raises(DeviceError, match=r"host key of root@127.0.0.1:\d+ differs .*ssh-keygen -f .* -R"):
        d.workdir()
    d.close()


def test_known_hosts_go_to_the_auditor_cache(dev, ssh_spec, sshd_server, monkeypatch):
    from device_runner.build import cache_root
    from device_runner.ssh_device import SshDevice

    monkeypatch.delenv("AUDITOR_SSH_KNOWN_HOSTS")
    assert SshDevice.from_spec(ssh_spec).known_hosts == cache_root() / "ssh" / "known_hosts"
    dev.workdir()  # the fixture's device records the key in its own file
    assert f"[127.0.0.1]:{sshd_server.port} ssh-ed25519" in dev.known_hosts.read_text()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")
def test_missing_shared_library_on_the_device(dev, tmp_path):
    (tmp_path / "dep.c").write_text("int dep(void) { return 42; }\n")
    (tmp_path / "main.c").write_text("int dep(void);\nint main(void) { return dep() == 42 ? 0 : 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libauditordep.so"), str(tmp_path / "dep.c")],
                   check=True, capture_output=True)
    subprocess.run(["gcc", "-o", str(tmp_path / "prog"), str(tmp_path / "main.c"), f"-L{tmp_path}",
                    "-lauditordep"], check=True, capture_output=True)
    prog = dev.put(tmp_path / "prog", "prog")  # the program only, not its library
    done = dev.run([prog], timeout_s=10)
    assert done.returncode == 127
    assert done.failure() == f"the device lacks libauditordep.so needed by {prog}"


def test_full_disk_when_staging(dev, tmp_path, monkeypatch):
    small = f"{dev.workdir()}/small"
    mounted = dev.run(["sh", "-c", f"mkdir -p {small} && mount -t tmpfs -o size=64k tmpfs {small}"], timeout_s=10)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.failure()}); "
                    "test_copy_disk_full_text_is_classified covers the device's message")
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(200_000))
        with pytest.raises(DeviceError, match=r"out of disk space: staging big.bin needs \d+ KB and "
                                              r".*/small has \d+ KB free"):
            dev.put(big, "small/big.bin")
        # as if df had said nothing useful: the copy itself hits the full disk
        monkeypatch.setattr(ssh_device, "_free_kb", lambda _out: None)
        with pytest.raises(DeviceError, match="out of disk space: .*No space left on device"):
            dev.put(big, "small/big.bin")
        assert dev.run(["ls", "small"], timeout_s=10).stdout == ""  # the partial copy is gone
    finally:
        dev.run(["umount", small], timeout_s=10)
