"""Omnicast's Chalice app: routes and event handlers parse input, call one service, answer.

Nothing here touches storage at import time: the runtime (settings, adapters, plugins)
is built on the first request, so cold starts stay small and moto can start first.
"""

from __future__ import annotations

import json
import os
from typing import Any

from chalice import Chalice, Cron, Rate, Response

from chalicelib.admin_routes import admin
from chalicelib.dashboard import dashboard
from chalicelib.errors import NotFound
from chalicelib.http import Http, answers_errors, get_runtime

app = Chalice(app_name="omnicast")
app.api.binary_types.append("image/gif")
app.register_blueprint(admin)
app.register_blueprint(dashboard)
http = Http(app)
QUEUE_PREFIX = os.environ.get("OMNICAST_AWS__QUEUE_PREFIX", "omnicast-")
SEGMENT_CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/v1/{call}", methods=["POST"], content_types=["application/json", "text/plain"])
@answers_errors
def segment_call(call: str) -> dict[str, Any]:
    if call not in SEGMENT_CALLS:
        raise NotFound(f"unknown call /v1/{call}; use one of {', '.join(SEGMENT_CALLS)}", field="path")
    accepted = get_runtime().ingest.accept(call, http.body(), http.headers())
    return {"success": True, "accepted": accepted}


@app.route(
    "/webhooks/{source}",
    methods=["POST"],
    content_types=["application/json", "application/x-www-form-urlencoded", "text/plain"],
)
@answers_errors
def shop_webhook(source: str) -> dict[str, Any]:
    request = http.request()
    return get_runtime().webhooks.accept(source, http.body(), http.headers(), dict(request.query_params or {}))


def _redirect(destination: str) -> Response:
    """A tracked link's answer: the signed destination, never cached (every click counts)."""
    return Response(body="", status_code=302, headers={"Location": destination, "Cache-Control": "no-store"})


@app.route("/t/c/{token}", methods=["GET", "HEAD"])
@answers_errors
def track_click(token: str) -> Response:
    request = http.request()
    return _redirect(get_runtime().tracking.click(token, request.headers.get("user-agent", ""), request.method))


@app.route("/s/{code}", methods=["GET", "HEAD"])
@answers_errors
def short_link(code: str) -> Response:
    # the short tracked links of SMS, push and messenger messages
    request = http.request()
    return _redirect(get_runtime().tracking.short_click(code, request.headers.get("user-agent", ""), request.method))


@app.route("/t/o/{token}", methods=["GET", "HEAD"])
@answers_errors
def track_open(token: str) -> Response:
    request = http.request()
    gif = get_runtime().tracking.open(token, request.headers.get("user-agent", ""), request.method)
    accept = request.headers.get("accept", "").lower()
    if "image/gif" not in accept and "*/*" not in accept:
        # API Gateway returns a binary body only to a client that accepts it; the open still counts
        return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})
    return Response(body=gif, status_code=200, headers={"Content-Type": "image/gif", "Cache-Control": "no-store"})


@app.route("/v1/recommendations/{profile_id}", methods=["GET"], cors=True)
@answers_errors
def recommendations(profile_id: str) -> dict[str, Any]:
    """Products for the shop's site to show this customer (write key, as the tracking API)."""
    k = http.query("k", "") or None
    return get_runtime().recommendations.for_profile(profile_id, k, http.headers())


@app.route("/v1/feedback/sns", methods=["POST"], content_types=["text/plain", "application/json"])
@answers_errors
def sns_feedback() -> dict[str, Any]:
    # SNS posts its JSON as text/plain; the service verifies the signature before acting
    return get_runtime().feedback.handle(http.body())


@app.route(
    "/v1/inbound/{plugin}",
    methods=["GET", "POST"],
    content_types=["application/x-www-form-urlencoded", "application/json", "text/plain", "text/xml"],
)
@answers_errors
def channel_inbound(plugin: str) -> Response:
    # a channel provider's receipts, replies, STOP/START, dead tokens; the plugin verifies first
    request = http.request()
    result = get_runtime().inbound.handle(plugin, http.body(), http.headers(), dict(request.query_params or {}))
    return Response(body=result.body, status_code=result.status_code, headers={"Content-Type": result.content_type})


@app.route(
    "/v1/unsubscribe",
    methods=["GET", "POST"],
    content_types=["application/x-www-form-urlencoded", "application/json", "text/plain"],
)
@answers_errors
def unsubscribe() -> Any:
    token = http.query("token", "")
    result = get_runtime().consent.unsubscribe(token)
    if http.request().method == "POST":  # RFC 8058 one-click: the mail client posts
        return {"unsubscribed": True, "channel": result}
    return Response(
        body=f"<!doctype html><title>Unsubscribed</title><p>You will get no more {result} marketing from us.</p>",
        headers={"Content-Type": "text/html; charset=utf-8"},
    )


@app.on_sqs_message(queue=QUEUE_PREFIX + "ingest", batch_size=1)
def ingest_worker(event: Any) -> None:
    for record in event:
        get_runtime().handle_message("ingest", json.loads(record.body))


@app.on_sqs_message(queue=QUEUE_PREFIX + "send", batch_size=1)
def send_worker(event: Any) -> None:
    for record in event:
        get_runtime().handle_message("send", json.loads(record.body))


@app.schedule(Rate(1, unit=Rate.MINUTES))
def timers(event: Any) -> dict[str, int]:
    return {"fired": get_runtime().tick()}


@app.schedule(Rate(1, unit=Rate.DAYS))
def segment_sweep(event: Any) -> dict[str, int]:
    # time alone moves people between segments ("no order for 90 days"): re-evaluate daily
    return {"changed": get_runtime().segments.sweep()}


@app.schedule(Rate(1, unit=Rate.DAYS))
def feeds_publish(event: Any) -> dict[str, Any]:
    # retargeting feeds: every segment's hashed audiences with deltas, and the product feeds
    return get_runtime().feeds.publish()


@app.on_sqs_message(queue=QUEUE_PREFIX + "scoring", batch_size=1)
def scoring_worker(event: Any) -> None:
    # one shard of customers of a scoring run; a redelivered shard changes nothing
    for record in event:
        get_runtime().handle_message("scoring", json.loads(record.body))


@app.schedule(Cron(0, 2, "*", "*", "?", "*"))  # 02:00 UTC daily, as the local runner
def model_scoring(event: Any) -> dict[str, int]:
    # fan the day's scoring run out over the scoring queue, one message per shard
    return {"shards": get_runtime().scoring.enqueue()}


@app.schedule(Cron(0, 1, "?", "*", "SUN", "*"))  # Sundays 01:00 UTC, before that day's scoring
def model_training(event: Any) -> dict[str, Any]:
    # retrain every enabled model on a time-based split; each writes a versioned artifact + card
    cards = get_runtime().scoring.train()
    return {"trained": {c["name"]: c["version"] for c in cards}}
