"""The dashboard's tests: a real `runner serve` subprocess over real environments made
with the CLI, driven by Debian's chromium through Playwright (headless), and plain
HTTP requests for the API and the token.

- :func:`serve` starts ``runner --output json serve --port 0 ...`` in a working
  directory and reads where it listens from its JSON document; the server is stopped
  (SIGINT) when the test ends.
- ``browser``: one headless chromium for the module; ``page``: a fresh page per test.
- Screenshots go to ``test-artifacts/`` at the checkout's root (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, build_tree, cli_env, run_cli

ARTIFACTS = ROOT / "test-artifacts"

#: A machine of shell steps: `build` prints markup and fails when the file `broken`
#: exists, `slow` writes a line every 0.25 s.
MACHINE = """\
    version: 1
    name: board
    initial: created
    states:
      created: {description: Nothing built yet}
      building: {description: Building}
      built: {description: Built and serving}
      build_failed: {description: The build failed, recovery: "remove the file 'broken', then runner resume {{ env.name }}"}
      slowing: {}
      slowed: {description: Slow phase done}
      slow_failed: {}
      destroying: {}
      destroyed: {final: true, description: Gone}
      destroy_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - name: greet
            uses: shell
            with: {argv: [sh, -c, "printf '%s' '<script>window.__xss=1</script>\\"><img src=x onerror=\\"window.__xss=2\\">'"]}
            outputs: {banner: stdout}
          - name: compile
            uses: shell
            with: {argv: [sh, -c, "echo '<script>window.__xss=3</script>'; echo '\\"><img src=x onerror=\\"window.__xss=4\\">'; if [ -e broken ]; then echo 'compile: broken input' >&2; exit 3; fi"]}
      - name: slow
        from: built
        via: slowing
        to: slowed
        failed: slow_failed
        steps:
          - name: tick
            uses: shell
            with: {argv: [sh, -c, "i=0; while [ $i -lt 24 ]; do i=$((i+1)); echo tick $i; sleep 0.25; done"]}
      - name: destroy
        from: [created, built, build_failed, slowed, slow_failed]
        via: destroying
        to: destroyed
        failed: destroy_failed
        advance: false
        steps:
          - {name: remove, uses: shell, with: {argv: ["true"]}}
    checks:
      - {name: serving, uses: shell, in: [built], with: {argv: [test, -e, serving]}}
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Debian's chromium is needed for the dashboard's tests: apt-get install chromium"
        )
    return path


def runner(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI in ``work``; with ``check`` a non-zero exit fails the test (unless
    it is 1, a failed step, which the tests cause on purpose)."""
    done = run_cli(*args, cwd=work)
    if check and done.returncode not in (0, 1):
        pytest.fail(f"runner {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def make_workdir(path: Path) -> Path:
    """A working directory with :data:`MACHINE` and three environments: ``alpha``
    (created), ``beta`` (built), ``gamma`` (build failed)."""
    build_tree(path, {"machine.yaml": MACHINE})
    for name in ("alpha", "beta", "gamma"):
        runner(path, "create", name)
    runner(path, "advance", "beta")
    (path / "broken").write_text("x")
    runner(path, "advance", "gamma")
    (path / "broken").unlink()
    return path


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    document: dict[str, Any]
    work: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def serve(work: Path, *args: str) -> Iterator[Server]:
    """``runner serve --port 0 ARGS`` in ``work``, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "--output", "json", "serve", "--port", "0", *args],
        cwd=work,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    text = ""
    deadline = time.monotonic() + 30
    document = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        text += line
        with contextlib.suppress(ValueError):
            document = json.loads(text)
            break
    if document is None:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"runner serve did not start: {text}{err}")
    server = Server(process, document["url"], document, work)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium(), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One read-only server over :func:`make_workdir`'s environments, for the module."""
    work = make_workdir(tmp_path_factory.mktemp("board"))
    with serve(work) as server:
        yield server
