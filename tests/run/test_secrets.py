"""Secret inputs (`secret: true`): the value is read when a step needs it and is never
written anywhere the runner writes: state, events, traces, run logs, the terminal.

The environment stores where the value lives, `{env: NAME}` or `{file: PATH}`; a step
asks for it with `secret('token')` in a template. The steps below put the value where
a careless tool would (its argv, its stdout, a rendered file, a failing command), and
every command of the environment's life is run with `-v` and `--log-level DEBUG`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_tree, read_state, run_cli

MACHINE = """\
version: 1
name: secrets
initial: created
inputs:
  type: object
  additionalProperties: false
  properties:
    token: {secret: true, type: object}
    label: {type: string, default: plain}
states:
  created: {description: New}
  building: {description: Building}
  built: {description: Built}
  build_failed: {description: Build failed}
  destroying: {}
  destroyed: {final: true}
  destroy_failed: {}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - name: echo
        uses: shell
        with:
          argv: [sh, -c, 'printf "%s\\n" "$0" > echoed.txt; echo "token=$0"', "{{ secret('token') }}"]
        outputs: {said: stdout}
      - name: direct
        uses: shell
        with: {argv: [printf, "%s\\n", "{{ secret('token') }}"]}
      - name: by_env
        uses: shell
        with:
          argv: [sh, -c, 'echo "from env: $TOKEN"']
          env: {TOKEN: "{{ secret('token') }}"}
      - name: render
        uses: template
        with:
          source: tpl
          target: "{{ env.build_dir }}/conf"
          vars: {again: "{{ secret('token') }}"}
      - name: fragile
        uses: shell
        with: {argv: [sh, -c, 'echo "failing with $0"; test ! -e broken', "{{ secret('token') }}"]}
  - name: destroy
    from: any
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - name: clean
        uses: shell
        with: {argv: [rm, -f, echoed.txt]}
"""

TEMPLATE = "token = {{ secret('token') }}\nagain = {{ again }}\nlabel = {{ inputs.label }}\n"

TOKEN = "s3cr3t-Zq9wVw7Kp-tok3n"


@pytest.fixture()
def work(work: Path) -> Path:
    """The shared working folder (with MACHINE), and the template the machine renders."""
    build_tree(work, {"tpl/app.conf.j2": TEMPLATE})
    return work


def everything_written(work: Path) -> dict[str, str]:
    """Every file under data/ (state, events, traces, runs), by path."""
    return {
        p.relative_to(work).as_posix(): p.read_text(errors="replace")
        for p in sorted((work / "data").rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def fragments(value: str) -> list[str]:
    """Pieces of ``value`` that must not appear either: each line of a multi-line value,
    and each run of 6+ characters between quotes or spaces (a quoted copy leaks too)."""
    import re

    pieces = {line.strip() for line in value.splitlines() if len(line.strip()) >= 6}
    pieces |= {p for p in re.split(r"[\s'\"\\]+", value) if len(p) >= 6}
    return sorted(pieces | {value})


def assert_hidden(value: str, where: str, text: str) -> None:
    for piece in fragments(value):
        assert piece not in text, f"{piece!r} of the secret appears in {where}"


def run_life(
    work: Path, ref: list[str], env: dict[str, str], value: str, secret_file: str = ""
) -> dict[str, str]:
    """create, dry run, advance (fails), status, history, resume (succeeds), in text and
    JSON, verbose and at DEBUG; every output checked; returns the outputs by command.

    `create` checks that the value can be read (the variable is given to it, the file
    written before it) and shows nothing of it; a step reads it when it needs it.
    """
    loud = ["-v", "--log-level", "DEBUG"]
    outputs: dict[str, str] = {}

    def run(label: str, *args: str, code: int = 0) -> None:
        proc = run_cli(*args, cwd=work, env=env)
        assert proc.returncode == code, f"{label}: {proc.stdout}{proc.stderr}"
        assert "Traceback" not in proc.stderr
        outputs[label] = proc.stdout + proc.stderr
        outputs[label + ":stdout"] = proc.stdout
        assert_hidden(value, f"the output of `runner {' '.join(args)}`", outputs[label])

    if secret_file:
        build_tree(work, {"token.txt": secret_file}, dedent=False)
    run("create", *loud, "create", "demo", *ref)
    run("dry-run", *loud, "advance", "demo", "--dry-run")
    run("dry-run-json", *loud, "--output", "json", "advance", "demo", "--dry-run")
    (work / "broken").write_text("")
    run("advance", *loud, "advance", "demo", code=1)
    run("status", *loud, "status", "demo")
    run("status-json", "--output", "json", "status", "demo")
    run("history", *loud, "history", "demo")
    run("history-json", "--output", "json", "history", "demo")
    (work / "broken").unlink()
    run("resume", *loud, "--output", "json", "resume", "demo")
    run("list", *loud, "list")
    for path, text in everything_written(work).items():
        assert_hidden(value, path, text)
    return outputs


def assert_used_where_the_steps_put_it(work: Path, value: str) -> None:
    state = read_state(work)
    assert state["state"] == "built"
    assert (work / "echoed.txt").read_text() == value + "\n"
    conf = (work / "build/demo/conf/app.conf").read_text()
    assert f"token = {value}\n" in conf and f"again = {value}\n" in conf
    assert state["outputs"]["said"] == "token=***"  # the tool's stdout, stored masked
    assert state["inputs"]["token"] in ({"env": "RUNNER_TEST_TOKEN"}, {"file": "token.txt"})
    events = (work / "data/demo/events.jsonl").read_text()
    assert "failing with ***" in events  # the failure was recorded, masked
    traces = list((work / "data/demo/traces").iterdir())
    assert traces, "the failed run wrote a trace"
    trace = traces[0].read_text()
    assert "== rendered parameters (secrets masked) ==" in trace and "***" in trace


def test_a_secret_from_the_environment_never_leaves_the_step(work: Path) -> None:
    env = {"RUNNER_TEST_TOKEN": TOKEN}
    outputs = run_life(work, ["--set", "token.env=RUNNER_TEST_TOKEN"], env, TOKEN)
    assert_used_where_the_steps_put_it(work, TOKEN)
    assert "token=***" in outputs["advance"]  # -v streamed the step's output, masked
    plan = json.loads(outputs["dry-run-json:stdout"])["dry_run"][0]
    assert plan["steps"][1]["params"]["argv"] == ["printf", "%s\n", "***"]
    assert plan["steps"][2]["params"]["env"] == {"TOKEN": "***"}


def test_a_secret_from_a_file_never_leaves_the_step(work: Path) -> None:
    run_life(work, ["--set", "token.file=token.txt"], {}, TOKEN, secret_file=TOKEN + "\n")
    assert_used_where_the_steps_put_it(work, TOKEN)


def test_a_secret_with_quotes_and_spaces_is_hidden_in_the_logged_command_line(
    work: Path,
) -> None:
    """Passwords hold quotes and spaces; the run log shows each command shell-quoted,
    and a quoted copy of the value is as much a leak as the value itself."""
    value = 'pa\'s w0rd-Kq7Vx9-"qU0t3d"'
    run_life(work, ["--set", "token.env=RUNNER_TEST_TOKEN"], {"RUNNER_TEST_TOKEN": value}, value)
    assert (work / "echoed.txt").read_text() == value + "\n"


def test_a_multi_line_secret_is_hidden_line_by_line(work: Path) -> None:
    """A private key is the typical secret file: tools print it line by line, and each
    of its lines is as secret as the whole."""
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
        "QyNTUxOQAAACBm9wXq2Ld4Tq8SecretSecretSecretKq7Vx9ZzAAAAAAAAAAAAAAAAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    body = "\n".join(key.splitlines()[1:-1])  # the BEGIN/END lines are no secret
    run_life(work, ["--set", "token.file=token.txt"], {}, body, secret_file=key + "\n")
    assert (work / "echoed.txt").read_text() == key + "\n"


def test_create_refuses_a_variable_that_is_not_set(work: Path) -> None:
    proc = run_cli("create", "demo", "--set", "token.env=RUNNER_TEST_UNSET", cwd=work)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        "secret input 'token' is read from the environment variable RUNNER_TEST_UNSET, which "
        "is not set" in proc.stderr
    )
    assert "nothing was created" in proc.stderr
    assert not (work / "data/demo").exists()


def test_create_refuses_a_secret_file_that_cannot_be_read(work: Path) -> None:
    proc = run_cli("create", "demo", "--set", "token.file=nope.txt", cwd=work)
    assert proc.returncode == 2
    assert "secret input 'token' is read from" in proc.stderr and "nope.txt" in proc.stderr
    assert not (work / "data/demo").exists()


def test_a_variable_unset_since_create_refuses_the_phase_before_any_step(work: Path) -> None:
    env = {"RUNNER_TEST_TOKEN": TOKEN}
    assert (
        run_cli(
            "create", "demo", "--set", "token.env=RUNNER_TEST_TOKEN", cwd=work, env=env
        ).returncode
        == 0
    )
    before = read_state(work)
    for command in (["advance", "demo"], ["up", "demo"], ["phase", "demo", "build"]):
        proc = run_cli(*command, cwd=work)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert "phase 'build' of environment 'demo' reads secret inputs" in proc.stderr
        assert "RUNNER_TEST_TOKEN, which is not set" in proc.stderr
        assert "stays in 'created'" in proc.stderr
    assert read_state(work) == before  # nothing saved
    assert not (work / "echoed.txt").exists()  # no step ran
    assert not (work / "data/demo/runs").exists() or not any((work / "data/demo/runs").iterdir())
    # a phase that reads no secret is not blocked
    proc = run_cli("destroy", "demo", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_state(work)["state"] == "destroyed"


def test_a_secret_file_removed_since_create_refuses_the_phase(work: Path) -> None:
    build_tree(work, {"token.txt": TOKEN})
    assert run_cli("create", "demo", "--set", "token.file=token.txt", cwd=work).returncode == 0
    (work / "token.txt").unlink()
    proc = run_cli("advance", "demo", cwd=work)
    assert proc.returncode == 2
    assert "token.txt" in proc.stderr and read_state(work)["state"] == "created"


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "token=thevalue"],
        ["--set", "token.value=thevalue"],
        ["--set", "token.env=A", "--set", "token.file=thevalue"],
        ["--config", "cfg.yaml"],
    ],
    ids=["plain-string", "unknown-key", "both-forms", "plain-string-in-config"],
)
def test_a_secret_value_given_directly_is_refused(work: Path, args: list[str]) -> None:
    build_tree(work, {"cfg.yaml": "token: thevalue\n"})
    proc = run_cli("create", "demo", *args, cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "inputs.token" in proc.stderr and "never holds the value" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "data/demo").exists()


ESCAPES_MACHINE = """\
version: 1
name: escapes
initial: created
inputs:
  type: object
  properties:
    creds: {secret: true, type: object}
states:
  created: {}
  building: {}
  built: {}
  build_failed: {}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - name: as_json
        uses: shell
        with:
          argv: [echo, "curl", "-d", '{"token": {{ secret("creds") | tojson }}}']
      - name: as_repr
        uses: shell
        with: {argv: [python3, -c, "import sys; print(repr(sys.argv[1]))", "{{ secret('creds') }}"]}
      - name: project
        uses: shell
        with:
          argv: [printf, '{"project_id": "my-project", "region": "europe-west1"}']
          parse: json
        outputs: {project: project_id}
"""


def test_escaped_copies_are_hidden_and_parsed_output_is_left_whole(tmp_path: Path) -> None:
    """A template's `tojson` writes `&<>` as \\u0026..., a tool prints a repr: those copies
    are as secret as the value. And a step whose output is parsed must get it unchanged,
    even where it shares words with a secret (a key file's `"project_id": "my-project"`
    line): only whole secrets are hidden from what a step parses."""
    value = "Zq8&Lm3<Pw9>Rt'x\\y"
    key_file = (
        '{"type": "service_account",\n"project_id": "my-project",\n"region": "europe-west1"}\n'
    )
    build_tree(tmp_path, {"machine.yaml": ESCAPES_MACHINE, "key.json": key_file})
    env = {"RUNNER_TEST_CREDS": value}
    assert (
        run_cli(
            "create", "a", "--set", "creds.env=RUNNER_TEST_CREDS", cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    proc = run_cli("-v", "--log-level", "DEBUG", "advance", "a", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = everything_written(tmp_path)
    escaped = json.dumps(value)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c")
    for copy in (value, escaped, repr(value)[1:-1], "Zq8&Lm3", "Lm3<Pw9"):
        for where, text in [*written.items(), ("output", proc.stdout + proc.stderr)]:
            assert copy not in text, f"{copy!r} in {where}"
    assert run_cli("create", "b", "--set", "creds.file=key.json", cwd=tmp_path).returncode == 0
    proc = run_cli("advance", "b", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = read_state(tmp_path, "b")
    assert state["outputs"]["project"] == "my-project"
    log = "".join((tmp_path / "data/b/runs").glob("*.log").__next__().read_text())
    assert '"project_id": "my-project"' not in log  # the run log hides the key's lines


PARSED_MACHINE = """\
version: 1
name: parsed
initial: created
inputs:
  type: object
  properties:
    creds: {secret: true, type: object}
states: {created: {}, building: {}, built: {}, build_failed: {}}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - name: emit
        uses: shell
        with:
          argv:
            - python3
            - -c
            - |
              import json, sys
              token = sys.argv[1]
              slashed = json.dumps(token).replace("/", "\\\\/")
              escaped = "".join("\\\\u%04x" % ord(c) for c in token)
              print('{"a": %s, "b": "%s", "c": "plain"}' % (slashed, escaped))
            - "{{ secret('creds') }}"
          parse: json
        outputs: {a: a, b: b, c: c}
"""


def test_a_secret_in_parsed_output_is_never_stored(tmp_path: Path) -> None:
    """JSON may write a secret as `\\/` or `\\uXXXX` escapes that no masking of the raw
    output can know; once parsed it is the secret again, and must not reach outputs."""
    value = "Zq9Super/Secret/Token4711"
    build_tree(tmp_path, {"machine.yaml": PARSED_MACHINE})
    env = {"RUNNER_TEST_CREDS": value}
    assert (
        run_cli(
            "create", "p", "--set", "creds.env=RUNNER_TEST_CREDS", cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    proc = run_cli("advance", "p", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = read_state(tmp_path, "p")
    assert state["outputs"] == {"a": "***", "b": "***", "c": "plain"}
    status = run_cli("status", "p", cwd=tmp_path)
    assert value not in status.stdout and "c=plain" in status.stdout


def test_the_shipped_machine_reads_its_secret_in_the_release_only(tmp_path: Path) -> None:
    """The tracker's admin token is read by the release's templates (their files, not
    the machine's `with`), and by no other phase but the redeploy, which releases again:
    only those are checked."""
    from runner import Runner
    from runner.run.phase import secrets_used

    runner = Runner(tmp_path)
    runner.create("demo", {"tracker": {"admin_token": {"env": "HOME"}}})
    with runner._session("demo") as session:
        used = {p.name: secrets_used(session, p, list(p.steps)) for p in session.machine.phases}
    assert used == {
        "provision": set(),
        "configure": set(),
        "release": {"tracker.admin_token"},
        "run": set(),
        "register": set(),
        "restart": set(),
        "redeploy": {"tracker.admin_token"},  # the release again
        "destroy": set(),
    }


def test_up_checks_every_phase_of_the_way_before_running_any(tmp_path: Path) -> None:
    env = {"RUNNER_TEST_TOKEN": TOKEN}
    token = ["--set", "tracker.admin_token.env=RUNNER_TEST_TOKEN"]
    assert run_cli("create", "demo", *token, cwd=tmp_path, env=env).returncode == 0
    proc = run_cli("up", "demo", "--to", "released", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "phase 'release' of environment 'demo' reads secret inputs" in proc.stderr
    assert "RUNNER_TEST_TOKEN, which is not set" in proc.stderr
    assert read_state(tmp_path)["state"] == "created" and read_state(tmp_path)["serial"] == 1


@pytest.mark.parametrize(
    ("texts", "used"),
    [
        (["{{ secret('a.b') }} and {{ secret_file(\"c\") | tojson }}"], {"a.b", "c"}),
        (["# a secret (not code) {# secret('x') #}", "plain"], set()),
        (["{% set t = secret('a') %}{{ t }}"], {"a"}),
        (["{{ secret(name) }}"], None),
        (["{{ secret('a') }}", "{{ secret_file(inputs.which) }}"], None),
    ],
)
def test_the_secrets_a_template_reads(texts: list[str], used: set[str] | None) -> None:
    from runner.run.inputs import secrets_in

    assert secrets_in(texts) == used
