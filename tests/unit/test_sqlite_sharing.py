"""Two processes on one SQLite file (the simulator's API and workers, a CLI command beside
``omnicast serve``): a write that meets the other's transaction waits for it, then lands;
one that waits longer than the limit fails with SQLite's own message."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager

import pytest

from chalicelib.adapters.local import sqlite as local


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
