"""The `http_check` step: wait until a URL answers with the expected status (and body)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from runner.errors import StepError
from runner.plugin import Step, StepContext
from steps.durations import duration_schema, seconds

MAX_BODY = 1024 * 1024
"""Bytes of a response body read at most."""

BODY_IN_RESULT = 1000


@dataclass(frozen=True)
class _Observation:
    """One attempt: the status and body, or why nothing answered."""

    status: int | None
    body: str
    error: str | None = None

    def describe(self, contains: str | None) -> str:
        if self.status is None:
            return f"no answer: {self.error}"
        text = f"status {self.status}"
        if contains is not None and contains not in self.body:
            snippet = " ".join(self.body.split())[:120]
            text += f", body does not contain {contains!r} (body: {snippet!r})"
        return text


class HttpCheckStep(Step):
    name = "http_check"
    description = (
        "Wait until a URL answers with the expected status (and, optionally, a body that "
        "contains a text)."
    )
    params_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {
                "type": "string",
                "pattern": "^https?://",
                "description": "The URL to request (http:// or https://).",
            },
            "status": {
                "type": "integer",
                "minimum": 100,
                "maximum": 599,
                "default": 200,
                "description": "The expected HTTP status.",
            },
            "contains": {
                "type": "string",
                "description": "Text the response body must contain.",
            },
            "method": {
                "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"],
                "default": "GET",
                "description": "The HTTP method.",
            },
            "timeout": duration_schema("How long to wait in all.", "60s"),
            "interval": duration_schema("Pause between two requests.", "1s"),
            "request_timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 5,
                "description": "Seconds one request may take.",
            },
        },
    }

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        url: str = params["url"]
        expected = int(params.get("status", 200))
        contains: str | None = params.get("contains")
        method: str = params.get("method", "GET")
        timeout = seconds(params.get("timeout", "60s"), "timeout")
        interval = seconds(params.get("interval", "1s"), "interval")
        request_timeout = float(params.get("request_timeout", 5))

        started = time.monotonic()
        deadline = started + timeout
        attempts = 0
        while True:
            attempts += 1
            seen = _request(url, method, request_timeout)
            if seen.status == expected and (contains is None or contains in seen.body):
                ctx.log_line(f"{method} {url}: status {seen.status} (attempt {attempts})")
                return {
                    "status": seen.status,
                    "body": seen.body[:BODY_IN_RESULT],
                    "attempts": attempts,
                }
            ctx.log_line(
                f"{method} {url} not ready (attempt {attempts}): {seen.describe(contains)}"
            )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(interval, remaining))
        kind = "connectivity" if seen.status is None else "unexpected_response"
        want = f"status {expected}" + (f" with {contains!r} in the body" if contains else "")
        raise StepError(
            kind,
            f"{method} {url} did not answer with {want} within {timeout:g}s "
            f"({attempts} attempts); last: {seen.describe(contains)}",
        )


def _request(url: str, method: str, timeout_s: float) -> _Observation:
    # imported when a check runs: every command that loads the plugins (validate, advance)
    # would otherwise pay for urllib, http.client and ssl
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return _Observation(int(response.status), _body(response))
    except urllib.error.HTTPError as exc:
        try:
            body = _body(exc)
        finally:
            exc.close()
        return _Observation(int(exc.code), body)
    except urllib.error.URLError as exc:
        return _Observation(None, "", str(exc.reason))
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
        return _Observation(None, "", str(exc) or type(exc).__name__)
    except ValueError as exc:  # a URL urllib cannot use
        raise StepError("configuration", f"{url} is not a usable URL: {exc}") from exc


def _body(response: Any) -> str:
    data = response.read(MAX_BODY)
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else ""
