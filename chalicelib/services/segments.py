"""Segments: named rules whose membership updates as events arrive.

After each event is applied, the profile's segments are evaluated again; entering or
leaving one is itself an event ("Segment Entered" / "Segment Exited", in the event log
under source ``segments``) and a journey trigger. Rules that change with time alone
("no order for 90 days") are caught by a sweep over all profiles (the scheduler runs it
daily; ``omnicast segments sweep`` on demand).

Preview gives the count and a sample. On the embedded default, rules made of traits,
computed order traits and consent are compiled to one SQL query over the profiles table;
anything else (event rules, scores) is evaluated profile by profile.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.clock import Clock, iso
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import BlobStore, EventStore, Profile, ProfileStore, StoredEvent
from chalicelib.services.rules import (
    AllRule,
    AnyRule,
    ComputedRule,
    ConsentRule,
    Facts,
    NotRule,
    TraitRule,
    evaluate,
    needs_events,
    parse_rule,
)

log = logging.getLogger("omnicast.segments")
MEMBERSHIP = "_segments"


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-]+$")
    description: str = ""
    rule: Any

    @classmethod
    def parse(cls, data: Any) -> Segment:
        if not isinstance(data, dict):
            raise BadRequest("a segment must be an object with name and rule", field="body")
        rule = parse_rule(data.get("rule"), "rule")
        try:
            return cls.model_validate({**data, "rule": rule})
        except Exception as exc:
            raise BadRequest(f"segment: {exc}", field="name") from exc

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "rule": self.rule.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        }


BUILT_IN_SEGMENTS = [
    Segment.parse(
        {
            "name": "subscribers",
            "description": "Reachable by marketing e-mail",
            "rule": {"consent": "email", "purpose": "marketing"},
        }
    ),
    Segment.parse(
        {
            "name": "customers",
            "description": "Ordered at least once",
            "rule": {"computed": "orders_count", "op": ">=", "value": 1},
        }
    ),
    Segment.parse(
        {
            "name": "lapsed_customers",
            "description": "Customers with no order for 90 days",
            "rule": {
                "all": [
                    {"computed": "orders_count", "op": ">=", "value": 1},
                    {"computed": "days_since_last_order", "op": ">=", "value": 90},
                ]
            },
        }
    ),
    Segment.parse(
        {
            "name": "vip",
            "description": "Spent 500 or more, or ordered 5 times",
            "rule": {
                "any": [
                    {"computed": "total_spent", "op": ">=", "value": 500},
                    {"computed": "orders_count", "op": ">=", "value": 5},
                ]
            },
        }
    ),
    Segment.parse(
        {
            "name": "churn_risk",
            "description": "The churn model gives 70% or more; starts the churn_save journey",
            "rule": {"score": "churn.probability", "op": ">=", "value": 0.7},
        }
    ),
    Segment.parse(
        {
            "name": "predicted_vip",
            "description": "The CLV model expects 400 or more over the next year",
            "rule": {"score": "clv.expected_value", "op": ">=", "value": 400},
        }
    ),
]


@dataclass
class Preview:
    segment: str
    count: int
    sample: list[str]
    method: str  # "sql" or "scan"
    seconds: float


class SegmentService:
    def __init__(
        self,
        profiles: ProfileStore,
        events: EventStore,
        blobs: BlobStore,
        clock: Clock,
        on_change: Callable[[Profile, str, bool], Any] | None = None,
        scores: Callable[[str], dict[str, float]] | None = None,
    ) -> None:
        self.profiles = profiles
        self.events = events
        self.blobs = blobs
        self.clock = clock
        self.on_change = on_change
        self.scores = scores
        self.segments: dict[str, Segment] = {s.name: s for s in BUILT_IN_SEGMENTS}
        for key in blobs.list("config/segments/"):
            raw = blobs.get(key)
            if raw:
                seg = Segment.parse(json.loads(raw))
                self.segments[seg.name] = seg

    # ------------------------------------------------------------------ definitions
    def save(self, data: Any) -> Segment:
        segment = Segment.parse(data)
        self.blobs.put(
            f"config/segments/{segment.name}.json", json.dumps(segment.dump()).encode(), content_type="application/json"
        )
        self.segments[segment.name] = segment
        return segment

    def delete(self, name: str) -> None:
        if name not in self.segments:
            raise NotFound(f"no segment {name!r}", field="name")
        self.blobs.delete(f"config/segments/{name}.json")
        del self.segments[name]

    def get(self, name: str) -> Segment:
        if name not in self.segments:
            raise NotFound(f"no segment {name!r}; known: {', '.join(sorted(self.segments))}", field="name")
        return self.segments[name]

    # ------------------------------------------------------------------ membership
    def facts(self, profile: Profile, *rules: Any, now: datetime | None = None) -> Facts:
        """What ``rules`` are evaluated against; the events (up to 1,000) are read only if one
        of them needs events, once for all of them."""
        events = (self.events.for_profile(profile.profile_id, limit=1000)
                  if any(needs_events(rule) for rule in rules) else [])
        score = self.scores  # read on the first score rule
        return Facts(profile, events, (lambda: score(profile.profile_id)) if score else None, now or self.clock.now())

    def members_of(self, profile: Profile) -> set[str]:
        facts = self.facts(profile, *(seg.rule for seg in self.segments.values()))
        return {name for name, seg in self.segments.items() if evaluate(seg.rule, facts)}

    def update(self, profile_id: str, profile: Profile | None = None) -> tuple[set[str], set[str]]:
        """Re-evaluate one profile; save the new membership; emit enter / exit events.

        ``profile``: the profile as its caller has just saved it, taken as it is if the store
        can tell it is unchanged since (else it is read)."""
        unchanged = getattr(self.profiles, "unchanged", None)
        for _ in range(10):
            if profile is None or unchanged is None or not unchanged(profile):
                profile = self.profiles.get(profile_id)
            if profile is None:
                return set(), set()
            before = set(profile.traits.get(MEMBERSHIP) or [])
            after = self.members_of(profile)
            if before == after:
                return set(), set()
            expected = profile.version
            profile.traits[MEMBERSHIP] = sorted(after)
            if self.profiles.save(profile, expected):
                break
            profile = None
        else:
            raise RuntimeError(f"profile {profile_id} kept changing")
        entered, exited = after - before, before - after
        now = self.clock.now()
        for name, joined in [(n, True) for n in sorted(entered)] + [(n, False) for n in sorted(exited)]:
            event_name = "Segment Entered" if joined else "Segment Exited"
            digest = hashlib.sha256(f"{profile_id}|{name}|{joined}|{iso(now)}".encode()).hexdigest()[:24]
            self.events.append(
                StoredEvent(
                    message_id=f"segment-{digest}",
                    type="track",
                    profile_id=profile_id,
                    received_at=now,
                    timestamp=now,
                    event=event_name,
                    source="segments",
                    payload={"type": "track", "event": event_name, "properties": {"segment": name}},
                    processed=True,
                )
            )
            if self.on_change:
                self.on_change(profile, name, joined)
        return entered, exited

    def sweep(self, batch: int = 1000) -> int:
        """Re-evaluate every profile (time-based rules); returns how many changed."""
        changed, cursor = 0, None
        while True:
            page, cursor = self.profiles.scan(cursor, batch)
            for profile in page:
                entered, exited = self.update(profile.profile_id)
                changed += bool(entered or exited)
            if cursor is None:
                return changed

    def members(self, name: str) -> list[str]:
        """Every member's profile id now (for broadcasts)."""
        return self.preview(name, sample=10**9).sample

    # ------------------------------------------------------------------ preview
    def preview(self, name_or_rule: str | Any, sample: int = 10) -> Preview:
        import time

        rule = self.get(name_or_rule).rule if isinstance(name_or_rule, str) else parse_rule(name_or_rule)
        label = name_or_rule if isinstance(name_or_rule, str) else "(rule)"
        start = time.perf_counter()
        db: Any = getattr(self.profiles, "db", None)
        sql = to_sql(rule, self.clock.now()) if db is not None else None
        if sql is not None:
            where, params = sql
            # the clause is built from fixed fragments only; every value and trait path is a parameter
            count = int(db.query(f"SELECT COUNT(*) FROM profiles WHERE {where}", tuple(params))[0][0])  # noqa: S608
            rows = db.query(f"SELECT profile_id FROM profiles WHERE {where} LIMIT ?", (*params, sample))  # noqa: S608
            return Preview(label, count, [r[0] for r in rows], "sql", time.perf_counter() - start)
        count, cursor = 0, None
        ids: list[str] = []
        while True:
            page, cursor = self.profiles.scan(cursor, 2000)
            for profile in page:
                if evaluate(rule, self.facts(profile, rule)):
                    count += 1
                    if len(ids) < sample:
                        ids.append(profile.profile_id)
            if cursor is None:
                break
        return Preview(label, count, ids, "scan", time.perf_counter() - start)


# --------------------------------------------------------------------------- rules as SQL
_OPS = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def _trait(path: str) -> tuple[str, list[Any]]:
    return "json_extract(traits, ?)", ["$." + ".".join(f'"{p}"' for p in path.split("."))]


def _compare(expr: str, params: list[Any], op: str, value: Any) -> tuple[str, list[Any]] | None:
    if op == "exists":
        return (
            (f"({expr} IS NOT NULL AND {expr} != '')", params * 2)
            if value in (None, True)
            else (f"({expr} IS NULL OR {expr} = '')", params * 2)
        )
    if op in _OPS and isinstance(value, int | float | str) and not isinstance(value, bool):
        return f"{expr} {_OPS[op]} ?", [*params, value]
    if op in ("in", "not_in") and isinstance(value, list) and value:
        marks = ",".join("?" * len(value))
        return f"{expr} {'IN' if op == 'in' else 'NOT IN'} ({marks})", [*params, *value]
    return None


def to_sql(rule: Any, now: datetime) -> tuple[str, list[Any]] | None:
    """A WHERE clause over ``profiles`` for rules SQL can answer, else None."""
    match rule:
        case AllRule() | AnyRule():
            parts = [to_sql(r, now) for r in (rule.all if isinstance(rule, AllRule) else rule.any)]
            if any(p is None for p in parts):
                return None
            joiner = " AND " if isinstance(rule, AllRule) else " OR "
            return "(" + joiner.join(p[0] for p in parts if p) + ")", [x for p in parts if p for x in p[1]]
        case NotRule():
            inner = to_sql(rule.not_, now)
            return None if inner is None else (f"NOT COALESCE({inner[0]}, 0)", inner[1])
        case TraitRule():
            expr, params = _trait(rule.trait)
            return _compare(expr, params, rule.op, rule.value)
        case ComputedRule():
            if rule.computed in ("orders_count", "total_spent"):
                expr, params = _trait(rule.computed)
                return _compare(f"COALESCE({expr}, 0)", params, rule.op, rule.value)
            if rule.computed == "days_since_last_order" and rule.op in _OPS and isinstance(rule.value, int | float):
                # days since X >= v  <=>  X <= now - v days (ISO text compares in time order)
                cutoff = iso(now - timedelta(days=float(rule.value)))
                flipped = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "!=": "!="}[rule.op]
                expr, params = _trait("last_order_at")
                # julianday: timestamps written in different ISO forms still compare as times
                return f"julianday({expr}) {flipped} julianday(?)", [*params, cutoff]
            return None
        case ConsentRule():
            address = {"email": "email", "sms": "phone", "push": "push_token", "messenger": "chat_id"}[rule.consent]
            has, p1 = _trait(address)
            state, p2 = _trait(f"consent.{rule.consent}")
            blocked = ["suppressed"] + (["unsubscribed", "opted_out"] if rule.purpose == "marketing" else [])
            clause = (
                f"({has} IS NOT NULL AND {has} != '' AND COALESCE({state}, '') NOT IN ({','.join('?' * len(blocked))})"
            )
            params = [*p1, *p1, *p2, *blocked]
            if rule.consent == "sms" and rule.purpose == "marketing":
                clause += f" AND {state} = 'subscribed'"
                params += p2
            return clause + ")", params
    return None
