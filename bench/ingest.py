"""Ingest throughput on the embedded default, against its floor, in one run.

Whole path: N real-shaped Shopify ``orders/create`` webhooks (the shape of Shopify's
documented sample, each with its own order, customer and e-mail) are accepted as the
HTTP function does (signature check, delivery id, enqueue) and then applied by the
worker (raw delivery kept and deduplicated, mapped by the Shopify plugin, validated,
identity resolved, profile saved, journeys evaluated). The baseline does only the
floor of that work for the same payloads: HMAC check + JSON parse + one SQLite insert.

Also counts the DynamoDB write calls per event on the aws adapter, under moto.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.adapters.local.sqlite import sqlite3  # the same SQLite as the stores (one copy per process)

N = int(os.environ.get("BENCH_INGEST_EVENTS", "3000"))
SECRET = "bench-shopify-secret"
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = (ROOT.parent / "shared" / "fixtures" / "webhooks"
           / "shopify__orders_create__docs-sample-2026-04__gadget-metadata.json")


def template() -> dict[str, Any]:
    if FIXTURE.is_file():
        return dict(json.loads(FIXTURE.read_text())["response"])
    # the same shape, trimmed, when ../shared is not beside the project
    return {"id": 1, "email": "x@example.com", "currency": "USD", "total_price": "404.95",
            "subtotal_price": "398.00", "total_tax": "6.95", "created_at": "2026-03-02T10:00:00-05:00",
            "customer": {"id": 1, "email": "x@example.com"},
            "line_items": [{"product_id": 632910392, "variant_id": 808950810, "title": "IPod Nano", "price": "199.00",
                            "quantity": 2, "sku": "IPOD2008PINK"}]}


def orders(n: int) -> list[bytes]:
    base = template()
    out = []
    for i in range(n):
        order = copy.deepcopy(base)
        order["id"] = 9_000_000_000_000_000 + i
        order["admin_graphql_api_id"] = f"gid://shopify/Order/{order['id']}"
        order["email"] = f"buyer{i % (n // 2 or 1)}@example.com"  # half the buyers order twice
        customer = order.get("customer") or {}
        customer.update({"id": 7_000_000_000_000_000 + i % (n // 2 or 1), "email": order["email"]})
        customer["admin_graphql_api_id"] = f"gid://shopify/Customer/{customer['id']}"
        order["customer"] = customer
        out.append(json.dumps(order).encode())
    return out


def headers(body: bytes, i: int) -> dict[str, str]:
    from chalicelib.plugin_api import hmac_sha256

    return {"x-shopify-topic": "orders/create", "x-shopify-webhook-id": f"bench-{i}",
            "x-shopify-shop-domain": "bench.myshopify.com",
            "x-shopify-hmac-sha256": base64.b64encode(hmac_sha256(SECRET, body)).decode()}


def runtime(stores: Any = None, data_dir: str | None = None) -> Any:
    from chalicelib.clock import ManualClock
    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime

    settings = load_settings({}, overrides={"data_dir": data_dir or tempfile.mkdtemp(), "channels": {"email": "smtp"}})
    rt = Runtime(settings, stores=stores, clock=ManualClock(datetime(2026, 3, 2, 15, tzinfo=UTC)))
    rt.credentials.add_webhook_secret("shopify", SECRET)
    return rt


def whole_path(bodies: list[bytes]) -> float:
    rt = runtime()
    signed = [(b, headers(b, i)) for i, b in enumerate(bodies)]
    start = time.perf_counter()
    for body, h in signed:
        rt.webhooks.accept("shopify", body, h, {})
    while rt.work("ingest", max_messages=100):
        pass
    elapsed = time.perf_counter() - start
    assert rt.stores.events.count("shopify") == len(bodies) == rt.stores.events.count("raw:shopify")
    return elapsed


def baseline(bodies: list[bytes]) -> float:
    from chalicelib.plugin_api import hmac_sha256, matches_any

    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "b.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE e (id TEXT PRIMARY KEY, body TEXT)")
        signed = [(b, headers(b, i)["x-shopify-hmac-sha256"]) for i, b in enumerate(bodies)]
        start = time.perf_counter()
        for body, sig in signed:
            if not matches_any([hmac_sha256(SECRET, body)], [base64.b64decode(sig)]):
                raise AssertionError("bad signature")
            order = json.loads(body)
            conn.execute("INSERT INTO e VALUES (?, ?)", (str(order["id"]), json.dumps(order)))
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed


def dynamodb_writes_per_event(n: int = 50) -> dict[str, float]:
    from moto import mock_aws

    from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources
    from chalicelib.config import AwsSettings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    settings = AwsSettings(table="bench", bucket="bench-bucket", queue_prefix="bench-", ssm_prefix="/bench/")
    with mock_aws():
        clients = AwsClients(settings)
        create_resources(settings, ("ingest", "send"), clients)
        rt = runtime(stores=aws_stores(settings, clients))
        bodies = orders(n)
        clients.calls.clear()
        for i, body in enumerate(bodies):
            rt.webhooks.accept("shopify", body, headers(body, i), {})
        while rt.work("ingest", max_messages=10):
            pass
        calls = dict(clients.calls)
    writes = sum(v for k, v in calls.items() if k.split(".")[1] in ("PutItem", "UpdateItem", "DeleteItem",
                                                                    "BatchWriteItem"))
    reads = sum(v for k, v in calls.items() if k.split(".")[1] in ("GetItem", "Query", "Scan"))
    return {"writes": writes / n, "reads": reads / n,
            "sqs": sum(v for k, v in calls.items() if k.startswith("sqs.")) / n,
            "s3": sum(v for k, v in calls.items() if k.startswith("s3.")) / n}


def main() -> None:
    bodies = orders(N)
    whole_path(orders(200))  # warm up imports and caches
    t_whole = whole_path(bodies)
    t_base = baseline(bodies)
    eps_whole, eps_base = N / t_whole, N / t_base
    print(f"{N} real-shaped Shopify orders/create webhooks, one process, one core (embedded default)")
    print(f"  whole ingest path (verify, enqueue, worker: raw audit, map, identity, profile, journeys): "
          f"{eps_whole:8.0f} events/s")
    print(f"  baseline (HMAC check + JSON parse + one SQLite insert):                             "
          f"{eps_base:8.0f} events/s")
    print(f"  ratio whole / baseline: {eps_whole / eps_base:.3f}  (targets: >= 5000 events/s, ratio >= 0.5)")
    per = dynamodb_writes_per_event()
    print(f"  aws adapter under moto, per event: {per['writes']:.1f} DynamoDB writes, {per['reads']:.1f} reads, "
          f"{per['sqs']:.1f} SQS calls, {per['s3']:.1f} S3 calls")


if __name__ == "__main__":
    main()
