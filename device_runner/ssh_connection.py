"""One SSH connection to a device through paramiko: host key, login, commands with a deadline.

Host keys: a board is reflashed and re-keyed often, so its key is not written to the
user's ~/.ssh/known_hosts. It is accepted on first contact into the auditor's own file
(OpenSSH format, names unhashed, as `StrictHostKeyChecking=accept-new` would) and checked
against that file afterwards; a changed key is refused with the command that forgets it.

Login, in the order OpenSSH's client tries it:
1. `none`: the protocol's opening request. It succeeds only where the server lets the user
   in without credentials, as a stock Bela image does for root: an account with an empty
   password is let in through `none` by OpenSSH's sshd (PermitEmptyPasswords) and by
   dropbear (-B). Elsewhere it fails and the server lists the methods it takes.
2. public keys: the key in AUDITOR_SSH_KEY and no other when it is set (OpenSSH's
   IdentitiesOnly), else the ssh-agent's keys and ~/.ssh/id_{ed25519,ecdsa,rsa}.
It never asks for a password.

A connection carries every command and copy of its device; commands run on channels of
it, one at a time, each bounded by a local deadline.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko

from device_runner.device import DeviceError

DEFAULT_PORT = 22
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 10  # as ServerAliveInterval: a NAT or a board's Wi-Fi keeps the session
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
CHUNK = 1 << 16

# paramiko logs failed handshakes with their tracebacks at ERROR; every failure reaches
# the user as one DeviceError line instead.
_log = logging.getLogger("paramiko")
_log.setLevel(logging.CRITICAL)
_log.addHandler(logging.NullHandler())


def unreachable(where: str, error: OSError, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """One line saying why the TCP connection to `where` (user@host:port) failed."""
    if isinstance(error, socket.gaierror):
        return f"cannot reach {where}: host name not found ({error.strerror})"
    if isinstance(error, ConnectionRefusedError):
        return f"cannot reach {where}: connection refused (no ssh server on that port?)"
    if isinstance(error, TimeoutError) or error.errno == errno.ETIMEDOUT:
        return f"cannot reach {where}: connection timed out after {connect_timeout_s:g} s"
    reason = error.strerror or str(error) or type(error).__name__
    return f"cannot reach {where}: {reason[0].lower() + reason[1:]}"


def refused(where: str, key: str | None) -> str:
    """One line for a server that accepted none of the ways this client logs in."""
    tried = f"the key {key} (AUDITOR_SSH_KEY)" if key else \
        "ssh's default keys (~/.ssh/id_*, ssh-agent; AUDITOR_SSH_KEY is not set)"
    return (f"{where} refused key authentication with {tried}: put its public key in the "
            f"device's ~/.ssh/authorized_keys, or set AUDITOR_SSH_KEY=/path/to/private_key")


def host_key_changed(where: str, name: str, known_hosts: Path | str) -> str:
    return (f"the host key of {where} differs from the one recorded in {known_hosts} "
            f"(reflashed board?); if that is expected, forget the old one: "
            f"ssh-keygen -f {known_hosts} -R '{name}'")


@dataclass
class Output:
    """What one command on a channel did (stdout is empty when it went to a file)."""

    status: int | None  # None: killed at the local deadline
    stdout: str
    stderr: str
    wall_s: float

    @property
    def timed_out(self) -> bool:
        return self.status is None


class SshConnection:
    """A paramiko Transport to user@host:port, opened on first use and again after a drop."""

    def __init__(self, user: str, host: str, port: int, key: str | None, known_hosts: Path,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.user, self.host, self.port, self.key = user, host, port, key
        self.known_hosts = Path(known_hosts)
        self.connect_timeout_s = connect_timeout_s
        self.where = f"{user}@{host}:{port}"
        self.transport: paramiko.Transport | None = None  # set once open
        self.connections = 0  # how many times a connection was made (one, unless it dropped)
        self._agent: paramiko.Agent | None = None  # while logging in

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files use for this host and port."""
        return self.host if self.port == DEFAULT_PORT else f"[{self.host}]:{self.port}"

    # --- opening --------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check the host key and log in; DeviceError in one line when any fails."""
        if self.transport is not None and self.transport.is_active():
            return
        keys = self._client_keys()  # a bad AUDITOR_SSH_KEY is said before any network wait
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as e:
            raise DeviceError(unreachable(self.where, e, self.connect_timeout_s)) from None
        transport = paramiko.Transport(sock)
        # start_client's own timeout decides: the transport's would race it and turn a
        # silent server into "closed"
        transport.banner_timeout = transport.handshake_timeout = self.connect_timeout_s + 5
        transport.auth_timeout = self.connect_timeout_s
        try:
            known = self._known_keys()
            if known:  # negotiate the recorded key's type, as OpenSSH does
                prefer = [t for name in known for t in (("rsa-sha2-512", "rsa-sha2-256", name)
                                                         if name == "ssh-rsa" else (name,))]
                options = transport.get_security_options()
                offered = list(options.key_types)
                options.key_types = [t for t in prefer if t in offered] + [t for t in offered if t not in prefer]
            try:
                transport.start_client(timeout=self.connect_timeout_s)  # returns at the timeout too
            except (paramiko.SSHException, EOFError, OSError):
                pass  # the server hung up or spoke no ssh: said below
            if not (transport.is_active() and transport.initial_kex_done):
                if transport.is_active():
                    raise DeviceError(f"cannot reach {self.where}: no ssh handshake within "
                                      f"{self.connect_timeout_s:g} s (is an ssh server listening there?)")
                raise DeviceError(f"cannot reach {self.where}: the connection was closed during the ssh "
                                  f"handshake (is an ssh server listening there?)")
            self._check_host_key(transport.get_remote_server_key(), known)
            self._log_in(transport, keys)
        except BaseException:
            transport.close()
            raise
        finally:
            if self._agent is not None:
                self._agent.close()
                self._agent = None
        transport.set_keepalive(KEEPALIVE_S)
        self.transport = transport
        self.connections += 1

    def _known_keys(self) -> dict | None:
        """{key type: key} recorded for this host, or None when it was never seen."""
        if not self.known_hosts.is_file():
            return None
        try:
            return paramiko.HostKeys(str(self.known_hosts)).lookup(self.host_key_name)
        except OSError as e:
            raise DeviceError(f"cannot read {self.known_hosts}: {e.strerror}") from None

    def _check_host_key(self, server_key, known: dict | None) -> None:
        if known is None:  # first contact: record it (appending keeps the user's other lines)
            try:
                self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
                with open(self.known_hosts, "a") as f:
                    f.write(f"{self.host_key_name} {server_key.get_name()} {server_key.get_base64()}\n")
            except OSError as e:
                raise DeviceError(f"cannot record the host key of {self.where} in {self.known_hosts}: "
                                  f"{e.strerror}") from None
            return
        if known.get(server_key.get_name()) != server_key:
            raise DeviceError(host_key_changed(self.where, self.host_key_name, self.known_hosts))

    def _client_keys(self) -> list:
        """The keys to offer: AUDITOR_SSH_KEY alone, else the agent's and the default files."""
        if self.key:
            if not os.path.isfile(self.key):
                raise DeviceError(f"AUDITOR_SSH_KEY={self.key}: no such file (it must name a private key)")
            try:
                return [paramiko.PKey.from_path(self.key)]
            except paramiko.PasswordRequiredException:
                raise DeviceError(f"AUDITOR_SSH_KEY={self.key} is protected by a passphrase, which the "
                                  "auditor cannot ask for: use a key without one") from None
            except (paramiko.SSHException, ValueError, OSError) as e:
                raise DeviceError(f"AUDITOR_SSH_KEY={self.key} is not a private key paramiko can read "
                                  f"({e})") from None
        keys = []
        try:
            self._agent = paramiko.Agent()  # signs during login; closed once logged in
            keys += list(self._agent.get_keys())
        except paramiko.SSHException:
            pass  # no agent, or one that does not answer
        for name in DEFAULT_KEYS:
            path = Path.home() / ".ssh" / name
            try:
                keys.append(paramiko.PKey.from_path(path))
            except (paramiko.SSHException, ValueError, OSError):
                continue  # absent, encrypted or of a kind paramiko does not read: ssh skips it too
        return keys

    def _log_in(self, transport, keys: list) -> None:
        allowed: list[str] | None = None
        try:
            try:
                transport.auth_none(self.user)
            except paramiko.BadAuthenticationType as e:
                allowed = list(e.allowed_types)
            if transport.is_authenticated():
                return
            for key in keys if allowed is None or "publickey" in allowed else []:
                try:
                    transport.auth_publickey(self.user, key)
                except paramiko.AuthenticationException:
                    continue
                if transport.is_authenticated():
                    return
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the server hung up on too many attempts: refused all the same
        raise DeviceError(refused(self.where, self.key))

    # --- commands -------------------------------------------------------------------------

    def run_command(self, command: str, timeout_s: float, stdin: BinaryIO | None = None,
                stdout_to: BinaryIO | None = None) -> Output:
        """Run a shell command line on the device; its stdin is `stdin` (else empty), its
        stdout goes to `stdout_to` (else into Output.stdout). At the local deadline the
        channel is closed and the Output says timed out; whatever the command started
        there is the caller's to kill. DeviceError when the connection fails."""
        self.open()
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        try:
            channel = self.transport.open_session(timeout=self.connect_timeout_s)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(e) from None
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            if stdin is not None:
                if not self._send(channel, stdin, deadline):
                    return Output(None, "", _text(err), time.perf_counter() - t0)
            channel.shutdown_write()  # EOF: the command reads no more
            while True:
                while channel.recv_ready():
                    data = channel.recv(CHUNK)
                    if stdout_to is not None:
                        stdout_to.write(data)
                    else:
                        out.append(data)
                while channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(CHUNK))
                if channel.closed or (channel.eof_received and channel.exit_status_ready()):
                    if not (channel.recv_ready() or channel.recv_stderr_ready()):
                        break
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return Output(None, _text(out), _text(err), time.perf_counter() - t0)
                select.select([channel], [], [], min(left, 1.0))
                if not self.transport.is_active():
                    raise self._lost(None)
            wall = time.perf_counter() - t0
            channel.recv_exit_status()
        finally:
            channel.close()
        if channel.exit_status < 0 and not self.transport.is_active():
            raise self._lost(None)
        # -1: no exit status came (the shell was killed by a signal); OpenSSH's client said 255
        status = channel.exit_status if channel.exit_status >= 0 else 255
        return Output(status, _text(out), _text(err), wall)

    def _send(self, channel, stdin: BinaryIO, deadline: float) -> bool:
        """Stream stdin into the channel; False when the deadline passed first. A command
        that stops reading (a full disk) ends the sending; its stderr says why."""
        while chunk := stdin.read(CHUNK):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            channel.settimeout(left)
            try:
                channel.sendall(chunk)
            except TimeoutError:
                return False
            except OSError:
                break  # the command exited and its channel closed
        channel.settimeout(None)
        return True

    def _lost(self, error: BaseException | None) -> DeviceError:
        why = str(error) if error is not None and str(error) else "the connection dropped"
        return DeviceError(f"lost the connection to {self.where}: {why}")

    def start(self, command: str, keep_stdin: bool = False) -> paramiko.Channel:
        """Start a shell command line on the device and return at once: its channel, for
        the caller to read and close (keep_stdin: its stdin stays open until the caller
        shuts it). What the command starts is the caller's to stop."""
        self.open()
        try:
            channel = self.transport.open_session(timeout=self.connect_timeout_s)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self._lost(e) from None
        if not keep_stdin:
            channel.shutdown_write()
        return channel

    def forward(self, remote_host: str, remote_port: int) -> Forward:
        """A listener on this machine's 127.0.0.1 (a free port) whose every connection is
        carried to remote_host:remote_port as the device sees it, through this connection
        (as `ssh -L`): nothing listens on the network on either side."""
        self.open()
        return Forward(self, remote_host, remote_port)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class Forward:
    """`ssh -L 127.0.0.1:<port>:remote_host:remote_port` on an open SshConnection: one
    thread accepts, each connection gets a direct-tcpip channel and a thread copying both
    ways. close() stops accepting and ends every carried connection. Its clients belong in
    other processes when they may block holding the GIL (TVM's RPC session destructor does,
    and would starve the copying threads): MetaSchedule's runner connects from its workers."""

    def __init__(self, connection: SshConnection, remote_host: str, remote_port: int) -> None:
        self.connection = connection
        self.remote = (remote_host, remote_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.errors: list[str] = []  # channels the device refused, one line each
        self.carried = 0  # connections carried so far
        self._open: list = []
        self._closed = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"ssh-forward-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, peer = self.listener.accept()
            except OSError:
                return  # closed
            try:
                channel = self.connection.transport.open_channel("direct-tcpip", self.remote, peer,
                                                                 timeout=self.connection.connect_timeout_s)
            except (paramiko.SSHException, EOFError, OSError, AttributeError) as e:
                self.errors.append(f"{self.connection.where} refused to forward to "
                                   f"{self.remote[0]}:{self.remote[1]}: {e or type(e).__name__}")
                client.close()
                continue
            with self._lock:
                self.carried += 1
                self._open += [client, channel]
            threading.Thread(target=self._pump, args=(client, channel), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, channel) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, channel], [], [], 1.0)
                if client in ready:
                    data = client.recv(CHUNK)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in ready:
                    data = channel.recv(CHUNK)
                    if not data:
                        break
                    client.sendall(data)
                if channel.closed:
                    break
        except OSError:
            pass  # either end went away: the carried connection ends
        finally:
            channel.close()
            client.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for end in self._open:
                try:
                    end.close()
                except OSError:
                    pass
            self._open.clear()


def _text(parts: list[bytes]) -> str:
    return b"".join(parts).decode(errors="replace")
