"""Helpers for the end-to-end tests of the shipped machine: a working directory, free
ports, the embedded engine, and finding processes left behind."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.helpers import ROOT, read_events, read_state, run_cli

__all__ = [
    "ENV",
    "MACHINE",
    "REPO",
    "alive",
    "cleaned_up",
    "events",
    "free_port",
    "processes_mentioning",
    "runner",
    "spawn",
    "state",
    "tracker_ports",
]

REPO = ROOT
MACHINE = REPO / "machine.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tracker_ports() -> list[str]:
    """`--set` arguments giving the tracker ports of its own (tests run in parallel)."""
    return [
        "--set", f"tracker.api_port={free_port()}",
        "--set", f"tracker.http_port={free_port()}",
        "--set", f"tracker.udp_port={free_port()}",
    ]  # fmt: skip


ENV = {"RUNNER_TOFU": "runner-tofu"}  # the engine a fresh machine has


def runner(work: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run_cli("--machine", str(MACHINE), *args, cwd=work, env=ENV, timeout=timeout)


def spawn(work: Path, *args: str) -> subprocess.Popen[str]:
    import sys

    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "--machine", str(MACHINE), *args],
        cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


#: The stored form of an environment, and its events (tests.helpers).
state = read_state
events = read_events


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and status != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@contextmanager
def cleaned_up(work: Path) -> Iterator[None]:
    """Never leave a tracker stand-in or a step's child behind, even when a test fails."""
    try:
        yield
    finally:
        for pid in processes_mentioning(str(work)):
            with suppress(ProcessLookupError):
                os.kill(pid, 9)
