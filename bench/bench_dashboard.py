"""Benchmark: the dashboard (`runner serve`) with many environments, and how fast a
change reaches a browser.

- The environments page and ``/api/v1/environments`` with 10,000 environments
  (written as in ``bench_scale``: valid records through ``FileStore.create``, fsyncs
  stubbed out for the setup only), against a real `runner serve` subprocess: the
  server's own time (its ``Server-Timing`` header; target for the page: under
  300 ms), the time a client waits for the whole response, and the bytes sent.
- For information, one pass of the watcher (every record and lock holder read) over
  those 10,000 environments, in this process.
- A state save reaching the browser: headless chromium (Debian's) keeps the
  environments page open; this process saves an environment's record through the
  store and the page notes (a MutationObserver) when its row shows the new serial's
  change. The delay from just before the save to that moment; target under 500 ms
  with 10 environments; for information with 10,000.

    python bench/bench_dashboard.py [--quick]
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_scale import fast_setup, record
from benchlib import Figure, Target, bench_main, cli_env, median, runner_argv

BENCH = "dashboard"
ENVS = 10_000


@contextlib.contextmanager
def serving(work: Path) -> Iterator[str]:
    """A `runner serve` on a free port in ``work``: its address."""
    process = subprocess.Popen(
        [*runner_argv("--output", "json", "serve", "--port", "0")],
        cwd=work,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    text = ""
    url = None
    while url is None:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("runner serve did not start")
        text += line
        with contextlib.suppress(ValueError):
            url = json.loads(text)["url"]
    try:
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed_get(client: Any, url: str) -> tuple[float, float, int, int]:
    """(server s, client s, bytes, bytes on the wire) of one GET (gzip accepted)."""
    started = time.perf_counter()
    response = client.get(url)
    waited = time.perf_counter() - started
    response.raise_for_status()
    server = float(response.headers["server-timing"].split("dur=")[1]) / 1000
    return server, waited, len(response.content), response.num_bytes_downloaded


def http_figures(url: str, runs: int, what: str) -> list[Figure]:
    import httpx

    with httpx.Client(timeout=60) as client:
        client.get(url + "?warm=1")  # the first pass of the watcher, caches
        results = [timed_get(client, url) for _ in range(runs)]
    server = median(r[0] for r in results)
    waited = median(r[1] for r in results)
    size, wire = results[-1][2], results[-1][3]
    target = Target("max", 0.3) if what == "environments page" else None
    return [
        Figure(
            BENCH,
            f"{what} ({ENVS:,} envs): server time",
            server,
            target=target,
            runs=runs,
            note=f"{size / 1024:,.0f} KiB, {wire / 1024:,.0f} KiB gzipped on the wire; the "
            f"whole response in {waited * 1000:.0f} ms at the client (127.0.0.1)",
        )
    ]


def watcher_pass(work: Path, runs: int) -> Figure:
    from runner.api.runner import Runner
    from runner.web.watch import Watcher

    watcher = Watcher(lambda: Runner(work))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = watcher.scan()
        times.append(time.perf_counter() - started)
    return Figure(
        BENCH,
        f"  watcher pass ({ENVS:,} envs, records and lock holders)",
        median(times),
        runs=runs,
        note=f"{len(rows):,} rows; the next pass starts max(200 ms, 2 x this) later",
    )


_OBSERVE = """
() => {
  window.__seen = {};
  const body = document.querySelector("#envs tbody");
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      const node = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      const tr = node && node.closest("tr");
      if (!tr || tr.dataset.env !== "env-00000") continue;
      const when = tr.cells[3].textContent;
      if (!(when in window.__seen)) window.__seen[when] = Date.now();
    }
  }).observe(body, {subtree: true, childList: true, characterData: true});
}
"""


def _until(page: Any, predicate: str, seconds: float) -> None:
    """Wait for ``predicate`` (a JavaScript function) to be true in ``page``, asked from
    here: the dashboard's content security policy forbids the string evaluation that
    ``wait_for_function`` does in the page. The times measured are the page's own
    (``window.__seen``), so the polling does not add to them."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{predicate} was not true within {seconds:g} s")
        time.sleep(0.005)


def save_to_browser(work: Path, runs: int, label: str, target: Target | None) -> Figure:
    from playwright.sync_api import sync_playwright

    from runner.store.files import FileStore

    browser_path = shutil.which("chromium")
    if browser_path is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    store = FileStore(work)
    name = "env-00000"
    delays = []
    with serving(work) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page()
        page.goto(url, timeout=120_000)
        _until(page, "() => document.getElementById('live').classList.contains('on')", 30)
        page.evaluate(_OBSERVE)
        time.sleep(1.0)
        for i in range(runs):
            current = store.load(name)
            current.state = "provisioned" if current.state == "created" else "created"
            before = time.time() * 1000
            store.save(current)
            stamp = current.updated_at
            _until(page, f"() => '{stamp}' in window.__seen", 10)
            seen = page.evaluate(f"window.__seen['{stamp}']")
            delays.append((seen - before) / 1000)
            time.sleep(0.137 * (i % 3) + 0.1)  # at various points of the watcher's cycle
        browser.close()
    return Figure(
        BENCH,
        f"state save to the browser's update ({label})",
        median(delays),
        target=target,
        runs=runs,
        note=f"max {max(delays) * 1000:.0f} ms; FileStore.save in this process, "
        "MutationObserver in chromium; includes the wait for the next watcher pass",
    )


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    from runner.store.files import FileStore

    runs = 5 if quick else 11
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-dashboard-") as tmp:
        few = Path(tmp) / "few"
        few.mkdir()
        with fast_setup():
            store = FileStore(few)
            for i in range(10):
                store.create(record(f"env-{i:05d}"))
        say("save to browser, 10 environments")
        figures.append(save_to_browser(few, runs, "10 envs", Target("max", 0.5)))
        say(f"setup: {ENVS:,} environments")

        many = Path(tmp) / "many"
        many.mkdir()
        with fast_setup():
            store = FileStore(many)
            for i in range(ENVS):
                store.create(record(f"env-{i:05d}"))
        say("pages and API")
        with serving(many) as url:
            figures += http_figures(url, runs, "environments page")
            figures += http_figures(url + "api/v1/environments", runs, "/api/v1/environments")
        say("watcher pass")
        figures.append(watcher_pass(many, 3))
        say("save to browser, 10,000 environments")
        figures.append(save_to_browser(many, 3 if quick else 5, f"{ENVS:,} envs", None))
    return figures, []


def main(argv: list[str] | None = None) -> int:
    return bench_main("Dashboard (runner serve, median)", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
