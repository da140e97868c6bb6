"""Reading ansible-playbook's normal output (the `default` callback, JSON results):
which task failed on which host and why, and the PLAY RECAP counts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER|HANDLER) \[(?P<name>.*)\] \**\s*$")
_FAILURE = re.compile(
    r"^(?:(?:fatal): \[(?P<host>[^\]]+)\]: (?P<what>FAILED|UNREACHABLE)!"
    r"|failed: \[(?P<item_host>[^\]]+)\](?: \((?P<item>.*?)\))?)"
    r"(?: => (?P<rest>.*))?$"
)
_RECAP_HEADER = re.compile(r"^PLAY RECAP \**\s*$")
_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")
_COUNT = re.compile(r"(\w+)=(\d+)")
_ERROR_LINE = re.compile(r"^(?:\[ERROR\]:|ERROR!)\s*(?P<text>.*)$")


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed on a host (``unreachable`` when the host could not be reached)."""

    task: str
    host: str
    message: str
    unreachable: bool = False
    item: str | None = None

    def summary(self) -> str:
        if self.unreachable:
            return f"host '{self.host}' unreachable in task '{self.task}': {self.message}"
        item = f" ({self.item})" if self.item else ""
        return f"task '{self.task}' failed on host '{self.host}'{item}: {self.message}"


def recap(text: str) -> dict[str, dict[str, int]]:
    """``{host: {"ok": n, "changed": n, "failed": n, ...}}`` from the PLAY RECAP."""
    hosts: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in text.splitlines():
        if _RECAP_HEADER.match(line):
            in_recap = True
            continue
        if in_recap:
            match = _RECAP_LINE.match(line.strip())
            if match:
                counts = {key: int(value) for key, value in _COUNT.findall(match["counts"])}
                hosts[match["host"]] = counts
            elif line.strip():
                in_recap = False
    return hosts


def failure(text: str) -> TaskFailure | None:
    """The failure that ended the run: the last failure that was not ignored, preferring
    a host the recap counts as failed or unreachable."""
    lines = text.splitlines()
    task = "?"
    found: list[TaskFailure] = []
    for index, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            task = header["name"].strip()
            continue
        if line.strip() == "...ignoring" and found:
            found.pop()
            continue
        match = _FAILURE.match(line)
        if not match:
            continue
        result = _result(match["rest"] or "", lines[index + 1 :])
        message = _message(result) if result is not None else _raw_message(match["rest"] or "")
        host = match["host"] or match["item_host"] or "?"
        if message == "One or more items failed" and found and found[-1].host == host:
            continue  # the item failure before it says more
        found.append(
            TaskFailure(
                task=task,
                host=host,
                message=message,
                unreachable=match["what"] == "UNREACHABLE",
                item=match["item"],
            )
        )
    if not found:
        return None
    counts = recap(text)
    broken = {h for h, c in counts.items() if c.get("failed", 0) or c.get("unreachable", 0)}
    for candidate in reversed(found):
        if not broken or candidate.host in broken:
            return candidate
    return found[-1]


def error_line(text: str) -> str | None:
    """The first ``[ERROR]:`` / ``ERROR!`` line (syntax errors, missing files, ...)."""
    for line in text.splitlines():
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match["text"].strip()[:300]
    return None


def _result(rest: str, following: list[str]) -> dict[str, Any] | None:
    """The JSON result after ``=>``; it may go on over the next lines (higher verbosity)."""
    text = rest.strip()
    if not text.startswith("{"):
        return None
    for extra in range(min(len(following), 500) + 1):
        candidate = text if extra == 0 else text + "\n" + "\n".join(following[:extra])
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _message(result: dict[str, Any]) -> str:
    message = str(result.get("msg") or result.get("reason") or "").strip()
    message = message.removeprefix("Task failed: ")
    stderr = str(result.get("stderr") or "").strip()
    if "rc" in result and message in ("", "non-zero return code"):
        message = f"exited with {result['rc']}"
    if stderr and stderr not in message:
        message = f"{message}: {stderr.splitlines()[-1].strip()}" if message else stderr
    first = message.splitlines()[0] if message else "no message"
    return first[:300]


def _raw_message(rest: str) -> str:
    match = re.search(r'"msg":\s*"((?:[^"\\]|\\.)*)"', rest)
    if match:
        return match.group(1)[:300]
    return rest.strip()[:300] or "no message"
