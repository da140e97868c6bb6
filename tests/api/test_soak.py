"""Soak: four worker processes run phases on twenty environments at once, a tenth of
the phases fail and are resumed; afterwards every environment is whole (bench/soak.py).

The size is `RUNNER_SOAK_PHASES` (default 120 here; the benchmark runs 1,000).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.soak import problems, run_soak, transitions_total
from runner.store.files import FileStore

PHASES = int(os.environ.get("RUNNER_SOAK_PHASES", "120"))


def test_soak_leaves_every_environment_whole(tmp_path: Path) -> None:
    result = run_soak(tmp_path, PHASES, workers=4, envs=20, seed=PHASES)
    assert result.errors == []
    assert problems(result) == []
    assert result.phases == PHASES
    assert result.contended > 0  # the workers did meet on environments and waited
    # every tenth run of the counting step fails; each failure was resumed once
    assert result.failures >= PHASES // 20
    assert result.resumes == result.failures
    # start + finish per phase, and fail + resume per failure: nothing else, nothing lost
    assert transitions_total(result) == 2 * result.phases + 2 * result.failures
    store = FileStore(tmp_path)
    for name in result.names:
        record = store.load(name)
        assert record.failure is None
        assert record.run is None or record.run.interrupted is False
    # the counting step ran once per phase of each kind and once per resume
    counted = sum(
        int((tmp_path / "build" / name / "count").read_text()) - index % 10
        for index, name in enumerate(result.names)
    )
    assert counted == result.phases + result.resumes
