"""`status`, `list`, `history`, `validate` and `advance` skip typer (runner.cli.main's fast path) and must behave
exactly as through the typer application: same output, same errors, same exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli.main import fast_path
from runner.store.files import FileStore
from tests.helpers import build_tree, cli_env, run_cli

MACHINE = """\
    version: 1
    name: small
    initial: created
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
          - {name: one, uses: shell, with: {argv: ["true"]}}
"""


def typer_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The same command through the typer application only (no fast path): the same
    words, global options after the command moved before it as the entry point does."""
    code = (
        "import sys; sys.argv[0] = 'runner'; from runner.cli.app import app; "
        "from runner.cli.main import hoist_globals; "
        "app(args=hoist_globals(sys.argv[1:]), prog_name='runner')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast")
    build_tree(
        root, {"machine.yaml": MACHINE, "broken.yaml": MACHINE.replace("to: built", "to: nowhere")}
    )
    for name in ("alpha", "beta"):
        assert run_cli("create", name, cwd=root).returncode == 0
    assert run_cli("advance", "beta", cwd=root).returncode == 0
    (root / "data/broken").mkdir(mode=0o700)
    (root / "data/broken/state.json").write_text("{")
    return root


CASES = [
    ("status", "alpha"),
    ("status", "beta"),
    ("--output", "json", "status", "beta"),
    ("--output=json", "list"),
    ("list",),
    ("history", "beta"),
    ("history", "beta", "--limit", "2"),
    ("history", "--limit=1", "beta"),
    ("history", "-n", "1", "beta"),
    ("--output", "json", "history", "beta", "-n", "3"),
    ("--lock-timeout", "0", "--log-level", "debug", "status", "alpha"),
    # errors
    ("status", "nosuch"),
    ("status", "Bad/Name"),
    ("status", "broken"),
    ("--output", "json", "status", "broken"),
    ("history", "nosuch"),
    ("--workdir", "nowhere", "list"),
    ("--machine", "missing.yaml", "status", "alpha"),
    # global options after the command
    ("status", "beta", "--output", "json"),
    ("list", "--output=json"),
    ("history", "beta", "-n", "1", "--log-level", "debug", "--lock-timeout", "0"),
    ("history", "--output", "json", "beta", "--limit=2", "-v"),
    ("status", "alpha", "--no-color", "--log-format", "json"),
    ("list", "--workdir", "nowhere"),
    ("status", "alpha", "--machine=missing.yaml"),
    ("status", "broken", "--output", "json", "--log-level", "INFO"),
    ("exists", "alpha"),
    ("exists", "nosuch"),
    ("--output", "json", "exists", "beta"),
    ("exists", "Bad/Name"),
    # validate: a valid machine, a missing one, a broken one
    ("validate",),
    ("--output", "json", "validate"),
    ("validate", "--machine", "missing.yaml"),
    ("--output", "json", "validate", "--machine", "missing.yaml"),
    ("validate", "--machine", "broken.yaml"),
    ("--output", "json", "validate", "--machine=broken.yaml"),
    # advance: at the end of the happy path, a dry run, errors
    ("advance", "beta"),
    ("--output", "json", "advance", "beta", "--yes"),
    ("advance", "--dry-run", "alpha"),
    ("advance", "alpha", "-y", "--dry-run", "--output", "json"),
    ("advance", "nosuch"),
    ("advance", "Bad/Name"),
    ("--output", "json", "advance", "broken"),
    ("advance", "alpha", "--dry-run", "--machine", "missing.yaml"),
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_the_fast_path_answers_like_the_typer_application(
    work: Path, args: tuple[str, ...]
) -> None:
    assert fast_path(list(args)) is not None  # it is the fast path that runs
    fast, full = run_cli(*args, cwd=work), typer_cli(*args, cwd=work)
    assert (fast.returncode, fast.stdout) == (full.returncode, full.stdout), fast.stderr
    assert fast.stderr == full.stderr
    assert "Traceback" not in fast.stderr


def test_an_advance_runs_its_phase_as_through_the_typer_application(tmp_path: Path) -> None:
    """Two environments advanced, one by each path: the same lines (but the name and
    the durations), the same state and the same history."""
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    for name in ("gamma", "delta"):
        assert run_cli("create", name, cwd=tmp_path).returncode == 0
    assert fast_path(["advance", "gamma"]) is not None
    fast, full = (
        run_cli("advance", "gamma", cwd=tmp_path),
        typer_cli("advance", "delta", cwd=tmp_path),
    )

    def shown(proc: subprocess.CompletedProcess[str], name: str) -> tuple[int, str, str]:
        text = re.sub(r"\(\d+\.\d+s\)", "(T)", proc.stdout.replace(name, "NAME"))
        return proc.returncode, text, proc.stderr

    assert shown(fast, "gamma") == shown(full, "delta")
    assert "phase build succeeded: state is now built" in fast.stdout
    store = FileStore(tmp_path)
    assert store.load("gamma").state == store.load("delta").state == "built"
    kinds = [[e["type"] for e in store.read_events(n)] for n in ("gamma", "delta")]
    assert kinds[0] == kinds[1] and "step" in kinds[0]


def test_the_fast_path_output_is_what_an_operator_expects(work: Path) -> None:
    listing = run_cli("list", cwd=work)
    assert listing.returncode == 0
    assert "alpha" in listing.stdout and "beta" in listing.stdout and "built" in listing.stdout
    assert "broken" in listing.stdout.split("unreadable:")[1]
    status = json.loads(run_cli("--output", "json", "status", "beta", cwd=work).stdout)
    assert status["state"] == "built"
    history = json.loads(run_cli("--output", "json", "history", "beta", "-n", "2", cwd=work).stdout)
    assert len(history["events"]) == 2
    assert FileStore(work).load("beta").state == "built"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["status", "--help"],
        ["status"],
        ["status", "a", "b"],
        ["status", "-n"],
        ["list", "extra"],
        ["history"],
        ["history", "a", "--limit", "0"],
        ["history", "a", "--limit", "x"],
        ["history", "a", "--limit", "²"],
        ["history", "a", "--limit", "9" * 5000],
        ["history", "a", "--limit"],
        ["history", "a", "-n", "1", "-n", "2"],
        ["--output", "yaml", "status", "a"],
        ["--log-level", "LOUD", "status", "a"],
        ["--log-format", "xml", "list"],
        ["--lock-timeout", "-1", "list"],
        ["--lock-timeout", "soon", "list"],
        ["--workdir"],
        ["--workdir", "", "list"],
        ["--frobnicate", "list"],
        ["list", "--frobnicate"],
        ["status", "a", "--output", "yaml"],
        ["status", "a", "--", "--output", "json"],
        ["advance"],
        ["advance", "a", "b"],
        ["advance", "a", "--to", "built"],
        ["advance", "a", "--yes", "--yes"],
        ["advance", "--help"],
        ["validate", "--help"],
        ["exists"],
        ["exists", "a", "b"],
        ["validate", "extra"],
    ],
)
def test_anything_unusual_goes_to_the_typer_application(args: list[str]) -> None:
    assert fast_path(args) is None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["status", "--help"], "Where an environment is"),
        (["history", "demo", "--limit", "0"], "--limit"),
        (["--output", "yaml", "list"], "--output"),
    ],
)
def test_help_and_bad_arguments_still_get_typer_messages(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert needle in proc.stdout + proc.stderr
    assert proc.returncode == (0 if "--help" in args else 2)


def test_global_options_after_the_command_are_moved_before_it() -> None:
    from runner.cli.main import hoist_globals

    assert hoist_globals(["status", "demo", "--output", "json"]) == [
        "--output",
        "json",
        "status",
        "demo",
    ]
    assert hoist_globals(["advance", "demo", "--lock-timeout", "0", "-v"]) == [
        "--lock-timeout",
        "0",
        "-v",
        "advance",
        "demo",
    ]
    # the values of a command's own options are never taken for global options
    assert hoist_globals(["create", "x", "--set", "--no-color", "--no-color"]) == [
        "--no-color",
        "create",
        "x",
        "--set",
        "--no-color",
    ]
    assert hoist_globals(["status", "a", "--", "-v"]) == ["status", "a", "--", "-v"]
    assert hoist_globals(["--workdir", "w", "list", "--machine=m.yaml"]) == [
        "--workdir",
        "w",
        "--machine=m.yaml",
        "list",
    ]


def test_version(tmp_path: Path) -> None:
    from runner import __version__

    proc = run_cli("--version", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"runner {__version__}\n")


@pytest.mark.parametrize("args", [("list",), ("validate",)], ids=["fast path", "typer"])
def test_a_closed_output_pipe_ends_quietly(work: Path, args: tuple[str, ...]) -> None:
    """`runner list | head -0`: the reader is gone before anything is written. No
    traceback, no "internal error": exit 141, as a program killed by SIGPIPE."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=work,
            env=cli_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


# --- what a plain read imports ------------------------------------------------------
#
# The read-only commands start fast because they import little: no argument parser
# (typer), no ``logging`` unless something logs, no OpenSSL for the machine cache's key,
# no archive modules. Each case runs the command in a fresh interpreter and compares the
# modules it loaded with those of an interpreter that did nothing (whatever this
# interpreter's start-up loads is not the command's doing).

#: Modules (and their submodules) a plain read must not load: the argument parser, the
#: terminal's drawing, the machine's loader and validators, logging, OpenSSL, archives,
#: the results of the commands that act, the engine.
HEAVY = (
    "typer",
    "click",
    "rich",
    "jsonschema",
    "ruamel",
    "logging",
    "_hashlib",
    "shutil",
    "runner.api.outcomes",
    "runner.machine.loader",
    "runner.run",
    # the standard library's own slow starters: a read is near the interpreter's floor
    "dataclasses",
    "inspect",
    "typing",
    "pathlib",
    "urllib",
    "threading",
    "signal",
    "copy",
    "datetime",
    "runner.store.protocols",
)

#: Runs the fast path's command for the words given, then prints, as JSON on stderr,
#: the modules loaded since the interpreter started.
_PROBE = """
import json, sys
before = set(json.loads(sys.argv[1]))
from runner.cli.main import fast_path
command = fast_path(sys.argv[2:])
assert command is not None, "not a fast-path command line"
code = command()
sys.stderr.write(json.dumps({"code": code, "new": sorted(set(sys.modules) - before)}))
"""


def _idle_modules() -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(proc.stdout))


def _loaded(work: Path, *args: str) -> tuple[int, set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(_idle_modules()), *args],
        cwd=work,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = proc.stderr[proc.stderr.rindex('{"code"') :]
    found = json.loads(report)
    return found["code"], set(found["new"]), proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("status", "alpha"),
        ("exists", "alpha"),
        ("list",),
        ("history", "alpha"),
        ("--output", "json", "status", "alpha"),
    ],
    ids=" ".join,
)
def test_a_plain_read_loads_no_heavy_module(work: Path, args: tuple[str, ...]) -> None:
    code, new, stdout = _loaded(work, *args)
    assert code == 0
    assert ("true" if args[0] == "exists" else "created") in stdout  # it did its work
    assert sorted(m for m in new if any(m == h or m.startswith(h + ".") for h in HEAVY)) == []


#: Modules (and their submodules) `advance` of a phase of `shell` steps must not load once
#: the machine's verdict is cached: the lock's wrapper library (POSIX has the lock call
#: itself) and the entry point machinery (with its `email`, `csv`, `zipfile`), Jinja2
#: (no step has a template), the YAML parser and the machine's loader (the verdict is
#: cached), `jsonschema` (valid parameters), `dataclasses` (structs), OpenSSL (the
#: interpreter's own SHA-256), `socket` and `uuid` (`uname` names the host; the record
#: has its lineage), `typing` and the storage protocols (type checkers' names only),
#: `random` (no step is retried), `datetime` (the clock of the time module), `copy`
#: (plain data is copied by runner.struct), the ports' module (no input names a port), `validate`'s results, the argument parser and the
#: terminal's drawing.
ADVANCE_HEAVY = (
    "portalocker",
    "importlib.metadata",
    "email",
    "csv",
    "zipfile",
    "jinja2",
    "ruamel",
    "runner.machine.loader",
    "jsonschema",
    "dataclasses",
    "_hashlib",
    "socket",
    "uuid",
    "typing",
    "runner.store.protocols",
    "random",
    "datetime",
    "copy",
    "runner.run.ports",
    "runner.api.validated",
    "typer",
    "click",
    "rich",
)


def test_an_advance_of_shell_steps_loads_no_heavy_module(tmp_path: Path) -> None:
    """`runner advance NAME` of a phase of `shell` steps without templates, the machine
    checked by an earlier command: it runs the step and loads none of ADVANCE_HEAVY."""
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    for name in ("warm", "cold"):
        assert run_cli("create", name, cwd=tmp_path).returncode == 0
    assert run_cli("advance", "warm", cwd=tmp_path).returncode == 0  # the verdict is kept
    code, new, stdout = _loaded(tmp_path, "advance", "cold")
    assert code == 0
    assert "phase build succeeded: state is now built" in stdout  # it did its work
    assert FileStore(tmp_path).load("cold").state == "built"
    heavy = (m for m in new if any(m == h or m.startswith(h + ".") for h in ADVANCE_HEAVY))
    assert sorted(heavy) == []


def test_logging_configured_by_a_read_applies_when_something_logs(work: Path) -> None:
    """The fast path leaves its --log-level/--log-format for the first record: a record
    logged after the command is shown as the command line asked (JSON, DEBUG)."""
    code = (
        "import sys; from runner.cli.main import fast_path; "
        "fast_path(['--log-level', 'debug', '--log-format', 'json', 'status', 'alpha'])(); "
        "assert 'logging' not in sys.modules; "
        "from runner.log import logger; logger().debug('late record')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=cli_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stderr.strip().splitlines()[-1])
    assert (record["level"], record["message"]) == ("DEBUG", "late record")


def test_the_library_logs_nowhere_by_default(tmp_path: Path) -> None:
    """Used as a library, the runner's records go where the user configures logging:
    without any configuration a warning is not printed."""
    code = "from runner.log import logger; logger().warning('unseen'); print('done')"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "done\n", "")


def test_every_result_a_command_returns_has_a_text_form() -> None:
    """Text renderers are found by the result's class name (so that a read imports only
    its own result classes): each result a Runner method returns has one."""
    from runner.api import results
    from runner.api.runner import Runner
    from runner.cli import render
    from runner.result import Result

    returned = set()
    for name in dir(Runner):
        method = getattr(Runner, name)
        if name.startswith("_") or not callable(method):
            continue
        kind = getattr(results, str(method.__annotations__.get("return")), None)
        if isinstance(kind, type) and issubclass(kind, Result):
            returned.add(kind.__name__)
    assert {"StatusResult", "RunResult", "ValidateResult"} <= returned
    assert sorted(returned - set(render._TEXT)) == []


def test_the_results_of_outcomes_are_importable_from_results() -> None:
    """``runner.api.results`` names every result, those of ``outcomes`` on first use."""
    from runner.api import outcomes, results

    assert set(outcomes.__all__) == results._OUTCOMES
    for name in outcomes.__all__:
        assert getattr(results, name) is getattr(outcomes, name)
    assert set(outcomes.__all__) <= set(results.__all__)


def test_a_valid_machine_is_validated_without_jsonschema(tmp_path: Path) -> None:
    """`jsonschema` only explains errors: a valid machine (the shipped one, with inputs
    and every built-in plugin) is validated without importing it."""
    from runner.resources import shipped_machine

    (tmp_path / "machine.yaml").write_bytes(shipped_machine().read_bytes())
    code = (
        "import sys; from runner import Runner; "
        "result = Runner('.').validate(); assert result.valid; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jsonschema'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert (proc.returncode, proc.stdout) == (0, "[]\n"), proc.stderr


def test_list_state_filters_while_the_global_state_url_goes_before_the_command(
    tmp_path: Path,
) -> None:
    from runner.cli.main import hoist_globals

    # after `list`, --state is list's own filter; elsewhere it is the backend URL
    assert hoist_globals(["list", "--state", "created"]) == ["list", "--state", "created"]
    assert hoist_globals(["list", "--state=created", "-v"]) == ["-v", "list", "--state=created"]
    assert hoist_globals(["status", "demo", "--state", "file:other"]) == [
        "--state",
        "file:other",
        "status",
        "demo",
    ]
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    assert run_cli("--state", "file:other", "create", "elsewhere", cwd=tmp_path).returncode == 0
    here = run_cli("list", "--state", "created", "--output", "json", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert [e["environment"] for e in json.loads(here.stdout)["environments"]] == ["demo"]
    there = run_cli(
        "--state", "file:other", "list", "--state", "created", "--output", "json", cwd=tmp_path
    )
    assert there.returncode == 0, there.stderr
    assert [e["environment"] for e in json.loads(there.stdout)["environments"]] == ["elsewhere"]
