"""Benchmark: the PostgreSQL backend beside the file backend, in one run.

A PostgreSQL server is started for the run in a temporary folder (the tests' helper,
``tests/pgserver.py``), durable (``fsync`` and ``synchronous_commit`` on, as in
production), reached over its Unix socket.

- Per-step durable save: ``PostgresStore.save`` of the realistic record of
  ``bench_save`` (one transaction: compare-and-swap update, snapshot insert, pruning,
  commit waiting for the WAL fsync) against ``FileStore.save`` of the same record
  (target: within 2x of files).
- `runner status NAME` as a subprocess on each backend (files as the baseline; target:
  within 1.5x of files), and again with ``RUNNER_PG_LIBPQ=off`` (reads through psycopg,
  for information); `runner history` and `runner exists` likewise (for information).
- `runner list` of 10,000 environments on each backend (one query on PostgreSQL;
  target: at most 1 s). The
  10,000 rows are inserted in bulk for the setup (and the files made as bench_scale
  makes them).
- Lock handoff between processes: a holder process releases the lock and says when
  (``time.monotonic``, one clock for every process of the machine); this process was
  waiting in ``wait_lock`` and notes when it got it. Median over rounds, each backend.

    python bench/bench_postgres.py [--quick] [--profile]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_save import realistic_record
from bench_scale import fast_setup, record
from benchlib import (
    ROOT,
    Command,
    Figure,
    Target,
    bench_main,
    cli_env,
    interleaved,
    median,
    profile,
    runner_argv,
)

BENCH = "postgres"
ENVS = 10_000


def _open(spec: str, work: Path) -> Any:
    from runner.store.backends import open_url

    return open_url(spec, work)


def hold_and_release(spec: str, work: str, name: str) -> None:
    """The holder process: take the lock, say "held", wait for a line, release, print
    the monotonic time of the release."""
    from runner.store.contract import LockInfo
    from runner.store.record import now_iso

    store = _open(spec, Path(work))
    me = LockInfo(os.getpid(), os.uname().nodename, "bench hold", now_iso())
    for line in sys.stdin:
        if line.strip() != "take":
            break
        lease = store.try_lock(name, me)
        assert lease is not None
        print("held", flush=True)
        sys.stdin.readline()
        lease.release()
        print(repr(time.monotonic()), flush=True)


def handoffs(spec: str, work: Path, name: str, rounds: int) -> list[float]:
    """Seconds from a holder's release to this process holding the lock."""
    import threading

    from runner.store.contract import LockInfo
    from runner.store.record import now_iso

    store = _open(spec, work)
    me = LockInfo(os.getpid(), os.uname().nodename, "bench wait", now_iso())
    holder = subprocess.Popen(
        [sys.executable, __file__, "--hold", spec, str(work), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert holder.stdin is not None and holder.stdout is not None
    times: list[float] = []
    try:
        for _ in range(rounds):
            holder.stdin.write("take\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "held"
            got: list[float] = []

            def wait(got: list[float] = got) -> None:
                lease = store.wait_lock(name, me, 30)
                got.append(time.monotonic())
                assert lease is not None
                lease.release()

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.05)  # the waiter is waiting
            holder.stdin.write("release\n")
            holder.stdin.flush()
            released = float(holder.stdout.readline())
            waiter.join()
            times.append(got[0] - released)
        holder.stdin.write("stop\n")
        holder.stdin.flush()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    return times


def bulk_rows(url: str, count: int) -> None:
    """``count`` environments written straight into the tables (setup only)."""
    import psycopg

    from runner.store.postgres import PostgresStore

    store = PostgresStore(url)
    rows = []
    for i in range(count):
        rec = record(f"env-{i:05d}")
        rows.append(
            (
                rec.name,
                rec.serial,
                rec.state,
                rec.updated_at,
                store._document(rec, 1, rec.updated_at),
            )
        )
    with (
        psycopg.connect(url, autocommit=True) as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY runner.environments (name, serial, state, updated_at, document) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    from runner.store.files import FileStore
    from runner.store.postgres import PostgresStore
    from tests import pgserver

    rounds = 8 if quick else 20
    batch = 10
    figures: list[Figure] = []
    findings: list[str] = []
    server = pgserver.start(durable=True)
    try:
        with tempfile.TemporaryDirectory(prefix="runner-bench-pg-") as tmp:
            work = Path(tmp)
            (work / "files").mkdir()
            # build/ as a phase leaves it: where the machine cache lives with a database
            (work / "pg" / "build").mkdir(parents=True)
            url = server.create_database("bench")
            PostgresStore(url).init_schema()
            big_url = server.create_database("big")
            PostgresStore(big_url).init_schema()

            # -- per-step save
            files = FileStore(work / "files")
            pg = PostgresStore(url)
            file_record = realistic_record(files, work / "files")
            pg_record = realistic_record(pg, work / "pg")

            def file_saves() -> float:
                start = time.perf_counter()
                for _ in range(batch):
                    files.save(file_record)
                return (time.perf_counter() - start) / batch

            def pg_saves() -> float:
                start = time.perf_counter()
                for _ in range(batch):
                    pg.save(pg_record)
                return (time.perf_counter() - start) / batch

            saves = interleaved({"file": file_saves, "pg": pg_saves}, rounds)
            figures.append(
                Figure(
                    BENCH,
                    "per-step durable save, PostgreSQL (Unix socket)",
                    median(saves["pg"]),
                    baseline=median(saves["file"]),
                    baseline_name="FileStore.save (fsync)",
                    target=Target("ratio", 2.0),
                    runs=rounds * batch,
                    note="one transaction: CAS update + snapshot + prune, commit fsynced",
                )
            )

            # -- runner status (and the other read-only commands)
            status_pg = Command(runner_argv("--state", url, "status", "demo"), work / "pg")
            status_file = Command(runner_argv("status", "demo"), work / "files")
            driver = cli_env({"RUNNER_PG_LIBPQ": "off"})
            status_driver = Command(
                runner_argv("--state", url, "status", "demo"), work / "pg", driver
            )
            status = interleaved(
                {"file": status_file, "pg": status_pg, "driver": status_driver}, rounds
            )
            figures.append(
                Figure(
                    BENCH,
                    "`runner status` on PostgreSQL",
                    median(status["pg"]),
                    baseline=median(status["file"]),
                    baseline_name="`runner status` on files",
                    target=Target("ratio", 1.5),
                    runs=rounds,
                    note="reads over libpq itself (no driver imported)",
                )
            )
            figures.append(
                Figure(
                    BENCH,
                    "`runner status` on PostgreSQL, reading through psycopg",
                    median(status["driver"]),
                    baseline=median(status["file"]),
                    baseline_name="`runner status` on files",
                    runs=rounds,
                    note="RUNNER_PG_LIBPQ=off: what reads cost where no libpq loads",
                )
            )
            for command in (["history", "demo"], ["exists", "demo"]):
                reads = interleaved(
                    {
                        "file": Command(runner_argv(*command), work / "files"),
                        "pg": Command(runner_argv("--state", url, *command), work / "pg"),
                    },
                    rounds,
                )
                figures.append(
                    Figure(
                        BENCH,
                        f"`runner {command[0]}` on PostgreSQL",
                        median(reads["pg"]),
                        baseline=median(reads["file"]),
                        baseline_name=f"`runner {command[0]}` on files",
                        runs=rounds,
                    )
                )

            # -- runner list of 10,000
            many = work / "many"
            (many / "build").mkdir(parents=True)
            with fast_setup():
                big_files = FileStore(many)
                for i in range(ENVS):
                    big_files.create(record(f"env-{i:05d}"))
            bulk_rows(big_url, ENVS)
            list_rounds = 3 if quick else 7
            list_pg = Command(runner_argv("--state", big_url, "list"), many)
            list_file = Command(runner_argv("list"), many)
            listing = interleaved({"file": list_file, "pg": list_pg}, list_rounds)
            figures.append(
                Figure(
                    BENCH,
                    f"`runner list` of {ENVS:,} environments on PostgreSQL",
                    median(listing["pg"]),
                    baseline=median(listing["file"]),
                    baseline_name=f"`runner list` of {ENVS:,} on files",
                    target=Target("max", 1.0),
                    runs=list_rounds,
                    note="one query",
                )
            )
            status_many = Command(runner_argv("--state", big_url, "status", "env-05000"), many)
            status_many_file = Command(runner_argv("status", "env-05000"), many)
            among = interleaved({"file": status_many_file, "pg": status_many}, list_rounds)
            figures.append(
                Figure(
                    BENCH,
                    f"`runner status` among {ENVS:,} on PostgreSQL",
                    median(among["pg"]),
                    baseline=median(among["file"]),
                    baseline_name=f"`runner status` among {ENVS:,} on files",
                    runs=list_rounds,
                )
            )

            # -- lock handoff
            hand_rounds = 10 if quick else 30
            pg_hand = handoffs(url, work / "pg", "demo", hand_rounds)
            file_hand = handoffs(
                f"file:{work / 'files' / 'data'}", work / "files", "demo", hand_rounds
            )
            figures.append(
                Figure(
                    BENCH,
                    "lock handoff between processes, PostgreSQL",
                    median(pg_hand),
                    baseline=median(file_hand),
                    baseline_name="lock handoff, files",
                    target=Target("max", 0.1),
                    runs=hand_rounds,
                    note="release in one process to wait_lock returning in another",
                )
            )
            if force_profile or any(f.met is False for f in figures):
                findings.append(
                    profile(
                        "100 x PostgresStore.save",
                        lambda: [pg.save(pg_record) for _ in range(100)],
                        top=15,
                        sort="tottime",
                    )
                )
            pg.close()
    finally:
        server.stop("immediate")
        server.remove()
    return figures, findings


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--hold"]:
        hold_and_release(*argv[1:4])
        return 0
    return bench_main("PostgreSQL backend beside files", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
