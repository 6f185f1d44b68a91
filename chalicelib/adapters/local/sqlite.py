"""The embedded default: every port on one SQLite database in WAL mode.

One connection per store set, guarded by a lock: SQLite serialises writers anyway, and
one connection lets ``:memory:`` databases back the unit tests. Conditional writes are
``INSERT ... ON CONFLICT DO NOTHING`` / ``UPDATE ... WHERE version = ?`` and report
whether they won through ``rowcount``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    # the sqlite3 module built on a recent SQLite of its own (3.53): the Debian and pyenv builds
    # link the system's 3.40, which has the WAL-reset bug (fixed in 3.51.3, backported to
    # 3.50.7 and 3.44.6): two connections checkpointing and writing at once could corrupt
    # the database, and ours do (the checkpointer, the API, the sender, the workers)
    from pysqlite3 import dbapi2 as sqlite3
except ImportError:  # the Lambda package (the local adapter serves its test there, one process)
    import sqlite3  # type: ignore[no-redef]

try:
    import orjson
except ImportError:  # the Lambda package (the local adapter serves its test there): json does it all
    orjson = None  # type: ignore[assignment]

from chalicelib.clock import iso, parse_iso
from chalicelib.ports import (
    JSON,
    JourneyState,
    LedgerEntry,
    Profile,
    QueueMessage,
    StoredEvent,
    Timer,
)

# events keep their rowid (payloads run to kilobytes: a WITHOUT ROWID table stores them in its
# key's b-tree, and an append plus its processed mark cost 84 us against 45 us this way);
# a database made before keeps its layout, and both answer the same queries
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    source TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,
    profile_id TEXT, received_at TEXT NOT NULL, timestamp TEXT NOT NULL,
    event TEXT, payload TEXT NOT NULL, processed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, message_id)
);
CREATE INDEX IF NOT EXISTS events_profile ON events (profile_id, timestamp);
CREATE TABLE IF NOT EXISTS profiles (
    profile_id TEXT PRIMARY KEY, traits TEXT NOT NULL, identifiers TEXT NOT NULL,
    created_at TEXT, updated_at TEXT, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    kind TEXT NOT NULL, value TEXT NOT NULL, profile_id TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    key TEXT PRIMARY KEY, profile_id TEXT NOT NULL, journey TEXT NOT NULL,
    step TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, provider_message_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_profile ON ledger (profile_id, created_at);
CREATE INDEX IF NOT EXISTS ledger_created ON ledger (created_at);
CREATE INDEX IF NOT EXISTS ledger_provider ON ledger (provider_message_id);
CREATE TABLE IF NOT EXISTS journey_states (
    profile_id TEXT NOT NULL, journey TEXT NOT NULL, entity TEXT NOT NULL,
    version TEXT NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL,
    entered_at TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (profile_id, journey, entity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS journey_states_live ON journey_states (profile_id)
    WHERE status IN ('active','waiting','waiting_event');
CREATE TABLE IF NOT EXISTS timers (
    timer_id TEXT PRIMARY KEY, due_at TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_at);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# the queues: in the main database, and alone in a queue's own (inbox.db, the ingest queue)
QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body TEXT NOT NULL,
    visible_at REAL NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (queue, visible_at);
"""


LIVE_STATUSES = frozenset({"active", "waiting", "waiting_event"})  # journey_states_live's condition
BUSY_SECONDS = 30.0  # how long a write waits for another process's transaction before it fails
BUSY_PAUSES = (0.0001, 0.0002, 0.0005, 0.001, 0.002)  # then every 2 ms
CHECKPOINT_SECONDS = 0.2  # how often the background checkpointer copies the WAL into the database
RESTART_FRAMES = 8192  # a WAL this long (32 MiB of pages) is started over by the checkpointer
RESTART_WAIT_MS = 100  # how long that restart waits for a writer or reader to finish
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # a started-over WAL file is cut back to this size


log = logging.getLogger("omnicast.sqlite")


def wal_reset_fixed(version: tuple[int, int, int]) -> bool:
    """Has this SQLite the fix of the WAL-reset bug (https://sqlite.org/wal.html#walresetbug)?
    A race between two connections' checkpoints and a commit that starts the WAL over, in
    3.7.0 to 3.51.2; fixed in 3.51.3 and in the 3.50.7 and 3.44.6 patch releases."""
    return version >= (3, 51, 3) or (3, 50, 7) <= version < (3, 51, 0) or (3, 44, 6) <= version < (3, 45, 0)


@functools.cache
def _warn_wal_reset_bug() -> None:
    log.warning("SQLite %s has the WAL-reset bug (fixed in 3.51.3): install pysqlite3 (make setup does); "
                "meanwhile each writer checkpoints its own commits, SQLite's default", sqlite3.sqlite_version)


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Database:
    """One SQLite connection shared by the local stores.

    Another process may write to the same file (the simulator's API and workers, a CLI
    command beside ``omnicast serve``). SQLite's own busy handler sleeps 1, 2, 5 ... 100 ms
    between tries; a write that meets another's transaction here tries again after 0.1 ms,
    then longer, every 2 ms at most (the other's write is usually over in well under 1 ms).
    """

    def __init__(self, path: str | Path = ":memory:", *, schema: str = SCHEMA + QUEUE_SCHEMA) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=0)
        self.lock = threading.RLock()
        self._savepoints = 0
        self.serial = 0  # write transactions begun on this connection
        self._rollbacks = 0  # rollbacks, whole or to a savepoint: what was read before may be undone
        self._owner: int | None = None  # the thread whose write transaction is open
        self._cache: dict[Any, Any] = {}
        self._cache_mark = (-1, -1)
        self._checkpointer: _Checkpointer | None = None
        with self.lock:
            if self.path != ":memory:":
                self._retrying(lambda: self.conn.execute("PRAGMA journal_mode=WAL"))
                if wal_reset_fixed(sqlite3.sqlite_version_info):
                    # a commit that fills the WAL past 1,000 pages would copy it into the database
                    # itself, syncing twice (some 10 ms here, one commit in 35 of the simulator's);
                    # a thread of our own does it with its own connection, off the writer's path
                    self.conn.execute("PRAGMA wal_autocheckpoint=0")
                    self._checkpointer = _Checkpointer(self.path)
                else:  # checkpoints back to back beside writers are the bug's recipe: SQLite's default
                    _warn_wal_reset_bug()
                self.conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            # savepoint journals and temporary b-trees in memory: on disk, a batch with
            # savepoints made and deleted a temporary file, its fresh pages zeroed by the
            # kernel (a seventh of the workers' time in the simulated shop, a savepoint per
            # message then)
            self.conn.execute("PRAGMA temp_store=MEMORY")
            # 64 MiB of pages (the default 2 MiB had the workers read some 5,000 a second back)
            self.conn.execute("PRAGMA cache_size=-65536")
        self.script(schema)

    def _retrying(self, action: Callable[[], Any]) -> Any:
        """``action()``, tried again while another connection holds the write lock (outside a
        transaction of ours: inside one we hold it, and SQLite never answers busy then)."""
        waited = 0.0
        for attempt in itertools.count():
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or self.conn.in_transaction or waited >= BUSY_SECONDS:
                    raise
            pause = BUSY_PAUSES[min(attempt, len(BUSY_PAUSES) - 1)]
            time.sleep(pause)
            waited += pause

    def script(self, sql: str) -> None:
        """Run a schema script (CREATE ... IF NOT EXISTS), waiting for other writers."""
        with self.lock:
            self._retrying(lambda: self.conn.executescript(sql))

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), committed on success.

        Nested use (a worker batch around per-message units) becomes a SAVEPOINT, so one
        failing message rolls back alone while the batch commits once.
        """
        with self.lock:
            if self.conn.in_transaction:
                self._savepoints += 1
                name = f"sp{self._savepoints}"
                self.conn.execute(f"SAVEPOINT {name}")
                try:
                    yield self.conn
                except BaseException:
                    self._rollbacks += 1
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                    raise
                self.conn.execute(f"RELEASE {name}")
                return
            self._retrying(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            self.serial += 1
            self._owner = threading.get_ident()
            try:
                yield self.conn
            except BaseException:
                self._rollbacks += 1
                self.conn.execute("ROLLBACK")
                raise
            finally:
                self._owner = None
            self.conn.execute("COMMIT")

    def tx_cache(self) -> dict[Any, Any] | None:
        """Rows read or written in the write transaction in progress, for the stores to read
        again without a query: BEGIN IMMEDIATE holds the write lock, so no other connection
        changes them until it ends, and a store writing one updates or drops its entry. Emptied
        when a transaction begins and at every rollback (whole or to a savepoint); None
        outside a transaction of this thread's (a worker's batch reads one customer's
        profile, identifiers and journey runs several times: a visit is several events)."""
        if self._owner != threading.get_ident() or not self.conn.in_transaction:
            return None
        mark = (self.serial, self._rollbacks)
        if mark != self._cache_mark:
            self._cache.clear()
            self._cache_mark = mark
        return self._cache

    # inside a transaction of ours a statement is run as it is: SQLite never answers busy then
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            if self.conn.in_transaction:
                return self.conn.execute(sql, params).fetchall()
            return self._retrying(lambda: self.conn.execute(sql, params).fetchall())  # type: ignore[no-any-return]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self.lock:
            if self.conn.in_transaction:
                return self.conn.execute(sql, params).rowcount
            return self._retrying(lambda: self.conn.execute(sql, params).rowcount)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self.lock:
            self.conn.close()


class _Checkpointer:
    """Copies a database's WAL into it every ``CHECKPOINT_SECONDS`` (PASSIVE: never waits
    for, nor blocks, readers and writers), on a thread and a connection of its own. It ends
    when its Database closes or is collected.

    A writer starts the WAL over only when it finds the WAL wholly copied and no other
    connection reading from it; with the API and the sender reading all the time that
    moment hardly comes, and the WAL grew without end (60 MB a second in the simulated
    shop, every page of it a fresh one for the kernel). Past ``RESTART_FRAMES`` the
    checkpointer asks for a restart (RESTART: holds new writers back until the readers
    have moved to the database file, ``RESTART_WAIT_MS`` at most, else it is passive
    and the next round tries again)."""

    def __init__(self, path: str) -> None:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(path, self.done), name="wal-checkpoint", daemon=True)
        self.thread.start()
        weakref.finalize(self, self.done.set)

    @staticmethod
    def _run(path: str, done: threading.Event) -> None:
        # the busy timeout is the restart's wait: a PASSIVE checkpoint never waits
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=RESTART_WAIT_MS / 1000)
        try:
            while not done.wait(CHECKPOINT_SECONDS):
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames >= RESTART_FRAMES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error:  # busy, or the file is gone: the next round tries again
                    continue
        finally:
            conn.close()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


def _dumps(value: Any) -> str:
    """Compact JSON text for a column (orjson: several times quicker than the standard
    library; a value it cannot write, an integer past 64 bits, goes to ``json``)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":"))


def _loads(text: str) -> Any:
    """A column's JSON (what ``orjson`` refuses, ``NaN`` written by ``json`` in an older row, goes to ``json``)."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# --------------------------------------------------------------------------- events
class SqliteEventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, event: StoredEvent) -> bool:
        return (
            self.db.execute(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (
                    event.source,
                    event.message_id,
                    event.type,
                    event.profile_id,
                    iso(event.received_at),
                    iso(event.timestamp),
                    event.event,
                    _dumps(event.payload),
                    int(event.processed),
                ),
            )
            == 1
        )

    def _row(self, r: tuple[Any, ...]) -> StoredEvent:
        return StoredEvent(
            source=r[0],
            message_id=r[1],
            type=r[2],
            profile_id=r[3],
            received_at=parse_iso(r[4]),
            timestamp=parse_iso(r[5]),
            event=r[6],
            payload=_loads(r[7]),
            processed=bool(r[8]),
        )

    def get(self, source: str, message_id: str) -> StoredEvent | None:
        rows = self.db.query("SELECT * FROM events WHERE source=? AND message_id=?", (source, message_id))
        return self._row(rows[0]) if rows else None

    def mark_processed(self, source: str, message_id: str, profile_id: str) -> None:
        self.db.execute(
            "UPDATE events SET processed=1, profile_id=? WHERE source=? AND message_id=?",
            (profile_id, source, message_id),
        )

    def for_profile(self, profile_id: str, limit: int = 100, *, since: datetime | None = None) -> list[StoredEvent]:
        rows = self.db.query(
            "SELECT * FROM events WHERE profile_id=? AND timestamp >= ? AND processed=1 ORDER BY timestamp LIMIT ?",
            (profile_id, iso(since) if since is not None else "", limit),
        )
        return [self._row(r) for r in rows]

    def by_source(self, source: str, after: str | None = None, limit: int = 500, *,
                  events: Collection[str] | None = None) -> list[StoredEvent]:
        if events is None:
            rows = self.db.query(
                "SELECT * FROM events WHERE source=? AND message_id > ? ORDER BY message_id LIMIT ?",
                (source, after or "", limit),
            )
        else:  # the names filtered in SQL: the rows not asked for are never built in Python
            names = sorted(events)
            marks = ",".join("?" * len(names))  # placeholders only: the names are parameters
            rows = self.db.query(
                f"SELECT * FROM events WHERE source=? AND message_id > ? AND event IN ({marks}) "  # noqa: S608
                "ORDER BY message_id LIMIT ?",
                (source, after or "", *names, limit),
            )
        return [self._row(r) for r in rows]

    def count(self, source: str | None = None) -> int:
        if source is None:
            return int(self.db.query("SELECT COUNT(*) FROM events")[0][0])
        return int(self.db.query("SELECT COUNT(*) FROM events WHERE source = ?", (source,))[0][0])


# --------------------------------------------------------------------------- profiles
class SqliteProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def unchanged(self, profile: Profile) -> bool:
        """Whether ``profile`` is still what is stored: read or saved in the write transaction
        still open (nobody else writes while it is), at the version stored now. A worker that
        has just saved a profile need not read it back."""
        cache = self.db.tx_cache()
        row = cache.get(("profile", profile.profile_id)) if cache is not None else None
        return row is not None and row[5] == profile.version

    def get(self, profile_id: str) -> Profile | None:
        cache = self.db.tx_cache()
        key = ("profile", profile_id)
        if cache is not None and key in cache:
            r = cache[key]
        else:
            rows = self.db.query("SELECT * FROM profiles WHERE profile_id=?", (profile_id,))
            r = rows[0] if rows else None
            if cache is not None:
                cache[key] = r
        if r is None:
            return None
        return Profile(
            profile_id=r[0],
            traits=_loads(r[1]),
            identifiers=_loads(r[2]),
            created_at=parse_iso(r[3], remember=True) if r[3] else None,  # a profile read is saved again
            updated_at=parse_iso(r[4], remember=True) if r[4] else None,
            version=r[5],
        )

    def save(self, profile: Profile, expected_version: int) -> bool:
        values = (
            _dumps(profile.traits),
            _dumps(profile.identifiers),
            iso(profile.created_at) if profile.created_at else None,
            iso(profile.updated_at) if profile.updated_at else None,
        )
        if expected_version == 0:
            won = self.db.execute(
                "INSERT INTO profiles VALUES (?,?,?,?,?,1) ON CONFLICT DO NOTHING",
                (profile.profile_id, *values),
            )
        else:
            won = self.db.execute(
                "UPDATE profiles SET traits=?, identifiers=?, created_at=?, updated_at=?, version=version+1 "
                "WHERE profile_id=? AND version=?",
                (*values, profile.profile_id, expected_version),
            )
        cache = self.db.tx_cache()
        if won == 1:
            profile.version = expected_version + 1
            if cache is not None:  # the row as stored now
                cache[("profile", profile.profile_id)] = (profile.profile_id, *values, profile.version)
            return True
        if cache is not None:
            cache.pop(("profile", profile.profile_id), None)
        return False

    def resolve(self, kind: str, value: str) -> str | None:
        cache = self.db.tx_cache()
        key = ("identity", kind, value)
        if cache is not None and key in cache:
            return cache[key]  # type: ignore[no-any-return]
        rows = self.db.query("SELECT profile_id FROM identities WHERE kind=? AND value=?", (kind, value))
        found = rows[0][0] if rows else None
        if cache is not None:
            cache[key] = found
        return found

    def link(self, kind: str, value: str, profile_id: str) -> bool:
        if self.db.execute("INSERT INTO identities VALUES (?,?,?) ON CONFLICT DO NOTHING", (kind, value, profile_id)):
            cache = self.db.tx_cache()
            if cache is not None:
                cache[("identity", kind, value)] = profile_id
            return True
        return self.resolve(kind, value) == profile_id

    def unlink(self, kind: str, value: str, profile_id: str) -> bool:
        """Remove the identifier ``kind:value`` if it points at ``profile_id`` (erasure)."""
        cache = self.db.tx_cache()
        if cache is not None:
            cache.pop(("identity", kind, value), None)
        return bool(self.db.execute("DELETE FROM identities WHERE kind=? AND value=? AND profile_id=?",
                                    (kind, value, profile_id)))

    def count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM profiles")[0][0])

    def _profile(self, r: tuple[Any, ...]) -> Profile:
        return Profile(
            profile_id=r[0], traits=_loads(r[1]), identifiers=_loads(r[2]),
            created_at=parse_iso(r[3]) if r[3] else None, updated_at=parse_iso(r[4]) if r[4] else None,
            version=r[5],
        )

    def scan(self, cursor: str | None = None, limit: int = 1000) -> tuple[list[Profile], str | None]:
        rows = self.db.query(
            "SELECT * FROM profiles WHERE profile_id > ? ORDER BY profile_id LIMIT ?", (cursor or "", limit)
        )
        page = [self._profile(r) for r in rows]
        return page, (page[-1].profile_id if len(page) == limit else None)


# --------------------------------------------------------------------------- ledger
class SqliteSendLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, entry: LedgerEntry) -> bool:
        return (
            self.db.execute(
                "INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (
                    entry.key,
                    entry.profile_id,
                    entry.journey,
                    entry.step,
                    entry.channel,
                    entry.status,
                    entry.reason,
                    iso(entry.created_at),
                    iso(entry.updated_at),
                    entry.provider_message_id,
                    _dumps(entry.detail),
                ),
            )
            == 1
        )

    def update(
        self,
        key: str,
        *,
        status: str,
        reason: str,
        at: Any,
        provider_message_id: str | None = None,
        detail: JSON | None = None,
    ) -> None:
        # one statement (the detail merged by json_set in SQLite) instead of a read-modify-write
        # transaction: a send updates its entry two or three times
        merge, params = "detail", []
        for name, value in (detail or {}).items():
            if '"' in name:  # a JSON path label cannot hold a quote; the detail keys are Omnicast's own
                raise ValueError(f"ledger detail key {name!r} contains a quote")
            merge = f"json_set({merge}, ?, json(?))"
            params += [f'$."{name}"', _dumps(value)]
        # placeholders only: the names and values are bound
        sql = (
            "UPDATE ledger SET status=?, reason=?, updated_at=?, "  # noqa: S608
            f"provider_message_id=COALESCE(?, provider_message_id), detail={merge} WHERE key=?"
        )
        changed = self.db.execute(
            sql,
            (status, reason, iso(at), provider_message_id, *params, key),
        )
        if changed == 0:
            raise KeyError(key)

    def transition(self, key: str, *, from_status: str, to_status: str, at: Any) -> bool:
        return (
            self.db.execute(
                "UPDATE ledger SET status=?, updated_at=? WHERE key=? AND status=?",
                (to_status, iso(at), key, from_status),
            )
            == 1
        )

    def _row(self, r: tuple[Any, ...]) -> LedgerEntry:
        return LedgerEntry(
            key=r[0],
            profile_id=r[1],
            journey=r[2],
            step=r[3],
            channel=r[4],
            status=r[5],
            reason=r[6],
            created_at=parse_iso(r[7]),
            updated_at=parse_iso(r[8]),
            provider_message_id=r[9],
            detail=_loads(r[10]),
        )

    def get(self, key: str) -> LedgerEntry | None:
        rows = self.db.query("SELECT * FROM ledger WHERE key=?", (key,))
        return self._row(rows[0]) if rows else None

    def by_provider_message_id(self, provider_message_id: str) -> LedgerEntry | None:
        rows = self.db.query(
            "SELECT * FROM ledger WHERE provider_message_id=? ORDER BY updated_at DESC, key LIMIT 1",
            (provider_message_id,),
        )
        return self._row(rows[0]) if rows else None

    def for_profile(self, profile_id: str, *, sent_after: datetime | None = None) -> list[LedgerEntry]:
        if sent_after is None:
            rows = self.db.query("SELECT * FROM ledger WHERE profile_id=? ORDER BY created_at, key", (profile_id,))
        else:  # filtered in SQL: a quarter's entries are not built to count a week's sends
            rows = self.db.query("SELECT * FROM ledger WHERE profile_id=? AND status='sent' AND updated_at > ? "
                                 "ORDER BY created_at, key", (profile_id, iso(sent_after)))
        return [self._row(r) for r in rows]

    def all(self, limit: int = 1000) -> list[LedgerEntry]:
        rows = self.db.query("SELECT * FROM ledger ORDER BY created_at, key LIMIT ?", (limit,))
        return [self._row(r) for r in rows]


# --------------------------------------------------------------------------- journeys
class SqliteJourneyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _values(self, s: JourneyState) -> tuple[Any, ...]:
        return (
            s.profile_id,
            s.journey,
            s.entity,
            s.version,
            s.step,
            s.status,
            iso(s.entered_at),
            _dumps(s.data),
        )

    def _written(self, state: JourneyState) -> None:
        """A run of (profile, journey) was written: the latest runs read for them are stale."""
        cache = self.db.tx_cache()
        if cache is not None:
            cache.pop(("runs", state.profile_id, state.journey), None)

    def enter(self, state: JourneyState) -> bool:
        self._written(state)
        return (
            self.db.execute(
                "INSERT INTO journey_states VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", self._values(state)
            )
            == 1
        )

    def _row(self, r: tuple[Any, ...]) -> JourneyState:
        return JourneyState(
            profile_id=r[0],
            journey=r[1],
            entity=r[2],
            version=r[3],
            step=r[4],
            status=r[5],
            entered_at=parse_iso(r[6]),
            data=_loads(r[7]),
        )

    def get(self, profile_id: str, journey: str, entity: str) -> JourneyState | None:
        rows = self.db.query(
            "SELECT * FROM journey_states WHERE profile_id=? AND journey=? AND entity=?",
            (profile_id, journey, entity),
        )
        return self._row(rows[0]) if rows else None

    def put(self, state: JourneyState) -> None:
        self._written(state)
        # an upsert rewrites the row in place (REPLACE deletes and re-inserts it, index entries too)
        self.db.execute(
            "INSERT INTO journey_states VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (profile_id, journey, entity) "
            "DO UPDATE SET version=excluded.version, step=excluded.step, status=excluded.status, "
            "entered_at=excluded.entered_at, data=excluded.data",
            self._values(state),
        )

    def for_profile(
        self, profile_id: str, *, journey: str | None = None, statuses: tuple[str, ...] | None = None
    ) -> list[JourneyState]:
        live = statuses is not None and set(statuses) <= LIVE_STATUSES
        index = "INDEXED BY journey_states_live " if live else ""
        sql = f"SELECT * FROM journey_states {index}WHERE profile_id=?"  # noqa: S608 - constant text
        params: list[Any] = [profile_id]
        if journey is not None:
            sql += " AND journey=?"
            params.append(journey)
        if statuses is not None:
            if live:
                # the partial index of live runs: finished runs (and their data) are not read
                sql += " AND status IN ('active','waiting','waiting_event')"
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            params.extend(statuses)
        rows = self.db.query(sql + " ORDER BY entered_at", tuple(params))
        return [self._row(r) for r in rows]

    def last_run(self, profile_id: str, journey: str, entity: str) -> JourneyState | None:
        # the run number ranks in SQL, so only the latest run's data is read and parsed
        # entity >= e AND entity < e + '$': the key's range of the primary key, which holds e and
        # every e#n ('#' sorts just before '$'), so only this entity's runs are visited, not
        # every run of the journey (a customer's price-drop runs, one per product viewed)
        # a customer's views in one batch ask for the same latest run again (browse abandonment)
        cache = self.db.tx_cache()
        runs = cache.setdefault(("runs", profile_id, journey), {}) if cache is not None else {}
        if entity in runs:
            row = runs[entity]
        else:
            rows = self.db.query(
                "SELECT * FROM journey_states WHERE profile_id=? AND journey=? AND entity >= ? AND entity < ? "
                "AND (entity=? OR substr(entity, 1, length(?) + 1) = ? || '#') "
                "ORDER BY CASE WHEN entity=? THEN 1 ELSE CAST(substr(entity, length(?) + 2) AS INTEGER) END DESC "
                "LIMIT 1",
                (profile_id, journey, entity, entity + "$", entity, entity, entity, entity, entity),
            )
            row = runs[entity] = rows[0] if rows else None
        return self._row(row) if row is not None else None

    def schedule(self, timer: Timer) -> bool:
        return (
            self.db.execute(
                "INSERT INTO timers VALUES (?,?,?) ON CONFLICT DO NOTHING",
                (timer.timer_id, iso(timer.due_at), _dumps(timer.payload)),
            )
            == 1
        )

    def due(self, now: Any, limit: int = 100) -> list[Timer]:
        rows = self.db.query(
            "SELECT timer_id, due_at, payload FROM timers WHERE due_at <= ? ORDER BY due_at, timer_id LIMIT ?",
            (iso(now), limit),
        )
        return [Timer(r[0], parse_iso(r[1]), _loads(r[2])) for r in rows]

    def take(self, timer_id: str) -> bool:
        return self.db.execute("DELETE FROM timers WHERE timer_id=?", (timer_id,)) == 1


# --------------------------------------------------------------------------- queue
class SqliteQueue:
    """A durable at-least-once queue with SQS semantics (visibility timeout, receipts).

    Visibility is infrastructure time (a worker that died), so it runs on ``time_fn``
    (wall time by default), not the business clock; tests pass their own ``time_fn``.
    """

    def __init__(self, db: Database, time_fn: Callable[[], float] = time.time, *,
                 apart: dict[str, Database] | None = None) -> None:
        self.db = db
        self.time = time_fn
        # queues kept in a database of their own: the API's writes there never wait for a
        # worker's transaction on the main one (the workers acknowledge them after it commits)
        self.apart = apart or {}
        for name, own in self.apart.items():
            self._move_in(name, own)

    def _move_in(self, queue: str, own: Database) -> None:
        """Messages of ``queue`` left in the main database (a data folder from before it had
        its own) move to its own; a crash half way leaves copies, which are taken as redeliveries."""
        rows = self.db.query(
            "SELECT id, body, visible_at, receive_count FROM queue WHERE queue=? ORDER BY id", (queue,))
        if not rows:
            return
        with own.tx() as conn:
            conn.executemany("INSERT INTO queue (queue, body, visible_at, receive_count) VALUES (?,?,?,?)",
                             [(queue, body, visible, count) for _, body, visible, count in rows])
        with self.db.tx() as conn:
            conn.executemany("DELETE FROM queue WHERE id=?", [(row[0],) for row in rows])

    def _db(self, queue: str) -> Database:
        return self.apart.get(queue, self.db)

    def own_database(self, queue: str) -> bool:
        """Whether ``queue`` is kept apart from the other stores' transactions."""
        return queue in self.apart

    def send(self, queue: str, body: JSON, *, delay_seconds: int = 0) -> None:
        self._db(queue).execute(
            "INSERT INTO queue (queue, body, visible_at) VALUES (?,?,?)",
            (queue, _dumps(body), self.time() + delay_seconds),
        )

    def send_batch(self, queue: str, bodies: list[JSON]) -> None:
        now = self.time()
        with self._db(queue).tx() as conn:
            conn.executemany(
                "INSERT INTO queue (queue, body, visible_at) VALUES (?,?,?)",
                [(queue, _dumps(b), now) for b in bodies],
            )

    def position(self, queue: str) -> int:
        """Where ``queue`` is now: ``receive(up_to=...)`` takes nothing sent after it."""
        rows = self._db(queue).query("SELECT MAX(id) FROM queue WHERE queue=?", (queue,))
        return int(rows[0][0] or 0)

    def receive(
        self, queue: str, *, max_messages: int = 10, visibility_seconds: int = 30, up_to: int | None = None
    ) -> list[QueueMessage]:
        now = self.time()
        token = uuid.uuid4().hex  # one per receive; a receipt is "<row id>:<token>", unique per delivery
        horizon = (1 << 62) if up_to is None else up_to  # ids are AUTOINCREMENT: later sends have larger ones
        with self._db(queue).tx() as conn:
            # one statement hides the batch and returns it (RETURNING's order is unspecified: sorted here)
            rows = conn.execute(
                "UPDATE queue SET visible_at=?, receive_count=receive_count+1, receipt=id || ':' || ? "
                "WHERE id IN (SELECT id FROM queue WHERE queue=? AND visible_at <= ? AND id <= ? ORDER BY id LIMIT ?) "
                "RETURNING id, body, receive_count, receipt",
                (now + visibility_seconds, token, queue, now, horizon, max_messages),
            ).fetchall()
        rows.sort()
        return [QueueMessage(receipt=receipt, body=_loads(body), receive_count=count)
                for _, body, count, receipt in rows]

    # the receipt must match: a message redelivered to another worker is theirs now
    _ACK = "DELETE FROM queue WHERE id=? AND queue=? AND receipt=?"

    def ack(self, queue: str, receipt: str) -> None:
        self._db(queue).execute(self._ACK, (receipt.split(":", 1)[0], queue, receipt))

    def ack_batch(self, queue: str, receipts: list[str]) -> None:
        """``ack`` each, in one commit."""
        with self._db(queue).tx() as conn:
            conn.executemany(self._ACK, [(receipt.split(":", 1)[0], queue, receipt) for receipt in receipts])

    def depth(self, queue: str) -> int:
        return int(self._db(queue).query("SELECT COUNT(*) FROM queue WHERE queue=?", (queue,))[0][0])


# --------------------------------------------------------------------------- secrets
class SqliteSecrets:
    """Secrets in the local database; the data folder is created readable by its owner only."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, name: str) -> str | None:
        rows = self.db.query("SELECT value FROM secrets WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def put(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO secrets VALUES (?,?)", (name, value))

    def delete(self, name: str) -> None:
        self.db.execute("DELETE FROM secrets WHERE name=?", (name,))

    def names(self, prefix: str) -> list[str]:
        rows = self.db.query(
            "SELECT name FROM secrets WHERE name >= ? AND name < ? ORDER BY name", (prefix, prefix + "\uffff")
        )
        return [r[0] for r in rows]
