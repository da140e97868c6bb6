"""The dashboard's JSON API and its guards, over plain HTTP against a real
`runner serve`: the documents of `--output json` (validated against
schemas/output.schema.json), the token on every request, read-only unless
--allow-actions, and the refusals of `serve` itself."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.helpers import ROOT, run_cli
from tests.web.conftest import Server, make_workdir, serve

pytestmark = pytest.mark.e2e

SCHEMA: dict[str, Any] = json.loads((ROOT / "schemas" / "output.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
TOKEN = "a-long-token-for-the-dashboard-tests"


def valid(document: dict[str, Any], definition: str) -> dict[str, Any]:
    """``document`` validates against the schema, as the document ``definition``."""
    VALIDATOR.validate(document)
    Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}).validate(
        document
    )
    assert document["api_version"] == 1
    return document


def test_the_api_serves_the_documents_of_output_json(board: Server) -> None:
    base = board.url + "api/v1/environments"
    with httpx.Client(timeout=10) as http:
        listing = valid(http.get(base).json(), "list")
        assert [e["environment"] for e in listing["environments"]] == ["alpha", "beta", "gamma"]
        # the same document as `runner list --output json`
        cli = json.loads(run_cli("--output", "json", "list", cwd=board.work).stdout)
        assert listing == cli

        status = valid(http.get(f"{base}/gamma").json(), "status")
        assert status["state"] == "build_failed"
        assert status["failure"]["step"] == "compile"
        cli = json.loads(run_cli("--output", "json", "status", "gamma", cwd=board.work).stdout)
        assert status == cli

        history = valid(http.get(f"{base}/gamma/history", params={"limit": 2}).json(), "history")
        assert len(history["events"]) == 2

        graph = valid(http.get(f"{base}/beta/graph", params={"format": "svg"}).json(), "graph")
        assert graph["state"] == "built" and "<svg" in graph["graph"]

        logs = valid(http.get(f"{base}/gamma/artifacts").json(), "artifacts")
        assert len(logs["artifacts"]) == 1
        traces = valid(
            http.get(f"{base}/gamma/artifacts", params={"kind": "trace"}).json(), "artifacts"
        )
        assert traces["artifacts"] == [status["failure"]["trace"]]

        log = valid(
            http.get(f"{base}/gamma/artifact", params={"ref": logs["artifacts"][0]}).json(),
            "artifact",
        )
        assert "compile: broken input" in log["text"]
        tail = valid(
            http.get(
                f"{base}/gamma/artifact",
                params={"ref": logs["artifacts"][0], "offset": log["size"] - 10},
            ).json(),
            "artifact",
        )
        assert tail["text"] == log["text"][-10:]


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("api/v1/environments/nosuch", 404, "EnvironmentNotFoundError"),
        ("api/v1/environments/Bad_Name", 400, "InvalidNameError"),
        ("api/v1/environments/gamma/history?limit=x", 400, "InputError"),
        ("api/v1/environments/gamma/graph?format=gif", 400, "InputError"),
        ("api/v1/environments/gamma/artifact?ref=../../etc/passwd", 400, "StateFileError"),
        ("api/v1/environments/gamma/artifacts?kind=core", 400, "InputError"),
        ("api/v1/environments/gamma/artifact?ref=data/gamma/runs/a%00b", 400, "StateFileError"),
    ],
)
def test_bad_requests_get_one_error_document(
    board: Server, path: str, status: int, error: str
) -> None:
    response = httpx.get(board.url + path, timeout=10)
    assert response.status_code == status
    document = valid(response.json(), "error")
    assert document["error"] == error
    assert document["message"]


def test_a_malformed_since_of_the_event_stream_is_none(board: Server) -> None:
    with httpx.stream("GET", board.url + "events?since=%C2%B2", timeout=10) as stream:
        assert stream.status_code == 200
        assert next(stream.iter_lines()) == "retry: 1000"


def test_pages_of_what_does_not_exist_say_so(board: Server) -> None:
    response = httpx.get(board.url + "environments/nosuch", timeout=10)
    assert response.status_code == 404
    assert "no environment &#39;nosuch&#39;" in response.text
    assert "Traceback" not in response.text


def test_a_read_only_dashboard_refuses_every_action(board: Server) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as http:
        form = http.post(board.url + "environments/alpha/actions/advance", data={"confirm": "yes"})
        assert form.status_code == 403
        assert "read-only" in form.text
        confirm = http.get(board.url + "environments/alpha/actions/advance")
        assert confirm.status_code == 403
        api = http.post(
            board.url + "api/v1/environments/alpha/actions/advance", json={"confirm": True}
        )
        assert api.status_code == 403
        assert valid(api.json(), "error")["message"] == "this dashboard is read-only"
        other = http.put(board.url + "api/v1/environments/alpha")
        assert other.status_code == 405
    assert (
        json.loads(run_cli("--output", "json", "status", "alpha", cwd=board.work).stdout)["state"]
        == "created"
    )


def test_actions_need_their_confirmation(tmp_path: Path) -> None:
    work = make_workdir(tmp_path)
    with serve(work, "--allow-actions") as server, httpx.Client(timeout=30) as http:
        url = server.url + "environments/alpha/actions/advance"
        # a form posted without the confirmation page's token (another site, a script)
        assert http.post(url, data={"confirm": "yes"}).status_code == 403
        assert http.post(url, data={"confirm": "yes", "form": "0" * 64}).status_code == 403
        api = server.url + "api/v1/environments/alpha/actions/advance"
        assert http.post(api, json={}).status_code == 403
        assert http.post(api, content=b"confirm=true").status_code == 403
        assert (
            json.loads(run_cli("--output", "json", "status", "alpha", cwd=work).stdout)["state"]
            == "created"
        )
        done = http.post(api, json={"confirm": True})
        assert done.status_code == 200
        document = valid(done.json(), "run")
        assert document["state"] == "built"
        # a phase not allowed: the error document, as the CLI gives it
        refused = http.post(
            server.url + "api/v1/environments/gamma/actions/advance", json={"confirm": True}
        )
        assert refused.status_code == 409
        assert valid(refused.json(), "error")["exit_code"] == 4
        # a failed step: the run document with its failure
        (work / "broken").write_text("x")
        failed = http.post(
            server.url + "api/v1/environments/gamma/actions/resume", json={"confirm": True}
        )
        assert failed.status_code == 200
        assert valid(failed.json(), "run")["status"] == "failed"


def test_a_request_by_another_name_or_from_another_site_changes_nothing(tmp_path: Path) -> None:
    """DNS rebinding (a page of another site whose name now points here) and
    cross-site requests: refused before any action runs; no page may be framed."""
    work = make_workdir(tmp_path)
    with (
        serve(work, "--allow-actions", "--allowed-host", "board.example") as server,
        httpx.Client(timeout=30) as http,
    ):
        port = server.document["port"]
        api = server.url + "api/v1/environments/alpha/actions/destroy"
        rebound = {"Host": f"rebind.attacker.example:{port}"}
        refused = http.post(
            api,
            json={"confirm": True},
            headers={**rebound, "Origin": "http://rebind.attacker.example"},
        )
        assert refused.status_code == 400
        assert "does not answer to the host name" in valid(refused.json(), "error")["message"]
        assert http.get(server.url, headers=rebound).status_code == 400
        for origin in ("http://evil.example", "null", f"http://localhost:{port}"):
            crossed = http.post(api, json={"confirm": True}, headers={"Origin": origin})
            assert crossed.status_code == 403, origin
            assert valid(crossed.json(), "error")["error"] == "CrossOrigin"
        form = http.post(
            server.url + "environments/alpha/actions/destroy",
            data={"confirm": "yes", "form": "0" * 64},
            headers={"Referer": "http://evil.example/page"},
        )
        assert form.status_code == 403 and "another site" in form.text
        # a non-ASCII form token is a wrong one, not an internal error
        wrong = http.post(
            server.url + "environments/gamma/actions/resume",
            content=b"form=%C3%A9&confirm=yes",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert wrong.status_code == 403 and "not confirmed" in wrong.text
        status = json.loads(run_cli("--output", "json", "status", "alpha", cwd=work).stdout)
        assert status["state"] == "created"
        # the names it answers to: loopback's, its address, the allowed one
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "board.example", "LOCALHOST."):
            assert http.get(server.url, headers={"Host": host}).status_code == 200, host
        page = http.get(server.url + "environments/alpha")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # its own origin, and the allowed name's behind a proxy, may act
        check = server.url + "api/v1/environments/beta/actions/check"
        own = http.post(check, json={"confirm": True}, headers={"Origin": server.url.rstrip("/")})
        assert own.status_code == 200
        proxied = http.post(
            check, json={"confirm": True}, headers={"Origin": "https://board.example"}
        )
        assert proxied.status_code == 200


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = make_workdir(tmp_path_factory.mktemp("guarded"))
    token = work / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    with serve(work, "--token-file", str(token)) as server:
        yield server


@pytest.mark.parametrize(
    "path", ["", "environments/alpha", "api/v1/environments", "events", "static/dashboard.css"]
)
def test_with_a_token_file_every_request_needs_the_token(guarded: Server, path: str) -> None:
    url = guarded.url + path
    with httpx.Client(timeout=5) as http:
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        with httpx.Client(timeout=5, cookies={"runner_token": "wrong-token"}) as wrong:
            assert wrong.get(url).status_code == 401
        assert http.get(url, params={"token": "wrong"}).status_code == 401
        if path == "events":  # a stream: only its start
            with http.stream("GET", url, headers={"Authorization": f"Bearer {TOKEN}"}) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
        else:
            assert http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
            with httpx.Client(timeout=5, cookies={"runner_token": TOKEN}) as right:
                assert right.get(url).status_code == 200
    assert guarded.document["token"] is True


def test_the_api_says_in_its_error_document_that_the_token_is_missing(guarded: Server) -> None:
    response = httpx.get(guarded.url + "api/v1/environments", timeout=5)
    assert response.status_code == 401
    document = valid(response.json(), "error")
    assert "token" in document["message"] and "Authorization: Bearer" in document["hint"]


def test_a_token_in_the_address_logs_a_browser_in_and_leaves_the_address(guarded: Server) -> None:
    with httpx.Client(timeout=5) as http:
        response = http.get(guarded.url + "environments/alpha", params={"token": TOKEN})
        assert response.status_code == 303
        assert response.headers["location"] == "/environments/alpha"
        assert "HttpOnly" in response.headers["set-cookie"]
        assert http.get(guarded.url + "environments/alpha").status_code == 200  # the cookie


def _address() -> str:
    """An address of this machine that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent
            return str(probe.getsockname()[0])
        except OSError:
            return "0.0.0.0"


@pytest.mark.parametrize("host", ["0.0.0.0", "non-loopback"])
def test_serve_refuses_a_non_loopback_address_without_a_token(tmp_path: Path, host: str) -> None:
    host = _address() if host == "non-loopback" else host
    done = run_cli("serve", "--host", host, "--port", "0", cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert f"refusing to listen on {host} without a token" in done.stderr
    assert "--token-file" in done.stderr
    assert "Traceback" not in done.stderr
    as_json = run_cli("--output", "json", "serve", "--host", host, cwd=tmp_path, timeout=30)
    assert as_json.returncode == 2
    assert valid(json.loads(as_json.stdout), "error")["error"] == "InputError"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "cannot read the token file"),
        ("open", "can be read by other users"),
        ("short", "shorter than 16 characters"),
    ],
)
def test_a_bad_token_file_is_refused(tmp_path: Path, setup: str, message: str) -> None:
    token = tmp_path / "token"
    if setup != "missing":
        token.write_text("short\n" if setup == "short" else TOKEN)
        token.chmod(0o644 if setup == "open" else 0o600)
    done = run_cli("serve", "--port", "0", "--token-file", token, cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--port", str(port), cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr


def test_serve_help_explains_its_options(tmp_path: Path) -> None:
    done = run_cli("serve", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for option in (
        "--host",
        "--port",
        "--token-file",
        "--allow-actions",
        "--allowed-host",
        "/api/v1/",
    ):
        assert option in done.stdout


def test_sigint_stops_the_server_while_pages_hold_event_streams(tmp_path: Path) -> None:
    """Ctrl+C (SIGINT) of `runner serve` with pages open and an action under way: the
    pages' event streams end, the action's request still gets its answer once its phase
    is done, and the server exits 130 (it used to wait for every browser tab to close)."""
    work = make_workdir(tmp_path)
    with serve(work, "--allow-actions") as server:
        ended: list[bytes] = []
        opened = [threading.Event() for _ in range(2)]
        answers: list[httpx.Response] = []

        def hold(index: int) -> None:
            received = b""
            with httpx.stream("GET", server.url + "events", timeout=None) as response:
                for chunk in response.iter_raw():
                    received += chunk
                    opened[index].set()
            ended.append(received)

        def act() -> None:  # beta's next phase, `slow`, takes about 6 s
            url = server.url + "api/v1/environments/beta/actions/advance"
            answers.append(httpx.post(url, json={"confirm": True}, timeout=60))

        readers = [threading.Thread(target=hold, args=(i,), daemon=True) for i in range(2)]
        for reader in readers:
            reader.start()
        assert all(event.wait(10) for event in opened), "the event streams did not open"
        action = threading.Thread(target=act, daemon=True)
        action.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = run_cli("--output", "json", "status", "beta", cwd=work)
            if json.loads(status.stdout)["state"] == "slowing":
                break
            time.sleep(0.1)
        server.process.send_signal(signal.SIGINT)
        for reader in readers:
            reader.join(5)
        assert len(ended) == 2 and all(r.startswith(b"retry: 1000") for r in ended), ended
        try:
            code = server.process.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("runner serve still runs 30 s after SIGINT with two pages open")
        _, err = server.process.communicate()
        assert code == 130, err
        assert "Traceback" not in err, err
        action.join(5)
        assert [a.status_code for a in answers] == [200], answers
        assert valid(answers[0].json(), "run")["state"] == "slowed"
