"""The `wait_ssh` step: wait until ``ssh HOST true`` succeeds.

A refused or silent port is worth waiting for (the instance is booting); a rejected
key is not: three rejections in a row fail the step at once with kind
``key_rejected``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from runner.errors import StepError
from runner.plugin import ProcessResult, Step, StepContext
from steps.durations import duration_schema, seconds

KEY_REJECTIONS = 3
"""Rejections of the key in a row after which waiting longer is pointless."""


class WaitSshStep(Step):
    name = "wait_ssh"
    description = (
        "Wait until an SSH server accepts the key and runs a command; tells a refused or "
        "silent port (connectivity) from a rejected key (key_rejected)."
    )
    params_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["host"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "Host name or address."},
            "port": {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "default": 22,
                "description": "SSH port.",
            },
            "user": {
                "type": "string",
                "description": "Login user; empty means ssh's default (the local user).",
            },
            "private_key": {
                "type": "string",
                "description": "Path of the private key (never its content), relative to the "
                "working directory; empty means ssh's default keys.",
            },
            "timeout": duration_schema("How long to wait in all.", "5m"),
            "interval": duration_schema("Pause between two attempts.", "2s"),
            "connect_timeout": {
                "type": "integer",
                "minimum": 1,
                "default": 5,
                "description": "Seconds one connection attempt may take (ssh ConnectTimeout).",
            },
            "host_key_checking": {
                "type": "boolean",
                "default": False,
                "description": "Check the host key against known_hosts; off by default "
                "since a new instance has a new key.",
            },
        },
    }

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        host: str = params["host"]
        port = int(params.get("port", 22))
        timeout = seconds(params.get("timeout", "5m"), "timeout")
        interval = seconds(params.get("interval", "2s"), "interval")
        connect_timeout = int(params.get("connect_timeout", 5))
        argv = _ssh_argv(ctx, params, host, port, connect_timeout)
        target = f"{host}:{port}"

        started = time.monotonic()
        deadline = started + timeout
        attempts = 0
        rejections = 0
        while True:
            attempts += 1
            outcome, last_error, result = _attempt(ctx, argv, connect_timeout + 10)
            if outcome == "ok":
                waited = round(time.monotonic() - started, 3)
                ctx.log_line(f"ssh to {target} works (attempt {attempts}, {waited}s)")
                return {"host": host, "port": port, "attempts": attempts, "waited_s": waited}
            if outcome == "host_key" and result is not None:
                raise StepError(
                    "connectivity",
                    f"host key verification failed for {target}: the host's key is not the "
                    "one in known_hosts",
                    exit_code=result.returncode,
                    output_tail=result.output_tail,
                    hint="check the host; update known_hosts or set host_key_checking: false",
                )
            rejections = rejections + 1 if outcome == "rejected" else 0
            if rejections >= KEY_REJECTIONS and result is not None:
                raise StepError(
                    "key_rejected",
                    f"ssh to {target} answers but rejected the key {KEY_REJECTIONS} times in "
                    f"a row: {last_error}",
                    exit_code=result.returncode,
                    output_tail=result.output_tail,
                    hint="check the user, and that the public key is installed on the instance",
                )
            ctx.log_line(f"ssh to {target} not ready (attempt {attempts}): {last_error}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(interval, remaining))
        raise StepError(
            "connectivity",
            f"ssh to {target} did not succeed within {timeout:g}s ({attempts} attempts); "
            f"last error: {last_error}",
            hint="check that the instance runs and that its SSH port is reachable from here",
        )


Outcome = Literal["ok", "rejected", "host_key", "down"]


def _attempt(
    ctx: StepContext, argv: list[str], limit_s: float
) -> tuple[Outcome, str, ProcessResult | None]:
    """Run ssh once: what happened, the error line, and ssh's result."""
    try:
        result = ctx.run(argv, check=False, timeout_s=limit_s)
    except StepError as exc:
        if exc.kind != "timeout":
            raise
        return "down", f"ssh did not finish within {limit_s:g}s", None
    if result.returncode == 0:
        return "ok", "", result
    error = _last_line(result.stderr) or f"ssh exited with {result.returncode}"
    if "Host key verification failed" in result.stderr:
        return "host_key", error, result
    if "Permission denied" in result.stderr:
        return "rejected", error, result
    return "down", error, result


def _ssh_argv(
    ctx: StepContext, params: dict[str, Any], host: str, port: int, connect_timeout: int
) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}"]
    if params.get("host_key_checking", False):
        argv += ["-o", "StrictHostKeyChecking=yes"]
    else:
        argv += ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}"]
    argv += ["-o", "LogLevel=ERROR", "-p", str(port)]
    if params.get("private_key"):
        key = ctx.resolve(os.path.expanduser(params["private_key"]))
        if not key.is_file():
            raise StepError("configuration", f"private key {params['private_key']} does not exist")
        argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    destination = f"{params['user']}@{host}" if params.get("user") else host
    return [*argv, destination, "true"]


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""
