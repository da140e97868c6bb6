"""Who may read the dashboard, and which forms may run an action.

- **The token**: with ``--token-file`` every request (pages, API, event streams and
  static files alike) must carry it: ``Authorization: Bearer TOKEN``, or the cookie a
  browser gets once it opened any page with ``?token=TOKEN``. Compared in constant
  time. Without a token the server only listens on a loopback address
  (:func:`check_bind`).
- **Action forms** carry a token derived from a secret the server draws at start, the
  action and the environment, so that another site cannot make a browser post one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from runner.errors import InputError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "TokenGate", "check_bind", "form_token", "read_token", "same_token"]

#: The cookie that carries the token for a browser.
COOKIE = "runner_token"


def read_token(path: Path) -> str:
    """The token in ``path`` (its first line, stripped); InputError when the file
    cannot be read, is empty, or is readable by other users."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"cannot read the token file {path}: {exc.strerror or exc}",
            hint="give --token-file a readable file holding one line: the token",
        ) from None
    if mode & 0o077:
        raise InputError(
            f"the token file {path} can be read by other users (mode {mode & 0o777:o})",
            hint=f"chmod 600 {path}",
        )
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise InputError(
            f"the token in {path} is {'empty' if not token else 'shorter than 16 characters'}",
            hint="write a long random token into it, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE",
        )
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is only reachable from here."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen on anything but loopback without a token."""
    if token is None and not is_loopback(host):
        raise InputError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "read every environment",
            hint="pass --token-file FILE (a file only you can read, holding a long random "
            "token), or listen on 127.0.0.1",
        )


def same_token(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the server's."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def form_token(secret: bytes, action: str, name: str) -> str:
    """The token an action form for environment ``name`` carries."""
    return hmac.new(secret, f"{action}\0{name}".encode(), hashlib.sha256).hexdigest()


def new_secret() -> bytes:
    return secrets.token_bytes(32)


class TokenGate:
    """ASGI middleware: every HTTP request must carry the token (see the module)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        bearer = headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and same_token(bearer[7:].strip(), self.token):
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookie = SimpleCookie()
        if COOKIE in cookie and same_token(cookie[COOKIE].value, self.token):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = dict(query).get("token")
        if given is not None and same_token(given, self.token) and scope["method"] == "GET":
            # log in: the cookie, and the same address without the token in it
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            await _respond(
                send,
                303,
                b"text/plain; charset=utf-8",
                b"logged in\n",
                [
                    (b"location", location.encode("latin-1")),
                    (
                        b"set-cookie",
                        f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode(
                            "latin-1"
                        ),
                    ),
                ],
            )
            return
        await _refuse(scope, send, wrong=bool(bearer or given or COOKIE in cookie))


async def _refuse(scope: Scope, send: Send, wrong: bool) -> None:
    problem = "a wrong token" if wrong else "no token"
    message = f"this dashboard needs its token, and the request carried {problem}"
    hint = (
        "open the address with ?token=TOKEN once (the browser keeps it), or send the header "
        "Authorization: Bearer TOKEN"
    )
    if str(scope["path"]).startswith("/api/"):
        from runner.errors import ExitCode
        from runner.result import API_VERSION

        body = {
            "api_version": API_VERSION,
            "error": "Unauthorized",
            "message": message,
            "exit_code": ExitCode.BAD_INPUT,
            "hint": hint,
        }
        await _respond(send, 401, b"application/json", json.dumps(body).encode(), [])
        return
    page = (
        "<!doctype html><meta charset=utf-8><title>runner: token needed</title>"
        f"<h1>Token needed</h1><p>{message}.</p><p>{hint}.</p>"
    )
    await _respond(send, 401, b"text/html; charset=utf-8", page.encode(), [])


async def _respond(
    send: Send, status: int, media: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
