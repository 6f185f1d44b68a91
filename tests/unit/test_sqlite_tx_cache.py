"""Reads kept for the open write transaction: a worker's batch asks for one customer's
profile, identifiers and latest journey runs several times (a visit is several events); the
second time costs no query. Writes through the stores keep them true, a rollback (whole or to
a savepoint) empties them, and outside a transaction (another process may write) every read
is a query."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from chalicelib.adapters.local.sqlite import Database, SqliteJourneyStore, SqliteProfileStore
from chalicelib.ports import JourneyState, Profile

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "cache.db")
    yield database
    database.close()


@pytest.fixture
def profiles(db):
    """The profile store with one customer, p1 (traits {"n": 1}, version 1)."""
    store = SqliteProfileStore(db)
    assert store.save(Profile("p1", traits={"n": 1}, created_at=T0), 0)
    return store


def selects(db):
    seen: list[str] = []
    db.conn.set_trace_callback(lambda sql: seen.append(sql) if sql.lstrip().upper().startswith("SELECT") else None)
    return seen


def run(profile_id, entity, status="completed"):
    return JourneyState(profile_id=profile_id, journey="browse", entity=entity, version="1", step="s",
                        status=status, entered_at=T0)


def test_a_profile_read_twice_in_a_transaction_is_queried_once_and_each_caller_gets_its_own(db, profiles):
    seen = selects(db)
    with db.tx():
        first = profiles.get("p1")
        first.traits["n"] = 99  # a caller's change to its copy is not the stored row
        second = profiles.get("p1")
        assert second.traits == {"n": 1} and second.version == 1
        assert profiles.get("nobody") is None and profiles.get("nobody") is None
    assert len(seen) == 2  # p1 once, nobody once
    with db.tx():  # a new transaction reads again
        profiles.get("p1")
    assert len(seen) == 3


def test_a_save_in_the_transaction_is_what_the_next_read_returns(db, profiles):
    seen = selects(db)
    with db.tx():
        p = profiles.get("p1")
        p.traits["n"] = 2
        assert profiles.save(p, 1)
        assert profiles.unchanged(p)
        again = profiles.get("p1")
        assert again.traits == {"n": 2} and again.version == 2
        stale = Profile("p1", traits={"n": 0}, version=1)
        assert not profiles.save(stale, 1)  # lost the race: the entry is dropped, the next read queries
        assert profiles.get("p1").version == 2
    assert len(seen) == 2
    assert SqliteProfileStore(db).get("p1").traits == {"n": 2}


def test_a_rollback_to_a_savepoint_empties_what_was_kept(db, profiles):
    with db.tx():
        assert profiles.get("p1").version == 1
        with pytest.raises(RuntimeError), db.tx():  # a unit that fails after saving
            p = profiles.get("p1")
            p.traits["n"] = 2
            assert profiles.save(p, 1)
            raise RuntimeError("the unit fails")
        back = profiles.get("p1")  # the saved row was rolled back: read again, not the kept one
        assert back.traits == {"n": 1} and back.version == 1
        assert not profiles.unchanged(p)


def test_outside_a_transaction_and_on_another_thread_every_read_is_a_query(db, profiles):
    seen = selects(db)
    profiles.get("p1")
    profiles.get("p1")
    assert len(seen) == 2
    with db.tx():
        assert db.tx_cache() is not None
        elsewhere: list[object] = []
        thread = threading.Thread(target=lambda: elsewhere.append(db.tx_cache()))
        thread.start()
        thread.join()
        assert elsewhere == [None]


def test_identifiers_resolve_once_and_link_and_unlink_keep_them_true(db):
    profiles = SqliteProfileStore(db)
    seen = selects(db)
    with db.tx():
        assert profiles.resolve("email", "a@b.c") is None
        assert profiles.link("email", "a@b.c", "p1")
        assert profiles.resolve("email", "a@b.c") == "p1"
        assert not profiles.link("email", "a@b.c", "p2") and profiles.resolve("email", "a@b.c") == "p1"
        assert profiles.unlink("email", "a@b.c", "p1")
        assert profiles.resolve("email", "a@b.c") is None
    assert len(seen) == 2  # the first resolve and the one after the unlink


def test_the_latest_run_is_read_once_until_a_run_of_that_journey_is_written(db):
    journeys = SqliteJourneyStore(db)
    assert journeys.enter(run("p1", "-"))
    seen = selects(db)
    with db.tx():
        assert journeys.last_run("p1", "browse", "-").entity == "-"
        assert journeys.last_run("p1", "browse", "-").entity == "-"
        assert len(seen) == 1
        assert journeys.enter(run("p1", "-#2", status="waiting"))  # a new run: read again
        latest = journeys.last_run("p1", "browse", "-")
        assert (latest.entity, latest.status) == ("-#2", "waiting")
        latest.status = "completed"
        journeys.put(latest)
        assert journeys.last_run("p1", "browse", "-").status == "completed"
    assert len(seen) == 3
