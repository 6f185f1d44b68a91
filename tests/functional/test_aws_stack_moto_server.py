"""The whole stack against a local AWS endpoint: moto in server mode, the aws adapters, and
the Lambda handlers invoked as Lambda would, with no code path of their own.

signed Shopify webhook → API handler → SQS → ingest_worker → DynamoDB (event, profile,
journey state) → SQS → send_worker → SES (visible in moto's sent messages); the
EventBridge schedule handler fires a journey wait; the raw delivery lands in DynamoDB.
"""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from chalice.test import Client

from chalicelib.clock import ManualClock
from chalicelib.config import load_settings
from chalicelib.plugin_api import hmac_sha256
from chalicelib.runtime import QUEUES, Runtime, set_runtime
from tests.conftest import free_port

pytestmark = pytest.mark.slow
SECRET = "moto-shop-secret"


@pytest.fixture
def stack(monkeypatch, clock: ManualClock):
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        settings = load_settings({}, overrides={
            "runtime": "aws",
            "aws": {"endpoint_url": endpoint, "table": "omnicast-e2e", "bucket": "omnicast-e2e-data",
                    "queue_prefix": "omnicast-e2e-", "ssm_prefix": "/omnicast/e2e/"},
            "channels": {"email": "ses"},
            "plugin_settings": {"ses": {"endpoint_url": endpoint, "from_address": "shop@example.com"}},
        })
        from chalicelib.adapters.aws import create_resources

        create_resources(settings.aws, QUEUES)
        boto3.client("ses", endpoint_url=endpoint).verify_domain_identity(Domain="example.com")
        runtime = Runtime(settings, clock=clock)
        runtime.credentials.add_webhook_secret("shopify", SECRET)
        set_runtime(runtime)
        import app as app_module

        with Client(app_module.app) as client:
            yield runtime, client, endpoint
    finally:
        set_runtime(None)
        server.stop()


def lambda_poll(runtime: Runtime, client: Client, queue: str, handler: str) -> int:
    """What the SQS event source mapping does: receive, invoke the function, delete on success."""
    sqs = runtime.stores.queue
    handled = 0
    while True:
        messages = sqs.receive(queue, max_messages=10, visibility_seconds=30)
        if not messages:
            return handled
        for m in messages:
            event = client.events.generate_sqs_event(message_bodies=[json.dumps(m.body)],
                                                     queue_name=f"omnicast-e2e-{queue}")
            client.lambda_.invoke(handler, event)
            sqs.ack(queue, m.receipt)
            handled += 1


def sent_emails(endpoint: str) -> list[dict]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


def test_signed_webhook_to_ses_through_sqs_and_dynamodb(stack):
    runtime, client, endpoint = stack
    order = {"id": 9007199254740993, "admin_graphql_api_id": "gid://shopify/Order/9007199254740993",
             "email": "Buyer@Example.com", "currency": "EUR", "total_price": "42.00", "current_total_price": "42.00",
             "processed_at": "2026-03-02T09:00:00Z", "customer": {"id": 77, "email": "buyer@example.com",
                                                                   "first_name": "Bea"},
             "line_items": [{"product_id": 1, "variant_id": 2, "title": "Mug", "price": "42.00", "quantity": 1}]}
    body = json.dumps(order).encode()
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
               "X-Shopify-Webhook-Id": "wh-e2e-1", "X-Shopify-Shop-Domain": "e2e.myshopify.com",
               "X-Shopify-Hmac-Sha256": base64.b64encode(hmac_sha256(SECRET, body)).decode()}
    r = client.http.post("/webhooks/shopify", headers=headers, body=body)
    assert r.status_code == 200, r.body
    assert client.http.post("/webhooks/shopify", headers=headers, body=body).status_code == 200  # a retry

    assert lambda_poll(runtime, client, "ingest", "ingest_worker") == 2
    # the event and the raw delivery are in DynamoDB, once
    ddb = boto3.client("dynamodb", endpoint_url=endpoint)
    item = ddb.get_item(TableName="omnicast-e2e", Key={"pk": {"S": "EVT#shopify#shopify:wh-e2e-1:0"},
                                                       "sk": {"S": "E"}})["Item"]
    assert json.loads(item["payload"]["S"])["properties"]["order_id"] == "9007199254740993"
    assert runtime.stores.events.count("raw:shopify") == 1 and runtime.stores.events.count("shopify") == 1

    assert lambda_poll(runtime, client, "send", "send_worker") >= 1
    emails = sent_emails(endpoint)
    assert len(emails) == 1
    raw = emails[0].raw_data
    raw = raw if isinstance(raw, str) else raw.decode()
    assert "To: buyer@example.com" in raw and "Order 9007199254740993 confirmed" in raw

    # the schedule: a journey wait that comes due is fired by the timers function
    profile_id = runtime.stores.profiles.resolve("email", "buyer@example.com")
    profile = runtime.stores.profiles.get(profile_id)
    runtime.journeys.enter(runtime.journeys.registry.get("welcome"), profile, "-", {})
    lambda_poll(runtime, client, "send", "send_worker")
    from datetime import timedelta

    runtime.clock.advance(timedelta(hours=49))  # type: ignore[attr-defined]
    fired = client.lambda_.invoke("timers", client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    assert fired.payload["fired"] >= 1
    lambda_poll(runtime, client, "send", "send_worker")
    subjects = [(e.raw_data if isinstance(e.raw_data, str) else e.raw_data.decode()) for e in sent_emails(endpoint)]
    assert any("three things our regulars love" in s for s in subjects)
    assert len(subjects) == 3  # confirmation, welcome, tips: nothing twice


def scheduled(client: Client, name: str) -> dict:
    return client.lambda_.invoke(name, client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])).payload


def test_scoring_fans_out_through_sqs_and_feeds_land_in_s3(stack):
    """The model schedules and the feed schedule against moto's server: training writes its
    artifacts to S3, scoring fans shards out over SQS to scoring_worker, scores land in
    DynamoDB; the daily publication writes hashed audiences and product feeds to S3."""
    runtime, client, endpoint = stack
    for i in range(6):
        order = {"id": 1000 + i, "admin_graphql_api_id": f"gid://shopify/Order/{1000 + i}",
                 "email": f"buyer{i % 3}@example.com", "currency": "EUR", "total_price": f"{20 + i}.00",
                 "processed_at": f"2026-02-{10 + i:02d}T09:00:00Z",
                 "customer": {"id": 500 + i % 3, "email": f"buyer{i % 3}@example.com"},
                 "line_items": [{"product_id": 7, "variant_id": 8, "title": "Mug", "price": "20.00", "quantity": 1}]}
        body = json.dumps(order).encode()
        r = client.http.post("/webhooks/shopify", body=body, headers={
            "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": f"wh-score-{i}", "X-Shopify-Shop-Domain": "e2e.myshopify.com",
            "X-Shopify-Hmac-Sha256": base64.b64encode(hmac_sha256(SECRET, body)).decode()})
        assert r.status_code == 200
    lambda_poll(runtime, client, "ingest", "ingest_worker")

    trained = scheduled(client, "model_training")
    assert {"churn", "clv", "rfm"} <= set(trained["trained"])
    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="omnicast-e2e-data", Prefix="models/")["Contents"]]
    assert any(k.startswith("models/churn/") and k.endswith("card.json") for k in keys)

    assert scheduled(client, "model_scoring")["shards"] >= 1
    assert lambda_poll(runtime, client, "scoring", "scoring_worker") >= 1
    buyer = runtime.stores.profiles.resolve("email", "buyer0@example.com")
    scores = {s["kind"]: s for s in runtime.scoring.for_profile(buyer)}
    assert {"churn", "clv", "rfm"} <= set(scores) and all(s["explanation"] for s in scores.values())
    # a redelivered shard changes nothing
    assert scheduled(client, "model_scoring")["shards"] >= 1
    lambda_poll(runtime, client, "scoring", "scoring_worker")
    assert {s["kind"]: s["as_of"] for s in runtime.scoring.for_profile(buyer)} == {
        k: s["as_of"] for k, s in scores.items()}

    published = scheduled(client, "feeds_publish")
    assert published
    feeds = [o["Key"] for o in s3.list_objects_v2(Bucket="omnicast-e2e-data", Prefix="feeds/")["Contents"]]
    assert any("/google_customer_match/" in k and k.endswith("-full.csv") for k in feeds)
    assert any(k.startswith("feeds/products/google_merchant/") for k in feeds)
    full = next(k for k in feeds if "/customers/meta_custom_audience/" in k and k.endswith("-full.csv"))
    text = s3.get_object(Bucket="omnicast-e2e-data", Key=full)["Body"].read().decode()
    import hashlib

    rows = {line.split(",")[0] for line in text.splitlines()[1:]}
    assert {hashlib.sha256(f"buyer{i}@example.com".encode()).hexdigest() for i in range(3)} <= rows
    assert "@" not in text  # hashed, never plain
