"""The `ansible` step: run a playbook with ansible-playbook.

A failure's summary names the failing task and host and the task's message, read
from the playbook's normal output (e.g. ``task 'Check the port is free' failed on
host 'instance': port 7070 is in use``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from runner.errors import StepError
from runner.plugin import Step, StepContext
from steps import ansible_output

PROGRAM = "ansible-playbook"

# plain, parseable output whatever the user's ansible.cfg says
_ENVIRONMENT = {
    "ANSIBLE_FORCE_COLOR": "0",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_RETRY_FILES_ENABLED": "0",
    "ANSIBLE_STDOUT_CALLBACK": "default",
    "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    "PYTHONUNBUFFERED": "1",
}


class AnsibleStep(Step):
    name = "ansible"
    description = (
        "Run an Ansible playbook against an inventory; on failure, name the failing task and host."
    )
    params_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["playbook", "inventory"],
        "properties": {
            "playbook": {
                "type": "string",
                "minLength": 1,
                "description": "The playbook file, relative to the working directory. "
                "ansible-playbook runs in the playbook's folder (so an ansible.cfg there "
                "applies).",
            },
            "inventory": {
                "type": "string",
                "minLength": 1,
                "description": "The inventory file, relative to the working directory.",
            },
            "extra_vars": {
                "type": "object",
                "description": "Extra variables (highest precedence), passed in a private "
                "JSON file that is deleted after the run.",
            },
            "private_key": {
                "type": "string",
                "description": "Path of the SSH private key (never its content); empty means none.",
            },
            "user": {"type": "string", "description": "Remote user; empty means the inventory's."},
            "host_key_checking": {
                "type": "boolean",
                "default": False,
                "description": "Check SSH host keys against known_hosts.",
            },
            "limit": {"type": "string", "description": "Only run on hosts matching this pattern."},
            "tags": {
                "description": "Only run tasks with these tags.",
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ],
            },
            "verbosity": {
                "type": "integer",
                "minimum": 0,
                "maximum": 4,
                "default": 0,
                "description": "How many -v to pass (0-4).",
            },
        },
    }

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        playbook = _existing(ctx, params["playbook"], "playbook")
        inventory = _existing(ctx, params["inventory"], "inventory")
        argv = [PROGRAM, "-i", str(inventory)]
        if params.get("private_key"):
            key = _existing(ctx, os.path.expanduser(params["private_key"]), "private key")
            argv += ["--private-key", str(key)]
        if params.get("user"):
            argv += ["-u", params["user"]]
        if params.get("limit"):
            argv += ["--limit", params["limit"]]
        tags = params.get("tags")
        if tags:
            argv += ["--tags", tags if isinstance(tags, str) else ",".join(tags)]
        if params.get("verbosity"):
            argv.append("-" + "v" * int(params["verbosity"]))
        env = {
            **_ENVIRONMENT,
            "ANSIBLE_HOST_KEY_CHECKING": str(bool(params.get("host_key_checking", False))),
        }
        vars_file = _vars_file(params["extra_vars"]) if params.get("extra_vars") else None
        try:
            if vars_file is not None:
                argv += ["-e", f"@{vars_file}"]
            argv.append(str(playbook))
            result = ctx.run(argv, cwd=playbook.parent, env=env, check=False)
        finally:
            if vars_file is not None:
                vars_file.unlink(missing_ok=True)
        output = result.stdout + "\n" + result.stderr
        if result.returncode != 0:
            failed = ansible_output.failure(result.stdout)
            if failed is not None:
                kind, summary = (
                    "connectivity" if failed.unreachable else "command_failed",
                    failed.summary(),
                )
            else:
                detail = ansible_output.error_line(output) or _last_line(output)
                kind, summary = (
                    "command_failed",
                    f"{PROGRAM} exited with {result.returncode}: {detail}",
                )
            raise StepError(
                kind, summary, exit_code=result.returncode, output_tail=result.output_tail
            )
        hosts = ansible_output.recap(result.stdout)
        return {
            "playbook": params["playbook"],
            "hosts": hosts,
            "changed": sum(counts.get("changed", 0) for counts in hosts.values()),
        }


def _existing(ctx: StepContext, value: str, what: str) -> Path:
    path = ctx.resolve(value)
    if not path.exists():
        raise StepError("configuration", f"{what} {value} does not exist")
    return path


def _vars_file(values: dict[str, Any]) -> Path:
    """The extra variables in a JSON file only its owner can read."""
    fd, name = tempfile.mkstemp(prefix="runner-extra-vars-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(values, handle)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return "no output"
