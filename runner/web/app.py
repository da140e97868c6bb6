"""The Starlette application of `runner serve`: pages, the JSON API, event streams,
and (with ``allow_actions``) the actions.

Every read goes through a fresh :class:`~runner.api.runner.Runner` in a worker thread
(the API is blocking); the environments page and the live updates come from the
:class:`~runner.web.watch.Watcher`'s latest pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runner.api.results import document
from runner.errors import (
    ConflictError,
    EnvironmentNotFoundError,
    ExitCode,
    InputError,
    RunnerError,
    StorageError,
)
from runner.log import logger
from runner.result import Result
from runner.web import pages
from runner.web.security import (
    SECURITY_HEADERS,
    Guard,
    HostRule,
    TokenGate,
    form_token,
    new_secret,
    same_token,
)
from runner.web.watch import RENEW, Watcher

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from runner.api.results import StatusResult
    from runner.api.runner import Runner

__all__ = ["ACTIONS", "Config", "create_app"]

log = logger("runner.web")

HERE = Path(__file__).resolve().parent

#: The actions the dashboard can run (with --allow-actions), as `Runner` methods.
ACTIONS = ("advance", "resume", "check", "destroy")

#: The statuses an error's exit code answers with.
_STATUS = {ExitCode.BAD_INPUT: 400, ExitCode.LOCKED: 409, ExitCode.NOT_ALLOWED: 409}

#: The most live log streams (``/environments/NAME/logs/follow``) open at once; one
#: more is answered 503. They share one reader (one backend connection).
FOLLOWS = 32


@dataclass
class Config:
    """How the dashboard runs: ``make_runner(command)`` gives a Runner whose locks name
    ``command``; ``token`` (None: no token asked; only on loopback); ``host``, the
    address it listens on, and ``allowed_hosts``, the other names it answers to (see
    :class:`~runner.web.security.HostRule`)."""

    make_runner: Callable[[str], Runner]
    token: str | None = None
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    allow_actions: bool = False
    interval: float = 0.2
    follows: int = FOLLOWS
    secret: bytes = field(default_factory=new_secret)
    user: str = field(default_factory=getpass.getuser)


@dataclass
class _Outcome:
    """The last action started from the dashboard on an environment."""

    action: str
    by: str
    started_at: float
    done: bool = False
    message: str = ""
    failed: bool = False


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson_text"] = lambda value: json.dumps(value, indent=2, default=str)
    return env


def create_app(config: Config) -> Starlette:
    """The dashboard's ASGI application."""
    templates = _templates()
    row_template = templates.get_template("row.html")
    watcher = Watcher(
        lambda: config.make_runner("runner serve"),
        config.interval,
        render=lambda row: row_template.render(row=row).strip() + "\n",
    )
    outcomes: dict[str, _Outcome] = {}
    running: set[asyncio.Task[Any]] = set()

    def reader() -> Runner:
        return config.make_runner("runner serve")

    # the live log streams: how many are open, and the Runner they share (renewed as
    # the watcher's is)
    follows = {"open": 0}
    shared: list[tuple[Runner, float]] = []

    def follow_reader() -> Runner:
        now = time.monotonic()
        if not shared or now - shared[0][1] > RENEW:
            shared[:] = [(reader(), now)]
        return shared[0][0]

    async def call(function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(function, *args)

    def page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
        body = templates.get_template(template).render(
            allow_actions=config.allow_actions, actions=_available(), **context
        )
        return HTMLResponse(body, code, headers={"cache-control": "no-store"})

    # the actions this runner has (`check` comes with checks), offered only when allowed
    probe = reader()
    available = tuple(a for a in ACTIONS if callable(getattr(probe, a, None)))

    def _available() -> tuple[str, ...]:
        return available if config.allow_actions else ()

    def error_page(exc: RunnerError) -> HTMLResponse:
        return page("error.html", _status_of(exc), error=exc)

    # -- pages ------------------------------------------------------------------------

    async def environments(request: Request) -> Response:
        await watcher.ready()
        want_state = request.query_params.get("state", "")
        want_kind = request.query_params.get("kind", "")
        rows, drawn, since = watcher.rows, watcher.drawn, watcher.passes
        names = sorted(drawn)
        if want_state or want_kind:  # filtered here too, for a browser without script
            names = [
                n
                for n in names
                if (not want_state or rows.get(n, {}).get("state") == want_state)
                and (not want_kind or rows.get(n, {}).get("kind") == want_kind)
            ]
        states = sorted({r["state"] for r in rows.values() if "state" in r})
        return page(
            "environments.html",
            body="".join(drawn[n] for n in names),
            shown=len(names),
            total=len(drawn),
            filtered="1" if len(names) != len(drawn) else "",
            since=since,
            states=states,
            kinds=("initial", "stable", "intermediate", "failed", "final"),
            want_state=want_state,
            want_kind=want_kind,
            problem=watcher.error,
        )

    async def environment(request: Request) -> Response:
        name = request.path_params["name"]
        log = request.query_params.get("log")
        try:
            data = await call(pages.environment_page, reader(), name, log)
        except RunnerError as exc:
            return error_page(exc)
        return page(
            "environment.html",
            env=data,
            name=name,
            outcome=outcomes.get(name),
            offered=[a for a in _available() if _offered(a, data.status)],
        )

    async def confirm(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        refused = _refuse_action(action)
        if refused is not None:
            return refused
        try:
            status = await call(reader().status, name)
        except RunnerError as exc:
            return error_page(exc)
        return page(
            "confirm.html",
            name=name,
            action=action,
            status=status,
            form=form_token(config.secret, action, name),
        )

    async def act(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        refused = _refuse_action(action)
        if refused is not None:
            return refused
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        expected = form_token(config.secret, action, name)
        if not same_token(form.get("form"), expected) or form.get("confirm") != "yes":
            return page(
                "error.html",
                403,
                error=InputError(
                    f"the {action} of '{name}' was not confirmed on its confirmation page",
                    hint=f"open /environments/{name}/actions/{action} and confirm there",
                ),
            )
        _start(request, name, action)
        return RedirectResponse(f"/environments/{name}", 303)

    def _refuse_action(action: str) -> Response | None:
        if not config.allow_actions:
            return page(
                "error.html",
                403,
                error=InputError(
                    "this dashboard is read-only",
                    hint="start it with `runner serve --allow-actions` to run actions from it",
                ),
            )
        if action not in _available():
            return page(
                "error.html",
                404,
                error=InputError(
                    f"no action {action!r}", hint=f"actions: {', '.join(_available())}"
                ),
            )
        return None

    def _command(request: Request, action: str) -> str:
        client = request.client.host if request.client else "?"
        return f"runner serve: {action} by {config.user} from {client}"

    def _start(request: Request, name: str, action: str) -> asyncio.Task[Any]:
        command = _command(request, action)
        outcome = _Outcome(action, command, time.time())
        outcomes[name] = outcome

        def work() -> Result:
            runner = config.make_runner(command)
            result: Result = getattr(runner, action)(name)
            return result

        async def run() -> Result | RunnerError:
            try:
                result: Result = await asyncio.to_thread(work)
            except RunnerError as exc:
                outcome.message, outcome.failed = str(exc), True
                return exc
            except Exception as exc:
                log.error("dashboard: %s of %s failed", action, name, exc_info=exc)
                outcome.message = f"internal error: {type(exc).__name__}: {exc}"
                outcome.failed = True
                raise
            finally:
                outcome.done = True
            doc = document(result)
            outcome.failed = bool(doc.get("status") == "failed" or doc.get("error"))
            outcome.message = str(doc.get("message") or doc.get("state") or "done")
            return result

        def done(task: asyncio.Task[Any]) -> None:
            running.discard(task)
            if not task.cancelled():
                task.exception()  # logged above; a form's action has nobody awaiting it

        task = asyncio.create_task(run())
        running.add(task)
        task.add_done_callback(done)
        return task

    # -- event streams ----------------------------------------------------------------

    async def events(request: Request) -> Response:
        only = request.query_params.get("env")
        since_text = request.query_params.get("since", "")
        since = int(since_text) if since_text.isascii() and since_text.isdigit() else None

        def problem() -> str:
            return f"event: problem\ndata: {json.dumps({'problem': watcher.error})}\n\n"

        async def stream() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            async with watcher.subscribe(since) as queue:
                if only is None:  # the environments page: whether the rows are current
                    yield problem()
                while True:
                    try:
                        change = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if change is None:  # the server stops
                        return
                    if change.problem:
                        if only is None:
                            yield problem()
                        continue
                    data = change.to_json()
                    if only is not None:
                        data["rows"] = [r for r in data["rows"] if r["environment"] == only]
                        data["removed"] = [n for n in data["removed"] if n == only]
                        if not data["rows"] and not data["removed"]:
                            continue
                    yield f"event: rows\ndata: {json.dumps(data)}\n\n"

        return _sse(stream())

    async def follow(request: Request) -> Response:
        name = request.path_params["name"]
        ref = request.query_params.get("ref", "")
        try:
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            offset = 0
        if follows["open"] >= config.follows:
            return page(
                "error.html",
                503,
                error=RunnerError(
                    f"{config.follows} live logs are followed already, the most this dashboard "
                    "follows at once",
                    hint="close some environment pages, or reload this one later",
                ),
            )

        async def stream() -> AsyncIterator[str]:
            nonlocal offset
            idle = 0
            while not watcher.closed:  # until the log ends or the server stops
                runner = follow_reader()
                try:
                    part = await call(runner.artifact, name, ref, offset)
                    if part.text:
                        offset = part.size
                        yield f"event: chunk\ndata: {json.dumps({'text': part.text})}\n\n"
                        idle = 0
                    else:
                        idle += 1
                        yield ": idle\n\n"  # a client gone is noticed (its slot freed)
                    ended = idle and idle % 5 == 0
                    if ended and not await call(_still_writing, runner, name, ref):
                        yield "event: end\ndata: {}\n\n"
                        return
                except RunnerError as exc:
                    yield f"event: end\ndata: {json.dumps({'error': exc.message})}\n\n"
                    return
                except Exception as exc:
                    log.error("dashboard: following %s of %s failed", ref, name, exc_info=exc)
                    error = f"internal error of the dashboard: {type(exc).__name__}"
                    yield f"event: end\ndata: {json.dumps({'error': error})}\n\n"
                    return
                await asyncio.sleep(config.interval)

        follows["open"] += 1
        return _Counted(stream(), lambda: follows.__setitem__("open", follows["open"] - 1))

    # -- the JSON API -----------------------------------------------------------------

    async def api(request: Request) -> Response:
        name = request.path_params.get("name")
        what = request.path_params.get("what", "")
        q = request.query_params
        runner = reader()
        try:
            if name is None:
                result = await call(runner.list)
            elif what == "":
                result = await call(runner.status, name)
            elif what == "history":
                limit = _int(q.get("limit"), "limit")
                result = await call(runner.history, name, limit)
            elif what == "graph":
                fmt = q.get("format", "mermaid")
                if fmt == "png":
                    raise InputError("the API draws mermaid, dot or svg", hint="format=svg")
                result = await call(runner.graph, fmt, name)
            elif what == "artifacts":
                result = await call(runner.artifacts, name, q.get("kind", "run"))
            elif what == "artifact":
                offset = _int(q.get("offset"), "offset") or 0
                result = await call(runner.artifact, name, q.get("ref", ""), offset)
            else:
                raise EnvironmentNotFoundError(
                    f"no API document {what!r}",
                    hint="see /api/v1/environments/NAME/{history,graph,artifacts,artifact}",
                )
        except RunnerError as exc:
            return _error_json(exc)
        return JSONResponse(document(result), headers={"cache-control": "no-store"})

    async def api_act(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if not config.allow_actions:
            return _error_json(
                InputError(
                    "this dashboard is read-only",
                    hint="start it with `runner serve --allow-actions`",
                ),
                403,
            )
        if action not in _available():
            return _error_json(
                InputError(f"no action {action!r}", hint=f"actions: {', '.join(_available())}"),
                404,
            )
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        ctype = request.headers.get("content-type", "")
        if (
            not ctype.startswith("application/json")
            or not isinstance(body, dict)
            or (body.get("confirm") is not True)
        ):
            return _error_json(
                InputError(
                    f"the {action} of '{name}' must be confirmed",
                    hint='POST a JSON body {"confirm": true} with Content-Type: application/json',
                ),
                403,
            )
        outcome = await _start(request, name, action)
        if isinstance(outcome, RunnerError):
            return _error_json(outcome)
        return JSONResponse(document(outcome))

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(watcher.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for job in list(running):  # actions end on their own; wait for them
                with contextlib.suppress(Exception):
                    await job

    routes = [
        Route("/", environments),
        Route("/environments/{name}", environment),
        Route("/environments/{name}/actions/{action}", confirm, methods=["GET"]),
        Route("/environments/{name}/actions/{action}", act, methods=["POST"]),
        Route("/environments/{name}/logs/follow", follow),
        Route("/events", events),
        Route("/api/v1/environments", api),
        Route("/api/v1/environments/{name}", api),
        Route("/api/v1/environments/{name}/actions/{action}", api_act, methods=["POST"]),
        Route("/api/v1/environments/{name}/{what}", api),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
        error = RunnerError(
            f"internal error of the dashboard: {type(exc).__name__}: {exc}",
            hint="this is a bug in runner; the server's log has the traceback; report it",
        )
        # answered outside the middleware: the security headers here too
        answer: Response
        if request.url.path.startswith("/api/"):
            answer = _error_json(error, 500)
        else:
            answer = page("error.html", 500, error=error)
        answer.raw_headers.extend(SECURITY_HEADERS)
        return answer

    middleware = [
        Middleware(ServerTiming),
        Middleware(Guard, rule=HostRule(config.host, config.allowed_hosts)),
        Middleware(GZipMiddleware, compresslevel=5),
    ]
    if config.token:
        middleware.append(Middleware(TokenGate, token=config.token))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={Exception: internal},
        lifespan=contextlib.asynccontextmanager(lifespan),
    )
    app.state.watcher = watcher
    return app


class ServerTiming:
    """ASGI middleware: every response says how long the server took to start it
    (``Server-Timing: app;dur=MILLISECONDS``, shown by a browser's developer tools)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                spent = (time.perf_counter() - started) * 1000
                headers = [
                    *message.get("headers", []),
                    (b"server-timing", f"app;dur={spent:.1f}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


def _offered(action: str, status: StatusResult) -> bool:
    """Whether an environment's page offers ``action`` (its confirmation page and the
    API refuse the others as the command line would)."""
    name = status.environment
    if status.kind == "final":
        return False
    if action == "advance":
        return any(line.startswith(f"runner advance {name} ") for line in status.next)
    if action == "resume":
        return status.kind == "failed" or status.interrupted
    if action == "destroy":
        return "destroy" in status.allowed_phases
    if action == "check":  # when the state has checks (status then says to run them)
        return any(line.startswith(f"runner check {name} ") for line in status.next)
    return True


def _still_writing(runner: Runner, name: str, ref: str) -> bool:
    """Whether run log ``ref`` is still being written (its run goes on)."""
    try:
        status = runner.status(name)
    except RunnerError:
        return False
    run = status.run
    return run is not None and run.log == ref and not run.finished_at and bool(status.locked_by)


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise InputError(f"{name} must be >= 0, not {number}")
    return number


def _status_of(exc: RunnerError) -> int:
    if isinstance(exc, EnvironmentNotFoundError):
        return 404
    if isinstance(exc, ConflictError):  # the record changed meanwhile
        return 409
    if isinstance(exc, StorageError):  # the backend cannot be reached or written now
        return 503
    return _STATUS.get(int(exc.exit_code), 500)


def _error_json(exc: RunnerError, status: int | None = None) -> JSONResponse:
    return JSONResponse(
        exc.to_json(), status or _status_of(exc), headers={"cache-control": "no-store"}
    )


_SSE_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream", headers=_SSE_HEADERS)


class _Counted(StreamingResponse):
    """An event stream that calls ``release`` once it is over (ended, or its client
    gone), however it ended."""

    def __init__(self, stream: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(stream, media_type="text/event-stream", headers=_SSE_HEADERS)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
