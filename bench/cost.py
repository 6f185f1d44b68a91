"""The AWS bill per million events: API calls counted under moto, priced at list prices.

A storefront sends BENCH_COST_EVENTS track events through a batched client (Segment
batches of 100) and a share of them lead to e-mails; everything runs on the aws adapters
against moto, with each SQS message handled as Lambda's event source mapping would (one
invocation per message: Chalice cannot turn on partial batch failures). Every AWS call
is counted, DynamoDB writes are converted to write units by item size, and the totals are
priced per million ingested events and per million messages sent.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

EVENTS = int(os.environ.get("BENCH_COST_EVENTS", "2000"))
PRICES_AS_OF = "AWS list prices, us-east-1, as published in 2024 (check the pricing pages before relying on them)"
PRICE = {
    "api_gateway_rest_request": 3.50 / 1e6,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "dynamodb_write_unit": 1.25 / 1e6,
    "dynamodb_read_unit": 0.25 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "ses_email": 0.10 / 1000,
}
LAMBDA_GB = 0.5


def main() -> None:
    from moto import mock_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    with mock_aws():
        import boto3

        from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources
        from chalicelib.clock import ManualClock
        from chalicelib.config import load_settings
        from chalicelib.runtime import QUEUES, Runtime

        settings = load_settings({}, overrides={
            "runtime": "aws", "channels": {"email": "ses"},
            "aws": {"table": "cost", "bucket": "cost-data", "queue_prefix": "cost-", "ssm_prefix": "/cost/"},
            "plugin_settings": {"ses": {"from_address": "shop@example.com"}},
            "journeys": {"disabled": ["browse_abandonment", "price_drop"]},
        })
        clients = AwsClients(settings.aws)
        create_resources(settings.aws, QUEUES, clients)
        boto3.client("ses", region_name="us-east-1").verify_domain_identity(Domain="example.com")
        rt = Runtime(settings, stores=aws_stores(settings.aws, clients),
                     clock=ManualClock(datetime(2026, 3, 2, 12, tzinfo=UTC)))
        key = rt.credentials.create_key("write", "cost")
        units: Counter[str] = Counter()

        def size(params: Any, model: Any, **_: Any) -> None:
            op = model.name
            if op in ("PutItem", "UpdateItem", "DeleteItem"):
                item = params.get("Item") or params.get("ExpressionAttributeValues") or {}
                units["dynamodb_write_unit"] += max(1, math.ceil(len(json.dumps(item)) / 1024))
            elif op in ("GetItem", "Query", "Scan"):
                units["dynamodb_read_unit"] += 1

        clients.dynamodb.meta.events.register("before-call.dynamodb.*", size)
        clients.calls.clear()
        auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        http_requests = 0
        for start in range(0, EVENTS, 100):
            batch = []
            for i in range(start, min(start + 100, EVENTS)):
                user = f"u{i // 4}"
                if i % 4 == 0:
                    batch.append({"type": "identify", "userId": user, "messageId": f"id-{i}",
                                  "traits": {"email": f"{user}@example.com"}})
                else:
                    batch.append({"type": "track", "userId": user, "event": "Order Completed" if i % 4 == 3
                                  else "Product Viewed", "messageId": f"ev-{i}",
                                  "properties": {"order_id": f"o{i}", "total": 20, "product_id": "p1"}})
            rt.ingest.accept("batch", json.dumps({"batch": batch}).encode(), auth)
            http_requests += 1
        phases: dict[str, dict[str, float]] = {}
        for queue in ("ingest", "send"):
            clients.calls.clear()
            units.clear()
            invocations, busy = 0, 0.0
            while True:
                got = rt.stores.queue.receive(queue, max_messages=10, visibility_seconds=60)
                if not got:
                    break
                for m in got:  # one Lambda invocation per message
                    t = time.perf_counter()
                    rt.handle_message(queue, m.body)
                    busy += time.perf_counter() - t
                    rt.stores.queue.ack(queue, m.receipt)
                    invocations += 1
            calls = dict(clients.calls)
            phases[queue] = {
                "invocations": invocations, "busy": busy, "wcu": units["dynamodb_write_unit"],
                "rcu": units["dynamodb_read_unit"], "sqs": sum(v for k, v in calls.items() if k.startswith("sqs.")),
                "s3_put": calls.get("s3.PutObject", 0), "s3_get": calls.get("s3.GetObject", 0),
                "ses": calls.get("sesv2.SendEmail", 0),
            }
        # the HTTP side's own calls (SendMessageBatch) were made before the first phase
        phases["ingest"]["sqs"] += math.ceil(EVENTS / 10)
        # the SES plugin has its own client: count what it sent from the ledger
        phases["send"]["ses"] = sum(1 for e in rt.stores.ledger.all(1_000_000) if e.status == "sent")
    report(phases, http_requests)


def dollars(phase: dict[str, float], http_requests: int = 0) -> dict[str, float]:
    return {
        "API Gateway (REST) requests": http_requests * PRICE["api_gateway_rest_request"],
        "Lambda requests": (phase["invocations"] + http_requests) * PRICE["lambda_request"],
        "Lambda duration (measured in-process, 512 MB)": phase["busy"] * LAMBDA_GB * PRICE["lambda_gb_second"],
        "DynamoDB write units": phase["wcu"] * PRICE["dynamodb_write_unit"],
        "DynamoDB read units": phase["rcu"] * PRICE["dynamodb_read_unit"],
        "SQS requests": phase["sqs"] * PRICE["sqs_request"],
        "S3 requests": phase["s3_put"] * PRICE["s3_put"] + phase["s3_get"] * PRICE["s3_get"],
        "SES e-mails": phase["ses"] * PRICE["ses_email"],
    }


def report(phases: dict[str, dict[str, float]], http_requests: int) -> None:
    ingest, send = phases["ingest"], phases["send"]
    messages = max(1.0, send["ses"])
    print(f"{EVENTS:,} events ingested in Segment batches of 100 ({http_requests} HTTP requests), "
          f"{int(send['ses']):,} e-mails sent, on the aws adapters under moto")
    print(f"prices: {PRICES_AS_OF}")
    print(f"  per 1,000 events ingested: {1000 * (ingest['invocations'] + http_requests) / EVENTS:.0f} Lambda "
          f"invocations, {1000 * ingest['wcu'] / EVENTS:.0f} DynamoDB write units, "
          f"{1000 * ingest['rcu'] / EVENTS:.0f} read units, {1000 * ingest['sqs'] / EVENTS:.0f} SQS requests")
    for title, phase, count, extra in (("ingest", ingest, EVENTS, http_requests),
                                        ("send", send, messages, 0)):
        costs = dollars(phase, extra)
        total = sum(costs.values())
        unit = "million events ingested" if title == "ingest" else "million messages sent"
        target = " (target: at most $1.00)" if title == "ingest" else ""
        print(f"  {title}: ${total * 1e6 / count:,.2f} per {unit}{target}")
        for what, cost in sorted(costs.items(), key=lambda kv: -kv[1]):
            if cost:
                print(f"    {what:<48} ${cost * 1e6 / count:8.2f}  ({cost / total:5.1%})")


if __name__ == "__main__":
    main()
