"""Installing the runner the ways the README says, and running the shipped machine.

- A plain (not editable) install into a fresh virtual environment, whose `runner` is
  run by its full path with a PATH holding neither that environment's `bin` nor any
  OpenTofu engine or `ansible-playbook`: the runner finds `runner-tofu` and
  `ansible-playbook` beside its interpreter (as after `pipx install` or `uv tool
  install`, which put only the runner's own commands on PATH).
- The README's first command, read from README.md, in a copy of the checkout, with a
  `python3` that refuses `pip install` outside a virtual environment (PEP 668), as the
  system Python of Debian and Ubuntu does.

Both install from PyPI (the dependencies, and the build backend for the build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.e2e.harness import cleaned_up, tracker_ports
from tests.helpers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SYSTEM_PATH = "/usr/bin:/bin"
"""A PATH with the machine's programs only (sh, rm, python3 for the tracker stand-in)."""

INSTALLED_TOOLS = ("runner", "runner-tofu", "tofu", "terraform", "ansible-playbook")

INSTALL_TIMEOUT_S = 170


def clean_env(path: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a fresh shell: ours without anything that points Python or
    the runner at this checkout or at a virtual environment; PATH is ``path``."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("RUNNER_")}
    env["PATH"] = path
    env.update(extra or {})
    return env


def run(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def must(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def state_of(runner: Path, work: Path, env: Mapping[str, str], name: str = "demo") -> str:
    out = must(run([str(runner), "--output", "json", "status", name], cwd=work, env=env))
    return str(json.loads(out)["state"])


# --- a plain install in a fresh virtual environment ------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``pip install '<checkout>[embedded]'`` (not editable) into a new venv."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    started = time.monotonic()
    must(run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=clean_env(SYSTEM_PATH)))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    must(
        run(
            [*pip, f"{ROOT}[embedded]"],
            cwd=root,
            env=clean_env(SYSTEM_PATH),
            timeout=INSTALL_TIMEOUT_S,
        )
    )
    print(f"plain install into a fresh venv: {time.monotonic() - started:.1f}s")
    yield venv


def test_a_plain_install_runs_the_shipped_machine_without_its_tools_on_path(
    venv: Path, tmp_path: Path
) -> None:
    bin_dir = venv / "bin"
    for name in ("runner", "runner-tofu", "ansible-playbook"):
        assert (bin_dir / name).is_file(), f"the install did not provide {name}"
    for name in INSTALLED_TOOLS:
        found = shutil.which(name, path=SYSTEM_PATH)
        assert found is None, f"{found} is on {SYSTEM_PATH}: this test needs a PATH without it"
    env = clean_env(SYSTEM_PATH)
    # the installed copy runs, not this checkout
    where = must(
        run(
            [str(bin_dir / "python"), "-c", "import runner; print(runner.__file__)"],
            cwd=tmp_path,
            env=env,
        )
    )
    assert Path(where.strip()).is_relative_to(venv)

    runner = bin_dir / "runner"
    work = tmp_path / "work"
    work.mkdir()
    with cleaned_up(work):
        must(run([str(runner), "create", "demo", *tracker_ports()], cwd=work, env=env))
        assert state_of(runner, work, env) == "created"
        must(run([str(runner), "up", "demo"], cwd=work, env=env))
        assert state_of(runner, work, env) == "running"
        must(run([str(runner), "destroy", "demo", "--yes"], cwd=work, env=env))
        assert state_of(runner, work, env) == "destroyed"

    # the tools ran from the venv's bin, found beside the runner's interpreter
    logs = "\n".join(p.read_text() for p in sorted((work / "data/demo/runs").glob("*.log")))
    assert f"$ {bin_dir}/runner-tofu apply" in logs
    assert f"$ {bin_dir}/runner-tofu destroy" in logs
    assert f"$ {bin_dir}/ansible-playbook -i" in logs
    assert "tool_missing" not in logs


# --- the README's first command, with a python3 that refuses pip outside a venv ------


def readme_commands() -> list[str]:
    """The one-line commands of the README's fresh-machine block (its first ```sh blocks,
    before the first section)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", head, flags=re.S | re.M)
    commands = [block.strip() for block in blocks]
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    return commands


def refuses_pip(python: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [python, "-m", "pip", "install", "six"],
        cwd=cwd,
        env=clean_env(SYSTEM_PATH),
        timeout=120,
    )


@pytest.fixture(scope="module")
def pep668_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder to put first on PATH whose ``python3`` refuses ``pip install`` outside
    a virtual environment, and the interpreter it is: Debian's or Ubuntu's own (it has
    an EXTERNALLY-MANAGED file, PEP 668) when this machine has it, else a wrapper of
    this Python that refuses it the same way. Either is checked to refuse first."""
    folder = tmp_path_factory.mktemp("pep668") / "bin"
    folder.mkdir()
    system = Path("/usr/bin/python3")
    marked = list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    if system.is_file() and marked:
        real = system
        (folder / "python3").symlink_to(system)
    else:
        real = Path(getattr(sys, "_base_executable", sys.executable))
        (folder / "python3").write_text(
            "#!/bin/sh\n"
            "# a Python whose pip refuses to install outside a virtual environment\n"
            'if [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = install ]; then\n'
            "    echo 'error: externally-managed-environment' >&2; exit 1\n"
            "fi\n"
            f'exec {real} "$@"\n'
        )
        (folder / "python3").chmod(0o755)
    refused = refuses_pip(str(folder / "python3"), folder.parent)
    assert refused.returncode != 0, f"{folder / 'python3'} installed six:\n{refused.stdout}"
    # a Debian python3 without python3-pip refuses too, for want of pip
    said = refused.stdout + refused.stderr
    assert "externally-managed-environment" in said or "No module named pip" in said, said
    return folder, real


def tracked_copy(destination: Path) -> Path:
    """The checkout's tracked files (as they are now) copied to ``destination``: what a
    fresh clone holds."""
    listed = must(run(["git", "ls-files", "-z"], cwd=ROOT, env=os.environ))
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (a closed connection's TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readmes_first_command_works_where_python3_refuses_pip(
    pep668_python: tuple[Path, Path], tmp_path: Path
) -> None:
    fake_bin, real_python = pep668_python
    command = readme_commands()[0]
    clone = tracked_copy(tmp_path / "clone")
    assert not (clone / ".venv").exists() and not (clone / "data" / "demo").exists()
    # the command as written uses the tracker's default ports
    for port in (1212, 7070):
        assert port_free(port), f"port {port} is in use: the README's demo needs it"
    # this Python has what `venv` needs: the command must not reach for apt-get
    guard = fake_bin / "apt-get"
    guard.write_text("#!/bin/sh\necho 'apt-get was run' >&2\nexit 1\n")
    guard.chmod(0o755)
    env = clean_env(f"{fake_bin}:{SYSTEM_PATH}")

    started = time.monotonic()
    with cleaned_up(clone):
        proc = run(["/bin/sh", "-c", command], cwd=clone, env=env, timeout=INSTALL_TIMEOUT_S)
    took = time.monotonic() - started
    print(f"README's first command: {took:.1f}s")
    assert proc.returncode == 0, (
        f"{command}\nexited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    assert "apt-get was run" not in proc.stderr
    runner = clone / ".venv" / "bin" / "runner"
    assert runner.is_file()
    # the venv is one of the refusing python3
    assert os.path.realpath(clone / ".venv/bin/python") == os.path.realpath(real_python)
    # it went the whole way: running, then destroyed, and says so last
    record = json.loads((clone / "data" / "demo" / "state.json").read_text())
    assert record["state"] == "destroyed"
    events = [
        json.loads(line) for line in (clone / "data/demo/events.jsonl").read_text().splitlines()
    ]
    visited = [e["to"] for e in events if e.get("type") in ("created", "transition")]
    assert "running" in visited and visited[-1] == "destroyed"
    assert "running" in proc.stdout and "destroyed" in proc.stdout
    assert not (clone / "build" / "demo").exists()
