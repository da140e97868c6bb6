"""The `tofu` step: run OpenTofu (or a Terraform-compatible engine) in a folder.

The engine is, in order: ``with.binary``, ``$RUNNER_TOFU``, ``tofu`` then
``terraform`` on PATH, then ``runner-tofu`` (the embedded engine of the ``embedded``
extra). Each name is looked up as the process helper does (``find_program``): beside
the runner's interpreter first, where the engines installed with the runner are, then
on PATH. Commands never prompt (``-input=false``) and never colour their output.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import StepError
from runner.files import replace_atomically
from runner.plugin import ProcessResult, Step, StepContext
from runner.run.process import find_program, install_hint

COMMANDS = ("init", "validate", "plan", "apply", "output", "destroy")
VARS_FILE = "runner.auto.tfvars.json"
ENGINES = ("tofu", "terraform", "runner-tofu")
INSTALL_HINT = install_hint("tofu")

# the flags each command is always given; `validate` and `output` take no -input
_FLAGS: dict[str, tuple[str, ...]] = {
    "init": ("-input=false", "-no-color"),
    "validate": ("-no-color",),
    "plan": ("-input=false", "-no-color"),
    "apply": ("-input=false", "-no-color", "-auto-approve"),
    "output": ("-no-color", "-json"),
    "destroy": ("-input=false", "-no-color", "-auto-approve"),
}


class TofuStep(Step):
    name = "tofu"
    description = (
        "Run an OpenTofu command (init, validate, plan, apply, output, destroy) in a folder, "
        "never prompting; `output` returns the value of every output."
    )
    params_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["command", "dir"],
        "properties": {
            "command": {
                "enum": list(COMMANDS),
                "description": "The command to run. apply and destroy are auto-approved; "
                "output returns {name: value} of every output.",
            },
            "dir": {
                "type": "string",
                "minLength": 1,
                "description": "The OpenTofu working folder (the *.tf files and local "
                "state), relative to the working directory.",
            },
            "vars": {
                "type": "object",
                "description": f"Input variables, written as {VARS_FILE} in `dir` before "
                "plan, apply and destroy. Values are written as given.",
            },
            "binary": {
                "type": "string",
                "minLength": 1,
                "description": "The engine to run (a name on PATH or a path). Default: "
                "$RUNNER_TOFU, then tofu, terraform, runner-tofu, the first found.",
            },
            "args": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Extra arguments added after the command's own flags.",
            },
            "drift": {
                "type": "boolean",
                "default": False,
                "description": "plan only: a drift check (`-detailed-exitcode`). Changes "
                "pending (exit 2) fail the step with kind `drift` and a summary naming "
                "them (to add, change, destroy, and each resource); no change succeeds.",
            },
            "missing_ok": {
                "type": "boolean",
                "default": True,
                "description": "destroy only: when `dir` does not exist or holds no *.tf "
                "file, skip (there is nothing to destroy) instead of failing.",
            },
        },
    }

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        command: str = params["command"]
        folder = ctx.resolve(params["dir"])
        has_config = folder.is_dir() and (any(folder.glob("*.tf")) or any(folder.glob("*.tf.json")))
        if command == "destroy" and not has_config and params.get("missing_ok", True):
            reason = f"nothing to destroy: {params['dir']} holds no OpenTofu configuration"
            ctx.log_line(reason)
            return {"skipped": True, "reason": reason}
        if not folder.is_dir():
            raise StepError(
                "configuration",
                f"OpenTofu folder {params['dir']} does not exist",
                hint="render the OpenTofu templates into it first (a `template` step)",
            )
        binary = find_engine(params.get("binary"))
        env = engine_environment()
        if command in ("plan", "apply", "destroy") and params.get("vars") is not None:
            _write_vars(folder / VARS_FILE, params["vars"])
        if command == "destroy" and not (folder / ".terraform").exists():
            self._invoke(ctx, binary, "init", folder, env, [])
        args = list(params.get("args") or [])
        drift = command == "plan" and bool(params.get("drift"))
        if drift:
            args.append("-detailed-exitcode")
        result = self._invoke(ctx, binary, command, folder, env, args, pending_ok=drift)
        if command == "output":
            return _outputs(binary, result)
        if command == "plan":
            summary = plan_summary(result.stdout)
            if drift and result.returncode == 2:
                raise StepError(
                    "drift",
                    f"infrastructure drift in {params['dir']}: {summary.text}",
                    exit_code=2,
                    output_tail=result.output_tail,
                    hint="see what changed with `tofu plan` in that folder; provision again "
                    "(`runner resume` or destroy and create) to make it match",
                    retryable=False,
                )
            return {"command": command, "dir": params["dir"], **summary.counts()}
        return {"command": command, "dir": params["dir"]}

    def preview(self, ctx: StepContext, params: dict[str, Any]) -> str | None:
        """The real plan of an `apply` or `destroy` (``plan`` or ``plan -destroy``) when
        the folder is initialised; the variables go to a file outside the folder, and
        neither the state nor its lock is touched."""
        command: str = params["command"]
        if command not in ("apply", "destroy"):
            return None
        folder = ctx.resolve(params["dir"])
        if not folder.is_dir():
            return None
        if not (folder / ".terraform").exists() and not (folder / "terraform.tfstate").exists():
            return f"no plan: {params['dir']} is not initialised yet"
        binary = find_engine(params.get("binary"))
        args = ["-lock=false", "-detailed-exitcode"]
        if command == "destroy":
            args.append("-destroy")
        with tempfile.TemporaryDirectory(prefix="runner-plan-") as scratch:
            if params.get("vars") is not None:
                given = Path(scratch) / "vars.tfvars.json"
                _write_vars(given, params["vars"])
                args.append(f"-var-file={given}")
            result = self._invoke(
                ctx, binary, "plan", folder, engine_environment(), args, pending_ok=True
            )
        return f"plan: {plan_summary(result.stdout).text}"

    @staticmethod
    def _invoke(
        ctx: StepContext,
        binary: str,
        command: str,
        folder: Path,
        env: dict[str, str],
        args: list[str],
        pending_ok: bool = False,
    ) -> ProcessResult:
        argv = [binary, command, *_FLAGS[command], *args]
        result = ctx.run(argv, cwd=folder, env=env, check=False)
        if result.returncode != 0 and not (pending_ok and result.returncode == 2):
            raise StepError(
                "command_failed",
                f"{Path(binary).name} {command} exited with {result.returncode}: "
                f"{engine_error(result)}",
                exit_code=result.returncode,
                output_tail=result.output_tail,
            )
        return result


_PLAN_LINE = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
_RESOURCE_LINE = re.compile(r"^\s*# (\S+) (will be|must be) (.+)$")


@dataclass(frozen=True)
class PlanSummary:
    """What a plan would do: how many resources to add, change, destroy, and each
    resource's line (``terraform_data.instance will be created``)."""

    add: int = 0
    change: int = 0
    destroy: int = 0
    resources: tuple[str, ...] = ()

    def counts(self) -> dict[str, Any]:
        return {
            "add": self.add,
            "change": self.change,
            "destroy": self.destroy,
            "resources": list(self.resources),
        }

    @property
    def text(self) -> str:
        if not (self.add or self.change or self.destroy):
            return "no changes"
        counts = f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"
        return f"{counts} ({'; '.join(self.resources)})" if self.resources else counts


def plan_summary(output: str) -> PlanSummary:
    """The :class:`PlanSummary` of a plan's text output (no changes when it says none)."""
    found = _PLAN_LINE.search(output)
    resources = tuple(
        f"{m.group(1)} {m.group(2)} {m.group(3).strip()}"
        for line in output.splitlines()
        if (m := _RESOURCE_LINE.match(line))
    )
    if found is None:
        return PlanSummary(resources=resources)
    add, change, destroy = (int(n) for n in found.groups())
    return PlanSummary(add, change, destroy, resources)


def find_engine(binary: str | None) -> str:
    """The engine to run; a ``tool_missing`` failure when there is none."""
    if binary:
        if find_program(binary) is None:
            raise StepError(
                "tool_missing",
                f"OpenTofu engine {binary!r} (with.binary) was not found",
                hint=INSTALL_HINT,
            )
        return binary
    configured = os.environ.get("RUNNER_TOFU")
    if configured:
        if find_program(configured) is None:
            raise StepError(
                "tool_missing",
                f"OpenTofu engine {configured!r} (from $RUNNER_TOFU) was not found",
                hint=f"fix or unset RUNNER_TOFU; or {INSTALL_HINT}",
            )
        return configured
    for name in ENGINES:
        if find_program(name):
            return name
    raise StepError(
        "tool_missing",
        "no OpenTofu engine found: none of tofu, terraform, runner-tofu is on PATH "
        "or beside the runner's Python",
        hint=INSTALL_HINT,
    )


def engine_environment() -> dict[str, str]:
    """Variables for the engine: automation mode, and :func:`quiet_cli_config`."""
    return {"TF_IN_AUTOMATION": "1", **quiet_cli_config()}


def quiet_cli_config() -> dict[str, str]:
    """An empty CLI configuration when the user has none, which silences the engine's
    warning about a missing ~/.terraformrc; nothing when the user has one. A
    TF_CLI_CONFIG_FILE naming a file that does not exist is a configuration the engine
    cannot read either, so it is replaced by the empty one too."""
    configured = os.environ.get("TF_CLI_CONFIG_FILE")
    if configured:
        return {} if Path(configured).exists() else {"TF_CLI_CONFIG_FILE": os.devnull}
    if _user_cli_config():
        return {}
    return {"TF_CLI_CONFIG_FILE": os.devnull}


def _user_cli_config() -> bool:
    try:
        home = Path.home()
    except RuntimeError:
        return False
    return (home / ".terraformrc").exists() or (home / ".tofurc").exists()


def engine_error(result: ProcessResult) -> str:
    """The engine's first ``Error:`` line and the first line of its detail, if any."""
    for text in (result.stderr, result.stdout):
        lines = [_unboxed(line) for line in text.splitlines()]
        for index, line in enumerate(lines):
            if line.startswith("Error:"):
                return _with_detail(line, lines[index + 1 :])[:400]
    for text in (result.stderr, result.stdout):
        for line in reversed(text.splitlines()):
            if line.strip():
                return line.strip()[:400]
    return "no output"


def _unboxed(line: str) -> str:
    """``line`` without the frame drawn around diagnostics in colour mode."""
    if line.startswith(("╷", "╵")):
        return ""
    if line.startswith("│"):
        line = line[1:].removeprefix(" ")
    return line.rstrip()


def _with_detail(head: str, rest: list[str]) -> str:
    """Add the first unindented paragraph of the diagnostic's detail (skipping the
    source context, which is indented) to ``head``. The engine wraps long details, and a
    failing provisioner's own output follows its "Output:" line, so the paragraph is
    joined: the command's error message is the part an operator needs."""
    detail: list[str] = []
    for raw in rest:
        if raw.startswith(("Error:", "Warning:")):
            break
        if not raw.strip():
            if detail:
                break
            continue
        if raw[0].isspace() and not detail:
            continue
        detail.append(raw.strip())
    if not detail:
        return head
    return f"{head}: {' '.join(detail)}"


def _outputs(binary: str, result: ProcessResult) -> dict[str, Any]:
    try:
        data = json.loads(result.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise StepError(
            "command_failed",
            f"{Path(binary).name} output printed invalid JSON: {exc.msg}",
            output_tail=result.output_tail,
        ) from exc
    if not isinstance(data, dict):  # `args: [name]` prints one output's value
        return {"value": data}
    return {
        name: item.get("value") if isinstance(item, dict) else item for name, item in data.items()
    }


def _write_vars(path: Path, values: dict[str, Any]) -> None:
    """Write the variables file atomically, readable by its owner only."""
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    replace_atomically(path, text.encode("utf-8"), durable=False)
