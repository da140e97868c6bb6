"""The built-in step plugins against real programs: the process helper, the embedded
OpenTofu-compatible engine, ansible-playbook, ssh, an HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.errors import StepError
from runner.plugin import Step, StepContext
from runner.run import process
from runner.run.process import ProcessSupervisor, RunLog
from runner.store.files import FileStore
from steps.ansible import AnsibleStep
from steps.http_check import HttpCheckStep
from steps.shell import ShellStep
from steps.template import TemplateStep
from steps.tofu import TofuStep, find_engine
from steps.wait_ssh import WaitSshStep
from tests.conftest import make_record

# --- helpers -----------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@dataclass
class Harness:
    """A StepContext with a real ProcessSupervisor and RunLog under ``tmp_path``."""

    ctx: StepContext
    run_log: RunLog

    def run(self, step: Step, params: dict[str, Any]) -> dict[str, Any]:
        return step.run(self.ctx, params)

    def log_text(self) -> str:
        return (self.ctx.workdir / self.run_log.ref).read_text()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    workdir = tmp_path / "work"
    machine_dir = tmp_path / "machine"
    workdir.mkdir()
    machine_dir.mkdir()
    store = FileStore(workdir)
    store.create(make_record(state="provisioning"))
    run_log = RunLog(store.open_artifact("demo", "run", "provision"))
    ctx = StepContext(
        env_name="demo",
        environment=store.load("demo"),
        template_context={
            "env": {"name": "demo", "state": "provisioning", "build_dir": "build/demo"},
            "inputs": {"provider": "local", "tracker": {"http_port": 7070}},
            "outputs": {},
            "machine": {"name": "test", "dir": str(machine_dir)},
            "phase": "provision",
            "step": "test_step",
        },
        workdir=workdir,
        data_dir=workdir / "data" / "demo",
        build_dir=workdir / "build" / "demo",
        machine_dir=machine_dir,
        phase="provision",
        step="test_step",
        logger=logging.getLogger("runner.test"),
        runner=ProcessSupervisor(run_log, grace_s=1.0),
        timeout_s=60,
        log_line=lambda line: run_log.write("test_step", line),
    )
    yield Harness(ctx, run_log)
    run_log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def failure(step: Step, harness: Harness, params: dict[str, Any]) -> StepError:
    with pytest.raises(StepError) as caught:
        harness.run(step, params)
    return caught.value


# --- template ------------------------------------------------------------------------


def test_template_renders_a_folder_and_keeps_modes(harness: Harness) -> None:
    source = write_tree(
        harness.ctx.machine_dir / "templates" / "app",
        {
            "README.txt": "copied {{ as is }}\n",
            "conf/app.toml.j2": 'name = "{{ env.name }}"\nport = {{ inputs.tracker.http_port }}\n',
            "bin/start.sh.j2": "#!/bin/sh\necho {{ greeting }}\n",
        },
    )
    (source / "bin" / "start.sh.j2").chmod(0o750)

    result = harness.run(
        TemplateStep(),
        {"source": "templates/app", "target": "build/demo/app", "vars": {"greeting": "hi"}},
    )

    out = harness.ctx.workdir / "build" / "demo" / "app"
    assert (out / "README.txt").read_text() == "copied {{ as is }}\n"
    assert (out / "conf" / "app.toml").read_text() == 'name = "demo"\nport = 7070\n'
    assert (out / "bin" / "start.sh").read_text() == "#!/bin/sh\necho hi\n"
    # the owner's bits of the source (executable stays executable), never group or
    # other: what the runner writes under build/ is private
    assert stat.S_IMODE((out / "bin" / "start.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "conf" / "app.toml").stat().st_mode) == 0o600
    assert not list(out.rglob("*.j2"))
    assert sorted(result["files"]) == [
        "build/demo/app/README.txt",
        "build/demo/app/bin/start.sh",
        "build/demo/app/conf/app.toml",
    ]
    assert result["target"] == "build/demo/app"


def test_template_renders_a_single_file(harness: Harness) -> None:
    write_tree(harness.ctx.machine_dir, {"motd.j2": "welcome to {{ env.name }}\n"})
    result = harness.run(TemplateStep(), {"source": "motd.j2", "target": "build/motd"})
    assert (harness.ctx.workdir / "build" / "motd").read_text() == "welcome to demo\n"
    assert result["files"] == ["build/motd"]


@pytest.mark.parametrize(
    "target", ["../outside", "/tmp/runner-test-outside", "build/../../outside", "."]
)
def test_template_refuses_a_target_outside_the_working_directory(
    harness: Harness, target: str
) -> None:
    write_tree(harness.ctx.machine_dir, {"t/a.txt": "a"})
    error = failure(TemplateStep(), harness, {"source": "t", "target": target})
    assert error.kind == "configuration"
    assert "not inside the working directory" in error.summary
    assert not (harness.ctx.workdir.parent / "outside").exists()


def test_template_refuses_a_target_reached_through_a_link(harness: Harness, tmp_path: Path) -> None:
    write_tree(harness.ctx.machine_dir, {"t/a.txt": "a"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (harness.ctx.workdir / "link").symlink_to(elsewhere)
    error = failure(TemplateStep(), harness, {"source": "t", "target": "link/out"})
    assert error.kind == "configuration"
    assert not list(elsewhere.iterdir())


def test_template_refuses_a_source_outside_the_machine_and_work_folders(
    harness: Harness, tmp_path: Path
) -> None:
    secret = write_tree(tmp_path / "private", {"key.txt": "secret"})
    error = failure(TemplateStep(), harness, {"source": str(secret), "target": "build/x"})
    assert error.kind == "configuration"
    assert "outside the machine folder" in error.summary

    error = failure(TemplateStep(), harness, {"source": "../private", "target": "build/x"})
    assert error.kind == "configuration"


def test_template_undefined_variable_names_file_line_and_variable(harness: Harness) -> None:
    write_tree(
        harness.ctx.machine_dir,
        {"t/ok.txt.j2": "fine\n", "t/sub/bad.conf.j2": "one\nport = {{ inputs.nope }}\nthree\n"},
    )
    error = failure(TemplateStep(), harness, {"source": "t", "target": "build/t"})
    assert error.kind == "template"
    assert "t/sub/bad.conf.j2:2" in error.summary
    assert "nope" in error.summary


def test_template_syntax_error_names_file_and_line(harness: Harness) -> None:
    write_tree(harness.ctx.machine_dir, {"t/x.j2": "a\nb\n{% if %}\n"})
    error = failure(TemplateStep(), harness, {"source": "t", "target": "build/t"})
    assert error.kind == "template"
    assert "t/x.j2:3" in error.summary


def test_template_sandbox_refuses_unsafe_attributes(harness: Harness) -> None:
    write_tree(harness.ctx.machine_dir, {"t/x.j2": "{{ ''.__class__.__mro__ }}\n"})
    error = failure(TemplateStep(), harness, {"source": "t", "target": "build/t"})
    assert error.kind == "template"


# --- shell ---------------------------------------------------------------------------


def test_shell_parse_json_returns_the_top_level_keys(harness: Harness) -> None:
    script = "import json; print(json.dumps({'instance_ip': '10.0.0.5', 'count': 2}))"
    result = harness.run(ShellStep(), {"argv": [sys.executable, "-c", script], "parse": "json"})
    assert result["instance_ip"] == "10.0.0.5"
    assert result["count"] == 2
    assert result["exit_code"] == 0
    assert result["json"] == {"instance_ip": "10.0.0.5", "count": 2}
    assert "10.0.0.5" in harness.log_text()  # streamed to the run log


def test_shell_runs_in_cwd_with_env_stdin_and_lines(harness: Harness) -> None:
    (harness.ctx.workdir / "sub").mkdir()
    result = harness.run(
        ShellStep(),
        {
            "argv": ["sh", "-c", 'pwd; echo "$NAME"; cat'],
            "cwd": "sub",
            "env": {"NAME": "value"},
            "stdin": "from stdin\n",
            "parse": "lines",
        },
    )
    assert result["lines"] == [str(harness.ctx.workdir / "sub"), "value", "from stdin"]
    assert result["stdout"].endswith("from stdin")


def test_shell_invalid_json_is_a_clear_failure(harness: Harness) -> None:
    error = failure(ShellStep(), harness, {"argv": ["echo", "not json"], "parse": "json"})
    assert error.kind == "configuration"
    assert "did not print valid JSON" in error.summary


def test_shell_failing_program_is_command_failed(harness: Harness) -> None:
    error = failure(ShellStep(), harness, {"argv": ["sh", "-c", "echo broken >&2; exit 4"]})
    assert error.kind == "command_failed"
    assert error.process_exit_code == 4
    assert error.summary == "sh exited with 4: broken"


def test_shell_missing_program_is_tool_missing(harness: Harness) -> None:
    error = failure(ShellStep(), harness, {"argv": ["no-such-program-runner-test"]})
    assert error.kind == "tool_missing"


# --- tofu (embedded engine) ----------------------------------------------------------

MAIN_TF = """
variable "greeting" {
  type = string
}
variable "count_of" {
  type    = string
  default = "1"
}
resource "terraform_data" "instance" {
  input = "${var.greeting}-${var.count_of}"
}
output "instance_ip" {
  value = "127.0.0.1"
}
output "greeting" {
  value = terraform_data.instance.output
}
"""

FAILING_TF = """
resource "terraform_data" "broken" {
  provisioner "local-exec" {
    command = "echo about to fail; false"
  }
}
"""


@pytest.fixture
def embedded_tofu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_TOFU", "runner-tofu")
    monkeypatch.delenv("TF_CLI_CONFIG_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.terraformrc
    monkeypatch.delenv("TF_LOG", raising=False)


@pytest.mark.usefixtures("embedded_tofu")
def test_tofu_init_apply_output_destroy(harness: Harness) -> None:
    folder = write_tree(harness.ctx.workdir / "build" / "demo" / "tofu", {"main.tf": MAIN_TF})
    step = TofuStep()
    tf_vars = {"greeting": "hello", "count_of": "007"}

    assert harness.run(step, {"command": "init", "dir": "build/demo/tofu"})["command"] == "init"
    harness.run(step, {"command": "apply", "dir": "build/demo/tofu", "vars": tf_vars})
    written = json.loads((folder / "runner.auto.tfvars.json").read_text())
    assert written == {"greeting": "hello", "count_of": "007"}  # strings stay strings
    assert stat.S_IMODE((folder / "runner.auto.tfvars.json").stat().st_mode) == 0o600

    outputs = harness.run(step, {"command": "output", "dir": "build/demo/tofu"})
    assert outputs == {"instance_ip": "127.0.0.1", "greeting": "hello-007"}

    harness.run(step, {"command": "destroy", "dir": "build/demo/tofu", "vars": tf_vars})
    state = json.loads((folder / "terraform.tfstate").read_text())
    assert state["resources"] == []

    log = harness.log_text()
    assert "-input=false" in log and "-auto-approve" in log
    assert "Unable to open CLI configuration file" not in log


@pytest.mark.usefixtures("embedded_tofu")
def test_tofu_failing_apply_summary_has_the_engine_error(harness: Harness) -> None:
    write_tree(harness.ctx.workdir / "tf", {"main.tf": FAILING_TF})
    harness.run(TofuStep(), {"command": "init", "dir": "tf"})
    error = failure(TofuStep(), harness, {"command": "apply", "dir": "tf"})
    assert error.kind == "command_failed"
    assert error.process_exit_code == 1
    assert error.summary.startswith(
        "runner-tofu apply exited with 1: Error: local-exec provisioner"
    )
    assert "exit status 1" in error.summary
    assert any("about to fail" in line for line in error.output_tail)


@pytest.mark.usefixtures("embedded_tofu")
def test_tofu_destroy_of_nothing_is_skipped(harness: Harness) -> None:
    result = harness.run(TofuStep(), {"command": "destroy", "dir": "build/never"})
    assert result["skipped"] is True
    assert "nothing to destroy" in result["reason"]
    error = failure(
        TofuStep(), harness, {"command": "destroy", "dir": "build/never", "missing_ok": False}
    )
    assert error.kind == "configuration"


@pytest.mark.usefixtures("embedded_tofu")
def test_tofu_missing_engine_says_what_to_install(harness: Harness) -> None:
    (harness.ctx.workdir / "tf").mkdir()
    error = failure(TofuStep(), harness, {"command": "init", "dir": "tf", "binary": "no-such-tofu"})
    assert error.kind == "tool_missing"
    assert "runner[embedded]" in (error.hint or "")


@pytest.fixture
def pipx_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The runner's interpreter in ``venv/bin``, its scripts folder the same, and PATH
    holding only ``path``: how pipx and `uv tool` install it."""
    dirs = {name: tmp_path / name for name in ("venv/bin", "path")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(dirs["venv/bin"] / "python"))
    monkeypatch.setattr(process.sysconfig, "get_path", lambda name: str(dirs["venv/bin"]))
    monkeypatch.delenv("RUNNER_TOFU", raising=False)
    monkeypatch.setenv("PATH", str(dirs["path"]))
    return dirs


def fake_engine(folder: Path, name: str) -> None:
    (folder / name).write_text(f'#!/bin/sh\necho {name} "$@"\n')
    (folder / name).chmod(0o755)


def test_tofu_no_engine_on_path(harness: Harness, pipx_like: dict[str, Path]) -> None:
    (harness.ctx.workdir / "tf").mkdir()
    error = failure(TofuStep(), harness, {"command": "init", "dir": "tf"})
    assert error.kind == "tool_missing"
    assert "OpenTofu" in (error.hint or "")
    assert "beside the runner's Python" in error.summary


def test_tofu_embedded_engine_beside_the_interpreter(
    harness: Harness, pipx_like: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (harness.ctx.workdir / "tf").mkdir()
    fake_engine(pipx_like["venv/bin"], "runner-tofu")
    assert find_engine(None) == "runner-tofu"
    harness.run(TofuStep(), {"command": "init", "dir": "tf"})
    assert f"$ {pipx_like['venv/bin']}/runner-tofu init -input=false" in harness.log_text()
    # the documented order stands: an engine on PATH comes before runner-tofu
    fake_engine(pipx_like["path"], "terraform")
    assert find_engine(None) == "terraform"
    fake_engine(pipx_like["path"], "tofu")
    assert find_engine(None) == "tofu"
    # with.binary and $RUNNER_TOFU are looked up the same way
    assert find_engine("runner-tofu") == "runner-tofu"
    monkeypatch.setenv("RUNNER_TOFU", "runner-tofu")
    assert find_engine(None) == "runner-tofu"


# --- ansible -------------------------------------------------------------------------

PLAYBOOK_OK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Write a marker
      ansible.builtin.copy:
        dest: "{{ marker }}"
        content: "{{ message }}"
"""

PLAYBOOK_FAILING = """
- hosts: all
  gather_facts: false
  tasks:
    - name: An ignored failure
      ansible.builtin.command: "false"
      ignore_errors: true
    - name: Check the port is free
      ansible.builtin.fail:
        msg: "port {{ port }} is in use"
    - name: Never reached
      ansible.builtin.debug:
        msg: unreachable
"""


@pytest.fixture
def ansible_dir(harness: Harness) -> Path:
    inventory = f"instance ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    return write_tree(
        harness.ctx.workdir / "ansible",
        {"inventory.ini": inventory, "ok.yml": PLAYBOOK_OK, "failing.yml": PLAYBOOK_FAILING},
    )


def test_ansible_runs_a_playbook_with_extra_vars(
    harness: Harness, ansible_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    marker = tmp_path / "marker.txt"
    result = harness.run(
        AnsibleStep(),
        {
            "playbook": "ansible/ok.yml",
            "inventory": "ansible/inventory.ini",
            "extra_vars": {"marker": str(marker), "message": "configured"},
        },
    )
    assert marker.read_text() == "configured"
    assert result["hosts"]["instance"]["changed"] == 1
    assert result["changed"] == 1
    assert not list(private_tmp.iterdir())  # the extra vars file is gone
    assert "TASK [Write a marker]" in harness.log_text()


def test_ansible_failure_names_the_task_and_host(harness: Harness, ansible_dir: Path) -> None:
    error = failure(
        AnsibleStep(),
        harness,
        {
            "playbook": "ansible/failing.yml",
            "inventory": "ansible/inventory.ini",
            "extra_vars": {"port": 7070},
        },
    )
    assert error.kind == "command_failed"
    assert (
        error.summary
        == "task 'Check the port is free' failed on host 'instance': port 7070 is in use"
    )
    assert error.process_exit_code == 2


def test_ansible_missing_playbook_is_a_configuration_error(
    harness: Harness, ansible_dir: Path
) -> None:
    error = failure(
        AnsibleStep(),
        harness,
        {"playbook": "ansible/nope.yml", "inventory": "ansible/inventory.ini"},
    )
    assert error.kind == "configuration"
    assert "ansible/nope.yml" in error.summary


# --- wait_ssh ------------------------------------------------------------------------


def test_wait_ssh_closed_port_is_connectivity(harness: Harness) -> None:
    port = free_port()
    error = failure(
        WaitSshStep(),
        harness,
        {"host": "127.0.0.1", "port": port, "user": "nobody", "timeout": "1s", "interval": "0.2s"},
    )
    assert error.kind == "connectivity"
    assert f"127.0.0.1:{port}" in error.summary
    assert "Connection refused" in error.summary
    assert "-o BatchMode=yes" in harness.log_text()


def test_wait_ssh_rejected_key_fails_at_once(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an ssh that reaches a server which rejects the key, as OpenSSH reports it
    fake_bin = write_tree(
        tmp_path / "bin",
        {
            "ssh": "#!/bin/sh\n"
            "echo 'nobody@127.0.0.1: Permission denied (publickey).' >&2\n"
            "exit 255\n"
        },
    )
    (fake_bin / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    key = write_tree(harness.ctx.workdir, {"id_test": "not a real key\n"}) / "id_test"
    error = failure(
        WaitSshStep(),
        harness,
        {"host": "127.0.0.1", "private_key": str(key), "timeout": "1m", "interval": "0.05s"},
    )
    assert error.kind == "key_rejected"
    assert "3 times" in error.summary
    assert "Permission denied (publickey)" in error.summary


def test_wait_ssh_missing_key_file(harness: Harness) -> None:
    error = failure(WaitSshStep(), harness, {"host": "127.0.0.1", "private_key": "nope/id_none"})
    assert error.kind == "configuration"


# --- http_check ----------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 503
        body = b'{"status":"Ok"}' if status == 200 else b"starting"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_check_ok_with_body(harness: Harness, http_server: str) -> None:
    result = harness.run(HttpCheckStep(), {"url": f"{http_server}/health", "contains": "Ok"})
    assert result["status"] == 200
    assert result["body"] == '{"status":"Ok"}'


def test_http_check_wrong_status(harness: Harness, http_server: str) -> None:
    error = failure(
        HttpCheckStep(),
        harness,
        {"url": f"{http_server}/other", "timeout": "0.5s", "interval": 0.1},
    )
    assert error.kind == "unexpected_response"
    assert "status 503" in error.summary


def test_http_check_body_without_the_text(harness: Harness, http_server: str) -> None:
    error = failure(
        HttpCheckStep(),
        harness,
        {"url": f"{http_server}/health", "contains": "Healthy", "timeout": 0.3, "interval": 0.1},
    )
    assert error.kind == "unexpected_response"
    assert "does not contain 'Healthy'" in error.summary


def test_http_check_nothing_listening_is_connectivity(harness: Harness) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    error = failure(HttpCheckStep(), harness, {"url": url, "timeout": 0.3, "interval": 0.1})
    assert error.kind == "connectivity"
    assert url in error.summary
