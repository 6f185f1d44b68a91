"""The measurement dashboard (behind the admin key): one HTML page, its data as JSON and CSV.

``GET /admin/dashboard`` is the page, ``GET /admin/dashboard/data`` every number on it
(``?format=csv`` the same numbers as one tidy CSV). The page is rendered on the server
(tables and SVG charts, no script), so what the browser shows and what the JSON says come
from the same dictionary.

An API client sends the admin key as the other admin routes take it (``Authorization:
Bearer <key>`` or ``x-api-key``). A browser signs in with a form: ``POST /admin/dashboard``
checks the key and sets an HttpOnly, SameSite=Strict cookie that holds a signed, expiring
session token (never the key, never in a URL), bound to the key's hash so that revoking the
key ends its sessions.

The data comes from whatever the measurement service offers (KPIs per group, the funnel,
holdout lift, experiments); a section whose data is missing says "no data yet" instead of
failing, so the page works on a fresh install and while measurement grows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from chalice import Blueprint, Response

from chalicelib.errors import BadRequest, OmnicastError, Unauthorized
from chalicelib.http import Http, answers_errors, get_runtime

log = logging.getLogger("omnicast.dashboard")

dashboard = Blueprint(__name__)
http = Http(dashboard)

def _page() -> Any:
    """The HTML template module, imported on the first page view (not at every cold start)."""
    from chalicelib import dashboard_page

    return dashboard_page


SESSION_COOKIE = "omnicast_dashboard"
SESSION_PURPOSE = "dashboard-session"
SESSION_SECONDS = 8 * 3600
KPI_GROUPS = ("journey", "channel", "step", "variant", "template", "segment")
SERIES_GROUPS = ("day", "week")
MAX_DAILY_POINTS = 62  # beyond two months a daily chart is unreadable: weeks instead
TOP_JOURNEYS = 5
# what a data function raises when it does not (yet) support a request; anything else is a bug
UNAVAILABLE = (OmnicastError, KeyError, ValueError, TypeError, NotImplementedError, AttributeError)
SECURITY_HEADERS = {
    # no script at all; inline styles only; images only as data: URIs (the favicon)
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make the form post send "Origin: null"
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


# --------------------------------------------------------------------------- sign-in
def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _header_key() -> str | None:
    headers = http.request().headers
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key")
    return key or None


def _session_token() -> str | None:
    raw = http.request().headers.get("cookie", "")
    if not raw:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def _key_still_active(rt: Any, key_hash: str) -> bool:
    from chalicelib.services.credentials import ADMIN

    return rt.credentials.secrets.get(ADMIN + key_hash) is not None


def _authorise(rt: Any) -> None:
    """The admin key from a header, else a valid dashboard session cookie; 401 otherwise."""
    key = _header_key()
    if key is not None:
        rt.credentials.check_admin_key(key)
        return
    token = _session_token()
    if token is None:
        raise Unauthorized("missing admin key: sign in, or send 'Authorization: Bearer <key>'", field="Authorization")
    try:
        data = rt.credentials.verify(SESSION_PURPOSE, token)
    except BadRequest as exc:
        raise Unauthorized("the dashboard session is invalid or has expired: sign in again", field="cookie") from exc
    if not _key_still_active(rt, str(data.get("k", ""))):
        raise Unauthorized("the admin key of this session was revoked: sign in again", field="cookie")


def _cookie_path() -> str:
    # behind API Gateway the path carries the stage (/api/admin/dashboard): the cookie must match it
    path = str((http.request().context or {}).get("path") or "/admin/dashboard")
    return path if path.endswith("/admin/dashboard") else "/admin/dashboard"


def _cookie(value: str, max_age: int) -> str:
    request = http.request()
    secure = request.headers.get("x-forwarded-proto", "") == "https"
    return (
        f"{SESSION_COOKIE}={value}; Path={_cookie_path()}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        + ("; Secure" if secure else "")
    )


def _html(body: str, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS,
                                           **(extra or {})}
    return Response(body=body, status_code=status, headers=headers)


def _same_origin() -> bool:
    """A form post from another site is refused (the browser always sends Origin on POST)."""
    headers = http.request().headers
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlparse(origin).netloc == headers.get("host", "")


# --------------------------------------------------------------------------- routes
@dashboard.route("/admin/dashboard", methods=["GET"])
@answers_errors
def page() -> Response:
    rt = get_runtime()
    try:
        _authorise(rt)
    except Unauthorized as exc:
        # a first visit (nothing sent) gets the form without an error
        first_visit = _header_key() is None and _session_token() is None
        return _html(_page().render_login(None if first_visit else exc.message), status=401)
    return _html(_page().render_page(dashboard_data(rt, period_from_query())))


@dashboard.route("/admin/dashboard", methods=["POST"], content_types=["application/x-www-form-urlencoded"])
@answers_errors
def sign_in() -> Response:
    if not _same_origin():
        return _html(_page().render_login("cross-site sign-in refused"), status=403)
    form = parse_qs(http.body().decode("utf-8", "replace"), keep_blank_values=True)
    if form.get("action") == ["sign-out"]:
        return _html("", status=303, extra={"Location": "dashboard", "Set-Cookie": _cookie("", 0)})
    key = (form.get("key") or [""])[0].strip()
    rt = get_runtime()
    try:
        rt.credentials.check_admin_key(key)
    except Unauthorized as exc:
        return _html(_page().render_login(exc.message), status=401)
    token = rt.credentials.sign(SESSION_PURPOSE, {"k": _key_hash(key)}, ttl_seconds=SESSION_SECONDS)
    # 303: the browser follows with a GET, so a reload does not post the key again
    return _html("", status=303, extra={"Location": "dashboard", "Set-Cookie": _cookie(token, SESSION_SECONDS)})


@dashboard.route("/admin/dashboard/data", methods=["GET"])
@answers_errors
def data() -> Any:
    rt = get_runtime()
    _authorise(rt)
    fmt = http.query("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("format must be json or csv", field="format")
    payload = dashboard_data(rt, period_from_query())
    if fmt == "csv":
        headers: dict[str, str | list[str]] = {
            "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="omnicast-dashboard.csv"',
        }
        return Response(body=to_csv(payload), headers=headers)
    return Response(body=json.dumps(payload), headers={"Content-Type": "application/json", "Cache-Control": "no-store"})


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Period:
    """Days (UTC, both ends included) that KPIs are counted for; by the message's send time."""

    since: date | None = None
    until: date | None = None

    def bounds(self) -> dict[str, datetime]:
        """The measurement service's ``since`` (inclusive) and ``until`` (exclusive)."""
        out = {}
        if self.since is not None:
            out["since"] = datetime.combine(self.since, time(), UTC)
        if self.until is not None:
            out["until"] = datetime.combine(self.until + timedelta(days=1), time(), UTC)
        return out

    def query(self) -> str:
        values = {k: v.isoformat() for k, v in (("since", self.since), ("until", self.until)) if v is not None}
        return urlencode(values)


def period_from_query() -> Period:
    days: dict[str, date | None] = {}
    for name in ("since", "until"):
        raw = http.query(name, "").strip()
        try:
            days[name] = date.fromisoformat(raw) if raw else None
        except ValueError as exc:
            raise BadRequest(f"{name} must be a date like 2026-03-01", field=name) from exc
    since, until = days["since"], days["until"]
    if since is not None and until is not None and since > until:
        raise BadRequest("since is after until", field="since")
    return Period(since, until)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ratio(num: float | None, den: float | None, digits: int = 4) -> float | None:
    return round(num / den, digits) if num is not None and den else None


def kpi_row(group: str, raw: dict[str, Any]) -> dict[str, Any]:
    """One KPI row in the dashboard's shape; a measure the service does not report is None."""
    get = raw.get
    row: dict[str, Any] = {"name": str(get(group, get("name", "")))}
    for field in ("sent", "delivered", "bounced", "opened", "clicked", "conversions", "new_customers"):
        row[field] = _number(get(field))
    row["revenue"] = _number(get("revenue"))
    row["cost"] = _number(get("cost"))
    row["ctr"] = _number(get("ctr")) if "ctr" in raw else _ratio(row["clicked"], row["delivered"] or row["sent"])
    row["conversion_rate"] = (
        _number(get("conversion_rate")) if "conversion_rate" in raw else _ratio(row["conversions"], row["sent"])
    )
    if "romi" in raw:
        row["romi"] = _number(get("romi"))
    else:
        revenue, cost = row["revenue"], row["cost"]
        row["romi"] = round((revenue - cost) / cost, 2) if revenue is not None and cost else None
    row["cac"] = _number(get("cac")) if "cac" in raw else _ratio(row["cost"], row["new_customers"], 2)
    return row


def _sum(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    if not values:
        return None
    total = sum(values)
    return round(total, 4) if isinstance(total, float) else total


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over one grouping (every sent message is in exactly one channel), rates from the sums."""
    out: dict[str, Any] = {f: _sum(rows, f) for f in ("sent", "delivered", "bounced", "opened", "clicked",
                                                      "conversions", "new_customers", "revenue", "cost")}
    for money in ("revenue", "cost"):
        if out[money] is not None:
            out[money] = round(out[money], 2)
    out["ctr"] = _ratio(out["clicked"], out["delivered"] or out["sent"])
    out["conversion_rate"] = _ratio(out["conversions"], out["sent"])
    out["romi"] = (
        round((out["revenue"] - out["cost"]) / out["cost"], 2) if out["revenue"] is not None and out["cost"] else None
    )
    out["cac"] = _ratio(out["cost"], out["new_customers"], 2)
    return out


def funnel(total: dict[str, Any]) -> list[dict[str, Any]]:
    """sent -> delivered -> opened -> clicked -> converted; each stage against the one before
    it that was measured, and against sent."""
    stages = [("sent", "sent"), ("delivered", "delivered"), ("opened", "opened"), ("clicked", "clicked"),
              ("converted", "conversions")]
    out, previous = [], None
    sent = total.get("sent")
    for stage, field in stages:
        count = total.get(field)
        out.append({"stage": stage, "count": count, "of_previous": _ratio(count, previous),
                    "of_sent": _ratio(count, sent)})
        if count is not None:
            previous = count
    return out


def lift_item(raw: dict[str, Any], default_confidence: float) -> dict[str, Any] | None:
    """A holdout or experiment comparison in one shape: the difference of conversion rates
    (treated minus control) with its interval. None when ``raw`` has no estimate."""
    diff = raw.get("difference")
    if isinstance(diff, dict):
        value, low, high = diff.get("value"), diff.get("low"), diff.get("high")
    else:
        value = raw.get("lift", diff)
        low, high = raw.get("low"), raw.get("high")
    value, low, high = _number(value), _number(low), _number(high)
    if value is None or low is None or high is None:
        return None
    treated, control = raw.get("treated") or {}, raw.get("control") or {}
    if not isinstance(treated, dict) or not isinstance(control, dict):
        treated, control = {}, {}
    confidence = _number(raw.get("confidence")) or default_confidence
    item = {
        "name": str(raw.get("journey") or raw.get("name") or raw.get("variant") or "all marketing"),
        "value": value, "low": low, "high": high, "confidence": confidence,
        "treated_units": _number(treated.get("units")), "treated_rate": _number(treated.get("rate")),
        "control_units": _number(control.get("units")), "control_rate": _number(control.get("rate")),
        "relative_lift": _number(raw.get("relative_lift")),
    }
    item["text"] = lift_text(item)
    return item


def lift_text(item: dict[str, Any]) -> str:
    return (f"{item['value']:+.1%} ({item['confidence']:.0%} CI {item['low']:+.1%} to {item['high']:+.1%})")


class _Measures:
    """The measurement functions the runtime has today, called once per request."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.service = self._service(rt)
        self.snap = None
        if self.service is not None and hasattr(self.service, "snapshot"):
            self.snap = self.service.snapshot()  # events and ledger read once for every section

    @staticmethod
    def _service(rt: Any) -> Any:
        try:
            return getattr(rt, "measurement", None)
        except UNAVAILABLE:
            return None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        service, runtime_fn = self.service, getattr(self.rt, name, None)
        if service is not None and hasattr(service, name):
            fn = getattr(service, name)
            return fn(*args, **kwargs, snap=self.snap) if self.snap is not None else fn(*args, **kwargs)
        if callable(runtime_fn):
            return runtime_fn(*args, **kwargs)
        raise NotImplementedError(name)

    def attempt(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
        try:
            return self._call(name, *args, **kwargs), None
        except UNAVAILABLE as exc:
            # the class only: messages may quote data
            log.info("dashboard: %s%r not available (%s)", name, args, type(exc).__name__)
            return None, f"{name} {' '.join(map(str, args))} is not measured yet".replace("  ", " ")


def _confidence(rt: Any) -> float:
    measurement = getattr(getattr(rt, "settings", None), "measurement", None)
    return float(getattr(measurement, "confidence", 0.95))


def dashboard_data(rt: Any, period: Period | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-ready values. ``period`` narrows the KPIs (and
    so the funnel, the chart, the channel mix and the top journeys); lift and experiments
    always cover every unit so far."""
    period = period or Period()
    bounds = period.bounds()
    measures = _Measures(rt)
    confidence = _confidence(rt)
    kpis: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    for group in KPI_GROUPS:
        rows, why = measures.attempt("kpis", group, **bounds)
        if why is not None or not isinstance(rows, list):
            missing[group] = why or "no data yet"
            continue
        kpis[group] = [kpi_row(group, r) for r in rows if isinstance(r, dict)]
    # totals from the channel grouping: every sent message has exactly one channel
    total = totals(kpis.get("channel") or kpis.get("journey") or [])

    series: dict[str, Any] | None = None
    for group in SERIES_GROUPS:
        rows, why = measures.attempt("kpis", group, **bounds)
        if why is None and isinstance(rows, list) and rows:
            points = sorted((kpi_row(group, r) for r in rows if isinstance(r, dict)), key=lambda r: r["name"])
            series = {"period": group, "rows": points}
            if group != "day" or len(points) <= MAX_DAILY_POINTS:
                break

    lift: list[dict[str, Any]] = []
    overall, _ = measures.attempt("lift")
    by_journey, _ = measures.attempt("lift_by_journey")
    journey_items = list(by_journey or [])
    for raw in ([overall] if isinstance(overall, dict) else list(overall or [])) + journey_items:
        item = lift_item(raw, confidence) if isinstance(raw, dict) else None
        # a comparison without treated or control units has no estimate, only the prior's full range
        if item is None or item["treated_units"] == 0 or item["control_units"] == 0:
            continue
        # a single journey with a holdout is the whole of marketing: show it once
        same = ("value", "low", "high", "treated_units", "control_units")
        if len(journey_items) == 1 and lift and all(item[k] == lift[0][k] for k in same):
            continue
        lift.append(item)

    experiments: list[dict[str, Any]] = []
    for row in kpis.get("variant", []):
        journey, _, variant = row["name"].partition(":")
        if variant and variant != "(no split)" and journey not in {e["journey"] for e in experiments}:
            result, _ = measures.attempt("experiment", journey)
            if isinstance(result, dict) and result.get("variants"):
                experiments.append(experiment(result, confidence))

    channels = kpis.get("channel", [])
    all_sent = sum(r["sent"] or 0 for r in channels)
    mix = [{"channel": r["name"], "sent": r["sent"], "share": _ratio(r["sent"], all_sent), "revenue": r["revenue"],
            "cost": r["cost"], "romi": r["romi"]} for r in channels]
    top = sorted(kpis.get("journey", []), key=lambda r: (-(r["revenue"] or 0), -(r["conversions"] or 0), r["name"]))
    shop = getattr(getattr(rt, "settings", None), "shop", None)
    query = period.query()
    return {
        "generated_at": rt.clock.now().isoformat(),
        "period": {"since": period.since.isoformat() if period.since else None,
                   "until": period.until.isoformat() if period.until else None},
        "shop": getattr(shop, "name", ""),
        "currency": getattr(shop, "currency", "EUR"),
        "confidence": confidence,
        "totals": total,
        "funnel": funnel(total) if total.get("sent") else [],
        "kpis": kpis,
        "not_measured": missing,
        "series": series,
        "lift": lift,
        "experiments": experiments,
        "channel_mix": mix,
        "top_journeys": [{"journey": r["name"], "revenue": r["revenue"], "conversions": r["conversions"],
                          "sent": r["sent"], "romi": r["romi"]} for r in top[:TOP_JOURNEYS]],
        "links": {"csv": "dashboard/data?format=csv" + (f"&{query}" if query else ""),
                  "json": "dashboard/data" + (f"?{query}" if query else ""),
                  "kpis_csv_api": "/admin/kpis?group=journey&format=csv"},
    }


def experiment(raw: dict[str, Any], confidence: float) -> dict[str, Any]:
    variants = []
    for v in raw.get("variants") or []:
        if not isinstance(v, dict):
            continue
        row = {"variant": str(v.get("variant", "")), "control": bool(v.get("control")),
               "units": _number(v.get("units")), "conversions": _number(v.get("conversions")),
               "rate": _number(v.get("rate")), "revenue": _number(v.get("revenue")),
               "probability_to_beat_control": _number(v.get("probability_to_beat_control")), "text": None}
        item = lift_item({**v, "confidence": raw.get("confidence")}, confidence)
        if item is not None:
            row.update(difference=item["value"], low=item["low"], high=item["high"], text=item["text"])
        variants.append(row)
    return {"journey": str(raw.get("journey", "")), "control": str(raw.get("control", "")),
            "status": str(raw.get("status", "")), "variants": variants}


# --------------------------------------------------------------------------- CSV
def to_csv(payload: dict[str, Any]) -> str:
    """Every number of the page, one per line: section, group, name, metric, value."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "group", "name", "metric", "value"])

    def put(section: str, group: str, name: str, values: dict[str, Any], skip: Callable[[str], bool]) -> None:
        for metric, value in values.items():
            if not skip(metric) and (value is None or isinstance(value, int | float)):
                writer.writerow([section, group, _csv_safe(name), metric, "" if value is None else value])

    put("totals", "", "all", payload["totals"], lambda m: False)
    for stage in payload["funnel"]:
        put("funnel", "", stage["stage"], stage, lambda m: m == "stage")
    for group, rows in payload["kpis"].items():
        for row in rows:
            put("kpis", group, row["name"], row, lambda m: m == "name")
    if payload["series"]:
        for row in payload["series"]["rows"]:
            put("series", payload["series"]["period"], row["name"], row, lambda m: m == "name")
    for item in payload["lift"]:
        put("lift", "holdout", item["name"], item, lambda m: m in ("name", "text"))
    for exp in payload["experiments"]:
        for v in exp["variants"]:
            put("experiment", exp["journey"], v["variant"], v, lambda m: m in ("variant", "text", "control"))
    for mix in payload["channel_mix"]:
        put("channel_mix", "", mix["channel"], mix, lambda m: m == "channel")
    for rank, top in enumerate(payload["top_journeys"], 1):
        put("top_journeys", str(rank), top["journey"], top, lambda m: m == "journey")
    return out.getvalue()


def _csv_safe(text: str) -> str:
    # a name from a user must not become a formula when the CSV is opened in a spreadsheet
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
