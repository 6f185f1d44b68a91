"""Omnicast's Chalice app: routes and event handlers parse input, call one service, answer.

Nothing here touches storage at import time: the runtime (settings, adapters, plugins)
is built on the first request, so cold starts stay small and moto can start first.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice import Chalice, Rate, Response
from chalice.app import Request

from chalicelib.errors import NotFound, OmnicastError

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime

app = Chalice(app_name="omnicast")


def get_runtime() -> Runtime:
    # imported on the first request, not at import: a cold start that serves /health stays small
    from chalicelib.runtime import get_runtime as runtime

    return runtime()
QUEUE_PREFIX = os.environ.get("OMNICAST_AWS__QUEUE_PREFIX", "omnicast-")
SEGMENT_CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")


def answers_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Turn OmnicastError into its 4xx JSON answer (never a 500 with a traceback)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except OmnicastError as exc:
            return Response(body=exc.body(), status_code=exc.status, headers={"Content-Type": "application/json"})

    return wrapper


def _request() -> Request:
    request = app.current_request
    assert request is not None  # Chalice sets it for every route call
    return request


def _headers() -> dict[str, str]:
    return dict(_request().headers.items())


def _query(name: str, default: str) -> str:
    params: dict[str, str] = dict(_request().query_params or {})
    return params.get(name, default)


def _body() -> bytes:
    raw = _request().raw_body
    return raw if isinstance(raw, bytes) else raw.encode()


def _admin() -> None:
    headers = _request().headers
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key")
    get_runtime().credentials.check_admin_key(key)


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/v1/{call}", methods=["POST"], content_types=["application/json", "text/plain"])
@answers_errors
def segment_call(call: str) -> dict[str, Any]:
    if call not in SEGMENT_CALLS:
        raise NotFound(f"unknown call /v1/{call}; use one of {', '.join(SEGMENT_CALLS)}", field="path")
    accepted = get_runtime().ingest.accept(call, _body(), _headers())
    return {"success": True, "accepted": accepted}


@app.route(
    "/webhooks/{source}",
    methods=["POST"],
    content_types=["application/json", "application/x-www-form-urlencoded", "text/plain"],
)
@answers_errors
def shop_webhook(source: str) -> dict[str, Any]:
    request = _request()
    return get_runtime().webhooks.accept(source, _body(), _headers(), dict(request.query_params or {}))


@app.route(
    "/v1/unsubscribe",
    methods=["GET", "POST"],
    content_types=["application/x-www-form-urlencoded", "application/json", "text/plain"],
)
@answers_errors
def unsubscribe() -> Any:
    token = _query("token", "")
    result = get_runtime().consent.unsubscribe(token)
    if _request().method == "POST":  # RFC 8058 one-click: the mail client posts
        return {"unsubscribed": True, "channel": result}
    return Response(
        body=f"<!doctype html><title>Unsubscribed</title><p>You will get no more {result} marketing from us.</p>",
        headers={"Content-Type": "text/html; charset=utf-8"},
    )


@app.route("/admin/plugins", methods=["GET"])
@answers_errors
def admin_plugins() -> dict[str, Any]:
    _admin()
    return get_runtime().host.describe()


@app.route("/admin/profiles/{profile_id}", methods=["GET"])
@answers_errors
def admin_profile(profile_id: str) -> dict[str, Any]:
    _admin()
    return get_runtime().admin.profile(profile_id)


@app.route("/admin/profiles/{profile_id}/decisions", methods=["GET"])
@answers_errors
def admin_decisions(profile_id: str) -> dict[str, Any]:
    _admin()
    return {"profile_id": profile_id, "decisions": get_runtime().admin.decisions(profile_id)}


@app.route("/admin/ledger", methods=["GET"])
@answers_errors
def admin_ledger() -> dict[str, Any]:
    _admin()
    limit = _query("limit", "100")
    return {"entries": get_runtime().admin.ledger(limit)}


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
