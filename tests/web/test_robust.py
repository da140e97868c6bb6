"""The dashboard against failures and hostile requests, through the real application
served by uvicorn in a thread of the test: a watcher that keeps
watching whatever a pass raises, an unreachable backend answered 503, the names and
sites a request may come from, and the cap on live log streams."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from runner.api.runner import Runner
from runner.errors import ConflictError, StorageError
from runner.store.files import FileStore
from runner.web.app import Config, create_app
from runner.web.serve import bind
from tests.web.conftest import make_workdir


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`make_workdir`'s environments (alpha, beta, gamma), only read here."""
    return make_workdir(tmp_path_factory.mktemp("robust"))


def config(work: Path, **options: Any) -> Config:
    return Config(lambda command: Runner(work, command=command), **options)


class Breaker:
    """Makes the file store's listing raise ``error`` while :attr:`on`; counts the
    tries."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        self.on = False
        self.tries = 0
        for method in ("list", "versions"):
            real = getattr(FileStore, method)

            def broken(store: FileStore, *args: Any, _real: Any = real) -> Any:
                if self.on:
                    self.tries += 1
                    raise error
                return _real(store, *args)

            monkeypatch.setattr(FileStore, method, broken)


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread, until the block ends: its address."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (RecursionError("maximum recursion depth exceeded"), "internal error of the dashboard"),
        (StorageError("cannot reach the state database"), "cannot reach the state database"),
    ],
)
def test_the_watcher_survives_any_failed_pass_says_so_once_and_backs_off(
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    shown: str,
) -> None:
    caplog.set_level(logging.DEBUG, "runner.web")
    breaker = Breaker(monkeypatch, error)
    app = create_app(config(work, interval=0.02))
    watcher = app.state.watcher
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert "alpha" in client.get("/").text
        breaker.on = True
        wait_for(lambda: watcher.error is not None)
        started = breaker.tries
        time.sleep(1.0)
        # backing off: 0.04, 0.08, 0.16, 0.32, 0.64 s (not 50 passes a second)
        assert breaker.tries - started <= 5, breaker.tries - started
        page = client.get("/")
        assert shown in page.text and 'id="problem" hidden' not in page.text
        breaker.on = False
        wait_for(lambda: watcher.error is None, 10)
        page = client.get("/")
        assert 'id="problem" hidden' in page.text and "alpha" in page.text
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        "dashboard: cannot list the environments"
        + (f": {error}" if isinstance(error, StorageError) else ""),
        "dashboard: the environments can be listed again",
    ]


def test_the_live_page_is_told_when_the_watcher_fails_and_recovers(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    breaker = Breaker(monkeypatch, ValueError("no code expected this"))
    app = create_app(config(work, interval=0.02))
    watcher = app.state.watcher

    async def scenario() -> list[str | None]:
        task = asyncio.create_task(watcher.run())
        said: list[str | None] = []
        try:
            await watcher.ready()
            async with watcher.subscribe() as queue:
                breaker.on = True
                while len(said) < 2:
                    change = await asyncio.wait_for(queue.get(), 5)
                    assert change is not None and change.problem
                    said.append(watcher.error)
                    breaker.on = False
        finally:
            task.cancel()
        return said

    said = asyncio.run(scenario())
    assert said[0] is not None and "ValueError: no code expected this" in said[0]
    assert said[1] is None


@pytest.mark.parametrize(
    ("error", "status"),
    [(StorageError("cannot reach the state database"), 503), (ConflictError("changed"), 409)],
)
def test_an_unreachable_backend_is_503_not_bad_input(
    work: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    app = create_app(config(work))
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:

        def unreachable(store: FileStore, name: str) -> Any:
            raise error

        monkeypatch.setattr(FileStore, "load", unreachable)
        api = client.get("/api/v1/environments/alpha")
        assert api.status_code == status
        assert api.json()["error"] == type(error).__name__
        assert client.get("/environments/alpha").status_code == status


def test_hostile_inputs_are_refused_not_internal_errors(work: Path) -> None:
    app = create_app(config(work, allow_actions=True))
    with running(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        ref = "data/alpha/runs/a\0b"
        api = client.get("/api/v1/environments/gamma/artifact", params={"ref": ref})
        assert api.status_code == 400 and api.json()["error"] == "StateFileError"
        page = client.get("/environments/gamma", params={"log": "data/gamma/runs/\0x"})
        assert page.status_code == 200 and "internal error" not in page.text
        follow = client.get(
            "/environments/gamma/logs/follow", params={"ref": "data/gamma/runs/x\0y"}
        )
        assert follow.status_code == 200
        assert follow.text.startswith("event: end") and "has no artifact" in follow.text
        # a non-ASCII form token is a wrong one
        form = client.post(
            "/environments/gamma/actions/resume",
            content=b"form=%C3%A9&confirm=yes",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 403 and "not confirmed" in form.text


def test_the_names_a_request_may_call_the_server_by() -> None:
    from runner.web.security import HostRule

    loopback = HostRule("127.0.0.1")
    for name in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert loopback.allows(name), name
    for name in ("rebind.attacker.example", "10.0.0.5", "localhost.attacker.example"):
        assert not loopback.allows(name), name
    everywhere = HostRule("0.0.0.0", ("board.example",))
    assert everywhere.allows("10.0.0.5") and everywhere.allows("board.example")
    assert not everywhere.allows("rebind.attacker.example")
    one = HostRule("10.0.0.5")
    assert one.allows("10.0.0.5") and not one.allows("10.0.0.6")


def test_live_log_streams_share_one_reader_and_are_capped(work: Path) -> None:
    made: list[str] = []

    def make_runner(command: str) -> Runner:
        made.append(command)
        return Runner(work, command=command)

    app = create_app(Config(make_runner, interval=1.0, follows=2))
    with running(app) as url, httpx.Client(timeout=10) as http:
        ref = http.get(url + "api/v1/environments/gamma/artifacts").json()["artifacts"][0]
        follow = url + "environments/gamma/logs/follow"
        before = len(made)
        with contextlib.ExitStack() as streams:
            lines = []  # kept: a reader let go of closes its stream
            for _ in range(2):
                stream = streams.enter_context(http.stream("GET", follow, params={"ref": ref}))
                assert stream.status_code == 200
                lines.append(stream.iter_lines())
                assert next(lines[-1]).startswith("event: chunk")
            assert len(made) - before <= 1  # one reader for both streams
            refused = http.get(follow, params={"ref": ref})
            assert refused.status_code == 503
            assert "2 live logs are followed already" in refused.text
        # the streams closed: room again
        wait_for(lambda: _opens(http, follow, ref))


def _opens(http: httpx.Client, url: str, ref: str) -> bool:
    with http.stream("GET", url, params={"ref": ref}) as stream:
        return stream.status_code == 200
