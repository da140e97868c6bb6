"""Shell completion: the scripts typer writes for bash, zsh and fish, installing one,
and real completion requests as the shells make them (environment names from data/,
phases and states from the machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import build_tree, run_cli

MACHINE = """\
version: 1
name: completion
initial: new
states:
  new: {}
  building: {}
  built: {}
  build_failed: {}
  leaving: {}
  gone: {final: true}
  leave_failed: {}
phases:
  - {name: build, from: new, via: building, to: built, failed: build_failed, steps: []}
  - {name: teardown, from: any, via: leaving, to: gone, failed: leave_failed, advance: false,
     steps: []}
"""

SCRIPTS = {
    "bash": "complete -o default -F _runner_completion runner",
    "zsh": "#compdef runner",
    "fish": "complete --command runner --no-files",
}


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_show_completion_prints_the_script_of_the_shell(tmp_path: Path, shell: str) -> None:
    done = run_cli("--show-completion", shell, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert SCRIPTS[shell] in done.stdout
    assert "_RUNNER_COMPLETE=complete_" + shell in done.stdout
    others = [s for s in SCRIPTS.values() if s != SCRIPTS[shell]]
    assert not any(other in done.stdout for other in others)


def test_show_completion_without_a_shell_detects_it_and_a_wrong_one_is_refused(
    tmp_path: Path,
) -> None:
    done = run_cli("--show-completion", cwd=tmp_path, env={"SHELL": "/bin/bash"})
    assert done.returncode == 0 and "_RUNNER_COMPLETE=complete_" in done.stdout
    done = run_cli("--show-completion", "tcsh", cwd=tmp_path)
    assert done.returncode == 2 and "unknown shell 'tcsh'" in done.stderr


def test_install_completion_writes_the_script_and_sources_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    done = run_cli("--install-completion", "bash", cwd=tmp_path, env={"HOME": str(home)})
    assert done.returncode == 0, done.stderr
    script = home / ".bash_completions" / "runner.sh"
    assert SCRIPTS["bash"] in script.read_text()
    assert str(script) in (home / ".bashrc").read_text()


def _work(tmp_path: Path) -> Path:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    for name in ("alpha", "beta", "beta-2"):
        assert run_cli("create", name, cwd=tmp_path).returncode == 0
    (tmp_path / "data" / "not-an-env").mkdir()  # no state.json: not offered
    return tmp_path


def bash(work: Path, line: str, *argv: str) -> list[str]:
    """What bash's completion function gets for the command line ``line`` (the cursor at
    its end), as the script of `--show-completion bash` asks for it."""
    words = line.split(" ")
    done = run_cli(
        *argv,
        cwd=work,
        env={
            "_RUNNER_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
        },
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_environments_phases_and_states(tmp_path: Path) -> None:
    work = _work(tmp_path)
    assert bash(work, "runner status ") == ["alpha", "beta", "beta-2"]
    assert bash(work, "runner advance b") == ["beta", "beta-2"]
    assert bash(work, "runner history ") == ["alpha", "beta", "beta-2"]
    assert bash(work, "runner phase alpha ") == ["build", "teardown"]
    assert bash(work, "runner phase alpha t") == ["teardown"]
    assert bash(work, "runner up alpha --to ") == [
        "new", "building", "built", "build_failed", "leaving", "gone", "leave_failed",
    ]  # fmt: skip
    assert bash(work, "runner graph --env a") == ["alpha"]
    # the global --workdir is honoured, from anywhere
    assert bash(tmp_path.parent, f"runner --workdir {work} destroy ") == ["alpha", "beta", "beta-2"]
    # commands, too
    assert "status" in bash(work, "runner st")


def test_a_completion_request_is_never_taken_by_the_fast_path(tmp_path: Path) -> None:
    """`status`, `list` and `history` lines run without typer; a completion request with
    such words in argv still reaches typer, which answers it."""
    work = _work(tmp_path)
    assert bash(work, "runner status ", "status", "alpha") == ["alpha", "beta", "beta-2"]
    assert bash(work, "runner history a", "list") == ["alpha"]


def test_zsh_and_fish_complete_too(tmp_path: Path) -> None:
    work = _work(tmp_path)
    zsh = run_cli(
        cwd=work,
        env={"_RUNNER_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "runner phase beta "},
    )
    assert zsh.returncode == 0 and '"build"' in zsh.stdout and '"teardown"' in zsh.stdout
    fish = run_cli(
        cwd=work,
        env={
            "_RUNNER_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "runner resume ",
        },
    )
    assert fish.returncode == 0 and fish.stdout.split() == ["alpha", "beta", "beta-2"]


def test_completion_in_a_folder_without_environments_offers_nothing(tmp_path: Path) -> None:
    assert bash(tmp_path, "runner status ") == []
    assert not (tmp_path / "data").exists()
