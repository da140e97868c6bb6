"""Two environments of the shipped machine on this machine (provider local), created
without port inputs: each gets ports of its own, and both run side by side."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import cleaned_up, runner, state

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    with cleaned_up(tmp_path):  # kills the tracker stand-ins if the test fails half way
        yield tmp_path


def test_two_local_environments_without_port_inputs_run_side_by_side(work: Path) -> None:
    names = ("one", "two")
    for name in names:
        done = runner(work, "create", name)
        assert done.returncode == 0, done.stderr
    ports = {name: state(work, name)["inputs"]["tracker"] for name in names}
    for key in ("api_port", "http_port", "udp_port"):
        assert ports["one"][key] != ports["two"][key], key
    try:
        for name in names:  # one after the other: the first one's tracker keeps running
            done = runner(work, "up", name, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
        for name in names:
            assert state(work, name)["state"] == "running"
            url = f"http://127.0.0.1:{ports[name]['api_port']}/api/health_check"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200 and "Ok" in response.read().decode()
    finally:
        for name in names:
            runner(work, "destroy", name, "--yes")
    for name in names:
        assert state(work, name)["state"] == "destroyed"
