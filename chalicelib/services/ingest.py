"""Ingestion: the HTTP side validates and enqueues; the worker side applies events.

HTTP (fast, no profile work): authenticate → size check → parse → validate → enqueue.
Worker (idempotent, so a redelivered queue message changes nothing): append to the
event log (deduplicated on source + messageId) → resolve the profile → apply traits →
mark processed → notify plugins → journeys.
"""

from __future__ import annotations

import base64
import binascii
import logging
import zlib
from typing import TYPE_CHECKING, Any

from chalicelib.clock import Clock, iso, parse_iso
from chalicelib.errors import BadRequest, PayloadTooLarge
from chalicelib.events import parse_call, parse_json, to_payload
from chalicelib.plugin_host import PluginHost
from chalicelib.ports import EventStore, Profile, ProfileStore, Queue, StoredEvent
from chalicelib.services.credentials import Credentials
from chalicelib.services.identity import IdentityResolver, identifiers

if TYPE_CHECKING:
    from chalicelib.services.journeys import JourneyEngine

log = logging.getLogger("omnicast.ingest")
INGEST_QUEUE = "ingest"


def write_key_from(headers: dict[str, str], body: Any) -> str | None:
    """Segment's scheme: HTTP Basic with the write key as username (or writeKey in the body)."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.split(":", 1)[0] or None
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        return body["writeKey"]
    return None


def gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing more than ``limit`` bytes out (no zip bombs)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}", field="body") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes", field="body")
    return out


class IngestService:
    """The HTTP side."""

    def __init__(self, queue: Queue, credentials: Credentials, clock: Clock, max_body_bytes: int) -> None:
        self.queue = queue
        self.credentials = credentials
        self.clock = clock
        self.max_body_bytes = max_body_bytes

    def accept(self, kind: str, raw: bytes | None, headers: dict[str, str]) -> int:
        """Validate one Segment API call and enqueue its events. Returns how many."""
        raw = raw or b""
        encoding = next((v for k, v in headers.items() if k.lower() == "content-encoding"), "").strip().lower()
        if encoding == "gzip":  # RudderStack's SDKs gzip by default
            raw = gunzip(raw, self.max_body_bytes)
        elif encoding not in ("", "identity"):
            raise BadRequest(f"unsupported Content-Encoding {encoding!r}; use gzip or none", field="Content-Encoding")
        if len(raw) > self.max_body_bytes:
            raise PayloadTooLarge(f"body is {len(raw)} bytes; the limit is {self.max_body_bytes}", field="body")
        if not raw.strip():
            raise BadRequest("body is empty; send a JSON object", field="body")
        body = parse_json(raw)
        key_info = self.credentials.check_write_key(write_key_from(headers, body))
        received_at = self.clock.now()
        parsed = parse_call(kind, body, received_at)
        messages = [
            {"source": "segment", "write_key": key_info.name, "received_at": iso(received_at), "event": to_payload(c)}
            for c in parsed.calls
        ]
        if messages:
            self.queue.send_batch(INGEST_QUEUE, messages)
        if parsed.rejected:
            # the valid items are queued already; name every rejected one
            first = parsed.rejected[0]
            details = "; ".join(e.message for e in parsed.rejected[:10])
            raise BadRequest(
                f"{len(parsed.rejected)} of {len(messages) + len(parsed.rejected)} batch items rejected "
                f"({len(messages)} accepted): {details}",
                field=first.field,
            )
        return len(messages)


class EventProcessor:
    """The worker side."""

    def __init__(
        self,
        events: EventStore,
        profiles: ProfileStore,
        host: PluginHost,
        journeys: JourneyEngine,
        clock: Clock,
    ) -> None:
        self.events = events
        self.profiles = profiles
        self.host = host
        self.journeys = journeys
        self.clock = clock
        self.identity = IdentityResolver(profiles, clock)
        self.after_event: Any = None  # segments: re-evaluated after each applied event

    def handle(self, message: dict[str, Any]) -> bool:
        """Apply one queued event. Returns False if it was a duplicate already applied."""
        payload = message["event"]
        source = message["source"]
        stored = StoredEvent(
            message_id=payload["messageId"],
            type=payload["type"],
            profile_id=None,
            received_at=parse_iso(message["received_at"], remember=True),  # stored just below
            timestamp=parse_iso(payload["timestamp"], remember=True),
            event=payload.get("event"),
            source=source,
            payload=payload,
        )
        if not self.events.append(stored):
            existing = self.events.get(source, stored.message_id)
            if existing is not None and existing.processed:
                return False
            # stored but not applied: the previous worker died mid-way; finish its work
        profile = self._apply(stored)
        self.events.mark_processed(source, stored.message_id, profile.profile_id)
        self.host.event_received(stored, profile)
        if message.get("trigger_journeys", True):  # imports and replays never start journeys
            self.journeys.on_event(stored, profile)
            if self.after_event is not None:
                self.after_event(profile)
        return True

    def _apply(self, event: StoredEvent) -> Profile:
        ids = identifiers(event.payload)
        read: dict[str, Profile | None] = {}
        profile_id = self.identity.resolve(ids, read)
        for _ in range(10):  # optimistic concurrency: re-read and retry on a lost race
            # the first try takes the profile as identity resolution just read it (one read less)
            profile = (read.pop(profile_id, None) or self.profiles.get(profile_id)
                       or Profile(profile_id=profile_id, created_at=event.timestamp))
            expected = profile.version
            self._merge(profile, event, ids)
            if self.profiles.save(profile, expected):
                return profile
        raise RuntimeError(f"profile {profile_id} kept changing under us")

    def _count_order(self, profile: Profile, event: StoredEvent) -> None:
        """Orders count once per order id, whichever source reports them (Segment, Shopify...)."""
        props = event.payload.get("properties") or {}
        order_id = str(props.get("order_id") or event.message_id)
        seen = profile.traits.setdefault("_orders", [])
        if order_id in seen:
            return
        seen.append(order_id)
        del seen[:-200]
        profile.traits["orders_count"] = int(profile.traits.get("orders_count", 0)) + 1
        total = props.get("total", props.get("revenue", 0))
        if isinstance(total, int | float) and not isinstance(total, bool):
            profile.traits["total_spent"] = round(float(profile.traits.get("total_spent", 0)) + total, 2)
        if not profile.traits.get("last_order_at") or iso(event.timestamp) > profile.traits["last_order_at"]:
            profile.traits["last_order_at"] = iso(event.timestamp)

    def _merge(self, profile: Profile, event: StoredEvent, ids: list[tuple[str, str]]) -> None:
        payload = event.payload
        if event.type == "identify":
            for name, value in (payload.get("traits") or {}).items():
                if not name.startswith("_"):
                    profile.traits[name] = value
            normalised = dict(ids)
            for name in ("email", "phone"):
                if name in (payload.get("traits") or {}):
                    profile.traits[name] = normalised.get(name, profile.traits[name])
        tz = (payload.get("context") or {}).get("timezone")
        if isinstance(tz, str) and tz and "timezone" not in profile.traits:
            profile.traits["timezone"] = tz
        for kind, value in ids:
            profile.identifiers.setdefault(kind, value)
        for kind in ("email", "phone"):  # reachable addresses from any source (a Shopify order's e-mail)
            if kind in dict(ids) and not profile.traits.get(kind):
                profile.traits[kind] = dict(ids)[kind]
        if event.type == "track" and event.event == "Order Completed":
            self._count_order(profile, event)
        last = profile.traits.get("last_seen_at")
        if last is None or iso(event.timestamp) > last:
            profile.traits["last_seen_at"] = iso(event.timestamp)
        profile.updated_at = self.clock.now()
