"""The dashboard's watcher over a real file store: what a pass reads again, what it
reports changed, and when it asks about locks."""

from __future__ import annotations

import os
from pathlib import Path

from runner.api.runner import Runner
from runner.store.contract import LockInfo
from runner.store.files import FileStore
from runner.web.watch import Watcher
from tests.conftest import make_record


def watcher(work: Path, holders: int = 1000) -> Watcher:
    return Watcher(lambda: Runner(work), holders=holders)


def test_a_pass_reads_again_only_the_records_that_changed(store: FileStore, tmp_path: Path) -> None:
    for name in ("one", "two", "three"):
        store.create(make_record(name))
    watch = watcher(tmp_path)
    first = watch.scan()
    assert watch.apply(first) is not None
    entries = {name: entry for name, (_, entry) in watch._known.items()}

    record = store.load("two")
    record.state = "provisioned"
    store.save(record)
    second = watch.scan()
    change = watch.apply(second)
    assert change is not None
    assert [row["environment"] for row in change.rows] == ["two"]
    assert change.rows[0]["state"] == "provisioned"
    assert change.rows[0]["kind"] == "stable"  # from the machine the record names
    assert change.rows[0]["serial"] == record.serial
    assert watch._known["one"][1] is entries["one"]  # not read again
    assert watch._known["two"][1] is not entries["two"]

    assert watch.apply(watch.scan()) is None  # nothing changed: nothing to tell


def test_a_new_a_broken_and_a_removed_environment_are_changes(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record("one"))
    store.create(make_record("two"))
    watch = watcher(tmp_path)
    watch.apply(watch.scan())
    store.create(make_record("three"))
    (tmp_path / "data" / "two" / "state.json").write_text("{not json")
    store.delete("one")
    change = watch.apply(watch.scan())
    assert change is not None
    by_name = {row["environment"]: row for row in change.rows}
    assert set(by_name) == {"two", "three"}
    assert "error" in by_name["two"] and "state" not in by_name["two"]
    assert change.removed == ("one",)


def test_a_held_lock_shows_in_its_row_and_goes_when_released(
    store: FileStore, tmp_path: Path
) -> None:
    for i in range(6):
        store.create(make_record(f"env-{i}"))
    # more environments than locks asked per pass: two per pass, in turn
    watch = watcher(tmp_path, holders=2)
    watch.apply(watch.scan())
    me = LockInfo(os.getpid(), "here", "runner advance", "2026-11-22T10:30:15.123Z")
    lease = store.try_lock("env-5", me)
    assert lease is not None
    try:
        seen = None
        for passes in range(1, 4):  # 6 environments / 2 per pass
            row = watch.scan()["env-5"]
            if row["locked_by"]:
                seen = passes
                break
        assert seen is not None, "the lock was never noticed"
        assert row["locked_by"] == f"runner advance (pid {os.getpid()} on here)"
    finally:
        lease.release()
    assert watch.scan()["env-5"]["locked_by"] is None  # a held one is asked every pass


def test_the_file_stores_versions_change_with_every_save_and_only_then(store: FileStore) -> None:
    store.create(make_record("one"))
    store.create(make_record("two"))
    (store.root / "lost+found").mkdir()  # no environment
    (store.root / "notes.txt").write_text("")
    before = store.versions()
    assert sorted(before) == ["one", "two"]
    store.load("one")
    store.list()
    assert store.versions() == before
    record = store.load("one")
    store.save(record)
    after = store.versions()
    assert after["one"] != before["one"]
    assert after["two"] == before["two"]


def test_a_page_drawn_before_a_change_gets_it_when_it_subscribes_later(
    store: FileStore, tmp_path: Path
) -> None:
    import asyncio

    store.create(make_record("one"))

    async def scenario() -> None:
        watch = watcher(tmp_path)
        watch.interval = 0.05
        task = asyncio.create_task(watch.run())
        try:
            await watch.ready()
            drawn_after = watch.passes  # a page is drawn now...
            record = store.load("one")
            record.state = "provisioned"
            store.save(record)
            while watch.passes < drawn_after + 3:  # ...the change is found before it listens
                await asyncio.sleep(0.02)
            async with watch.subscribe(drawn_after) as queue:
                change = await asyncio.wait_for(queue.get(), 2)
            assert [row["state"] for row in change.rows] == ["provisioned"]
            async with watch.subscribe(watch.passes) as queue:  # up to date: nothing old
                assert queue.empty()
            async with watch.subscribe() as queue:
                assert queue.empty()
        finally:
            task.cancel()

    asyncio.run(scenario())
