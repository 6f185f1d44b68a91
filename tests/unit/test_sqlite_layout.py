"""The events table keeps its rowid in a new database (kilobyte payloads out of the key's
b-tree); a database made with the earlier WITHOUT ROWID layout keeps working as it is."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from chalicelib.adapters.local import sqlite as local
from chalicelib.adapters.local.sqlite import Database, SqliteEventStore
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
