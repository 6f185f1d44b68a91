"""The dashboard's routes over HTTP on 127.0.0.1 (no browser): the admin key, the sign-in
session, escaping, the JSON and CSV, and a recount of the numbers from the raw records."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from html import escape
from urllib.parse import urlencode

from chalicelib.dashboard import SESSION_COOKIE, to_csv
from tests.browser.conftest import HOSTILE, Shop

FORM = "application/x-www-form-urlencoded"


def sign_in(shop: Shop, key: str, origin: str | None = "same") -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": FORM}
    if origin is not None:
        headers["Origin"] = shop.url if origin == "same" else origin
    return shop.request("/admin/dashboard", method="POST", body=urlencode({"key": key}).encode(), headers=headers)


def session_cookie(headers: dict[str, str]) -> str:
    value = headers["Set-Cookie"].split(";", 1)[0]
    assert value.startswith(SESSION_COOKIE + "=")
    return value


def test_the_data_needs_the_admin_key(shop):
    status, _, body = shop.request("/admin/dashboard/data")
    assert status == 401
    assert json.loads(body)["field"] == "Authorization"
    status, _, body = shop.request("/admin/dashboard/data", headers={"Authorization": "Bearer oca_not-a-real-key-123"})
    assert (status, json.loads(body)["message"]) == (401, "unknown admin key")
    status, _, _ = shop.request("/admin/dashboard/data", headers={"x-api-key": shop.admin_key})
    assert status == 200
    write_key = {"Authorization": f"Bearer {shop.write_key}"}  # a write key is not an admin key
    assert shop.request("/admin/dashboard/data", headers=write_key)[0] == 401


def test_the_page_without_a_key_is_the_sign_in_form_and_shows_nothing_measured(shop):
    status, headers, body = shop.request("/admin/dashboard")
    page = body.decode()
    assert status == 401 and headers["Content-Type"].startswith("text/html")
    assert 'name="key"' in page and 'type="password"' in page
    assert "welcome" not in page and 'id="funnel"' not in page
    assert 'class="error"' not in page  # a first visit is not an error
    status, _, body = shop.request("/admin/dashboard", headers={"Authorization": "Bearer oca_wrong-key-000000"})
    assert status == 401 and "unknown admin key" in body.decode()


def test_sign_in_sets_a_session_cookie_that_is_not_the_key(shop):
    status, headers, _ = sign_in(shop, shop.admin_key)
    assert status == 303 and headers["Location"] == "dashboard"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin/dashboard" in cookie
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # plain http on loopback
    assert shop.admin_key not in cookie
    status, _, body = shop.request("/admin/dashboard/data", headers={"Cookie": session_cookie(headers)})
    assert status == 200 and json.loads(body)["funnel"]
    status, _, body = shop.request("/admin/dashboard", headers={"Cookie": session_cookie(headers)})
    assert status == 200 and 'id="funnel"' in body.decode()


def test_sign_in_refuses_a_wrong_key_and_another_site(shop):
    status, headers, body = sign_in(shop, "oca_guessed-key-0000000")
    assert status == 401 and "unknown admin key" in body.decode() and "Set-Cookie" not in headers
    status, headers, body = sign_in(shop, "")
    assert status == 401 and "missing admin key" in body.decode()
    status, headers, body = sign_in(shop, shop.admin_key, origin="https://evil.example")
    assert status == 403 and "cross-site" in body.decode() and "Set-Cookie" not in headers
    assert sign_in(shop, shop.admin_key, origin=None)[0] == 303  # a script without Origin (curl) may sign in


def test_a_tampered_or_revoked_session_is_refused(shop):
    _, headers, _ = sign_in(shop, shop.admin_key)
    name, value = session_cookie(headers).split("=", 1)
    raw, mac = value.split(".")
    forged = f"{name}={raw}x.{mac}"
    status, _, body = shop.request("/admin/dashboard/data", headers={"Cookie": forged})
    assert status == 401 and json.loads(body)["field"] == "cookie"

    second = shop.runtime.credentials.create_key("admin", "second-admin")
    _, headers, _ = sign_in(shop, second)
    cookie = session_cookie(headers)
    assert shop.request("/admin/dashboard/data", headers={"Cookie": cookie})[0] == 200
    assert shop.runtime.credentials.revoke("admin", "second-admin") == 1
    status, _, body = shop.request("/admin/dashboard/data", headers={"Cookie": cookie})
    assert status == 401 and "revoked" in json.loads(body)["message"]


def test_sign_out_clears_the_cookie(shop):
    status, headers, _ = shop.request("/admin/dashboard", method="POST", body=b"action=sign-out",
                                      headers={"Content-Type": FORM, "Origin": shop.url})
    assert status == 303 and headers["Location"] == "dashboard"
    assert headers["Set-Cookie"].startswith(f"{SESSION_COOKIE}=;") and "Max-Age=0" in headers["Set-Cookie"]


def test_an_expired_session_is_refused(shop):
    _, headers, _ = sign_in(shop, shop.admin_key)
    cookie = session_cookie(headers)
    shop.clock.advance(timedelta(hours=8, minutes=1))
    status, _, body = shop.request("/admin/dashboard/data", headers={"Cookie": cookie})
    assert status == 401 and "expired" in json.loads(body)["message"]


def test_bad_format_names_the_field(shop):
    status, _, body = shop.request("/admin/dashboard/data?format=xml",
                                   headers={"Authorization": f"Bearer {shop.admin_key}"})
    assert status == 400 and json.loads(body)["field"] == "format"


def test_names_from_users_are_escaped_and_no_script_may_run(shop):
    status, headers, body = shop.admin("/admin/dashboard")
    page = body.decode()
    assert status == 200
    assert HOSTILE not in page and escape(HOSTILE, quote=True) in page
    assert "<script" not in page.lower()
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # so no script at all
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"


def test_every_number_of_the_json_is_in_the_csv(shop):
    data = json.loads(shop.admin("/admin/dashboard/data")[2])
    status, headers, body = shop.request("/admin/dashboard/data?format=csv",
                                         headers={"Authorization": f"Bearer {shop.admin_key}"})
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    table = {(r["section"], r["group"], r["name"], r["metric"]): r["value"]
             for r in csv.DictReader(io.StringIO(body.decode()))}

    def same(key: tuple[str, str, str, str], value: object) -> None:
        assert table[key] == ("" if value is None else str(value)), key

    checked = 0
    for group, rows in data["kpis"].items():
        for row in rows:
            for metric, value in row.items():
                if metric != "name":
                    same(("kpis", group, row["name"], metric), value)
                    checked += 1
    for stage in data["funnel"]:
        same(("funnel", "", stage["stage"], "count"), stage["count"])
    for item in data["lift"]:
        for metric in ("value", "low", "high", "treated_units", "control_units"):
            same(("lift", "holdout", item["name"], metric), item[metric])
    for metric, value in data["totals"].items():
        same(("totals", "", "all", metric), value)
    assert checked > 50 and data["lift"]


def test_a_name_that_looks_like_a_formula_stays_text_in_the_csv():
    payload = {"totals": {}, "funnel": [], "series": None, "lift": [], "experiments": [], "channel_mix": [],
               "top_journeys": [], "kpis": {"journey": [{"name": "=HYPERLINK(\"http://x\")", "sent": 3}]}}
    rows = list(csv.reader(io.StringIO(to_csv(payload))))
    assert rows[1] == ["kpis", "journey", "'=HYPERLINK(\"http://x\")", "sent", "3"]


def test_the_numbers_agree_with_a_recount_of_the_raw_records(shop):
    data = json.loads(shop.admin("/admin/dashboard/data")[2])
    entries = shop.runtime.stores.ledger.all(100_000)
    sent = [e for e in entries if e.status == "sent"]
    assert data["totals"]["sent"] == len(sent) == sum(m["sent"] for m in data["channel_mix"])
    human_clicks = {
        ev.payload["properties"]["ledger_key"]
        for ev in shop.runtime.stores.events.by_source("tracking", after=None, limit=100_000)
        if ev.event == "Email Link Clicked" and not ev.payload["properties"]["machine"]
    }
    machine = [ev for ev in shop.runtime.stores.events.by_source("tracking", after=None, limit=100_000)
               if ev.payload["properties"]["machine"]]
    assert machine, "the seeded scanner's HEAD requests must be recorded (and kept out)"
    assert data["totals"]["clicked"] == len(human_clicks) > 0
    withheld = [e for e in entries if e.status == "skipped" and "holdout" in e.reason]
    overall = data["lift"][0]
    assert overall["control_units"] == len(withheld) > 0
    orders = [ev for ev in shop.runtime.stores.events.by_source("segment", after=None, limit=100_000)
              if ev.event == "Order Completed"]
    assert 0 < data["totals"]["revenue"] <= sum(ev.payload["properties"]["total"] for ev in orders)
    best = max(data["kpis"]["journey"], key=lambda r: r["revenue"])
    assert data["top_journeys"][0]["journey"] == best["name"] and best["revenue"] > 0


def test_a_period_narrows_the_kpis_to_the_messages_sent_in_it(shop):
    from chalicelib.services.measurement import sent_at

    everything = json.loads(shop.admin("/admin/dashboard/data")[2])
    status, _, body = shop.admin("/admin/dashboard/data?since=2026-03-03&until=2026-03-03")
    assert status == 200
    data = json.loads(body)
    assert data["period"] == {"since": "2026-03-03", "until": "2026-03-03"}
    sent_that_day = [e for e in shop.runtime.stores.ledger.all(100_000)
                     if e.status == "sent" and sent_at(e).date().isoformat() == "2026-03-03"]
    assert 0 < data["totals"]["sent"] == len(sent_that_day) < everything["totals"]["sent"]
    assert [r["name"] for r in data["series"]["rows"]] == ["2026-03-03"]
    assert data["lift"] == everything["lift"]  # lift covers every unit so far
    assert data["links"]["csv"] == "dashboard/data?format=csv&since=2026-03-03&until=2026-03-03"
    page = shop.admin("/admin/dashboard?since=2026-03-03")[2].decode()
    assert '<span id="period">2026-03-03 to today</span>' in page and 'name="since" value="2026-03-03"' in page


def test_a_bad_period_names_the_field(shop):
    for query, field in (("since=yesterday", "since"), ("until=2026-13-01", "until"),
                         ("since=2026-03-05&until=2026-03-01", "since")):
        status, _, body = shop.admin(f"/admin/dashboard/data?{query}")
        assert (status, json.loads(body)["field"]) == (400, field), query
        status, _, body = shop.admin(f"/admin/dashboard?{query}")
        assert (status, json.loads(body)["field"]) == (400, field), query
