"""Erasure: a customer's right to be forgotten (GDPR art. 17).

``erase(profile_id)`` works on the customer, not only on one record: the surviving
profile (``merged_into`` is followed) and every profile merged into it. For each:

- every identifier index entry that points at it is unlinked (the e-mail, phones, user and
  platform ids, anonymous ids, found on the profile and in its events), so a later event
  with the same e-mail starts with an empty profile;
- every trait is removed except the record of the erasure itself (``_erased``: when, and
  counts), the merge pointers (profile ids only) and segment membership (so the
  segment exit is recorded); consent becomes ``erased`` on every channel, so nothing can
  be sent;
- its events keep only what aggregates need (event name, time, order and product ids,
  amounts): traits, context, user and anonymous ids and every other property go;
- its journeys are exited.

The next audience publication leaves the customer out, and its ``remove`` delta lists
the rows the previous publication had for them. Erasing twice changes nothing the second
time. The erasure is written to the event log (source ``erasure``, no personal data).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chalicelib.clock import Clock, iso
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import EventStore, JourneyStore, Profile, ProfileStore, StoredEvent
from chalicelib.services.identity import identifiers, normalise_email, normalise_phone

log = logging.getLogger("omnicast.erasure")
CHANNELS = ("email", "sms", "push", "messenger", "ads")
KEPT_TRAITS = ("_erased", "_segments")
# what an erased customer's events keep: enough for revenue and product KPIs, nothing personal
KEPT_PROPERTIES = ("order_id", "checkout_id", "cart_id", "product_id", "variant", "sku", "category", "quantity",
                   "price", "total", "revenue", "subtotal", "currency", "discount", "shipping", "tax", "journey",
                   "step", "channel", "segment")
KEPT_PRODUCT_FIELDS = ("product_id", "variant", "sku", "category", "quantity", "price")


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    props = payload.get("properties") if isinstance(payload.get("properties"), dict) else {}
    assert isinstance(props, dict)
    kept: dict[str, Any] = {k: props[k] for k in KEPT_PROPERTIES if k in props}
    if isinstance(props.get("products"), list):
        kept["products"] = [
            {k: p[k] for k in KEPT_PRODUCT_FIELDS if k in p} for p in props["products"] if isinstance(p, dict)
        ]
    out: dict[str, Any] = {k: payload[k] for k in ("type", "event", "timestamp") if k in payload}
    return {**out, "properties": kept, "erased": True}


# --------------------------------------------------------------------------- adapter capabilities
# The ports have no "unlink" or "rewrite event" yet; until they do (see the report's wiring
# notes), these reach the two adapter sets the same way segments' SQL preview reaches SQLite.
def unlink_identifier(profiles: ProfileStore, kind: str, value: str, profile_id: str) -> bool:
    """Remove the index entry ``kind:value`` if it points at ``profile_id``; True if removed."""
    unlink = getattr(profiles, "unlink", None)
    if callable(unlink):
        return bool(unlink(kind, value, profile_id))
    db: Any = getattr(profiles, "db", None)
    if db is not None:
        return bool(
            db.execute("DELETE FROM identities WHERE kind=? AND value=? AND profile_id=?", (kind, value, profile_id))
        )
    ddb: Any = getattr(profiles, "ddb", None)
    if ddb is not None:
        try:
            ddb.delete_item(
                TableName=profiles.table,  # type: ignore[attr-defined]
                Key={"pk": {"S": f"ID#{kind}#{value}"}, "sk": {"S": "I"}},
                ConditionExpression="profile_id = :p",
                ExpressionAttributeValues={":p": {"S": profile_id}},
            )
            return True
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
    raise NotImplementedError(f"{type(profiles).__name__} cannot unlink identifiers")


def rewrite_payload(events: EventStore, event: StoredEvent, payload: dict[str, Any]) -> None:
    """Replace a stored event's payload (erasure only: the event log is otherwise immutable)."""
    rewrite = getattr(events, "rewrite_payload", None)
    if callable(rewrite):
        rewrite(event.source, event.message_id, payload)
        return
    import json

    db: Any = getattr(events, "db", None)
    if db is not None:
        db.execute("UPDATE events SET payload=? WHERE source=? AND message_id=?",
                   (json.dumps(payload), event.source, event.message_id))
        return
    ddb: Any = getattr(events, "ddb", None)
    if ddb is not None:
        ddb.update_item(
            TableName=events.table,  # type: ignore[attr-defined]
            Key={"pk": {"S": f"EVT#{event.source}#{event.message_id}"}, "sk": {"S": "E"}},
            UpdateExpression="SET payload = :p",
            ExpressionAttributeValues={":p": {"S": json.dumps(payload, separators=(",", ":"))}},
        )
        return
    raise NotImplementedError(f"{type(events).__name__} cannot rewrite events")


# --------------------------------------------------------------------------- the service
class ErasureService:
    def __init__(
        self,
        profiles: ProfileStore,
        events: EventStore,
        journeys: JourneyStore,
        clock: Clock,
        after_erase: Callable[[str], Any] | None = None,
    ) -> None:
        self.profiles = profiles
        self.events = events
        self.journeys = journeys
        self.clock = clock
        self.after_erase = after_erase  # segments: record the exits of the emptied profile

    def _family(self, profile_id: str) -> list[Profile]:
        """The surviving profile first, then every profile merged into it (recursively)."""
        start = self.profiles.get(profile_id)
        if start is None:
            raise NotFound(f"no profile {profile_id!r}", field="profile_id")
        for _ in range(10):  # follow merges to the surviving profile
            target = (start.traits.get("_identity") or {}).get("merged_into")
            nxt = self.profiles.get(target) if target else None
            if nxt is None:
                break
            start = nxt
        family, queue, seen = [], [start.profile_id], set()
        while queue:
            pid = queue.pop(0)
            if pid in seen:
                continue
            seen.add(pid)
            profile = self.profiles.get(pid)
            if profile is None:
                continue
            family.append(profile)
            queue.extend((profile.traits.get("_identity") or {}).get("merged_from") or [])
        return family

    def erase(self, profile_id: str) -> dict[str, Any]:
        """Forget a customer. Idempotent: a second call reports ``already_erased``."""
        if not isinstance(profile_id, str) or not profile_id.strip() or len(profile_id) > 200:
            raise BadRequest("profile_id is required", field="profile_id")
        family = self._family(profile_id)
        totals = {"identifiers_unlinked": 0, "events_redacted": 0, "journeys_exited": 0}
        already = True
        for profile in family:
            counts = self._erase_one(profile)
            was_erased = counts.pop("already")
            already = already and was_erased
            for key, n in counts.items():
                totals[key] += n
        if not already:
            now = self.clock.now()
            survivor = family[0].profile_id
            self.events.append(StoredEvent(
                message_id=f"erasure-{survivor}-{iso(now)}",
                type="track",
                profile_id=survivor,
                received_at=now,
                timestamp=now,
                event="Profile Erased",
                source="erasure",
                payload={"type": "track", "event": "Profile Erased",
                         "properties": {"profiles": [p.profile_id for p in family], **totals}},
                processed=True,
            ))
            log.info("erased %d profile(s): %s", len(family), totals)
        return {
            "profile_id": family[0].profile_id,
            "erased": True,
            "already_erased": already,
            "profiles": [p.profile_id for p in family],
            **totals,
        }

    def _erase_one(self, profile: Profile) -> dict[str, Any]:
        pid = profile.profile_id
        events = self.events.for_profile(pid, limit=1_000_000)
        found: set[tuple[str, str]] = set(profile.identifiers.items())
        for event in events:
            found.update(identifiers(event.payload))
        email = normalise_email(profile.traits.get("email"))
        phone = normalise_phone(profile.traits.get("phone")) if profile.traits.get("phone") else None
        found.update((k, v) for k, v in (("email", email), ("phone", phone)) if v)
        unlinked = sum(
            1 for kind, value in sorted(found)
            if self.profiles.resolve(kind, value) == pid and unlink_identifier(self.profiles, kind, value, pid)
        )
        redacted = 0
        for event in events:
            kept = _redacted(event.payload)
            # events that hold nothing beyond what is kept (segment exits, earlier redactions) stay as they are
            if event.source != "erasure" and {**event.payload, "erased": True} != kept:
                rewrite_payload(self.events, event, kept)
                redacted += 1
        exited = 0
        for state in self.journeys.for_profile(pid):
            if state.status not in ("completed", "exited"):
                state.status = "exited"
                state.data = {"exit_reason": "customer erased"}
                self.journeys.put(state)
                exited += 1
        changed = False
        for _ in range(10):
            current = self.profiles.get(pid)
            if current is None:
                break
            if _is_erased(current):
                break
            expected = current.version
            now = self.clock.now()
            identity = {k: v for k, v in (current.traits.get("_identity") or {}).items()
                        if k in ("merged_into", "merged_from")}
            current.traits = {
                **{k: current.traits[k] for k in KEPT_TRAITS if k in current.traits},
                "_erased": {"at": iso(now), "identifiers_unlinked": unlinked, "events_redacted": redacted},
                "consent": dict.fromkeys(CHANNELS, "erased"),
                **({"_identity": identity} if identity else {}),
            }
            current.identifiers = {}
            current.updated_at = now
            if self.profiles.save(current, expected):
                changed = True
                break
        else:
            raise RuntimeError(f"profile {pid} kept changing")
        if changed and self.after_erase is not None:
            self.after_erase(pid)
        return {"already": not (changed or unlinked or redacted or exited), "identifiers_unlinked": unlinked,
                "events_redacted": redacted, "journeys_exited": exited}


def _is_erased(profile: Profile) -> bool:
    """Erased and nothing personal came back since (a new event would bring identifiers)."""
    personal = [k for k in profile.traits if not k.startswith("_") and k != "consent"]
    return bool(profile.traits.get("_erased")) and not profile.identifiers and not personal
