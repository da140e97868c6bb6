"""A second process for the storage contract tests: opens a backend from its spec and
does one thing to it, printing what happened.

    python -m tests.store.contract_worker SPEC create NAME      -> "created" | "exists"
    python -m tests.store.contract_worker SPEC hold NAME SECS   -> "held", then holds
    python -m tests.store.contract_worker SPEC try NAME         -> "taken" | "busy"
    python -m tests.store.contract_worker SPEC note NAME SECS   -> "noted", then holds

SPEC is what a backend fixture of ``test_contract.py`` gives: ``file:WORKDIR`` or a
``postgresql://`` URL.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from runner.errors import EnvironmentExistsError
from runner.store.contract import LockInfo, ProcessGroup, Store
from runner.store.record import MachineRef, Record, now_iso


def open_store(spec: str) -> Store:
    scheme, _, rest = spec.partition(":")
    if scheme == "file":
        from runner.store.files import FileStore

        return FileStore(Path(rest))
    if scheme == "postgresql":
        from runner.store.postgres import PostgresStore

        return PostgresStore(spec)
    raise SystemExit(f"unknown backend spec {spec!r}")


def main(argv: list[str]) -> int:
    spec, action, name, *rest = argv
    store = open_store(spec)
    me = LockInfo(os.getpid(), os.uname().nodename, f"worker {action}", now_iso())
    if action == "create":
        machine = MachineRef("contract", "sha256:" + "0" * 64)
        record = Record.new(name, "created", machine, {}, data_dir=f"data/{name}")
        try:
            store.create(record)
        except EnvironmentExistsError:
            print("exists", flush=True)
            return 0
        print("created", flush=True)
        return 0
    if action == "hold":
        lease = store.try_lock(name, me)
        if lease is None:
            print("busy", flush=True)
            return 1
        print("held", flush=True)
        time.sleep(float(rest[0]))
        lease.release()
        return 0
    if action == "note":  # hold, note the step's groups, and wait to be killed
        lease = store.try_lock(name, me)
        if lease is None:
            print("busy", flush=True)
            return 1
        lease.note_processes((ProcessGroup(4242, "boot-a", 77), 4343))
        print("noted", flush=True)
        time.sleep(float(rest[0]))
        lease.release()
        return 0
    if action == "try":
        lease = store.try_lock(name, me)
        print("busy" if lease is None else "taken", flush=True)
        if lease is not None:
            lease.release()
        return 0
    raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
