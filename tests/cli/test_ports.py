"""Ports of this machine an environment names (`free_port` inputs): picked free at
create when not given, refused when given and taken, checked again before the phase
that leaves the initial state."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.harness import free_port
from tests.helpers import build_tree, read_state, run_cli


def machine(api: int, udp: int) -> str:
    return f"""\
version: 1
name: ports
initial: new
inputs:
  type: object
  additionalProperties: false
  properties:
    provider: {{enum: [local, cloud], default: local}}
    service:
      type: object
      default: {{}}
      properties:
        api_port:
          type: integer
          default: {api}
          free_port: {{protocol: tcp, when: "inputs.provider == 'local'"}}
        udp_port:
          type: integer
          default: {udp}
          free_port: {{protocol: udp, when: "inputs.provider == 'local'"}}
states:
  new: {{}}
  making: {{}}
  made: {{}}
  make_failed: {{}}
  leaving: {{}}
  gone: {{final: true}}
  leave_failed: {{}}
phases:
  - name: make
    from: new
    via: making
    to: made
    failed: make_failed
    steps:
      - {{name: one, uses: shell, with: {{argv: ["true"]}}}}
  - {{name: destroy, from: any, via: leaving, to: gone, failed: leave_failed, advance: false,
     steps: []}}
"""


@contextmanager
def listening(port: int, kind: int = socket.SOCK_STREAM) -> Iterator[None]:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        yield


def ports_of(work: Path, name: str) -> tuple[int, int]:
    service = read_state(work, name)["inputs"]["service"]
    return service["api_port"], service["udp_port"]


def _work(tmp_path: Path) -> tuple[Path, int, int]:
    api, udp = free_port(), free_port()
    build_tree(tmp_path, {"machine.yaml": machine(api, udp)})
    return tmp_path, api, udp


def test_two_environments_without_ports_get_different_ones(tmp_path: Path) -> None:
    work, api, udp = _work(tmp_path)
    assert run_cli("create", "a", cwd=work).returncode == 0
    assert ports_of(work, "a") == (api, udp)  # the defaults, free
    done = run_cli("--log-level", "INFO", "create", "b", cwd=work)
    assert done.returncode == 0, done.stderr
    b_api, b_udp = ports_of(work, "b")
    assert b_api != api and b_udp != udp
    assert f"service.api_port: {api} is taken, using {b_api}" in done.stderr
    created = json.loads(run_cli("--output", "json", "create", "b2", cwd=work).stdout)
    assert len({api, b_api, created["inputs"]["service"]["api_port"]}) == 3
    # a destroyed environment gives its ports back
    assert run_cli("destroy", "a", cwd=work).returncode == 0
    assert run_cli("create", "c", cwd=work).returncode == 0
    assert ports_of(work, "c") == (api, udp)


def test_a_default_port_something_listens_on_is_replaced(tmp_path: Path) -> None:
    work, api, udp = _work(tmp_path)
    with listening(api), listening(udp, socket.SOCK_DGRAM):
        assert run_cli("create", "a", cwd=work).returncode == 0
    got_api, got_udp = ports_of(work, "a")
    assert got_api != api and got_udp != udp


def test_a_given_port_that_is_taken_is_refused(tmp_path: Path) -> None:
    work, api, _udp = _work(tmp_path)
    assert run_cli("create", "a", cwd=work).returncode == 0
    done = run_cli("create", "b", "--set", f"service.api_port={api}", cwd=work)
    assert done.returncode == 2
    assert f"inputs.service.api_port = {api}: environment 'a' of this working directory" in (
        done.stderr
    )
    assert "nothing was created" in done.stderr and not (work / "data/b").exists()
    other = free_port()
    with listening(other):
        done = run_cli("create", "b", "--set", f"service.api_port={other}", cwd=work)
    assert done.returncode == 2
    assert f"inputs.service.api_port = {other}: TCP port {other} is in use" in done.stderr
    assert not (work / "data/b").exists()


def test_ports_off_this_machine_are_left_alone(tmp_path: Path) -> None:
    work, api, udp = _work(tmp_path)
    assert run_cli("create", "a", cwd=work).returncode == 0
    for name in ("b", "c"):
        done = run_cli("create", name, "--set", "provider=cloud", cwd=work)
        assert done.returncode == 0, done.stderr
        assert ports_of(work, name) == (api, udp)
    done = run_cli(
        "create", "d", "--set", "provider=cloud", "--set", f"service.api_port={api}", cwd=work
    )
    assert done.returncode == 0, done.stderr


def test_the_first_phase_is_refused_while_a_port_is_taken(tmp_path: Path) -> None:
    work, api, _udp = _work(tmp_path)
    assert run_cli("create", "a", cwd=work).returncode == 0
    before = read_state(work, "a")
    with listening(api):
        for command in (["advance", "a"], ["up", "a"], ["phase", "a", "make"]):
            done = run_cli(*command, cwd=work)
            assert done.returncode == 2, done.stdout + done.stderr
            assert "phase 'make' of environment 'a' would use ports that are taken" in done.stderr
            assert f"TCP port {api} is in use" in done.stderr and "stays in 'new'" in done.stderr
        assert read_state(work, "a") == before
    done = run_cli("advance", "a", cwd=work)
    assert done.returncode == 0, done.stderr
    assert read_state(work, "a")["state"] == "made"
