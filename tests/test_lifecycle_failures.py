"""A failure in each phase of the shipped machine, injected through inputs or the
environment, lands in that phase's failed state at the right step; `runner status`
says what happened and what to do; `runner destroy` works from there."""

from __future__ import annotations

import fcntl
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e import cleaned_up, processes_mentioning, runner, state, tracker_ports


@contextmanager
def listening(port: int) -> Iterator[None]:
    """Another program holding a tracker port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def _assert_failed(work: Path, failed_state: str, step: str, *words: str) -> None:
    record = state(work, "demo")
    assert record["state"] == failed_state
    failure = record["failure"]
    assert failure["step"] == step
    for word in words:
        assert word in failure["summary"], failure["summary"]
    assert (work / failure["trace"]).exists()
    status = runner(work, "status", "demo").stdout
    assert failed_state in status and f"step '{step}'" in status
    assert "runner resume demo" in status or "runner destroy demo" in status


def _destroy_cleans_up(work: Path) -> None:
    down = runner(work, "destroy", "demo")
    assert down.returncode == 0, down.stdout + down.stderr
    assert state(work, "demo")["state"] == "destroyed"
    assert not (work / "build" / "demo").exists()
    assert processes_mentioning(str(work)) == []


def _api_port(work: Path) -> int:
    return int(state(work, "demo")["inputs"]["tracker"]["api_port"])


def test_provision_fails_when_the_instance_cannot_be_created(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", "--set", "local.instance_dir=/proc/runner-cannot-create",
               *tracker_ports())  # fmt: skip
        assert runner(tmp_path, "up", "demo").returncode == 1
        _assert_failed(tmp_path, "provision_failed", "opentofu_apply", "mkdir")
        _destroy_cleans_up(tmp_path)


def test_configure_fails_when_a_tracker_port_is_in_use(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", *tracker_ports())
        with listening(_api_port(tmp_path)):
            assert runner(tmp_path, "up", "demo").returncode == 1
        _assert_failed(tmp_path, "configure_failed", "prepare_instance",
                       str(_api_port(tmp_path)))  # fmt: skip
        # the port is free again: resume finishes the phase
        assert runner(tmp_path, "resume", "demo").returncode == 0
        assert state(tmp_path, "demo")["state"] == "configured"
        _destroy_cleans_up(tmp_path)


def test_release_fails_on_a_bad_tracker_setting(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", "--set", "tracker.log_level=verbose", *tracker_ports())
        assert runner(tmp_path, "up", "demo").returncode == 1
        _assert_failed(tmp_path, "release_failed", "deploy_tracker_config", "verbose")
        _destroy_cleans_up(tmp_path)


def test_run_fails_when_the_tracker_cannot_start(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", *tracker_ports())
        assert runner(tmp_path, "up", "demo", "--to", "released").returncode == 0
        with listening(_api_port(tmp_path)):
            assert runner(tmp_path, "advance", "demo").returncode == 1
        _assert_failed(tmp_path, "run_failed", "start_services", str(_api_port(tmp_path)))
        _destroy_cleans_up(tmp_path)


def test_destroy_fails_while_the_opentofu_state_is_locked(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", *tracker_ports())
        assert runner(tmp_path, "up", "demo", "--to", "provisioned").returncode == 0
        tfstate = tmp_path / "build/demo/tofu/terraform.tfstate"
        with tfstate.open("r+") as handle:
            # what another OpenTofu process working on this state holds
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert runner(tmp_path, "destroy", "demo").returncode == 1
        _assert_failed(tmp_path, "destroy_failed", "destroy_infrastructure", "state lock")
        assert (tmp_path / "build/demo/instance").is_dir()  # nothing was destroyed
        _destroy_cleans_up(tmp_path)


@pytest.mark.parametrize("target", ["created", "provisioned", "configured", "released"])
def test_destroy_from_every_stable_state(tmp_path: Path, target: str) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", *tracker_ports())
        if target != "created":
            assert runner(tmp_path, "up", "demo", "--to", target).returncode == 0
        _destroy_cleans_up(tmp_path)
