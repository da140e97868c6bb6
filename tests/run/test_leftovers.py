"""What a holder that died without releasing the lock left running: which of the process
groups its record names are for certain its own (stopped by the next holder), which may
be (reported, never stopped), and which have ended. Real process groups, real /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.api.runner import _leftovers
from runner.run import process
from runner.run.process import identified, leader_start, sorted_leftovers, stop_leftovers
from runner.store.contract import LockInfo, ProcessGroup
from runner.store.filelock import parse_holder
from runner.store.record import now_iso

LINUX = Path("/proc/sys/kernel/random/boot_id").exists()
linux_only = pytest.mark.skipif(not LINUX, reason="needs the boot id and /proc/PID/stat")


@pytest.fixture
def group() -> Iterator[int]:
    """A live process group the runner never started (a sleeper leading its own)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc.pid
    with_group_gone(proc)


def with_group_gone(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def holder(*groups: int, host: str | None = None) -> LockInfo:
    return LockInfo(999999, host or os.uname().nodename, "runner advance", now_iso(), groups)


# --- what a holder notes ---------------------------------------------------------------


@linux_only
def test_a_started_group_is_noted_with_the_boot_and_its_leaders_start_time(group: int) -> None:
    noted = identified(group)
    assert noted == group and noted.identified
    assert noted.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    stat = Path(f"/proc/{group}/stat").read_text()
    assert noted.leader_start == int(stat[stat.rfind(")") + 2 :].split()[19])


def test_a_group_nothing_tells_about_is_noted_by_its_number_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process, "boot_id", lambda: None)  # as on a system without /proc
    noted = identified(os.getpid())
    assert noted == os.getpid() and not noted.identified
    assert leader_start(2**22 + 12345) is None  # no such process


def test_noting_a_group_costs_a_few_tens_of_microseconds() -> None:
    """Once per program a step starts: one read of /proc/PID/stat (about 20 us); the
    bound, generous for a loaded machine, catches anything like a scan of /proc."""
    identified(os.getpid())  # the boot id is read once per process
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(200):
            identified(os.getpid())
        best = min(best, (time.perf_counter() - started) / 200)
    assert best < 200e-6


def test_holder_records_of_either_format_parse() -> None:
    new = LockInfo(7, "h", "c", "t", (ProcessGroup(4242, "boot-a", 99), ProcessGroup(4343)))
    parsed = parse_holder(json.dumps(new.to_json()).encode())
    assert parsed is not None and parsed.processes == (4242, 4343)
    first, second = parsed.processes
    assert isinstance(first, ProcessGroup) and (first.boot_id, first.leader_start) == (
        "boot-a",
        99,
    )
    assert isinstance(second, ProcessGroup) and not second.identified
    # an older runner's record: plain numbers, parsed as groups nothing identifies
    old = parse_holder(b'{"pid": 7, "host": "h", "processes": [4242, 1, true, "x", {"g": 5}]}')
    assert old is not None and old.processes == (4242,)
    assert not isinstance(old.processes[0], ProcessGroup)
    # the text form of the PostgreSQL backend
    assert ProcessGroup.from_text(first.to_text()) == 4242
    back = ProcessGroup.from_text(first.to_text())
    assert back is not None and (back.boot_id, back.leader_start) == ("boot-a", 99)
    assert ProcessGroup.from_text("4343") == 4343
    assert ProcessGroup.from_text("1") is None and ProcessGroup.from_text("x:y:z") is None


def test_the_status_document_shows_process_groups_as_numbers() -> None:
    info = LockInfo(7, "h", "c", "t", (ProcessGroup(4242, "boot-a", 99),))
    assert json.loads(json.dumps({"p": list(info.processes)})) == {"p": [4242]}
    assert str(info.processes[0]) == f"{info.processes[0]}" == "4242"


# --- what the next holder makes of them --------------------------------------------------


@linux_only
def test_an_unrelated_group_under_a_noted_number_is_neither_stopped_nor_reported(
    group: int,
) -> None:
    """The group number of a record is now another program's (a reboot, or the number
    reused): not the holder's, so nothing to stop and nothing to report."""
    real = identified(group)
    assert real.leader_start is not None and real.boot_id is not None
    later = ProcessGroup(group, real.boot_id, real.leader_start - 1)
    before_reboot = ProcessGroup(group, "another-boot", real.leader_start)
    assert sorted_leftovers([later, before_reboot]) == ([], [])
    ours, unsure = _leftovers(holder(later, before_reboot))
    assert (ours, unsure) == ([], [])
    assert alive(group)


@linux_only
def test_the_group_a_holder_noted_is_stopped(group: int) -> None:
    noted = identified(group)
    assert sorted_leftovers([noted]) == ([group], [])
    ours, _ = _leftovers(holder(noted))
    assert stop_leftovers(ours, grace_s=5) == [group]
    deadline = time.monotonic() + 5
    while alive(group) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(group)


def test_a_group_of_an_older_runners_record_is_reported_not_stopped(group: int) -> None:
    ours, unsure = _leftovers(holder(group))  # a plain number: what older runners wrote
    assert ours == []
    assert [(u.group, u.pid) for u in unsure] == [(group, 999999)]
    assert "does not identify it" in unsure[0].reason
    text = unsure[0].text()
    assert f"process group {group} may still run" in text and f"kill -- -{group}" in text
    assert "on host" not in text
    assert alive(group)


def test_without_proc_nothing_is_stopped_and_it_says_so(
    group: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    noted = ProcessGroup(group, "boot-a", 1)
    monkeypatch.setattr(process, "boot_id", lambda: None)
    ours, unsure = sorted_leftovers([noted])
    assert ours == [] and [g for g, _ in unsure] == [group]
    assert "no /proc" in unsure[0][1]


@linux_only
def test_a_group_whose_leader_ended_is_reported_not_stopped() -> None:
    """The leader is gone, a program of its group runs on: the number cannot be told
    apart from a later group's, so a person decides."""
    proc = subprocess.Popen(
        ["sh", "-c", "read go; sleep 300 & exit 0"], start_new_session=True, stdin=subprocess.PIPE
    )
    try:
        noted = identified(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        proc.wait()
        ours, unsure = sorted_leftovers([noted])
        assert ours == [] and [g for g, _ in unsure] == [proc.pid]
        assert "leader has ended" in unsure[0][1]
    finally:
        with_group_gone(proc)


def test_a_holder_on_another_host_is_reported_for_that_host() -> None:
    """Nothing can be checked there: every group it noted may still run there."""
    stale = holder(ProcessGroup(4242, "boot-a", 9), 4343, host="build-7")
    ours, unsure = _leftovers(stale)
    assert ours == []
    assert [(u.group, u.host) for u in unsure] == [(4242, "build-7"), (4343, "build-7")]
    text = unsure[0].text()
    assert "may still run on host build-7" in text and "Check it on build-7" in text
    assert "kill -- -4242" in text
