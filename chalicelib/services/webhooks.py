"""Shop platform webhooks: verify on the HTTP path, map in the worker.

HTTP (``POST /webhooks/{source}``): the source plugin verifies the signature over the
raw bytes (before anything parses them) → identifies the delivery → the raw request is
queued. Nothing else: the shop gets its 200 fast and never retries for our slowness.

Worker: the raw delivery is kept in the blob store for audit and replay and recorded
in the event log under ``raw:<source>`` (deduplicated on the platform's delivery id,
and on its event id + topic where the platform has one) → the plugin maps it to
canonical events (each then goes through the same path as a Segment call) and catalog
changes.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from chalicelib.clock import Clock, iso, parse_iso
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from chalicelib.events import parse_call, to_payload
from chalicelib.plugin_api import EventSource, SignatureError, WebhookRequest
from chalicelib.plugin_host import PluginHost, plugin_settings
from chalicelib.ports import BlobStore, EventStore, Queue, StoredEvent
from chalicelib.services.credentials import Credentials
from chalicelib.services.ingest import INGEST_QUEUE

if TYPE_CHECKING:
    from chalicelib.services.catalog import CatalogService
    from chalicelib.services.ingest import EventProcessor

log = logging.getLogger("omnicast.webhooks")
INLINE_BODY_LIMIT = 200_000  # SQS messages stop at 256 KiB; larger bodies travel through the blob store
RAW_INLINE_LIMIT = 100_000  # DynamoDB items stop at 400 KB; larger raw bodies go to the blob store
DROPPED_HEADERS = {"authorization", "cookie", "x-forwarded-for", "x-real-ip"}


class WebhookSources:
    """The configured source plugin instances, created once."""

    def __init__(self, host: PluginHost, settings: Settings) -> None:
        self.host = host
        self.settings = settings
        self._instances: dict[str, EventSource] = {}

    def get(self, name: str) -> EventSource:
        if name not in self._instances:
            cls = self.host.registry.sources.get(name)
            if cls is None:
                known = ", ".join(sorted(self.host.registry.sources)) or "none installed"
                raise NotFound(f"no event source {name!r} (available: {known})", field="source")
            self._instances[name] = cls(plugin_settings(cls.Settings, name, self.settings))
        return self._instances[name]


class WebhookService:
    """The HTTP side."""

    def __init__(
        self,
        sources: WebhookSources,
        credentials: Credentials,
        queue: Queue,
        blobs: BlobStore,
        clock: Clock,
        max_body_bytes: int,
    ) -> None:
        self.sources = sources
        self.credentials = credentials
        self.queue = queue
        self.blobs = blobs
        self.clock = clock
        self.max_body_bytes = max_body_bytes

    def accept(self, name: str, raw: bytes, headers: dict[str, str], query: dict[str, str]) -> dict[str, Any]:
        source = self.sources.get(name)
        if len(raw) > self.max_body_bytes:
            raise PayloadTooLarge(f"body is {len(raw)} bytes; the limit is {self.max_body_bytes}", field="body")
        request = WebhookRequest(
            source=name,
            headers={k.lower(): v for k, v in headers.items()},
            body=raw,
            received_at=self.clock.now(),
            query=dict(query),
        )
        secrets = self.credentials.webhook_secrets(name)
        try:
            source.verify(request, secrets)
        except SignatureError as exc:
            reason = exc.reason
            if not secrets:
                reason += f" (no webhook secret is configured for {name}: omnicast webhook-secret add {name})"
            raise Unauthorized(reason, field="signature") from exc
        try:
            delivery = source.delivery(request)
        except ValueError as exc:
            raise BadRequest(str(exc), field="headers") from exc
        if delivery.ping:
            return {"ok": True, "ping": True}
        message: dict[str, Any] = {
            "kind": "webhook",
            "source": name,
            "delivery_id": delivery.delivery_id,
            "event_id": delivery.event_id,
            "topic": delivery.topic,
            "received_at": iso(request.received_at),
            "headers": {k: v for k, v in request.headers.items() if k not in DROPPED_HEADERS},
            "query": request.query,
        }
        if len(raw) > INLINE_BODY_LIMIT:
            key = f"inbox/{name}/{delivery.delivery_id}"
            self.blobs.put(key, raw)
            message["body_blob"] = key
        else:
            message["body_b64"] = base64.b64encode(raw).decode()
        self.queue.send(INGEST_QUEUE, message)
        return {"ok": True, "delivery_id": delivery.delivery_id, "topic": delivery.topic}


class WebhookProcessor:
    """The worker side."""

    def __init__(
        self,
        sources: WebhookSources,
        events: EventStore,
        blobs: BlobStore,
        processor: EventProcessor,
        catalog: CatalogService | None,
    ) -> None:
        self.sources = sources
        self.events = events
        self.blobs = blobs
        self.processor = processor
        self.catalog = catalog

    def _body(self, message: dict[str, Any]) -> bytes:
        if "body_blob" in message:
            body = self.blobs.get(message["body_blob"])
            if body is None:
                raise RuntimeError(f"webhook body {message['body_blob']} is missing from the blob store")
            return body
        return base64.b64decode(message["body_b64"])

    def handle(self, message: dict[str, Any]) -> bool:
        """Apply one queued delivery; False if it was already applied (a duplicate)."""
        name = message["source"]
        received_at = parse_iso(message["received_at"])
        body = self._body(message)
        # the raw delivery is kept for audit and replay: in the event record itself when it is
        # small (no extra write), in the blob store when it is large (an item has size limits)
        payload: dict[str, Any] = {
            "topic": message["topic"],
            "event_id": message.get("event_id"),
            "headers": message["headers"],
        }
        text = body.decode("utf-8", "replace")
        raw_key = None
        if len(body) <= RAW_INLINE_LIMIT:
            payload["body"] = text
        else:
            raw_key = payload["raw"] = f"raw/{name}/{received_at:%Y/%m/%d}/{message['delivery_id']}.json"
        record = StoredEvent(
            message_id=message["delivery_id"],
            type="webhook",
            profile_id=None,
            received_at=received_at,
            timestamp=received_at,
            event=message["topic"],
            source=f"raw:{name}",
            payload=payload,
        )
        if not self.events.append(record):
            existing = self.events.get(record.source, record.message_id)
            if existing is not None and existing.processed:
                return False
        if raw_key:
            kept = json.dumps({"headers": message["headers"], "body": text}).encode()
            self.blobs.put(raw_key, kept, content_type="application/json")
        if message.get("event_id"):
            # one merchant action delivered twice (two subscriptions, a resend): apply it once
            action = StoredEvent(
                message_id=f"{message['event_id']}:{message['topic']}",
                type="webhook-action",
                profile_id=None,
                received_at=received_at,
                timestamp=received_at,
                event=message["topic"],
                source=f"raw-action:{name}",
                payload={"delivery_id": message["delivery_id"]},
            )
            if not self.events.append(action):
                first = self.events.get(action.source, action.message_id)
                if first is not None and first.payload.get("delivery_id") != message["delivery_id"]:
                    self.events.mark_processed(record.source, record.message_id, "-")
                    return False
        request = WebhookRequest(
            source=name,
            headers=message["headers"],
            body=body,
            received_at=received_at,
            query=message.get("query") or {},
        )
        self._apply(name, request, message["topic"], message["received_at"], trigger_journeys=True)
        self.events.mark_processed(record.source, record.message_id, "-")
        if message.get("event_id"):
            self.events.mark_processed(f"raw-action:{name}", f"{message['event_id']}:{message['topic']}", "-")
        return True

    def _apply(self, name: str, request: WebhookRequest, topic: str, received: str, trigger_journeys: bool) -> int:
        """Map one verified delivery and apply its events and catalog items; returns new events."""
        received_at = parse_iso(received)
        output = self.sources.get(name).to_output(request)
        applied = 0
        for i, event in enumerate(output.events):
            try:
                calls = parse_call(str(event.get("type")), event, received_at).calls
            except BadRequest as exc:
                # a plugin produced an invalid event: keep the raw delivery, skip that event
                log.error("source %s produced an invalid event #%d for %s: %s", name, i, topic, exc.message)
                continue
            for call in calls:
                applied += self.processor.handle(
                    {
                        "source": name,
                        "received_at": received,
                        "event": to_payload(call),
                        "trigger_journeys": trigger_journeys,
                    }
                )
        if self.catalog is not None:
            for item in output.catalog:
                self.catalog.apply(name, item, received_at)
        return applied

    def replay(self, name: str, after: str | None = None, trigger_journeys: bool = False) -> tuple[int, int]:
        """Map the kept raw deliveries of a source again (after a mapping fix, say).

        Events that exist already are duplicates and change nothing; new ones are applied,
        without starting journeys unless asked. Returns (deliveries read, new events).
        """
        self.sources.get(name)  # an unknown source is a clear error before any work
        deliveries = new_events = 0
        cursor = after
        while True:
            page = self.events.by_source(f"raw:{name}", after=cursor, limit=200)
            for record in page:
                payload = record.payload
                if "body" in payload:
                    body = str(payload["body"]).encode("utf-8")
                else:
                    kept = self.blobs.get(payload.get("raw", ""))
                    if kept is None:
                        log.warning("raw delivery %s of %s is missing from the blob store", record.message_id, name)
                        continue
                    body = json.loads(kept)["body"].encode("utf-8")
                request = WebhookRequest(
                    source=name, headers=payload.get("headers") or {}, body=body, received_at=record.received_at
                )
                new_events += self._apply(name, request, str(record.event), iso(record.received_at), trigger_journeys)
                deliveries += 1
            if len(page) < 200:
                return deliveries, new_events
            cursor = page[-1].message_id
