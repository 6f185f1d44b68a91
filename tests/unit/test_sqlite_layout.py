"""The events table keeps its rowid in a new database (kilobyte payloads out of the key's
b-tree); a database made with the earlier WITHOUT ROWID layout keeps working as it is."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.adapters.local import sqlite as local
from chalicelib.adapters.local.sqlite import (
    Database,
    SqliteEventStore,
    sqlite3,  # the same SQLite as the stores (one copy per process)
)
from chalicelib.ports import StoredEvent

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def event(mid):
    return StoredEvent(message_id=mid, type="track", profile_id=None, received_at=T0, timestamp=T0,
                       event="Product Viewed", source="segment", payload={"mid": mid, "pad": "x" * 3000})


def exercise(db):
    events = SqliteEventStore(db)
    assert events.append(event("m1")) and not events.append(event("m1"))  # deduplicated on the key
    events.mark_processed("segment", "m1", "p1")
    [stored] = events.for_profile("p1")
    assert stored.processed and stored.payload["pad"] == "x" * 3000


def test_a_new_database_keeps_the_events_rowid(tmp_path):
    db = Database(tmp_path / "new.db")
    exercise(db)
    assert db.query("SELECT rowid FROM events") == [(1,)]


def test_a_database_with_the_earlier_layout_keeps_working(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE events (source TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL, "
                "profile_id TEXT, received_at TEXT NOT NULL, timestamp TEXT NOT NULL, event TEXT, "
                "payload TEXT NOT NULL, processed INTEGER NOT NULL DEFAULT 0, "
                "PRIMARY KEY (source, message_id)) WITHOUT ROWID")
    old.close()
    db = Database(path)
    exercise(db)
    sql = db.query("SELECT sql FROM sqlite_master WHERE name = 'events'")[0][0]
    assert "WITHOUT ROWID" in sql  # left as it was


def test_the_wal_is_copied_into_the_database_by_a_thread_not_by_a_commit(tmp_path):
    """No commit of ours copies the WAL into the database (SQLite would, syncing twice, at
    1,000 pages): the database's own checkpoint thread does, and stops when it closes."""
    import os
    import time

    path = tmp_path / "omnicast.db"
    db = local.Database(path)
    assert db.query("PRAGMA wal_autocheckpoint") == [(0,)]
    empty = os.path.getsize(path)
    with db.tx() as conn:  # about 2 MB, under the 1,000 pages SQLite would copy at
        conn.executemany("INSERT INTO secrets VALUES (?, ?)", [(f"k{i}", "x" * 2000) for i in range(1000)])
    deadline = time.monotonic() + 5
    while os.path.getsize(path) < empty + 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.getsize(path) > empty + 1_000_000
    thread = db._checkpointer.thread
    db.close()
    assert not thread.is_alive()


def test_json_columns_take_what_the_fast_codec_refuses():
    """orjson writes and reads the columns; a value past its limits (an integer over 64
    bits, a NaN written by the standard library into an older row) goes through ``json``."""
    assert local._loads(local._dumps({"id": 2**70, "n": 1})) == {"id": 2**70, "n": 1}
    assert local._loads('{"score": NaN}')["score"] != local._loads('{"score": NaN}')["score"]  # NaN
    assert local._dumps({1: "a", "b": [1.5, None]}) == '{"1":"a","b":[1.5,null]}'


def test_json_columns_without_orjson_as_in_the_lambda_package(monkeypatch):
    monkeypatch.setattr(local, "orjson", None)
    assert local._dumps({"a": [1, "é"], 2: None}) == '{"a":[1,"\\u00e9"],"2":null}'
    assert local._loads('{"a":[1,"\\u00e9"]}') == {"a": [1, "é"]}


def test_a_wal_kept_from_starting_over_by_readers_is_restarted_by_the_checkpointer(tmp_path, monkeypatch):
    """A writer starts the WAL over only when nobody is reading from it; with another
    connection reading all the time (the API, the sender) that moment hardly comes and the
    WAL grew without end. The checkpointer asks for a restart past RESTART_FRAMES."""
    import os
    import threading
    import time

    monkeypatch.setattr(local, "CHECKPOINT_SECONDS", 0.02)
    monkeypatch.setattr(local, "RESTART_FRAMES", 500)
    path = tmp_path / "omnicast.db"
    db = local.Database(path)
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM secrets").fetchall()
            time.sleep(0.002)
            reader.execute("COMMIT")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(600):  # some 130 MB of pages written in all
            with db.tx() as conn:
                conn.executemany("INSERT OR REPLACE INTO secrets VALUES (?, ?)",
                                 [(f"k{j}", str(i % 10) * 2000) for j in range(100)])
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
        reader.close()
    assert os.path.getsize(f"{path}-wal") < 40_000_000  # 130 MB when never started over
    assert db.query("SELECT count(*), min(value) FROM secrets") == [(100, "9" * 2000)]
    db.close()


def test_a_savepoint_journal_is_kept_in_memory_not_in_a_temporary_file(tmp_path):
    """Each worker message runs in a savepoint of its batch; past 64 KiB SQLite would write
    that savepoint's journal to a temporary file (made, and deleted, for every batch)."""
    import os

    import pytest

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to see the process's open files")
    db = local.Database(tmp_path / "omnicast.db")
    with db.tx() as conn:
        conn.executemany("INSERT INTO secrets VALUES (?, ?)", [(f"k{i}", "a" * 2000) for i in range(500)])

    def temporary_files() -> list[str]:
        names = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return [n for n in names if "etilqs" in n]

    with db.tx():
        with db.tx() as conn:  # a savepoint, as a worker's message in its batch
            conn.execute("UPDATE secrets SET value = ?", ("b" * 2000,))  # some 250 pages journaled
            assert temporary_files() == []
    assert db.query("SELECT count(*) FROM secrets WHERE value = ?", ("b" * 2000,)) == [(500,)]
    db.close()


def test_the_sqlite_under_the_stores_has_the_wal_reset_fix():
    """The system's SQLite (3.40 on Debian 12 and in pyenv's build) has the WAL-reset bug: a
    checkpoint right after another, while a third connection's commit starts the WAL over,
    could corrupt the database. The simulated shop's run hit it ("database disk image is
    malformed") with the checkpointer, the API, the sender and the workers on one file."""
    assert sqlite3.__name__ == "pysqlite3.dbapi2", "the stores must use pysqlite3's own SQLite (make setup installs it)"
    assert local.wal_reset_fixed(sqlite3.sqlite_version_info), sqlite3.sqlite_version
    db = Database(":memory:")
    assert db.query("SELECT sqlite_version()") == [(sqlite3.sqlite_version,)]


def test_which_sqlite_versions_have_the_wal_reset_fix():
    fixed = [(3, 51, 3), (3, 52, 0), (3, 53, 4), (4, 0, 0), (3, 50, 7), (3, 44, 6)]
    broken = [(3, 40, 1), (3, 51, 2), (3, 50, 6), (3, 44, 5), (3, 45, 0), (3, 7, 0)]
    assert all(local.wal_reset_fixed(v) for v in fixed)
    assert not any(local.wal_reset_fixed(v) for v in broken)


def test_with_a_sqlite_that_has_the_bug_no_checkpoints_run_back_to_back(tmp_path, monkeypatch):
    """Where only a SQLite with the bug can be had (the Lambda package's test of the local
    adapter), no checkpointer of ours runs beside the writers: each commit checkpoints as
    SQLite does by default, and a warning says what to install."""
    monkeypatch.setattr(local, "wal_reset_fixed", lambda version: False)
    warnings = []
    monkeypatch.setattr(local.log, "warning", lambda msg, *args: warnings.append(msg % args))
    local._warn_wal_reset_bug.cache_clear()
    db = Database(tmp_path / "old-sqlite.db")
    try:
        assert db._checkpointer is None
        assert db.query("PRAGMA wal_autocheckpoint") == [(1000,)]
        [warning] = warnings
        assert "WAL-reset bug" in warning and "pysqlite3" in warning
    finally:
        db.close()
        local._warn_wal_reset_bug.cache_clear()
        monkeypatch.undo()
    fixed = Database(tmp_path / "new-sqlite.db")
    try:
        assert fixed._checkpointer is not None and fixed.query("PRAGMA wal_autocheckpoint") == [(0,)]
    finally:
        fixed.close()
