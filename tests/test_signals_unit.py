"""runner.signals: a signal that lands in importlib's own code is not lost."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import cli_env

#: Hands the CLI's handler a SIGINT "inside" importlib (a frame whose code is
#: importlib's), as when the signal lands in a module lock's weakref callback, where an
#: exception would be printed as "Exception ignored" and dropped.
PROBE = """
import os, signal, sys
from runner import signals

signals.install()
class Frame:
    f_code = compile("0", "<frozen importlib._bootstrap>", "eval")
try:
    signals._dispatch(signal.SIGINT, Frame())  # put off: delivered again
except KeyboardInterrupt:
    print("raised inside the import machinery")
    sys.exit(1)
import time
try:
    time.sleep(5)  # delivered again in a moment, outside importlib
except KeyboardInterrupt:
    print("interrupted after the import machinery", signals.received)
    sys.exit(0)
print("lost")
sys.exit(1)
"""


def test_a_signal_in_the_import_machinery_is_delivered_after_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=cli_env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "interrupted after the import machinery 2"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
