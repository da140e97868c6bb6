"""A real OpenSSH server on 127.0.0.1 for the end-to-end tests: its own host key, a
generated user key pair, a free port; the login user is the one running the tests."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import free_port

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    key: Path  # a private key the server accepts
    wrong_key: Path  # a private key it rejects
    log: Path

    def sessions(self) -> int:
        """Commands run over SSH (Ansible multiplexes them over few logins)."""
        return self.log.read_text(errors="replace").count("Starting session:")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture()
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (CI installs openssh-server and "
                    "openssh-client)")  # fmt: skip
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host", "user", "wrong"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "user.pub").read_text())
    port = free_port()
    root = os.geteuid() == 0
    (folder / "sshd_config").write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {folder / 'host'}",
            f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password" if root else "",
            "UsePAM no",
            "StrictModes no",
            "LogLevel VERBOSE",
        ]) + "\n"
    )  # fmt: skip
    if root:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
    log = folder / "sshd.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                                stderr=stderr, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield SshServer(port, getpass.getuser(), folder / "user", folder / "wrong", log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
