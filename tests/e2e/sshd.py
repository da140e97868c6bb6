"""A real OpenSSH server on 127.0.0.1 for the end-to-end tests.

The ``ssh_server`` fixture starts ``sshd -D -e`` on a free port with a generated host
key, a generated user key pair (``key``, in its ``authorized_keys``) and a second key
it does not know (``wrong_key``). The login user is the one running the tests. sshd's
log (``-e``, LogLevel VERBOSE) goes to a file, so tests can count the logins and
sessions that went through it. On teardown the server and every session process it
forked are stopped, even when the test failed.

Skipped only when ``/usr/sbin/sshd`` is missing: CI installs openssh-server.
"""

from __future__ import annotations

import getpass
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    key: Path  # a private key the server accepts
    wrong_key: Path  # a private key it rejects
    log: Path  # sshd's own log
    log_start: int = 0  # where the test's part of the log starts (after the fixture's probe)

    def log_text(self) -> str:
        with self.log.open("rb") as handle:
            handle.seek(self.log_start)
            return handle.read().decode(errors="replace")

    def sessions(self) -> int:
        """Commands run over SSH (Ansible multiplexes them over few logins)."""
        return self.log_text().count("Starting session:")

    def accepted(self, key: Path | None = None) -> int:
        """Logins of ``user`` accepted with a public key (with ``key`` if given)."""
        return self._publickey("Accepted", key)

    def rejected(self, key: Path | None = None) -> int:
        """Public keys (``key`` if given) refused for ``user``."""
        return self._publickey("Failed", key)

    def _publickey(self, outcome: str, key: Path | None) -> int:
        pattern = rf"{outcome} publickey for {re.escape(self.user)} from 127\.0\.0\.1 port \d+"
        if key is not None:
            pattern += rf" ssh2: \S+ {re.escape(fingerprint(key))}"
        return len(re.findall(pattern, self.log_text()))


def fingerprint(key: Path) -> str:
    """The SHA256 fingerprint of a key pair, as sshd logs it (``SHA256:...``)."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )


def _config(folder: Path, port: int, root: bool) -> Path:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {folder / 'host'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        "StrictModes no",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    if root:
        lines.append("PermitRootLogin prohibit-password")
    path = folder / "sshd_config"
    path.write_text("\n".join(lines) + "\n")
    return path


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (sshd's per-connection processes and theirs)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start on port {port}:\n{log.read_text()}")
        time.sleep(0.05)


def _probe(port: int, user: str, key: Path, log: Path) -> None:
    """Log in once with the accepted key, so that a server that cannot work here fails
    the fixture with sshd's own explanation (e.g. "User root not allowed because account
    is locked": without PAM, sshd refuses a user whose password field starts with "!")."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={os.devnull}", "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR", "-i", str(key), "-p", str(port), f"{user}@127.0.0.1", "true"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"the test sshd refused a login as {user} with its own key: {proc.stderr.strip()}\n"
            f"sshd log:\n{log.read_text(errors='replace')}"
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop sshd and the session processes it forked (each in a session of its own)."""
    for pid in _children(proc.pid):  # first, so that sshd still reaps them
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture()
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not Path(SSHD).exists():
        pytest.skip(f"OpenSSH server not installed ({SSHD}); CI installs openssh-server")
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host", "user", "wrong"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "user.pub").read_text())
    root = os.geteuid() == 0
    if root:  # sshd's privilege separation folder
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    port = free_port()
    config = _config(folder, port, root)
    log = folder / "sshd.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        _wait_listening(proc, port, log)
        user = getpass.getuser()
        _probe(port, user, folder / "user", log)
        yield SshServer(port, user, folder / "user", folder / "wrong", log, log.stat().st_size)
    finally:
        _stop(proc)
