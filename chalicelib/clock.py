"""The injected clock. Every service asks a Clock for the time; nothing calls datetime.now()."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time, for production."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to: tests and simulations run months in seconds."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            if when.astimezone(UTC) < self._now:
                raise ValueError("time does not run backwards")
            self._now = when.astimezone(UTC)


class HeldClock:
    """The channels' clock: another clock's time, or the time it is held at.

    A wave of sends handed to the channels in the background (``Runtime.drain`` with
    ``leave_sends_in_flight``) is delivered while the workers' clock moves on to the next
    hour; the channels then read the time the wave was prepared at (a message's Date), as
    they would have had they delivered it at once."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.held: datetime | None = None

    def now(self) -> datetime:
        held = self.held
        return held if held is not None else self.clock.now()


_iso_seen: dict[datetime, str] = {}  # UTC instants formatted or read lately, and their text


def iso(dt: datetime) -> str:
    """A sortable UTC timestamp with microseconds, used as a key component in every store.

    The same instants come again and again (a clock's now and the timers set from it, a
    timestamp read and written back), and formatting one costs more than a lookup: the text of
    the latest UTC instants is kept (by value: UTC datetimes that are equal are the same
    instant; not other zones', where a repeated hour's two instants compare equal)."""
    if dt.tzinfo is UTC:
        text = _iso_seen.get(dt)
        if text is None:
            # isoformat is several times faster than strftime; same text: 2026-03-02T10:00:00.000000Z
            text = dt.isoformat(timespec="microseconds")[:-6] + "Z"
            _keep(dt, text)
        return text
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _keep(dt: datetime, text: str) -> None:
    if len(_iso_seen) >= 1024:
        _iso_seen.clear()
    _iso_seen[dt] = text


def _written_by_iso(value: str) -> bool:
    """The shape ``iso()`` writes (2026-03-02T10:00:00.000000Z): parsed, it formats back to itself."""
    return (len(value) == 27 and value[26] == "Z" and value[10] == "T" and value[4] == value[7] == "-"
            and value[13] == value[16] == ":" and value[19] == ".")


def parse_iso(value: str, *, remember: bool = False) -> datetime:
    """The instant a stored timestamp names, in UTC. ``remember``: one that ``iso()`` wrote is
    kept with its text, so writing it back costs nothing (a profile read to be saved again, a
    queued event about to be stored); not asked for rows that are only read."""
    if remember and _written_by_iso(value):
        dt = datetime.fromisoformat(value)  # "Z": UTC itself
        _keep(dt, value)
        return dt
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
