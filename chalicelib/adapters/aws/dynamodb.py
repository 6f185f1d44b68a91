"""The DynamoDB stores of the aws adapter set (single table; key design in __init__).

The low-level client is used with explicit attribute types: payloads are JSON strings
(``S``), so integers beyond 2**53 survive exactly and no Decimal conversions leak out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from chalicelib.adapters.aws.clients import AwsClients
from chalicelib.clock import iso, parse_iso
from chalicelib.ports import (
    JSON,
    JourneyState,
    LedgerEntry,
    Product,
    Profile,
    StoredEvent,
    Timer,
    product_from,
    product_json,
)

TIMER_SHARDS = 8
RAW_DEDUPE_DAYS = 30


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Table:
    def __init__(self, clients: AwsClients, table: str) -> None:
        self.clients = clients
        self.table = table

    @property
    def ddb(self) -> Any:
        return self.clients.dynamodb

    def put_new(self, item: dict[str, Any]) -> bool:
        try:
            self.ddb.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.ddb.get_item(
            TableName=self.table, Key={"pk": _s(pk), "sk": _s(sk)}, ConsistentRead=True
        ).get("Item")
        return found

    def query(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self.ddb.get_paginator("query").paginate(TableName=self.table, **kwargs):
            items.extend(page["Items"])
        return items

    def scan_prefix(self, prefix: str, count_only: bool = False) -> list[dict[str, Any]] | int:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": _s(prefix)},
        }
        if count_only:
            kwargs["Select"] = "COUNT"
        total, items = 0, []
        for page in self.ddb.get_paginator("scan").paginate(**kwargs):
            total += page["Count"]
            items.extend(page.get("Items", []))
        return total if count_only else items


# --------------------------------------------------------------------------- events
class DynamoEventStore(_Table):
    def _item(self, e: StoredEvent) -> dict[str, Any]:
        item = {
            "pk": _s(f"EVT#{e.source}#{e.message_id}"),
            "sk": _s("E"),
            "source": _s(e.source),
            "message_id": _s(e.message_id),
            "type": _s(e.type),
            "received_at": _s(iso(e.received_at)),
            "ts": _s(iso(e.timestamp)),
            "payload": _s(_dumps(e.payload)),
            "processed": {"BOOL": e.processed},
        }
        if e.event is not None:
            item["event"] = _s(e.event)
        if e.profile_id is not None:
            item["profile_id"] = _s(e.profile_id)
        if e.source.startswith("raw"):
            item["expires_at"] = {"N": str(int((e.received_at + timedelta(days=RAW_DEDUPE_DAYS)).timestamp()))}
        return item

    @staticmethod
    def _event(item: dict[str, Any]) -> StoredEvent:
        return StoredEvent(
            message_id=item["message_id"]["S"],
            type=item["type"]["S"],
            profile_id=item["profile_id"]["S"] if "profile_id" in item else None,
            received_at=parse_iso(item["received_at"]["S"]),
            timestamp=parse_iso(item["ts"]["S"]),
            event=item["event"]["S"] if "event" in item else None,
            source=item["source"]["S"],
            payload=json.loads(item["payload"]["S"]),
            processed=item["processed"]["BOOL"],
        )

    def append(self, event: StoredEvent) -> bool:
        return self.put_new(self._item(event))

    def get(self, source: str, message_id: str) -> StoredEvent | None:
        item = self.get_item(source, message_id)
        return self._event(item) if item else None

    def get_item(self, source: str, message_id: str) -> dict[str, Any] | None:
        return self.item(f"EVT#{source}#{message_id}", "E")

    def mark_processed(self, source: str, message_id: str, profile_id: str) -> None:
        item = self.get_item(source, message_id)
        if item is None:
            return
        self.ddb.update_item(
            TableName=self.table,
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET #pr = :t, profile_id = :p, gsi1pk = :g, gsi1sk = :s",
            ExpressionAttributeNames={"#pr": "processed"},
            ExpressionAttributeValues={
                ":t": {"BOOL": True},
                ":p": _s(profile_id),
                ":g": _s(f"PEVT#{profile_id}"),
                ":s": _s(f"{item['ts']['S']}#{message_id}"),
            },
        )

    def for_profile(self, profile_id: str, limit: int = 100, *, since: datetime | None = None) -> list[StoredEvent]:
        condition, values = "gsi1pk = :g", {":g": _s(f"PEVT#{profile_id}")}
        if since is not None:  # gsi1sk is "timestamp#message id": a range on it starts at a time
            condition += " AND gsi1sk >= :t"
            values[":t"] = _s(iso(since))
        items = self.ddb.query(
            TableName=self.table,
            IndexName="gsi1",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=limit,
        )["Items"]
        return [self._event(i) for i in items]

    def by_source(self, source: str, after: str | None = None, limit: int = 500, *,
                  events: Collection[str] | None = None) -> list[StoredEvent]:
        # a scan: replay, audit and the measurement snapshot are rare, operator-driven reads
        items = self.scan_prefix(f"EVT#{source}#")
        assert isinstance(items, list)
        found = sorted((self._event(i) for i in items), key=lambda e: e.message_id)
        return [e for e in found if e.message_id > (after or "") and (events is None or e.event in events)][:limit]

    def count(self, source: str | None = None) -> int:
        n = self.scan_prefix(f"EVT#{source}#" if source else "EVT#", count_only=True)
        assert isinstance(n, int)
        return n


# --------------------------------------------------------------------------- profiles
class DynamoProfileStore(_Table):
    def get(self, profile_id: str) -> Profile | None:
        item = self.item(f"PROF#{profile_id}", "P")
        if item is None:
            return None
        return Profile(
            profile_id=profile_id,
            traits=json.loads(item["traits"]["S"]),
            identifiers=json.loads(item["identifiers"]["S"]),
            created_at=parse_iso(item["created_at"]["S"]) if "created_at" in item else None,
            updated_at=parse_iso(item["updated_at"]["S"]) if "updated_at" in item else None,
            version=int(item["version"]["N"]),
        )

    def save(self, profile: Profile, expected_version: int) -> bool:
        item: dict[str, Any] = {
            "pk": _s(f"PROF#{profile.profile_id}"),
            "sk": _s("P"),
            "traits": _s(_dumps(profile.traits)),
            "identifiers": _s(_dumps(profile.identifiers)),
            "version": {"N": str(expected_version + 1)},
        }
        if profile.created_at:
            item["created_at"] = _s(iso(profile.created_at))
        if profile.updated_at:
            item["updated_at"] = _s(iso(profile.updated_at))
        try:
            if expected_version == 0:
                self.ddb.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
            else:
                self.ddb.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="version = :v",
                    ExpressionAttributeValues={":v": {"N": str(expected_version)}},
                )
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False
        profile.version = expected_version + 1
        return True

    def resolve(self, kind: str, value: str) -> str | None:
        item = self.item(f"ID#{kind}#{value}", "I")
        return item["profile_id"]["S"] if item else None

    def link(self, kind: str, value: str, profile_id: str) -> bool:
        if self.put_new({"pk": _s(f"ID#{kind}#{value}"), "sk": _s("I"), "profile_id": _s(profile_id)}):
            return True
        return self.resolve(kind, value) == profile_id

    def count(self) -> int:
        n = self.scan_prefix("PROF#", count_only=True)
        assert isinstance(n, int)
        return n

    def scan(self, cursor: str | None = None, limit: int = 1000) -> tuple[list[Profile], str | None]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": _s("PROF#")},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = json.loads(cursor)
        page = self.ddb.scan(**kwargs)
        profiles = []
        for item in page.get("Items", []):
            profile = self.get(item["pk"]["S"][5:])
            if profile is not None:
                profiles.append(profile)
        last = page.get("LastEvaluatedKey")
        return profiles, json.dumps(last) if last else None


# --------------------------------------------------------------------------- ledger
class DynamoSendLedger(_Table):
    @staticmethod
    def _entry(item: dict[str, Any]) -> LedgerEntry:
        return LedgerEntry(
            key=item["key"]["S"],
            profile_id=item["profile_id"]["S"],
            journey=item["journey"]["S"],
            step=item["step"]["S"],
            channel=item["channel"]["S"],
            status=item["status"]["S"],
            reason=item["reason"]["S"],
            created_at=parse_iso(item["created_at"]["S"]),
            updated_at=parse_iso(item["updated_at"]["S"]),
            provider_message_id=item["provider_message_id"]["S"] if "provider_message_id" in item else None,
            detail=json.loads(item["detail"]["S"]),
        )

    def claim(self, entry: LedgerEntry) -> bool:
        item = {
            "pk": _s(f"LEDGER#{entry.key}"),
            "sk": _s("L"),
            "key": _s(entry.key),
            "profile_id": _s(entry.profile_id),
            "journey": _s(entry.journey),
            "step": _s(entry.step),
            "channel": _s(entry.channel),
            "status": _s(entry.status),
            "reason": _s(entry.reason),
            "created_at": _s(iso(entry.created_at)),
            "updated_at": _s(iso(entry.updated_at)),
            "detail": _s(_dumps(entry.detail)),
            "gsi1pk": _s(f"PLEDGER#{entry.profile_id}"),
            "gsi1sk": _s(f"{iso(entry.created_at)}#{entry.key}"),
        }
        if entry.provider_message_id:
            item["provider_message_id"] = _s(entry.provider_message_id)
        if not self.put_new(item):
            return False
        if entry.provider_message_id:
            self._point(entry.provider_message_id, entry.key)
        return True

    def _point(self, provider_message_id: str, key: str) -> None:
        # a pointer item, so a delivery receipt finds its entry with two reads and no index
        self.ddb.put_item(
            TableName=self.table,
            Item={"pk": _s(f"LPROVIDER#{provider_message_id}"), "sk": _s("L"), "key": _s(key)},
        )

    def update(
        self,
        key: str,
        *,
        status: str,
        reason: str,
        at: datetime,
        provider_message_id: str | None = None,
        detail: JSON | None = None,
    ) -> None:
        item = self.item(f"LEDGER#{key}", "L")
        if item is None:
            raise KeyError(key)
        merged = {**json.loads(item["detail"]["S"]), **(detail or {})}
        expression = "SET #st = :s, #re = :r, updated_at = :u, detail = :d"
        values: dict[str, Any] = {":s": _s(status), ":r": _s(reason), ":u": _s(iso(at)), ":d": _s(_dumps(merged))}
        if provider_message_id:
            expression += ", provider_message_id = :m"
            values[":m"] = _s(provider_message_id)
        self.ddb.update_item(
            TableName=self.table,
            Key={"pk": _s(f"LEDGER#{key}"), "sk": _s("L")},
            UpdateExpression=expression,
            ExpressionAttributeNames={"#st": "status", "#re": "reason"},
            ExpressionAttributeValues=values,
        )
        if provider_message_id and item.get("provider_message_id", {}).get("S") != provider_message_id:
            self._point(provider_message_id, key)

    def transition(self, key: str, *, from_status: str, to_status: str, at: datetime) -> bool:
        try:
            self.ddb.update_item(
                TableName=self.table,
                Key={"pk": _s(f"LEDGER#{key}"), "sk": _s("L")},
                UpdateExpression="SET #st = :to, updated_at = :u",
                ConditionExpression="#st = :from",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":to": _s(to_status), ":from": _s(from_status), ":u": _s(iso(at))},
            )
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def get(self, key: str) -> LedgerEntry | None:
        item = self.item(f"LEDGER#{key}", "L")
        return self._entry(item) if item else None

    def by_provider_message_id(self, provider_message_id: str) -> LedgerEntry | None:
        pointer = self.item(f"LPROVIDER#{provider_message_id}", "L")
        return self.get(pointer["key"]["S"]) if pointer else None

    def for_profile(self, profile_id: str, *, sent_after: datetime | None = None) -> list[LedgerEntry]:
        items = self.query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :g",
            ExpressionAttributeValues={":g": _s(f"PLEDGER#{profile_id}")},
        )
        entries = [self._entry(i) for i in items]
        if sent_after is None:
            return entries
        return [e for e in entries if e.status == "sent" and e.updated_at > sent_after]

    def all(self, limit: int = 1000) -> list[LedgerEntry]:
        items = self.scan_prefix("LEDGER#")
        assert isinstance(items, list)
        return sorted((self._entry(i) for i in items), key=lambda e: (e.created_at, e.key))[:limit]


# --------------------------------------------------------------------------- journeys
class DynamoJourneyStore(_Table):
    @staticmethod
    def _item(s: JourneyState) -> dict[str, Any]:
        return {
            "pk": _s(f"JS#{s.profile_id}"),
            "sk": _s(f"{s.journey}#{s.entity}"),
            "profile_id": _s(s.profile_id),
            "journey": _s(s.journey),
            "entity": _s(s.entity),
            "version": _s(s.version),
            "step": _s(s.step),
            "status": _s(s.status),
            "entered_at": _s(iso(s.entered_at)),
            "data": _s(_dumps(s.data)),
        }

    @staticmethod
    def _state(i: dict[str, Any]) -> JourneyState:
        return JourneyState(
            profile_id=i["profile_id"]["S"],
            journey=i["journey"]["S"],
            entity=i["entity"]["S"],
            version=i["version"]["S"],
            step=i["step"]["S"],
            status=i["status"]["S"],
            entered_at=parse_iso(i["entered_at"]["S"]),
            data=json.loads(i["data"]["S"]),
        )

    def enter(self, state: JourneyState) -> bool:
        return self.put_new(self._item(state))

    def get(self, profile_id: str, journey: str, entity: str) -> JourneyState | None:
        item = self.item(f"JS#{profile_id}", f"{journey}#{entity}")
        return self._state(item) if item else None

    def put(self, state: JourneyState) -> None:
        self.ddb.put_item(TableName=self.table, Item=self._item(state))

    def for_profile(
        self, profile_id: str, *, journey: str | None = None, statuses: tuple[str, ...] | None = None
    ) -> list[JourneyState]:
        params: dict[str, Any] = {"KeyConditionExpression": "pk = :p",
                                  "ExpressionAttributeValues": {":p": _s(f"JS#{profile_id}")}}
        if journey is not None:  # journey names have no '#': the prefix is exact
            params["KeyConditionExpression"] += " AND begins_with(sk, :j)"
            params["ExpressionAttributeValues"][":j"] = _s(f"{journey}#")
        if statuses is not None:
            names = {f":s{i}": _s(v) for i, v in enumerate(statuses)}
            params["FilterExpression"] = f"#st IN ({', '.join(names)})"
            params["ExpressionAttributeNames"] = {"#st": "status"}
            params["ExpressionAttributeValues"].update(names)
        items = self.query(**params)
        return sorted((self._state(i) for i in items), key=lambda s: s.entered_at)

    def last_run(self, profile_id: str, journey: str, entity: str) -> JourneyState | None:
        items = self.query(KeyConditionExpression="pk = :p AND begins_with(sk, :e)",
                           ExpressionAttributeValues={":p": _s(f"JS#{profile_id}"), ":e": _s(f"{journey}#{entity}")})
        runs = [s for s in (self._state(i) for i in items)
                if s.journey == journey and (s.entity == entity or s.entity.startswith(f"{entity}#"))]
        return max(runs, key=lambda s: int(s.entity.partition("#")[2] or 1), default=None)

    @staticmethod
    def _shard(timer_id: str) -> int:
        return hashlib.sha256(timer_id.encode()).digest()[0] % TIMER_SHARDS

    def schedule(self, timer: Timer) -> bool:
        return self.put_new(
            {
                "pk": _s(f"TIMER#{timer.timer_id}"),
                "sk": _s("T"),
                "timer_id": _s(timer.timer_id),
                "due_at": _s(iso(timer.due_at)),
                "payload": _s(_dumps(timer.payload)),
                "gsi1pk": _s(f"TIMERS#{self._shard(timer.timer_id)}"),
                "gsi1sk": _s(f"{iso(timer.due_at)}#{timer.timer_id}"),
            }
        )

    def due(self, now: datetime, limit: int = 100) -> list[Timer]:
        timers: list[Timer] = []
        for shard in range(TIMER_SHARDS):
            items = self.ddb.query(
                TableName=self.table,
                IndexName="gsi1",
                KeyConditionExpression="gsi1pk = :g AND gsi1sk <= :n",
                ExpressionAttributeValues={":g": _s(f"TIMERS#{shard}"), ":n": _s(iso(now) + "#\uffff")},
                Limit=limit,
            )["Items"]
            timers.extend(
                Timer(i["timer_id"]["S"], parse_iso(i["due_at"]["S"]), json.loads(i["payload"]["S"])) for i in items
            )
        return sorted(timers, key=lambda t: (t.due_at, t.timer_id))[:limit]

    def take(self, timer_id: str) -> bool:
        try:
            self.ddb.delete_item(
                TableName=self.table,
                Key={"pk": _s(f"TIMER#{timer_id}"), "sk": _s("T")},
                ConditionExpression="attribute_exists(pk)",
            )
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False


# --------------------------------------------------------------------------- catalog
class DynamoCatalogStore(_Table):
    @staticmethod
    def _product(item: dict[str, Any]) -> Product:
        return product_from(json.loads(item["body"]["S"]))

    def get(self, product_id: str, variant_id: str) -> Product | None:
        item = self.item(f"PRODUCT#{product_id}", f"V#{variant_id}")
        return self._product(item) if item else None

    def put(self, product: Product) -> None:
        self.ddb.put_item(
            TableName=self.table,
            Item={
                "pk": _s(f"PRODUCT#{product.product_id}"),
                "sk": _s(f"V#{product.variant_id}"),
                "body": _s(_dumps(product_json(product))),
            },
        )

    def variants(self, product_id: str) -> list[Product]:
        items = self.query(
            KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": _s(f"PRODUCT#{product_id}")}
        )
        return [self._product(i) for i in items]

    def all(self, limit: int = 10_000) -> list[Product]:
        items = self.scan_prefix("PRODUCT#")
        assert isinstance(items, list)
        products = sorted((self._product(i) for i in items), key=lambda p: (p.product_id, p.variant_id))
        return products[:limit]
