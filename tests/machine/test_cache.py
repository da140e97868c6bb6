"""The machine cache: data that cannot run code, keyed by the file, the schema and the
code that checks machines."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from runner.machine import cache
from runner.machine.loader import load_machine
from runner.resources import shipped_machine
from tests.helpers import ROOT, cli_env


def test_a_cached_machine_equals_the_loaded_one(tmp_path: Path) -> None:
    (tmp_path / "data" / ".cache").mkdir(parents=True)
    fresh = load_machine(shipped_machine())
    first = cache.load(shipped_machine(), tmp_path / "data" / ".cache")
    entries = list((tmp_path / "data" / ".cache").iterdir())
    assert [e.suffix for e in entries] == [".json"]
    again = cache.load(shipped_machine(), tmp_path / "data" / ".cache")
    for machine in (first, again):
        assert machine == fresh
        assert machine.happy_path() == fresh.happy_path()
        assert {s: machine.state_kind(s) for s in machine.states} == {
            s: fresh.state_kind(s) for s in fresh.states
        }


def test_a_planted_pickle_is_never_loaded(tmp_path: Path) -> None:
    """Whatever lies in data/.cache, `runner status` only parses JSON: a pickle that
    would run code when loaded is ignored."""
    cache_dir = tmp_path / "data" / ".cache"
    cache_dir.mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    key = cache._key(shipped_machine().read_bytes())
    for name in (f"machine-{key}.pickle", f"machine-{key}.json"):
        (cache_dir / name).write_bytes(pickle.dumps(Evil()))
    result = subprocess.run(
        [sys.executable, "-m", "runner", "--workdir", str(tmp_path), "graph"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "stateDiagram" in result.stdout
    machine = cache.load(shipped_machine(), cache_dir)
    assert machine.name == "tracker-deploy"
    assert not marker.exists()


def test_the_key_changes_with_the_code_that_checks_machines(tmp_path: Path) -> None:
    raw = shipped_machine().read_bytes()
    before = cache._key(raw)
    loader_file = Path(cache.__file__).parent / "loader.py"
    info = loader_file.stat()
    try:
        os.utime(loader_file, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        cache._code_fingerprint.cache_clear()
        assert cache._key(raw) != before
    finally:
        os.utime(loader_file, ns=(info.st_atime_ns, info.st_mtime_ns))
        cache._code_fingerprint.cache_clear()
    assert cache._key(raw) == before
