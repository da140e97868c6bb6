"""The dashboard in a real browser (Debian's chromium, headless, through Playwright)
against a real `runner serve` over environments the CLI made."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.helpers import cli_env, read_events
from tests.web.conftest import Server, make_workdir, runner, screenshot, serve

pytestmark = pytest.mark.e2e


COLUMNS = ("environment", "state", "kind", "updated_at", "failed_step", "locked_by", "last_check")


def row(page: Any, name: str) -> Any:
    return page.locator(f'tr[data-env="{name}"]')


def cell(page: Any, name: str, column: str) -> Any:
    return row(page, name).locator(f"td:nth-child({COLUMNS.index(column) + 1})")


def test_the_environments_page_lists_every_environment_coloured_by_kind(
    board: Server, page: Any
) -> None:
    page.goto(board.url)
    for name, state, kind in [
        ("alpha", "created", "initial"),
        ("beta", "built", "stable"),
        ("gamma", "build_failed", "failed"),
    ]:
        expect(cell(page, name, "state")).to_have_text(state)
        expect(row(page, name)).to_have_class(f"kind-{kind}")
    expect(cell(page, "gamma", "failed_step")).to_contain_text("compile command_failed")
    colour = row(page, "gamma").locator(".state").evaluate("e => getComputedStyle(e).color")
    assert colour == "rgb(198, 40, 40)"  # failed states in red
    screenshot(page, "environments")


def test_filters_and_sorting_work_on_the_page(board: Server, page: Any) -> None:
    page.goto(board.url)
    page.select_option("#filter-kind", "failed")
    expect(page.locator("tbody tr:visible")).to_have_count(1)
    expect(row(page, "gamma")).to_be_visible()
    assert "kind=failed" in page.url  # a link to paste
    page.select_option("#filter-kind", "")
    page.locator('th[data-key="state"]').click()
    names = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.env)")
    assert names == ["gamma", "beta", "alpha"]  # build_failed, built, created
    page.locator('th[data-key="state"]').click()  # descending
    names = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.env)")
    assert names == ["alpha", "beta", "gamma"]
    page.goto(board.url + "?state=built")  # the same filter from the address
    expect(page.locator("tbody tr:visible")).to_have_count(1)
    expect(row(page, "beta")).to_be_visible()


def test_advance_in_another_process_changes_the_row_within_a_second_without_a_reload(
    tmp_path: Path, page: Any
) -> None:
    work = make_workdir(tmp_path)
    with serve(work) as server:
        page.goto(server.url)
        expect(page.locator("#live")).to_have_class("live on")
        page.evaluate("window.__same_page = true")
        runner(work, "advance", "alpha")
        done = time.monotonic()
        expect(cell(page, "alpha", "state")).to_have_text("built", timeout=1000)
        assert time.monotonic() - done < 1.0
        assert page.evaluate("window.__same_page") is True  # not reloaded
        expect(row(page, "alpha")).to_have_class("kind-stable changed")
        # a new environment appears as a row, a purged one would go
        runner(work, "create", "delta")
        expect(cell(page, "delta", "state")).to_have_text("created", timeout=1500)
        assert page.evaluate("window.__same_page") is True


def test_a_failed_environment_page_shows_the_failure_and_its_trace(
    board: Server, page: Any
) -> None:
    page.goto(board.url + "environments/gamma")
    expect(page.locator("#state")).to_have_text("build_failed")
    failure = page.locator("#failure")
    expect(failure).to_contain_text("build / compile")
    expect(failure).to_contain_text("command_failed")
    trace = page.locator("#trace")
    expect(trace).to_contain_text("sh exited with 3")
    expect(trace).to_contain_text("compile: broken input")  # the output tail
    # what to do next: the state's recovery text, as `status` says it
    expect(page.locator("ul.next")).to_contain_text(
        "remove the file 'broken', then runner resume gamma"
    )
    # the history as a timeline, newest first, with the failed step
    expect(page.locator("ol.timeline li").first).to_contain_text("building → build_failed")
    expect(page.locator("ol.timeline li.step.failed")).to_contain_text("build / compile: failed")
    screenshot(page, "environment-failed")


def test_the_pages_run_under_their_security_policy_and_cannot_be_framed(
    board: Server, page: Any
) -> None:
    said: list[str] = []
    page.on("console", lambda message: said.append(message.text))
    for path in ("", "environments/gamma", "environments/beta"):
        page.goto(board.url + path)
        expect(page.locator("#live")).to_have_class("live on")  # the script runs
    assert not [m for m in said if "Content Security Policy" in m], said
    page.set_content(f'<iframe src="{board.url}"></iframe>')
    expect(page.locator("iframe")).to_be_attached()
    deadline = time.monotonic() + 5
    while len(page.frames) < 2 or page.frames[1].url == "about:blank":
        assert time.monotonic() < deadline
        page.wait_for_timeout(50)
    page.wait_for_timeout(200)
    assert page.frames[1].url.startswith("chrome-error:"), page.frames[1].url


def test_the_graph_marks_the_current_state(board: Server, page: Any) -> None:
    page.goto(board.url + "environments/beta")
    nodes = page.locator("#graph-svg g.node")
    expect(nodes.first).to_be_attached()
    marked = nodes.filter(has_text="(current)")
    expect(marked).to_have_count(1)
    expect(marked.locator(":scope > title")).to_have_text("built")
    assert marked.locator("path, polygon").first.get_attribute("fill") == "#fff59d"
    other = nodes.filter(has=page.locator("title", has_text="created")).first
    assert other.locator("path, polygon").first.get_attribute("fill") != "#fff59d"


def test_a_running_phase_log_grows_on_screen(tmp_path: Path, page: Any) -> None:
    work = make_workdir(tmp_path)
    with serve(work) as server:
        page.goto(server.url + "environments/beta")
        expect(page.locator("#state")).to_have_text("built")
        page.evaluate("window.__same_page = true")
        slow = subprocess.Popen(
            [sys.executable, "-m", "runner", "advance", "beta"],
            cwd=work,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # a new Python process: under load it may take a few seconds to start
            expect(page.locator("#state")).to_have_text("slowing", timeout=10_000)
            expect(page.locator("#following")).to_be_visible()
            log = page.locator("#log")
            expect(log).to_contain_text("tick 2", timeout=5000)
            first = log.inner_text()
            expect(log).to_contain_text("tick 8", timeout=4000)
            assert len(log.inner_text()) > len(first)  # it grew
            assert page.evaluate("window.__same_page") is True
            expect(page.locator("#summary")).to_contain_text("runner advance")  # the holder
            screenshot(page, "environment-running")
        finally:
            slow.wait(30)
        expect(page.locator("#state")).to_have_text("slowed", timeout=3000)
        expect(page.locator("#log")).to_contain_text("tick 24")
        assert page.evaluate("window.__same_page") is True


def test_markup_from_an_environment_is_shown_as_text(board: Server, page: Any) -> None:
    page.goto(board.url + "environments/gamma")
    # the step output (an output value), the trace and the run log hold markup
    expect(page.locator("#outputs")).to_contain_text("<script>window.__xss=1</script>")
    expect(page.locator("#outputs")).to_contain_text('"><img src=x onerror=')
    expect(page.locator("#trace")).to_contain_text("<script>window.__xss=3</script>")
    expect(page.locator("#log")).to_contain_text('"><img src=x onerror="window.__xss=4">')
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    # and after a live refresh of the page's sections
    page.goto(board.url + "environments/beta")
    expect(page.locator("#outputs")).to_contain_text("<script>window.__xss=1</script>")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0


def test_actions_run_behind_a_confirmation_and_are_recorded_as_the_dashboards(
    tmp_path: Path, page: Any
) -> None:
    work = make_workdir(tmp_path)
    with serve(work, "--allow-actions") as server:
        # only what the state allows is offered
        page.goto(server.url + "environments/gamma")
        offered = page.locator(".actions a.button").all_inner_texts()
        assert offered == ["resume…", "destroy…"]
        page.goto(server.url + "environments/alpha")
        page.locator("a.button", has_text="advance").click()
        expect(page.locator("h1")).to_contain_text("advance alpha?")
        assert page.evaluate("window.__ran") is None
        page.locator("#confirm").click()
        expect(page.locator("#state")).to_have_text("built", timeout=5000)
        expect(page.locator("#outcome")).to_contain_text("advance started from the dashboard")
    events = read_events(work, "alpha")
    commands = {e.get("command") for e in events if e["type"] == "transition"}
    assert len(commands) == 1
    (command,) = commands
    assert command.startswith("runner serve: advance by ")
    assert command.endswith(" from 127.0.0.1")


def test_a_read_only_dashboard_shows_no_action(board: Server, page: Any) -> None:
    page.goto(board.url + "environments/alpha")
    expect(page.locator("#state")).to_have_text("created")
    assert page.locator(".actions").count() == 0
    expect(page.locator("header .mode")).to_have_text("read-only")


def test_a_browser_logs_in_once_with_the_token(tmp_path: Path, page: Any) -> None:
    work = make_workdir(tmp_path)
    token = work / "token"
    token.write_text("s3cr3t-t0ken-of-the-dashboard\n")
    token.chmod(0o600)
    with serve(work, "--token-file", str(token)) as server:
        response = page.goto(server.url)
        assert response is not None and response.status == 401
        expect(page.locator("body")).to_contain_text("needs its token")
        page.goto(server.url + "?token=s3cr3t-t0ken-of-the-dashboard")
        assert "token" not in page.url  # not left in the address bar
        expect(row(page, "alpha")).to_be_visible()
        runner(work, "advance", "alpha")  # the event stream carries the cookie too
        expect(cell(page, "alpha", "state")).to_have_text("built", timeout=1500)


def test_a_failed_check_shows_in_the_row_and_on_the_page_and_is_offered_again(
    tmp_path: Path, page: Any
) -> None:
    work = make_workdir(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "runner", "check", "beta"],
        cwd=work,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    with serve(work, "--allow-actions") as server:
        page.goto(server.url)
        expect(cell(page, "beta", "last_check")).to_contain_text("failed")
        expect(cell(page, "alpha", "last_check")).to_have_text("")
        page.goto(server.url + "environments/beta")
        expect(page.locator("dd.check")).to_contain_text("serving: failed")
        assert "check…" in page.locator(".actions a.button").all_inner_texts()
        page.goto(server.url + "environments/alpha")  # created: no checks there
        assert "check…" not in page.locator(".actions a.button").all_inner_texts()
        (work / "serving").write_text("")
        subprocess.run(
            [sys.executable, "-m", "runner", "check", "beta"],
            cwd=work,
            env=cli_env(),
            check=True,
            capture_output=True,
        )
        page.goto(server.url)
        expect(cell(page, "beta", "last_check")).to_contain_text("passed", timeout=5000)
