"""Stored timestamps: iso() writes one shape, parse_iso() reads any ISO 8601 instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from chalicelib.clock import iso, parse_iso


def test_a_timestamp_iso_wrote_is_remembered_when_read_back():
    written = iso(datetime(2026, 3, 2, 10, 0, 5, 123, tzinfo=UTC))
    assert written == "2026-03-02T10:00:05.000123Z"
    text = "".join(["2026-03-02T10:00:05.", "000123Z"])  # the same text, another string (as a query returns it)
    dt = parse_iso(text, remember=True)
    assert dt == datetime(2026, 3, 2, 10, 0, 5, 123, tzinfo=UTC) and dt.tzinfo is UTC
    assert iso(dt) is text  # not formatted again
    other = "".join(["2026-03-02T10:00:06.", "000123Z"])
    assert iso(parse_iso(other)) == other and iso(parse_iso(other)) is not other  # read only: not kept


def test_other_iso_forms_are_read_as_instants_and_written_in_the_one_shape():
    cases = {
        "2026-03-02T10:00:05Z": "2026-03-02T10:00:05.000000Z",
        "2026-03-02T11:00:05.5+01:00": "2026-03-02T10:00:05.500000Z",
        "2026-03-02T10:00:05,123456Z": "2026-03-02T10:00:05.123456Z",  # a comma: same length, other shape
        "2026-W10-1T10:00:05.123456Z": "2026-03-02T10:00:05.123456Z",  # a week date of the same length
        "2026-03-02 10:00:05.123456Z": "2026-03-02T10:00:05.123456Z",
    }
    for text, written in cases.items():
        dt = parse_iso(text, remember=True)
        assert dt.tzinfo is UTC, text
        assert iso(dt) == written, text
    assert iso(datetime(2026, 3, 2, 11, 0, 5, tzinfo=timezone(timedelta(hours=1)))) == "2026-03-02T10:00:05.000000Z"
    assert iso(datetime(2026, 7, 2, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))) == "2026-07-02T10:00:00.000000Z"


def test_a_repeated_local_hour_gives_two_instants():
    """Equal local times of a zone can be two instants (the hour the clocks go back): each is
    written as its own instant, whatever was formatted before."""
    berlin = ZoneInfo("Europe/Berlin")
    first, second = (datetime(2026, 10, 25, 2, 30, tzinfo=berlin, fold=f) for f in (0, 1))
    assert first == second  # Python compares them by their local time
    assert (iso(first), iso(second)) == ("2026-10-25T00:30:00.000000Z", "2026-10-25T01:30:00.000000Z")
    assert iso(second.astimezone(UTC)) == "2026-10-25T01:30:00.000000Z"
    assert iso(first.astimezone(UTC)) == "2026-10-25T00:30:00.000000Z"
