"""Scoring on the aws adapter set (moto): DynamoDB score store, fan-out over SQS, the Lambda handlers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib.runtime import QUEUES, set_runtime
from tests.models.conftest import end_of, write_shop


@pytest.fixture
def aws_stores(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources
    from chalicelib.config import AwsSettings

    settings = AwsSettings(table="models", bucket="models-bucket", queue_prefix="models-", ssm_prefix="/models/")
    with mock_aws():
        clients = AwsClients(settings)
        create_resources(settings, QUEUES, clients)
        yield aws_stores(settings, clients)


def score(pid: str, kind: str, as_of: datetime, value: float) -> dict:
    return {"profile_id": pid, "kind": kind, "model": kind, "version": "1.x", "as_of": as_of.isoformat(),
            "value": value, "values": {"probability": value}, "label": None, "method": "model",
            "explanation": [{"feature": "recency_days", "value": 3.0, "effect": 0.5}]}


def test_dynamodb_score_store_keeps_the_newest_run(aws_stores):
    store = aws_stores.scores
    t = datetime(2026, 3, 1, tzinfo=UTC)
    store.put_many([score("ann", "churn", t, 0.4), score("ann", "clv", t, 120.0)])
    store.put_many([score("ann", "churn", t - timedelta(days=1), 0.9)])  # an older run finishing late
    assert [(s["kind"], s["value"]) for s in store.for_profile("ann")] == [("churn", 0.4), ("clv", 120.0)]
    store.put_many([score("ann", "churn", t + timedelta(days=1), 0.7)])
    assert store.for_profile("ann")[0]["value"] == 0.7
    assert store.for_profile("ann")[0]["explanation"][0]["feature"] == "recency_days"
    assert store.count() == 2 and store.count("churn") == 1
    assert store.claim_run("run-1", t) and not store.claim_run("run-1", t)
    store.release_run("run-1")
    assert store.claim_run("run-1", t)
    store.forget("ann")
    assert store.for_profile("ann") == [] and store.count() == 0


def test_scoring_fans_out_over_sqs_to_the_scoring_worker(aws_stores, make_runtime, clock, shop_small):
    import app as app_module

    rt = make_runtime(stores=aws_stores, runtime="local")
    write_shop(shop_small, rt.stores)
    clock.set(end_of(shop_small))
    _mark_processed(rt, shop_small)
    set_runtime(rt)
    with Client(app_module.app) as client:
        trained = client.lambda_.invoke("model_training", client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])).payload
        assert set(trained["trained"]) >= {"churn", "clv", "rfm"}
        # the daily schedule fans the run out: one SQS message per shard of customers
        shards = rt.scoring.shards(shard_size=1000)
        assert len(shards) == 1
        handled = 0
        for body in [{**s, "profile_ids": s["profile_ids"][i:i + 20], "shard": i // 20}
                     for s in shards for i in range(0, len(s["profile_ids"]), 20)]:
            rt.stores.queue.send("scoring", body)
        while True:
            messages = rt.stores.queue.receive("scoring", max_messages=10, visibility_seconds=30)
            if not messages:
                break
            for m in messages:
                event = client.events.generate_sqs_event(message_bodies=[json.dumps(m.body)],
                                                         queue_name="models-scoring")
                client.lambda_.invoke("scoring_worker", event)
                rt.stores.queue.ack("scoring", m.receipt)
                handled += 1
                if handled == 1:  # SQS delivers at least once: the same shard again changes nothing
                    client.lambda_.invoke("scoring_worker", event)
        assert handled == 3
        scored = [p for p in shop_small.customers if rt.scoring.for_profile(p)]
        assert len(scored) == 60
        first = rt.scoring.for_profile(scored[0])
        assert {s["kind"] for s in first} >= {"churn", "clv", "rfm"}
        methods = {s["kind"]: s["method"] for s in first}
        assert methods["churn"] == methods["clv"] == "heuristic: 60 customers < 500", methods
        result = client.lambda_.invoke("model_scoring", client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])).payload
        assert result["shards"] == 1 and rt.stores.queue.depth("scoring") == 1


def _mark_processed(rt, shop) -> None:
    """What the ingest worker does once an event is applied: the profile exists, its events are indexed."""
    from chalicelib.ports import Profile

    for pid in shop.customers:
        rt.stores.profiles.save(Profile(profile_id=pid), 0)
    stores = rt.stores
    ddb = stores.events.ddb
    for page in ddb.get_paginator("scan").paginate(TableName=stores.events.table,
                                                   FilterExpression="begins_with(pk, :p)",
                                                   ExpressionAttributeValues={":p": {"S": "EVT#"}}):
        for item in page["Items"]:
            stores.events.mark_processed(item["source"]["S"], item["message_id"]["S"], item["profile_id"]["S"])
