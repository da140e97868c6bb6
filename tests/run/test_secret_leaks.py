"""Secrets never leak: not through a variable a step inherits, not through a file the
runner renders, not through argv; `secret: true` is honoured where it stands or the
machine is refused. Real processes, real files, real modes."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from tests.helpers import build_tree, run_cli

TOKEN = "s3cr3t-Token-4711-xyzzy"

MACHINE = """\
    version: 1
    name: leaks
    initial: created
    inputs:
      type: object
      properties:
        token: {secret: true, description: where the token is}
    states:
      created: {description: new}
      building: {description: building}
      built: {description: built}
      build_failed: {description: failed}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - name: print_inherited
            uses: shell
            with: {argv: ["sh", "-c", "echo inherited=[$LEAKY_TOKEN]; env | grep -c LEAKY_TOKEN || true"]}
          - name: print_given
            uses: shell
            with:
              argv: ["sh", "-c", "echo given=$TOK"]
              env: {TOK: "{{ secret('token') }}"}
          - name: render
            uses: template
            with: {source: files, target: "{{ env.build_dir }}/out"}
          - name: from_a_file
            uses: shell
            with: {argv: ["sh", "-c", "echo file-mode=$(stat -c %a \\"$0\\"); cat \\"$0\\"", "{{ secret_file('token') }}"]}
          - name: fail_loudly
            uses: shell
            with: {argv: ["sh", "-c", "echo failing with $TOK; exit 3"], env: {TOK: "{{ secret('token') }}"}}
"""


def _all_text(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _readable_by_others(path: Path, top: Path) -> bool:
    """Whether a user other than the owner can read ``path`` (its mode and every folder
    from ``top`` down to it)."""
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        here = path.parent
        while True:
            if not here.stat().st_mode & (stat.S_IXGRP | stat.S_IXOTH):
                return False
            if here == top:
                return True
            here = here.parent
    return False


@pytest.mark.parametrize("given_as", ["env", "file"])
def test_a_secret_is_found_nowhere_it_should_not_be(tmp_path: Path, given_as: str) -> None:
    work = tmp_path / "work"
    build_tree(
        work,
        {
            "machine.yaml": MACHINE,
            "files/config.toml.j2": "token = {{ secret('token') | tojson }}\n",
        },
    )
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    env = {"LEAKY_TOKEN": TOKEN}
    ref = (
        ["--set", "token.env=LEAKY_TOKEN"]
        if given_as == "env"
        else ["--set", f"token.file={tmp_path / 'token.txt'}"]
    )
    outputs = [run_cli("--output", "json", "create", "demo", *ref, cwd=work, env=env)]
    outputs.append(run_cli("-v", "advance", "demo", cwd=work, env=env))
    outputs += [
        run_cli("--output", "json", c, "demo", cwd=work, env=env) for c in ("status", "history")
    ]
    outputs.append(
        run_cli("--output", "json", "advance", "demo", cwd=work, env=env)
    )  # refused: failed
    outputs.append(run_cli("--output", "json", "resume", "demo", cwd=work, env=env))
    terminal = "".join(o.stdout + o.stderr for o in outputs)
    assert (
        outputs[1].returncode == 1 and "fail_loudly" in terminal
    )  # the phase ran to its last step
    assert TOKEN not in terminal
    if given_as == "env":  # the variable a secret is read from is not inherited
        assert "inherited=[]" in terminal
    else:  # an unrelated variable holding the value is, and masked from the start
        assert "inherited=[***]" in terminal
    assert "given=***" in terminal and "file-mode=600" in terminal
    for o in outputs:
        if o.stdout.strip().startswith("{"):
            json.loads(o.stdout)
    # on disk: the state, events, run logs and traces never hold it; the rendered file
    # does, on purpose, and nobody else can read it
    for path, data in _all_text(work / "data").items():
        assert TOKEN.encode() not in data, path
    holders = [p for p, data in _all_text(work / "build").items() if TOKEN.encode() in data]
    assert holders == [work / "build" / "demo" / "out" / "config.toml"]
    for path in holders:
        assert not _readable_by_others(path, work), oct(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((work / "build" / "demo").stat().st_mode) & 0o077 == 0
    # the files secret_file() wrote are gone once the phase ended
    leftovers = [
        p
        for p in Path("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp").glob("runner-secrets-*")
    ]
    assert all(not (p / "token").exists() for p in leftovers)


def test_a_secret_in_argv_is_warned_about(tmp_path: Path) -> None:
    machine = MACHINE.replace(
        'with: {argv: ["sh", "-c", "echo inherited=[$LEAKY_TOKEN]; env | grep -c LEAKY_TOKEN || true"]}',
        """with: {argv: ["echo", "{{ secret('token') }}"]}""",
    )
    build_tree(tmp_path, {"machine.yaml": machine, "files/x.j2": "x\n"})
    env = {"LEAKY_TOKEN": TOKEN}
    created = run_cli("create", "demo", "--set", "token.env=LEAKY_TOKEN", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    done = run_cli("advance", "demo", cwd=tmp_path, env=env)
    assert "a secret is in the arguments of echo" in done.stderr, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    log = next((tmp_path / "data" / "demo" / "runs").iterdir()).read_text()
    assert "a secret is in the arguments of echo" in log and TOKEN not in log


@pytest.mark.parametrize(
    "schema",
    [
        "{type: array, items: {type: string, secret: true}}",
        "{type: object, additionalProperties: {secret: true}}",
        "{allOf: [{secret: true}]}",
        "{$ref: '#/$defs/x', $defs: {x: {secret: true}}}",
        "{type: string, secret: yes please}",
    ],
)
def test_a_secret_that_cannot_be_honoured_is_refused(tmp_path: Path, schema: str) -> None:
    machine = MACHINE.replace(
        "token: {secret: true, description: where the token is}", f"token: {schema}"
    )
    build_tree(tmp_path, {"machine.yaml": machine})
    done = run_cli("validate", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot be honoured" in done.stderr and "machine.yaml:" in done.stderr, done.stderr


@pytest.mark.parametrize("given_as", ["env", "file"])
def test_the_shipped_machine_keeps_its_secret_out_of_argv_and_private(
    tmp_path: Path, given_as: str
) -> None:
    """The shipped lifecycle on the local provider, with the tracker's admin token given
    as an environment variable or a file: no warning about argv, the token nowhere under
    data/, only in the rendered files under build/ and those private."""
    ports = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    env = {"TRACKER_TOKEN": TOKEN, "RUNNER_TOFU": "runner-tofu"}
    (tmp_path / "token").write_text(TOKEN)
    ref = "env=TRACKER_TOKEN" if given_as == "env" else f"file={tmp_path / 'token'}"
    sets = ["--set", f"tracker.admin_token.{ref}",
            "--set", f"tracker.api_port={ports[0]}", "--set", f"tracker.http_port={ports[1]}",
            "--set", f"tracker.udp_port={ports[2]}"]  # fmt: skip
    try:
        done = [run_cli("create", "demo", *sets, cwd=tmp_path, env=env)]
        done.append(
            run_cli("-v", "up", "demo", "--to", "released", cwd=tmp_path, env=env, timeout=300)
        )
        assert done[-1].returncode == 0, done[-1].stdout + done[-1].stderr
        terminal = "".join(d.stdout + d.stderr for d in done)
        assert TOKEN not in terminal and "in the arguments of" not in terminal
        for path, data in _all_text(tmp_path / "data").items():
            assert TOKEN.encode() not in data, path
        for path, data in _all_text(tmp_path / "build").items():
            if TOKEN.encode() in data:
                assert not _readable_by_others(path, tmp_path), path
        holders = [p for p, data in _all_text(tmp_path / "build").items() if TOKEN.encode() in data]
        assert holders, "the release renders the token into the tracker's files"
        for path in holders:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))
    finally:
        run_cli("destroy", "demo", "--yes", cwd=tmp_path, env=env, timeout=300)
