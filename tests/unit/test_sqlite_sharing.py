"""Two processes on one SQLite file (the simulator's API and workers, a CLI command beside
``omnicast serve``): a write that meets the other's transaction waits for it, then lands;
one that waits longer than the limit fails with SQLite's own message."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from chalicelib.adapters.local import sqlite as local
from chalicelib.adapters.local.sqlite import sqlite3  # the same SQLite as the stores (one copy per process)


@contextmanager
def another_writer(path):
    """Another connection (as another process would have) holding the write lock until the
    block ends, or until the ``release`` event it yields is set."""
    held, release = threading.Event(), threading.Event()

    def hold():
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO secrets VALUES ('held', 'x')")
        held.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    other = threading.Thread(target=hold)
    other.start()
    assert held.wait(10)
    try:
        yield release
    finally:
        release.set()
        other.join(10)


def test_a_write_waits_for_another_connections_transaction_then_lands(tmp_path):
    path = str(tmp_path / "omnicast.db")
    db = local.Database(path)
    with another_writer(path) as release:
        threading.Timer(0.05, release.set).start()  # the other commits while ours is waiting
        assert db.execute("INSERT INTO secrets VALUES ('mine', 'y')") == 1
        with db.tx() as conn:  # a transaction begins once the other's is over too
            conn.execute("UPDATE secrets SET value='z' WHERE name='mine'")
    assert db.query("SELECT name, value FROM secrets ORDER BY name") == [("held", "x"), ("mine", "z")]


def test_a_write_that_waits_too_long_fails_with_sqlites_message(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "BUSY_SECONDS", 0.02)
    path = str(tmp_path / "omnicast.db")
    db = local.Database(path)
    with another_writer(path):
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            db.execute("INSERT INTO secrets VALUES ('mine', 'y')")
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), db.tx():
            pass
    assert db.execute("INSERT INTO secrets VALUES ('mine', 'y')") == 1  # free again: it lands


def test_the_ingest_queue_takes_the_apis_calls_while_the_workers_hold_a_transaction(tmp_path, monkeypatch):
    """The ingest queue lives in a database of its own (inbox.db): the API (another process,
    other connections) queues a call while the workers' transaction on the main database is
    open, without waiting for it; the workers acknowledge what they applied once it commits."""
    from chalicelib.adapters.local import local_stores

    monkeypatch.setattr(local, "BUSY_SECONDS", 0.02)  # a call that had to wait would fail here
    workers, api = local_stores(tmp_path), local_stores(tmp_path)
    with workers.transaction():
        workers.secrets.put("held", "x")  # the workers hold the main database's write lock
        api.queue.send_batch("ingest", [{"n": 1}, {"n": 2}])
        api.queue.send("ingest", {"n": 3})
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            api.secrets.put("mine", "y")  # the main database itself still takes one writer
    got = workers.queue.receive("ingest", max_messages=10, visibility_seconds=60)
    assert [m.body["n"] for m in got] == [1, 2, 3]
    workers.queue.ack("ingest", got[0].receipt)
    assert api.queue.depth("ingest") == 2 and workers.queue.own_database("ingest")
    assert not workers.queue.own_database("send")  # send tasks commit with the journeys that queue them


def test_ingest_messages_left_in_the_main_database_move_to_the_inbox(tmp_path):
    """A data folder from before the inbox had its own database keeps its queued calls."""
    from chalicelib.adapters.local import local_stores

    old = local.SqliteQueue(local.Database(tmp_path / "omnicast.db"))
    old.send_batch("ingest", [{"n": 1}, {"n": 2}])
    old.send("send", {"task": 1})
    stores = local_stores(tmp_path)
    assert [m.body["n"] for m in stores.queue.receive("ingest", max_messages=10)] == [1, 2]
    assert [m.body for m in stores.queue.receive("send", max_messages=10)] == [{"task": 1}]
    assert old.depth("ingest") == 0


def test_the_inbox_database_holds_the_queue_alone(tmp_path):
    from chalicelib.adapters.local import local_stores

    local_stores(tmp_path)
    tables = {name for (name,) in sqlite3.connect(tmp_path / "inbox.db").execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"queue", "sqlite_sequence"}
