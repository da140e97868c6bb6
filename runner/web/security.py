"""Who may read the dashboard, and which forms may run an action.

- **The token**: with ``--token-file`` every request (pages, API, event streams and
  static files alike) must carry it: ``Authorization: Bearer TOKEN``, or the cookie a
  browser gets once it opened any page with ``?token=TOKEN``. Compared in constant
  time. Without a token the server only listens on a loopback address
  (:func:`check_bind`).
- **Action forms** carry a token derived from a secret the server draws at start, the
  action and the environment, so that another site cannot make a browser post one.
- **The host and the origin** (:class:`Guard`): a request must name the server by a
  loopback name or address, the address it listens on, or a name the operator allowed
  (``--allowed-host``), so that a page whose DNS name was rebound to this machine
  (DNS rebinding) gets no answer; a request that may change something (any method but
  GET, HEAD, OPTIONS) is refused when its ``Origin`` (or, without one, its
  ``Referer``) is another site. Every answer forbids framing and carries a content
  security policy that allows the dashboard's own files only.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

from runner.errors import InputError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "COOKIE",
    "SECURITY_HEADERS",
    "Guard",
    "HostRule",
    "TokenGate",
    "check_bind",
    "form_token",
    "read_token",
    "same_token",
]

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


#: The headers of every answer: no page of the dashboard may be framed by another
#: (clickjacking), and a page runs only the dashboard's own script and stylesheet.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)

#: The methods that change nothing (their requests are not checked for their origin).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(value: str) -> str | None:
    """The name or address of a ``Host`` header (``name``, ``name:port``,
    ``[v6]:port``), lower-cased and without a final dot; None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name or None
    name, colon, port = value.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return None
    name = name.rstrip(".")
    if not name or not all(c.isascii() and (c.isalnum() or c in "-._") for c in name):
        return None
    return name


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


class HostRule:
    """The names a request may call the server by: loopback names and addresses
    (``localhost``, ``127.0.0.1``, ``::1``), the address it listens on (any address of
    this machine when it listens on all of them: an address, unlike a DNS name, cannot
    be rebound), and the names the operator allowed. The port is not compared: a
    tunnel (``ssh -L 9000:localhost:8400``) reaches it by another one."""

    def __init__(self, bound: str = "127.0.0.1", allowed: tuple[str, ...] = ()) -> None:
        self.bound = _address(bound)
        #: The names the operator allowed (``--allowed-host``).
        self.allowed = frozenset(n for n in (host_name(a) for a in allowed) if n)
        names = {"localhost", *self.allowed}
        if self.bound is None and (name := host_name(bound)) is not None:
            names.add(name)  # listening on a name of this machine
        self.names = frozenset(names)

    def allows(self, name: str) -> bool:
        """Whether a request may call the server ``name`` (see :func:`host_name`)."""
        if name in self.names:
            return True
        address = _address(name)
        if address is None:
            return False
        if address.is_loopback:
            return True
        if self.bound is None:
            return False
        return self.bound.is_unspecified or address == self.bound


class Guard:
    """ASGI middleware: the host and origin checks of the module, and
    :data:`SECURITY_HEADERS` on every answer."""

    def __init__(self, app: ASGIApp, rule: HostRule) -> None:
        self.app = app
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in _SECURITY_NAMES
                ]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = host_name(host)
        if name is None or not self.rule.allows(name):
            shown = host if len(host) <= 100 else host[:100] + "..."
            await _refuse_request(
                scope,
                guarded,
                400,
                "BadHost",
                f"this dashboard does not answer to the host name {shown!r}",
                "open it by the address it listens on (or 127.0.0.1, localhost); a name "
                "of a proxy in front of it needs `runner serve --allowed-host NAME`",
            )
            return
        if scope["method"] not in SAFE_METHODS:
            source = headers.get("origin") or headers.get("referer")
            if source is not None and not self._same_origin(source, host):
                shown = source if len(source) <= 100 else source[:100] + "..."
                await _refuse_request(
                    scope,
                    guarded,
                    403,
                    "CrossOrigin",
                    f"a {scope['method']} from another site ({shown}) is refused",
                    "run actions from the dashboard's own pages, or from a script that "
                    "sends no Origin header",
                )
                return
        await self.app(scope, receive, guarded)

    def _same_origin(self, source: str, host: str) -> bool:
        """Whether ``source`` (an Origin or a Referer) is the dashboard itself: its
        host and port are the request's ``Host``, or it is a name the operator allowed
        (a proxy that passes another ``Host`` on)."""
        try:
            parts = urlsplit(source.strip())
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed frame, a file), another scheme
        if parts.netloc.lower() == host.strip().lower():
            return True
        name = host_name(parts.netloc)
        return name is not None and name in self.rule.allowed


_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


async def _refuse_request(
    scope: Scope, send: Send, status: int, error: str, message: str, hint: str
) -> None:
    """An error answer: the error document under /api/, else a short page."""
    if str(scope["path"]).startswith("/api/"):
        from runner.errors import ExitCode
        from runner.result import API_VERSION

        body = {
            "api_version": API_VERSION,
            "error": error,
            "message": message,
            "exit_code": ExitCode.BAD_INPUT,
            "hint": hint,
        }
        await _respond(send, status, b"application/json", json.dumps(body).encode(), [])
        return
    page = (
        "<!doctype html><meta charset=utf-8><title>runner: refused</title>"
        f"<h1>Refused</h1><p>{html.escape(message)}.</p><p>{html.escape(hint)}.</p>"
    )
    await _respond(send, status, b"text/html; charset=utf-8", page.encode(), [])


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
