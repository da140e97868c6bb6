"""Benchmark: one durable save of a realistic state record, against the disk's floor.

The record is what the shipped machine (machine.yaml) leaves in state.json after a
`runner up` whose configure phase failed at its last step: inputs with their defaults,
the provision outputs, the run of the configure phase with its completed steps, and a
failure record with the tool's summary (about 2-3 KB of JSON, as the store writes it).

Each round times a batch of ``FileStore.save`` calls (read the stored serial, check the
record against the state schema, serialize, write a temp file, fsync, rename, fsync the
folder) and a batch of bare durable replaces of the same bytes in the same folder
(write temp, fsync, rename, fsync folder: what any durable save must pay); rounds
alternate which goes first. Figures: median time per save, and the ratio (target:
within 2x of the floor).

    python bench/bench_save.py [--quick] [--profile]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_steps import fsync_floor
from benchlib import ROOT, Figure, Target, bench_main, interleaved, median, profile

BENCH = "save"
TARGET = Target("ratio", 2.0)


def realistic_record(store: Any, work: Path) -> Any:
    """The shipped machine's record after a run (see the module docstring), stored."""
    from runner import Runner
    from runner.machine.loader import load_machine
    from runner.store.record import Failure, Run, now_iso

    machine = load_machine(ROOT / "machine.yaml")
    runner = Runner(work, ROOT / "machine.yaml", command="bench", store=store)
    runner.create("demo", sets=["ssh.private_key=keys/demo_ed25519"])
    record: dict[str, Any] = store.load("demo")
    configure = machine.phase("configure")
    assert configure is not None
    steps = [s.name for s in configure.steps]
    stamp = now_iso()
    summary = (
        "ansible-playbook exited with 2: task 'Allow the tracker ports (udp 6969, http 7070, "
        "api 1212)' failed on host tracker-demo: fatal: [tracker-demo]: FAILED! => "
        '{"changed": false, "msg": "Could not find the requested service ufw: host", '
        '"rc": 1, "stderr": "Failed to enable unit: Unit file ufw.service does not exist."}'
    )
    record.state = "configure_failed"
    record.outputs = {"instance_ip": "10.140.190.23", "instance_dir": "build/demo/instance"}
    record.run = Run(
        phase="configure",
        started_at=stamp,
        finished_at=stamp,
        pid=424242,
        host="ci-runner-7",
        completed_steps=steps[:-1],
        skipped_steps=[],
        current_step=None,
        interrupted=False,
        trace=None,
        log="data/demo/runs/20260101-103000-123-configure.log",
    )
    record.failure = Failure(
        phase="configure",
        step=steps[-1],
        kind="command_failed",
        summary=summary,
        exit_code=2,
        attempts=1,
        hint="see the trace for the task's output",
        started_at=stamp,
        failed_at=stamp,
        duration_s=41.273,
        trace="data/demo/traces/20260101-103045-456-configure.log",
    )
    store.save(record)  # sets the new serial on the record
    return record


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    from runner.store.files import STATE_FILE, FileStore, _serialize

    rounds = 10 if quick else 30
    batch = 10
    figures: list[Figure] = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-save-") as tmp:
        work = Path(tmp)
        store = FileStore(work)
        record = realistic_record(store, work)
        folder = store.root / "demo"
        size = len((folder / STATE_FILE).read_bytes())
        data = _serialize(record.to_json())
        per_save: dict[str, list[float]] = {"save": [], "floor": []}

        def saves() -> float:
            start = time.perf_counter()
            for _ in range(batch):
                store.save(record)
            return (time.perf_counter() - start) / batch

        def floors() -> float:
            return statistics.fmean(fsync_floor(folder, data) for _ in range(batch))

        times = interleaved({"save": saves, "floor": floors}, rounds)
        per_save.update(times)

        # the same save without the disk: what the store itself costs
        import runner.files as fs  # the durable-write primitives every save goes through

        real_fsync, real_dir = fs.os.fsync, fs.fsync_dir
        fs.os.fsync = lambda fd: None  # type: ignore[assignment]
        fs.fsync_dir = lambda folder: None  # type: ignore[assignment]
        try:
            nosync = interleaved(
                {
                    "save": saves,
                    "floor": lambda: statistics.fmean(
                        fsync_floor(folder, data, sync=False) for _ in range(batch)
                    ),
                },
                rounds,
            )
        finally:
            fs.os.fsync, fs.fsync_dir = real_fsync, real_dir

        figures.append(
            Figure(
                BENCH,
                f"FileStore.save, {size / 1024:.1f} KiB record",
                median(per_save["save"]),
                baseline=median(per_save["floor"]),
                baseline_name="bare temp+fsync+rename+fsync dir",
                target=TARGET,
                runs=rounds * batch,
                note=f"median of {rounds} rounds of {batch} saves (mean per save in a round)",
            )
        )
        figures.append(
            Figure(
                BENCH,
                "  FileStore.save without fsync (its own cost)",
                median(nosync["save"]),
                baseline=median(nosync["floor"]),
                baseline_name="bare temp+rename, no fsync",
                runs=rounds * batch,
                note="os.fsync and the folder fsync stubbed out in this process only: the "
                "store's own work (serial check, schema check, JSON, file operations)",
            )
        )
        if force_profile or any(f.met is False for f in figures):

            def many() -> None:
                for _ in range(200):
                    store.save(record)

            findings.append(profile("200 x FileStore.save", many, top=20, sort="tottime"))
    return figures, findings


def main(argv: list[str] | None = None) -> int:
    return bench_main("Durable save (median per save)", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
