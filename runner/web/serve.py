"""`runner serve`: the dashboard's server (uvicorn on a socket bound here first, so
that a taken port or a refused address is one clear error before anything starts)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from runner.errors import InputError
from runner.result import Result
from runner.web.security import check_bind, read_token

if TYPE_CHECKING:
    from runner.api.runner import Runner

__all__ = ["ServeResult", "bind", "serve"]


@dataclass(frozen=True)
class ServeResult(Result):
    """`serve`: where the dashboard listens (said once it listens)."""

    url: str
    host: str
    port: int
    allow_actions: bool
    token: bool


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port); InputError when the
    address cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(
            f"cannot listen on {host}: {exc.strerror}",
            hint="give --host an address of this machine (127.0.0.1, ::1, 0.0.0.0)",
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = "is taken" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise InputError(
            f"port {port} on {host} {why}",
            hint="give another --port (or stop what listens there)",
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    make_runner: Callable[[str], Runner],
    *,
    host: str = "127.0.0.1",
    port: int = 8400,
    token_file: Path | None = None,
    allow_actions: bool = False,
    allowed_hosts: tuple[str, ...] = (),
    started: Callable[[ServeResult], None] | None = None,
) -> None:
    """Serve the dashboard until SIGINT or SIGTERM; ``started`` is told where it
    listens; ``allowed_hosts``: the names besides its address and loopback's that a
    request may call it by (a proxy's that passes its own ``Host`` on)."""
    from runner.web.app import Config, create_app

    token = read_token(token_file) if token_file is not None else None
    check_bind(host, token)
    make_runner("runner serve").machine(plugins=False)  # a broken machine: say so now
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    app = create_app(
        Config(
            make_runner,
            token=token,
            host=host,
            allowed_hosts=allowed_hosts,
            allow_actions=allow_actions,
        )
    )
    # at SIGINT or SIGTERM the requests under way are answered first (an action's
    # request lasts its phase); the pages' event streams end (see _Server)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = _Server(config, app.state.watcher.close)
    if started is not None:
        started(
            ServeResult(
                f"http://{shown}:{bound_port}/", host, bound_port, allow_actions, token is not None
            )
        )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the pages' event streams once told to stop:
    uvicorn waits for the open connections before it stops, and a page's stream never
    ends on its own (Ctrl+C would wait until every browser closed its tab)."""

    def __init__(self, config: uvicorn.Config, close_streams: Callable[[], None]) -> None:
        super().__init__(config)
        self._close_streams = close_streams
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:  # in a signal handler: the loop's thread does it
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._close_streams)
