"""Model scores in the single DynamoDB table.

| item | pk | sk |
|---|---|---|
| current score of one kind | ``SCORE#<profile>`` | ``<kind>`` |
| scoring run marker (TTL 30 days) | ``SCORERUN#<key>`` | ``R`` |

A profile's scores are one ``Query`` on its partition. A write keeps the newer ``as_of``
(conditional ``PutItem``: an old run finishing late never wins); a lost condition is
not an error. Features on AWS read events and sends per profile through the existing
``gsi1`` partitions (``PEVT#`` / ``PLEDGER#``), shard by shard, in the scoring worker.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from chalicelib.adapters.aws.dynamodb import _s, _Table
from chalicelib.ports import JSON

RUN_MARKER_DAYS = 30


class DynamoScoreStore(_Table):
    def put_many(self, scores: list[JSON]) -> int:
        for s in scores:
            item = {
                "pk": _s(f"SCORE#{s['profile_id']}"),
                "sk": _s(s["kind"]),
                "as_of": _s(s["as_of"]),
                "kind": _s(s["kind"]),
                "body": _s(json.dumps(s, separators=(",", ":"))),
            }
            try:
                self.ddb.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR as_of <= :a",
                    ExpressionAttributeValues={":a": _s(s["as_of"])},
                )
            except self.ddb.exceptions.ConditionalCheckFailedException:
                continue  # a newer run already wrote this profile's score
        return len(scores)

    def for_profile(self, profile_id: str) -> list[JSON]:
        items = self.query(
            KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": _s(f"SCORE#{profile_id}")}
        )
        return [json.loads(i["body"]["S"]) for i in sorted(items, key=lambda i: i["sk"]["S"])]

    def claim_run(self, key: str, at: datetime) -> bool:
        expires = int((at + timedelta(days=RUN_MARKER_DAYS)).timestamp())
        return self.put_new({"pk": _s(f"SCORERUN#{key}"), "sk": _s("R"), "expires_at": {"N": str(expires)}})

    def release_run(self, key: str) -> None:
        self.ddb.delete_item(TableName=self.table, Key={"pk": _s(f"SCORERUN#{key}"), "sk": _s("R")})

    def forget(self, profile_id: str) -> None:
        for item in self.query(KeyConditionExpression="pk = :p",
                               ExpressionAttributeValues={":p": _s(f"SCORE#{profile_id}")}):
            self.ddb.delete_item(TableName=self.table, Key={"pk": item["pk"], "sk": item["sk"]})

    def count(self, kind: str | None = None) -> int:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Select": "COUNT",
            "FilterExpression": "begins_with(pk, :p)" + (" AND sk = :k" if kind else ""),
            "ExpressionAttributeValues": {":p": _s("SCORE#"), **({":k": _s(kind)} if kind else {})},
        }
        return sum(page["Count"] for page in self.ddb.get_paginator("scan").paginate(**kwargs))
