"""Drift tests: the JSON Schema, the loader, the shipped machine and the docs agree."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from ruamel.yaml import YAML

from runner import struct
from runner.cli.app import app
from runner.machine.model import MachineDef, PhaseDef, Retry, StateDef, StepDef
from tests.helpers import ROOT

SCHEMA_FILE = ROOT / "schemas" / "machine.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
DEFS = SCHEMA["$defs"]

# Where each part of machine.yaml is described in the schema, the model class the loader
# builds from it, and the YAML keys whose model field has another name (None: the key
# is checked and then not kept, like `version`).
LEVELS = {
    "top": (SCHEMA["properties"], MachineDef, {"version": None, "inputs": "inputs_schema"}),
    "state": (DEFS["state"]["properties"], StateDef, {}),
    "phase": (DEFS["phase"]["properties"], PhaseDef, {"from": "sources"}),
    "step": (DEFS["step"]["properties"], StepDef, {"with": "with_", "timeout": "timeout_s"}),
    "retry": (DEFS["retry"]["properties"], Retry, {"delay": "delay_s", "max_delay": "max_delay_s"}),
}
# Model fields that come from no YAML key (where the machine was read from).
DERIVED = {"path", "digest"}

# Every command of the CLI. A new command must be added here, and documented.
COMMANDS = [
    "validate",
    "graph",
    "create",
    "status",
    "list",
    "history",
    "advance",
    "up",
    "resume",
    "phase",
    "destroy",
    "check",
    "exists",
    "purge",
    "inputs",
    "force-state",
    "snapshots",
    "restore",
    "serve",
    "state",
]


@pytest.mark.parametrize("level", list(LEVELS))
def test_schema_keys_equal_model_fields(level: str) -> None:
    properties, model, renamed = LEVELS[level]
    keys = {renamed.get(key, key) for key in properties} - {None}
    fields = {f.name for f in struct.fields(model)} - DERIVED - {"name"} | (
        {"name"} if "name" in properties else set()
    )
    assert keys == fields, (
        f"{level}: only in the schema: {sorted(keys - fields)}; "
        f"only in {model.__name__}: {sorted(fields - keys)}"
    )


@pytest.mark.parametrize("level", ["top", "state", "phase", "step", "retry"])
def test_schema_levels_refuse_unknown_keys(level: str) -> None:
    """The loader reports unknown keys because every level forbids extra properties."""
    owner = {
        "top": SCHEMA,
        "state": DEFS["state"],
        "phase": DEFS["phase"],
        "step": DEFS["step"],
        "retry": DEFS["retry"],
    }[level]
    assert owner["additionalProperties"] is False


def _properties(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (pointer, schema) of a named property or definition inside ``node``."""
    if isinstance(node, dict):
        for section in ("properties", "$defs"):
            for name, sub in (node.get(section) or {}).items():
                yield f"{where}/{section}/{name}", sub
        for key, sub in node.items():
            yield from _properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from _properties(sub, f"{where}/{index}")


def test_every_property_has_a_description() -> None:
    found = list(_properties(SCHEMA))
    assert len(found) > 30
    missing = [
        where
        for where, sub in found
        if not (isinstance(sub, dict) and str(sub.get("description", "")).strip())
    ]
    assert not missing, f"properties without a description: {missing}"


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert validator_for(SCHEMA) is Draft202012Validator
    Draft202012Validator.check_schema(SCHEMA)


def test_shipped_machine_names_its_schema() -> None:
    first = (ROOT / "machine.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=schemas/machine.schema.json"
    assert (ROOT / "schemas" / "machine.schema.json").is_file()


def test_shipped_machine_matches_the_schema() -> None:
    doc = YAML(typ="safe").load((ROOT / "machine.yaml").read_text(encoding="utf-8"))
    errors = [e.message for e in Draft202012Validator(SCHEMA).iter_errors(doc)]
    assert errors == []


def test_loader_uses_the_shipped_schema() -> None:
    from runner import resources

    assert resources.schema_path("machine").resolve() == SCHEMA_FILE.resolve()


# --- every CLI command is documented -------------------------------------------------


def test_command_list_is_complete() -> None:
    group = typer.main.get_command(app)
    assert sorted(group.commands) == sorted(COMMANDS)  # type: ignore[attr-defined]


def _docs() -> str:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(f.read_text(encoding="utf-8") for f in files if f.is_file())


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_documented(command: str) -> None:
    """README.md or docs/*.md shows the command as `runner COMMAND`."""
    assert re.search(rf"\brunner {re.escape(command)}\b", _docs()), (
        f"`runner {command}` is not documented in README.md or docs/*.md"
    )
