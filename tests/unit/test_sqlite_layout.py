"""The events table keeps its rowid in a new database (kilobyte payloads out of the key's
b-tree); a database made with the earlier WITHOUT ROWID layout keeps working as it is."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

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
