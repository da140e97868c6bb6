"""The `shell` step: run one program from an argv list (never through a shell)."""

from __future__ import annotations

import json
from pathlib import Path

from runner.errors import StepError
from runner.plugin import Step, StepContext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SCALAR = {"type": ["string", "number"]}


class ShellStep(Step):
    name = "shell"
    description = (
        "Run a program from an argv list (no shell is involved); optionally parse what it "
        "prints on stdout as JSON or lines."
    )
    params_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["argv"],
        "properties": {
            "argv": {
                "type": "array",
                "minItems": 1,
                "items": {**_SCALAR, "description": "one argument; numbers become text"},
                "description": "The program and its arguments, e.g. [rm, -rf, build/demo]. "
                "The program is looked up on PATH; no shell expands anything.",
            },
            "cwd": {
                "type": "string",
                "description": "Working directory of the program, relative to the working "
                "directory of the runner (default: the working directory).",
            },
            "env": {
                "type": "object",
                "additionalProperties": _SCALAR,
                "description": "Environment variables added to the runner's own.",
            },
            "stdin": {"type": "string", "description": "Text given to the program on stdin."},
            "parse": {
                "enum": ["text", "lines", "json"],
                "default": "text",
                "description": "How to read stdout: `text` returns it as `stdout`; `lines` "
                "also returns `lines` (non-empty lines); `json` parses it and returns the "
                "top-level keys of the object as results, and the whole value as `json`.",
            },
        },
    }

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        argv = [str(arg) for arg in params["argv"]]
        cwd = ctx.resolve(params["cwd"]) if params.get("cwd") else ctx.workdir
        env = {key: str(value) for key, value in (params.get("env") or {}).items()}
        result = ctx.run(argv, cwd=cwd, env=env or None, stdin=params.get("stdin"))
        stdout = result.stdout.rstrip("\n")
        outputs: dict[str, Any] = {"stdout": stdout, "exit_code": result.returncode}
        parse = params.get("parse", "text")
        if parse == "lines":
            outputs["lines"] = [line for line in stdout.splitlines() if line.strip()]
        elif parse == "json":
            try:
                value = json.loads(stdout)
            except json.JSONDecodeError as exc:
                raise StepError(
                    "configuration",
                    f"{Path(argv[0]).name} did not print valid JSON on stdout "
                    f"(parse: json): {exc.msg} at line {exc.lineno} column {exc.colno}",
                    output_tail=result.output_tail,
                    hint="make the program print one JSON document, or use parse: text",
                ) from exc
            if isinstance(value, dict):
                for key, item in value.items():
                    outputs.setdefault(key, item)
            outputs["json"] = value
        return outputs
