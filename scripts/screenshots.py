"""Regenerate the dashboard's pictures in docs/: the environments page and a failed
environment's page, taken by headless chromium from a real `runner serve` over a few
demonstration environments (made with the CLI in a temporary folder, shell steps).

    python scripts/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MACHINE = """\
version: 1
name: web-service
initial: created
inputs:
  type: object
  properties:
    region: {type: string, default: eu-west}
    api_key: {type: object, secret: true, default: {env: DEMO_API_KEY}}
states:
  created: {description: Declared; nothing exists yet}
  provisioning: {description: Creating the machine}
  provisioned: {description: The machine answers}
  provision_failed:
    description: The machine could not be created
    recovery: "fix the quota, then runner resume {{ env.name }}"
  configuring: {description: Installing the service}
  running: {description: Serving traffic}
  configure_failed: {description: The service could not be installed}
  destroying: {}
  destroyed: {final: true, description: Gone}
  destroy_failed: {}
phases:
  - name: provision
    from: created
    via: provisioning
    to: provisioned
    failed: provision_failed
    steps:
      - name: plan
        uses: shell
        with: {argv: [sh, -c, "echo 'planning 3 resources'; sleep 0.2"]}
      - name: apply
        uses: shell
        with:
          argv: [sh, -c, "echo 'creating instance' >&2; if [ -e quota-{{ env.name }} ]; then echo 'Error: quota exceeded for instances in {{ inputs.region }} (limit 8)' >&2; exit 1; fi; echo '{\\"instance_ip\\": \\"10.0.3.17\\"}'"]
          parse: json
        outputs: {instance_ip: instance_ip}
  - name: configure
    from: provisioned
    via: configuring
    to: running
    failed: configure_failed
    steps:
      - name: install
        uses: shell
        with: {argv: [sh, -c, "echo 'installing service 2.4.1'; if [ -e slow-{{ env.name }} ]; then sleep 30; fi; echo done"]}
  - name: destroy
    from: [created, provisioned, provision_failed, running, configure_failed]
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - {name: remove, uses: shell, with: {argv: ["true"]}}
"""

#: (environment, what to do with it)
ENVIRONMENTS = [
    ("production-eu", "up"),
    ("production-us", "up"),
    ("staging", "up"),
    ("qa-1", "advance"),
    ("qa-2", "fail"),
    ("preview-417", "create"),
    ("preview-418", "destroy"),
    ("canary", "running"),
]


def cli(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["DEMO_API_KEY"] = "not-shown-anywhere"
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=work, env=env, capture_output=True, text=True
    )
    if check and done.returncode not in (0, 1):
        raise SystemExit(f"runner {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def demo(work: Path) -> None:
    (work / "machine.yaml").write_text(MACHINE)
    for name, what in ENVIRONMENTS:
        cli(work, "create", name)
        if what == "up":
            cli(work, "up", name)
        elif what == "advance":
            cli(work, "advance", name)
        elif what == "fail":
            (work / f"quota-{name}").write_text("")
            cli(work, "advance", name)
        elif what == "destroy":
            cli(work, "destroy", name)
        elif what == "running":
            cli(work, "advance", name)


def start_slow(work: Path, name: str) -> subprocess.Popen[str]:
    """`runner advance NAME` of a phase that runs until stopped (a lock holder to see)."""
    (work / f"slow-{name}").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "advance", name],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@contextlib.contextmanager
def serving(work: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "--output", "json", "serve", "--port", "0"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    text = ""
    while True:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("runner serve did not start")
        text += line
        with contextlib.suppress(ValueError):
            yield json.loads(text)["url"]
            break
    process.send_signal(signal.SIGINT)
    process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("needs chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="runner-screenshots-") as tmp:
        work = Path(tmp)
        demo(work)
        slow = start_slow(work, "canary")
        with serving(work) as url, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=browser_path, headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 560})
            page.goto(url)
            page.wait_for_selector('tr[data-env="canary"] td:nth-child(6):not(:empty)')
            page.screenshot(path=str(args.out / "dashboard-environments.png"), full_page=True)
            page.set_viewport_size({"width": 1280, "height": 1500})
            page.goto(url + "environments/qa-2")
            page.wait_for_selector("#trace")
            # the end of the trace: the rendered parameters and the output tail
            page.add_style_tag(content="pre.trace { max-height: 15em; }")
            page.eval_on_selector("#trace", "e => { e.scrollTop = e.scrollHeight; }")
            time.sleep(0.2)
            page.screenshot(path=str(args.out / "dashboard-failed.png"), full_page=False)
            browser.close()
        slow.send_signal(signal.SIGTERM)
        slow.wait(30)
    for name in ("dashboard-environments.png", "dashboard-failed.png"):
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
