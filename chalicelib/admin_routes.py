"""Admin API (behind the admin key): plugins, profiles and their decision log, the send
ledger, journeys, segments and templates. Each route parses, calls one service, answers."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from chalice import Blueprint, Response

from chalicelib.errors import BadRequest, NotFound
from chalicelib.http import Http, answers_errors, get_runtime

admin = Blueprint(__name__)
http = Http(admin)
DEFINITION_TYPES = ["application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/plain"]


def _runtime() -> Any:
    http.require_admin()
    return get_runtime()


def _field(body: Any, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} is required", field=name)
    return value


@admin.route("/admin/plugins", methods=["GET"])
@answers_errors
def plugins() -> dict[str, Any]:
    return _runtime().host.describe()  # type: ignore[no-any-return]


@admin.route("/admin/profiles/{profile_id}", methods=["GET"])
@answers_errors
def profile(profile_id: str) -> dict[str, Any]:
    return _runtime().admin.profile(profile_id)  # type: ignore[no-any-return]


@admin.route("/admin/profiles/{profile_id}/decisions", methods=["GET"])
@answers_errors
def decisions(profile_id: str) -> dict[str, Any]:
    return {"profile_id": profile_id, "decisions": _runtime().admin.decisions(profile_id)}


@admin.route("/admin/profiles/{profile_id}/scores", methods=["GET"])
@answers_errors
def profile_scores(profile_id: str) -> dict[str, Any]:
    # each score with its model, version, as_of and the features that weighed most for this customer
    return _runtime().scoring.profile_scores(profile_id)  # type: ignore[no-any-return]


@admin.route("/admin/models", methods=["GET"])
@answers_errors
def models() -> dict[str, Any]:
    return _runtime().scoring.describe()  # type: ignore[no-any-return]


@admin.route("/admin/models/{name}", methods=["GET"])
@answers_errors
def model_card(name: str) -> dict[str, Any]:
    return _runtime().scoring.card(name, http.query("version", "") or None)  # type: ignore[no-any-return]


@admin.route("/admin/profiles/{profile_id}", methods=["DELETE"])
@answers_errors
def erase_profile(profile_id: str) -> dict[str, Any]:
    # GDPR erasure: identifiers unlinked, personal traits and event details removed; idempotent
    return _runtime().erasure.erase(profile_id)  # type: ignore[no-any-return]


@admin.route("/admin/ledger", methods=["GET"])
@answers_errors
def ledger() -> dict[str, Any]:
    rt = _runtime()
    return {"entries": rt.admin.ledger(http.query("limit", "100"))}


def _when(name: str) -> datetime | None:
    raw = http.query(name, "")
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an ISO date or date-time", field=name) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return Response(body=out.getvalue(), headers={"Content-Type": "text/csv; charset=utf-8"})


@admin.route("/admin/kpis", methods=["GET"])
@answers_errors
def kpis() -> Any:
    """KPIs per journey, step, channel, template, variant, segment, day, week, month or total."""
    from chalicelib.services.measurement import GROUPS, KPI_FIELDS, MODELS

    rt = _runtime()
    group = http.query("group", "journey")
    if group not in GROUPS:
        raise BadRequest(f"group must be one of {', '.join(GROUPS)}", field="group")
    model = http.query("model", "last_touch")
    if model not in MODELS:
        raise BadRequest(f"model must be one of {', '.join(MODELS)}", field="model")
    rows = rt.measurement.kpis(group, model, since=_when("since"), until=_when("until"))
    if _format() == "csv":
        return _csv(rows, [group, *KPI_FIELDS])
    return {"group": group, "model": model, "rows": rows}


def _format() -> str:
    fmt = http.query("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("format must be json or csv", field="format")
    return fmt


@admin.route("/admin/attribution", methods=["GET"])
@answers_errors
def attribution() -> Any:
    """Every attributed order with the message, journey, step, channel, template and variant."""
    from chalicelib.services.measurement import MODELS, as_rows

    rt = _runtime()
    model = http.query("model", "last_touch")
    if model not in MODELS:
        raise BadRequest(f"model must be one of {', '.join(MODELS)}", field="model")
    rows = as_rows(rt.measurement.attribute(model))
    if _format() == "csv":
        return _csv(rows, list(rows[0]) if rows else ["order_id"])
    return {"model": model, "orders": rows}


@admin.route("/admin/lift", methods=["GET"])
@answers_errors
def lift() -> Any:
    """Incremental conversions and revenue against the holdout, overall and per journey."""
    rt = _runtime()
    journey = http.query("journey", "") or None
    hours = http.query("window_hours", "")
    try:
        window = float(hours) if hours else None
    except ValueError as exc:
        raise BadRequest("window_hours must be a number", field="window_hours") from exc
    if window is not None and window <= 0:
        raise BadRequest("window_hours must be positive", field="window_hours")
    m = rt.measurement
    snap = m.snapshot()
    return {"overall": m.lift(journey, window, snap=snap),
            "journeys": [] if journey else m.lift_by_journey(snap=snap)}


@admin.route("/admin/experiments/{journey}", methods=["GET"])
@answers_errors
def experiment(journey: str) -> Any:
    """The A/B/n result of a journey's split: each variant against control, with the horizon rule."""
    from chalicelib.journey_model import SplitStep

    rt = _runtime()
    definition = rt.journeys.registry.get(journey)
    if definition is None:
        raise NotFound(f"no journey named {journey!r}", field="journey")
    splits = [s for s in definition.steps if isinstance(s, SplitStep)]
    if not splits:
        raise BadRequest(f"journey {journey!r} has no split step", field="journey")
    split = splits[0]
    result = rt.measurement.experiment(journey, control=split.control, horizon=split.horizon)
    result["mode"] = split.mode
    return result


# --------------------------------------------------------------------------- journeys
@admin.route("/admin/journeys", methods=["GET"])
@answers_errors
def journeys() -> dict[str, Any]:
    return {"journeys": _runtime().authoring.list_journeys()}


@admin.route("/admin/journeys/{name}", methods=["GET"])
@answers_errors
def journey(name: str) -> dict[str, Any]:
    journey = _runtime().authoring.get_journey(name)
    return journey.model_dump(mode="json", by_alias=True, exclude_none=True)  # type: ignore[no-any-return]


@admin.route("/admin/journeys/{name}", methods=["PUT"], content_types=DEFINITION_TYPES)
@answers_errors
def put_journey(name: str) -> dict[str, Any]:
    rt = _runtime()
    saved = rt.authoring.save_journey(http.body(), name, source=f"{name}.yaml")
    return {"name": saved.name, "version": saved.version, "saved": True}


@admin.route("/admin/journeys/{name}", methods=["DELETE"])
@answers_errors
def delete_journey(name: str) -> dict[str, Any]:
    _runtime().authoring.delete(name)
    return {"name": name, "deleted": True}


@admin.route("/admin/journeys/{name}/{action}", methods=["POST"], content_types=["application/json"])
@answers_errors
def journey_action(name: str, action: str) -> dict[str, Any]:
    rt = _runtime()
    if action in ("pause", "resume"):
        rt.authoring.pause(name, action == "pause")
        return {"name": name, "paused": action == "pause"}
    if action == "dry-run":
        body = http.json()
        return {"name": name, "plan": rt.authoring.dry_run(name, _field(body, "profile_id"),
                                                            entity=str(body.get("entity") or "-"))}
    if action == "broadcast":
        body = http.json() if http.body().strip() else {}
        journey = rt.authoring.get_journey(name)
        segment = body.get("segment") or journey.trigger.segment
        if not segment:
            raise BadRequest("segment is required (the journey names none)", field="segment")
        members = rt.segments.members(segment)
        return {"name": name, "segment": segment, "entered": rt.authoring.broadcast(name, members)}
    raise BadRequest(f"unknown action {action!r}; use pause, resume, dry-run or broadcast", field="action")


# --------------------------------------------------------------------------- segments
@admin.route("/admin/segments", methods=["GET"])
@answers_errors
def segments() -> dict[str, Any]:
    rt = _runtime()
    return {"segments": [s.dump() for s in rt.segments.segments.values()]}


@admin.route("/admin/segments/{name}", methods=["PUT"], content_types=["application/json"])
@answers_errors
def put_segment(name: str) -> dict[str, Any]:
    rt = _runtime()
    body = http.json()
    if isinstance(body, dict) and body.setdefault("name", name) != name:
        raise BadRequest(f"the body names segment {body['name']!r}, not {name!r}", field="name")
    return rt.segments.save(body).dump()  # type: ignore[no-any-return]


@admin.route("/admin/segments/{name}", methods=["DELETE"])
@answers_errors
def delete_segment(name: str) -> dict[str, Any]:
    _runtime().segments.delete(name)
    return {"name": name, "deleted": True}


@admin.route("/admin/segments/{name}/preview", methods=["GET"])
@answers_errors
def preview_segment(name: str) -> dict[str, Any]:
    rt = _runtime()
    try:
        sample = int(http.query("sample", "10"))
    except ValueError as exc:
        raise BadRequest("sample must be an integer", field="sample") from exc
    return asdict(rt.segments.preview(name, sample=max(0, min(sample, 100))))


# --------------------------------------------------------------------------- retargeting feeds
@admin.route("/admin/feeds/publish", methods=["POST"], content_types=["application/json"])
@answers_errors
def publish_feeds() -> dict[str, Any]:
    rt = _runtime()
    request = rt.feeds.parse_request(http.json() if http.body().strip() else {})
    return rt.feeds.publish(**request)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- templates
@admin.route("/admin/templates/{name}", methods=["PUT"], content_types=["application/json"])
@answers_errors
def put_template(name: str) -> dict[str, Any]:
    rt = _runtime()
    template = rt.authoring.save_template(name, http.json())
    return {"name": name, "locale": template.locale, "saved": True}


@admin.route("/admin/templates/{name}/{action}", methods=["POST"], content_types=["application/json"])
@answers_errors
def template_action(name: str, action: str) -> dict[str, Any]:
    rt = _runtime()
    body = http.json()
    channel = str(body.get("channel") or "email") if isinstance(body, dict) else "email"
    if action == "preview":
        return rt.authoring.preview(name, _field(body, "profile_id"), channel)  # type: ignore[no-any-return]
    if action == "test-send":
        return rt.authoring.test_send(  # type: ignore[no-any-return]
            name, _field(body, "profile_id"), _field(body, "to"), channel)
    raise BadRequest(f"unknown action {action!r}; use preview or test-send", field="action")
