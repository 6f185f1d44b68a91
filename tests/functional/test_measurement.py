"""Tracking and measurement through the HTTP API: signed click redirects and open pixels,
machine hits kept out of the rates, attribution windows, KPIs (JSON and CSV), holdout lift
and experiments, each checked against a recount from the raw SQLite tables."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0"


def identify(api, user, email, message_id=None):
    body = {"userId": user, "messageId": message_id or f"id-{user}", "traits": {"email": email, "first_name": "Ann"}}
    assert api.post("/v1/identify", body).status_code == 200
    api.runtime.drain()


def order(api, user, order_id, total, message_id=None):
    body = {"userId": user, "messageId": message_id or f"order-{order_id}", "event": "Order Completed",
            "properties": {"order_id": order_id, "total": total, "currency": "EUR"}}
    assert api.post("/v1/track", body).status_code == 200
    api.runtime.drain()


def mail_parts(smtp_server, index=-1):
    msg = smtp_server.messages[index][2]
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    return parts["text/plain"], parts["text/html"]


def tracked_links(text):
    return re.findall(r"http://127\.0\.0\.1:8000/t/c/[A-Za-z0-9_\-.]+", text)


def get(api, url, agent=BROWSER, method="GET", accept="image/avif,image/webp,image/png,image/*;q=0.8,*/*;q=0.5"):
    path = urlparse(url).path
    headers = {"Accept": accept, **({"User-Agent": agent} if agent else {})}
    response = getattr(api.client.http, method.lower())(path, headers=headers)
    api.runtime.drain()  # the API queued the hit; the workers record it
    return response


@pytest.fixture
def sent(api, smtp_server):
    identify(api, "u1", "ann@example.com")
    assert len(smtp_server.messages) == 1
    api.runtime.clock.advance(timedelta(minutes=5))  # a human reads later than a scanner
    return api


def test_links_are_signed_redirects_to_the_exact_utm_tagged_destination(sent, smtp_server):
    text, html = mail_parts(smtp_server)
    links = tracked_links(text)
    # the shop link appears twice (body and footer): one token for one destination
    assert len(links) == 2 and len(set(links)) == 1 and "shop.example" not in text
    assert "/v1/unsubscribe?token=" in text  # the unsubscribe link is never rewritten
    assert f'href="{links[0]}"' in html

    r = get(sent, links[0])
    assert r.status_code == 302
    target = urlparse(r.headers["Location"])
    assert (target.scheme, target.netloc) == ("https", "shop.example")
    assert parse_qs(target.query) == {"utm_source": ["omnicast"], "utm_medium": ["email"],
                                      "utm_campaign": ["welcome"], "utm_content": ["welcome_email"]}
    assert r.headers["Cache-Control"] == "no-store"

    clicks = [e for e in sent.runtime.stores.events.by_source("tracking") if e.event == "Email Link Clicked"]
    assert len(clicks) == 1
    props = clicks[0].payload["properties"]
    assert props["journey"] == "welcome" and props["machine"] is False
    assert props["ledger_key"] == sent.runtime.stores.ledger.all()[0].key


def test_a_tampered_or_foreign_token_is_400_and_records_nothing(sent, smtp_server):
    link = tracked_links(mail_parts(smtp_server)[0])[0]
    token = link.rsplit("/", 1)[1]
    body, sig = token.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    for bad in (f"{forged_body}.{sig}", f"{body}.{sig[:-2]}xx", "nonsense"):
        r = sent.client.http.get(f"/t/c/{bad}", headers={"User-Agent": BROWSER})
        assert r.status_code == 400
        assert json.loads(r.body)["field"] == "token"
    # an open token is not a click token: purposes are bound into the signature
    pixel = re.search(r'/t/o/([A-Za-z0-9_\-.]+)"', mail_parts(smtp_server)[1]).group(1)
    assert sent.client.http.get(f"/t/c/{pixel}", headers={"User-Agent": BROWSER}).status_code == 400
    assert sent.runtime.stores.events.by_source("tracking") == []


def test_an_expired_link_is_refused(sent, smtp_server):
    link = tracked_links(mail_parts(smtp_server)[0])[0]
    sent.runtime.clock.advance(timedelta(days=91))
    r = get(sent, link)
    assert r.status_code == 400 and "expired" in json.loads(r.body)["message"]


def test_open_pixel_is_a_gif_and_machine_hits_are_flagged(sent, smtp_server):
    _text, html = mail_parts(smtp_server)
    pixel = re.search(r'<img src="(http://127\.0\.0\.1:8000/t/o/[^"]+)" width="1" height="1"', html).group(1)
    r = get(sent, pixel)
    assert r.status_code == 200, r.body
    assert r.headers["Content-Type"] == "image/gif"
    assert r.body[:6] == b"GIF89a"
    sent.runtime.clock.advance(timedelta(seconds=1))  # the same hit at the same instant is one hit
    assert get(sent, pixel, accept="image/*").status_code == 204  # counted, no binary body
    get(sent, pixel, agent="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)")
    link = tracked_links(mail_parts(smtp_server)[0])[0]
    get(sent, link, method="HEAD")  # a link scanner checking the target
    get(sent, link, agent="")  # no user agent at all
    hits = {(e.event, e.payload["properties"]["machine"]) for e in sent.runtime.stores.events.by_source("tracking")}
    assert hits == {("Email Opened", False), ("Email Opened", True), ("Email Link Clicked", True)}
    assert len([e for e in sent.runtime.stores.events.by_source("tracking") if e.event == "Email Opened"]) == 3

    row = sent.runtime.measurement.kpis("journey")[0]
    assert (row["sent"], row["opened"], row["clicked"]) == (1, 1, 0)


def test_a_click_seconds_after_the_send_is_a_scanner(api, smtp_server):
    identify(api, "u1", "ann@example.com")
    link = tracked_links(mail_parts(smtp_server)[0])[0]
    api.runtime.clock.advance(timedelta(seconds=2))
    assert get(api, link).status_code == 302  # the redirect still works for whoever asked
    (click,) = api.runtime.stores.events.by_source("tracking")
    assert click.payload["properties"]["machine"] is True
    assert "within 10 s" in click.payload["properties"]["machine_reason"]


def test_tracking_can_be_switched_off(make_runtime, smtp_server):
    rt = make_runtime(smtp_server, measurement={"track_links": False, "track_opens": False})
    text, html = rt.tracking.rewrite("Shop now: https://shop.example/x", "<a href=\"https://shop.example/x\">x</a>",
                                     {"message_id": "m", "profile_id": "p", "key": "k|j|s|e", "channel": "email",
                                      "journey": "j", "step": "s"})
    assert "/t/" not in text and "/t/" not in (html or "")


# --------------------------------------------------------------------------- attribution and KPIs
def test_orders_are_attributed_within_the_windows_last_touch_first(sent, smtp_server):
    link = tracked_links(mail_parts(smtp_server)[0])[0]
    rt = sent.runtime
    get(sent, link)
    rt.clock.advance(timedelta(days=2))
    order(sent, "u1", "o-1", 80.0)  # inside the click window (5 days): attributed to the click
    rt.clock.advance(timedelta(days=4))
    order(sent, "u1", "o-2", 20.0)  # 6 days after the click, delivery window long over: not attributed
    order(sent, "u1", "o-1", 80.0, message_id="order-o-1-again")  # the same order twice: counted once

    attributed = rt.measurement.attribute()
    (a,) = attributed
    assert (a.order_id, a.touch, a.journey, a.step, a.channel, a.revenue, a.new_customer) == (
        "o-1", "click", "welcome", "welcome_email", "email", 80.0, True)
    r = sent.admin_get("/admin/attribution")
    assert [o["order_id"] for o in json.loads(r.body)["orders"]] == ["o-1"]

    rows = json.loads(sent.admin_get("/admin/kpis?group=journey").body)["rows"]
    welcome = next(r for r in rows if r["journey"] == "welcome")
    assert welcome["sent"] == 2 and welcome["clicked"] == 1 and welcome["ctr"] == 0.5  # welcome + tips
    assert welcome["conversions"] == 1 and welcome["revenue"] == 80.0 and welcome["new_customers"] == 1


def test_windows_are_configurable(make_runtime, smtp_server, clock):
    from chalice.test import Client

    import app as app_module
    from chalicelib.runtime import set_runtime

    rt = make_runtime(smtp_server, measurement={"windows_hours": {"click": 1, "open": 1, "delivery": 0}})
    set_runtime(rt)
    try:
        with Client(app_module.app) as client:
            key = rt.credentials.create_key("write", "t")
            import base64
            auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
                    "Content-Type": "application/json"}
            client.http.post("/v1/identify", headers=auth,
                             body=json.dumps({"userId": "u1", "messageId": "i1", "traits": {"email": "a@b.co"}}))
            rt.drain()
            clock.advance(timedelta(hours=2))
            client.http.post("/v1/track", headers=auth, body=json.dumps(
                {"userId": "u1", "messageId": "o1", "event": "Order Completed", "properties": {"order_id": "1",
                                                                                             "total": 5}}))
            rt.drain()
    finally:
        set_runtime(None)
    assert rt.measurement.attribute() == []  # the 24 h default would have credited the delivery


def test_kpis_by_every_group_and_csv(sent, smtp_server):
    rt = sent.runtime
    get(sent, tracked_links(mail_parts(smtp_server)[0])[0])
    rt.clock.advance(timedelta(hours=1))
    order(sent, "u1", "o-1", 30.0)  # also sends the order confirmation (transactional)
    for group in ("journey", "step", "channel", "template", "variant", "segment", "day", "week", "month", "total"):
        r = sent.admin_get(f"/admin/kpis?group={group}")
        assert r.status_code == 200, group
        rows = json.loads(r.body)["rows"]
        if group == "segment":  # a customer in two segments counts in both
            assert rows and all(x["sent"] == 2 and x["revenue"] == 30.0 for x in rows)
            continue
        assert sum(x["sent"] for x in rows) == 2, group  # welcome + order confirmation, one row each or both
        assert sum(x["revenue"] for x in rows) == 30.0, group
    day = json.loads(sent.admin_get("/admin/kpis?group=day").body)["rows"][0]
    assert day["day"] == rt.clock.now().date().isoformat()
    r = sent.admin_get("/admin/kpis?group=channel&format=csv")
    assert r.headers["Content-Type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(r.body.decode())))
    assert row["channel"] == "email" and row["sent"] == "2" and row["clicked"] == "1" and row["revenue"] == "30.0"
    assert row["ctr"] == "0.5"
    for bad, field in (("group=planet", "group"), ("model=magic", "model"), ("since=yesterday", "since"),
                       ("format=xml", "format")):
        r = sent.admin_get(f"/admin/kpis?{bad}")
        assert r.status_code == 400 and json.loads(r.body)["field"] == field


def test_linear_attribution_splits_an_order_between_touches(sent, smtp_server):
    get(sent, tracked_links(mail_parts(smtp_server)[0])[0])
    sent.runtime.clock.advance(timedelta(hours=1))
    order(sent, "u1", "o-1", 90.0)
    rows = sent.runtime.measurement.attribute("linear")
    # two touches in their windows: the delivery (24 h) and the click (5 days)
    assert sorted((a.touch, a.revenue) for a in rows) == [("click", 45.0), ("delivery", 45.0)]
    first = sent.runtime.measurement.attribute("first_touch")
    assert [(a.touch, a.revenue) for a in first] == [("delivery", 90.0)]


def test_unit_costs_fixed_costs_romi_and_cac(make_runtime, smtp_server):
    rt = make_runtime(smtp_server, measurement={"fixed_costs": 2.0})
    from chalicelib.ports import LedgerEntry

    now = rt.clock.now()
    for i, cost in enumerate((0.5, 0.5)):
        e = LedgerEntry(key=f"p{i}|j|s|e", profile_id=f"p{i}", journey="j", step="s", channel="sms", status="sending",
                        reason="", created_at=now, updated_at=now, detail={"purpose": "marketing"})
        rt.stores.ledger.claim(e)
        rt.stores.ledger.update(e.key, status="sent", reason="sent", at=now, detail={"cost": cost,
                                                                                   "sent_at": now.isoformat()})
    from chalicelib.ports import StoredEvent

    rt.stores.events.append(StoredEvent(
        message_id="o1", type="track", profile_id="p0", received_at=now + timedelta(hours=1),
        timestamp=now + timedelta(hours=1), event="Order Completed", source="segment", processed=True,
        payload={"type": "track", "event": "Order Completed", "properties": {"order_id": "A", "total": 15.0}}))
    (row,) = rt.measurement.kpis("journey")
    assert row["cost"] == 3.0  # 2 x 0.50 per SMS + the 2.00 fixed cost
    assert row["revenue"] == 15.0 and row["romi"] == 4.0  # (15 - 3) / 3
    assert row["new_customers"] == 1 and row["cac"] == 3.0


# --------------------------------------------------------------------------- lift and experiments
def test_statistics_are_the_textbook_values():
    from chalicelib.services.measurement import per_arm_sample_size, probability_to_beat, rate_difference, wilson

    # Newcombe (1998), table II example: 56/70 vs 48/80 -> difference 0.2000, interval 0.0524 to 0.3339
    d, lo, hi = rate_difference(56, 70, 48, 80)
    assert (round(d, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)
    p, lo, hi = wilson(0, 10)
    assert p == 0 and lo == 0 and round(hi, 4) == 0.2775
    assert probability_to_beat(50, 100, 50, 100) == pytest.approx(0.5, abs=0.02)
    assert probability_to_beat(70, 100, 50, 100) > 0.99
    # 10% base, +2 pp, 95% two-sided, 80% power: about 3,841 per arm
    assert 3800 <= per_arm_sample_size(0.10, 0.02) <= 3900


def test_journey_holdout_is_deterministic_and_measured(rec_runtime, outbox):
    from chalicelib.journey_model import load_journey
    from chalicelib.services.send import in_holdout

    rt = rec_runtime()
    rt.journeys.registry.add(load_journey({
        "name": "promo", "holdout_percent": 30, "trigger": {"event": "Promo Requested"},
        "steps": [{"id": "mail", "type": "send", "channel": "email", "template": "welcome"}]}))
    from tests.unit.test_journeys import customer, emit

    users = [f"u{i}" for i in range(60)]
    for u in users:
        customer(rt, u)
        emit(rt, "track", userId=u, event="Promo Requested")
    promo = [e for e in rt.stores.ledger.all() if e.journey == "promo"]
    withheld = {e.profile_id for e in promo if e.status == "skipped"}
    assert all("journey holdout" in e.reason for e in promo if e.status == "skipped")
    assert withheld == {e.profile_id for e in promo if in_holdout(e.profile_id, 30, salt="promo")}
    assert 8 <= len(withheld) <= 30
    rt.clock.advance(timedelta(hours=3))
    # customers in the control group who ordered anyway, and treated ones who ordered
    buyers = sorted(e.profile_id for e in promo)[:20]
    for i, pid in enumerate(buyers):
        profile = rt.stores.profiles.get(pid)
        emit(rt, "track", userId=profile.identifiers["user_id"], event="Order Completed",
             properties={"order_id": f"o{i}", "total": 10})
    lift = rt.measurement.lift("promo")
    t_conv = sum(1 for e in promo if e.status == "sent" and e.profile_id in buyers)
    c_conv = sum(1 for e in promo if e.status == "skipped" and e.profile_id in buyers)
    assert lift["treated"]["units"] == len(promo) - len(withheld) and lift["treated"]["conversions"] == t_conv
    assert lift["control"]["units"] == len(withheld) and lift["control"]["conversions"] == c_conv
    d = lift["difference"]
    assert d["low"] <= d["value"] <= d["high"]
    assert "treated vs" in lift["summary"]


def test_experiment_reports_each_variant_against_control(rec_runtime, outbox):
    from chalicelib.journey_model import load_journey

    rt = rec_runtime()
    rt.journeys.registry.add(load_journey({
        "name": "subject_test", "trigger": {"event": "Test Me"},
        "steps": [{"id": "ab", "type": "split", "variants": {"control": 1, "b": 1}, "goto": {"b": "mail_b"},
                   "horizon": 10},
                  {"id": "mail_a", "type": "send", "channel": "email", "template": "welcome", "then": "end"},
                  {"id": "mail_b", "type": "send", "channel": "email", "template": "welcome_tips"}]}))
    from tests.unit.test_journeys import customer, emit

    for i in range(40):
        customer(rt, f"x{i}")
        emit(rt, "track", userId=f"x{i}", event="Test Me")
    entries = [e for e in rt.stores.ledger.all() if e.journey == "subject_test" and e.status == "sent"]
    arms = {e.detail["variant"] for e in entries}
    assert arms == {"control", "b"}
    rt.clock.advance(timedelta(hours=3))
    for e in entries:  # everyone in b buys, nobody in control
        if e.detail["variant"] == "b":
            user = rt.stores.profiles.get(e.profile_id).identifiers["user_id"]
            emit(rt, "track", userId=user, event="Order Completed", properties={"order_id": user, "total": 1})
    from chalice.test import Client

    import app as app_module
    from chalicelib.runtime import set_runtime

    set_runtime(rt)
    try:
        admin = rt.credentials.create_key("admin", "t")
        with Client(app_module.app) as client:
            r = client.http.get("/admin/experiments/subject_test", headers={"Authorization": f"Bearer {admin}"})
            missing = client.http.get("/admin/experiments/nope", headers={"Authorization": f"Bearer {admin}"})
    finally:
        set_runtime(None)
    assert missing.status_code == 404
    result = json.loads(r.body)
    rows = {v["variant"]: v for v in result["variants"]}
    n_b = sum(1 for e in entries if e.detail["variant"] == "b")
    assert result["control"] == "control" and rows["b"]["units"] == n_b and rows["b"]["conversions"] == n_b
    assert rows["control"]["conversions"] == 0 and rows["b"]["probability_to_beat_control"] > 0.99
    assert rows["b"]["low"] > 0
    assert "fixed horizon of 10" in result["status"] and result["mode"] == "fixed"


def test_a_bandit_split_shifts_traffic_to_the_variant_that_converts(rec_runtime, outbox):
    from chalicelib.journey_model import load_journey
    from tests.unit.test_journeys import customer, emit

    rt = rec_runtime(plugins={"allow": ["engagement"]})
    assert rt.scoring.enabled()["bandit"].name == "thompson_bandit"
    rt.journeys.registry.add(load_journey({
        "name": "offer_test", "trigger": {"event": "Offer Me"},
        "steps": [{"id": "ab", "type": "split", "mode": "bandit", "variants": {"control": 1, "b": 1},
                   "goto": {"b": "mail_b"}},
                  {"id": "mail_a", "type": "send", "channel": "email", "template": "welcome", "then": "end"},
                  {"id": "mail_b", "type": "send", "channel": "email", "template": "welcome_tips"}]}))
    rt.bandit_splits.refresh_seconds = 0  # read the evidence again at every choice

    def wave(prefix, n):
        for i in range(n):
            customer(rt, f"{prefix}{i}")
            emit(rt, "track", userId=f"{prefix}{i}", event="Offer Me")
        return [e for e in rt.stores.ledger.all() if e.journey == "offer_test" and e.status == "sent"
                and rt.stores.profiles.get(e.profile_id).identifiers["user_id"].startswith(prefix)]

    first = wave("w1-", 30)
    rt.clock.advance(timedelta(hours=2))
    for e in first:  # variant b converts, control does not
        if e.detail["variant"] == "b":
            user = rt.stores.profiles.get(e.profile_id).identifiers["user_id"]
            emit(rt, "track", userId=user, event="Order Completed", properties={"order_id": user, "total": 5})
    assert {e.detail["variant"] for e in first} == {"control", "b"}
    second = wave("w2-", 40)
    share_b = sum(e.detail["variant"] == "b" for e in second) / len(second)
    assert share_b >= 0.8  # the bandit moved the traffic to the winner
    state = rt.stores.journeys.for_profile(second[0].profile_id)[0]
    assert state.data["split_ab_why"].startswith("bandit (thompson_bandit): P(best)")


def test_a_bandit_split_without_a_bandit_plugin_uses_the_fixed_weights(rec_runtime, outbox):
    from chalicelib.journey_model import load_journey
    from chalicelib.services.journeys import split_variant
    from tests.unit.test_journeys import customer, emit

    rt = rec_runtime()  # no model plugins at all
    rt.journeys.registry.add(load_journey({
        "name": "offer_test", "trigger": {"event": "Offer Me"},
        "steps": [{"id": "ab", "type": "split", "mode": "bandit", "variants": {"control": 1, "b": 1}},
                  {"id": "mail", "type": "send", "channel": "email", "template": "welcome"}]}))
    customer(rt, "solo")
    emit(rt, "track", userId="solo", event="Offer Me")
    (entry,) = [e for e in rt.stores.ledger.all() if e.journey == "offer_test"]
    assert entry.detail["variant"] == split_variant(entry.profile_id, "offer_test", "ab", {"control": 1, "b": 1})
    state = rt.stores.journeys.for_profile(entry.profile_id)
    assert any(s.data.get("split_ab_why", "").startswith("no bandit model plugin") for s in state)


def test_sms_links_are_short_tracked_redirects(rec_runtime, outbox):
    """SMS, push and messenger texts get /s/<12 characters> links; a click redirects to the
    UTM-tagged destination and counts; a link preview bot does not; unknown codes are 404."""
    from chalice.test import Client

    import app as app_module
    from chalicelib.journey_model import load_journey
    from chalicelib.runtime import set_runtime
    from tests.unit.test_journeys import customer, emit

    rt = rec_runtime()
    rt.journeys.registry.add(load_journey({
        "name": "sms_promo", "trigger": {"event": "Texts Please"}, "steps": [
            {"id": "text", "type": "send", "channel": "sms", "template": "welcome", "purpose": "transactional"}]}))
    customer(rt, "t1", phone="+14155550100")
    emit(rt, "track", userId="t1", event="Texts Please")
    (sms,) = outbox.to("sms")
    links = re.findall(r"http://127\.0\.0\.1:8000/s/[A-Za-z0-9_\-]+", sms.text)
    assert links and all(len(link.rsplit("/", 1)[1]) == 12 for link in links)
    assert "shop.example" not in sms.text and "/v1/unsubscribe" in sms.text
    rt.clock.advance(timedelta(minutes=3))
    set_runtime(rt)
    try:
        with Client(app_module.app) as client:
            path = urlparse(links[0]).path
            r = client.http.get(path, headers={"User-Agent": BROWSER})
            preview = client.http.get(path, headers={"User-Agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"})
            missing = client.http.get("/s/AAAAAAAAAAAA", headers={"User-Agent": BROWSER})
            malformed = client.http.get("/s/x", headers={"User-Agent": BROWSER})
    finally:
        set_runtime(None)
    rt.drain()  # the workers record the hits the API queued
    assert r.status_code == 302 and preview.status_code == 302
    target = urlparse(r.headers["Location"])
    assert target.netloc == "shop.example" and parse_qs(target.query)["utm_medium"] == ["sms"]
    assert missing.status_code == 404 and malformed.status_code == 404
    assert json.loads(missing.body)["field"] == "code"
    clicks = [e for e in rt.stores.events.by_source("tracking") if e.event == "Message Link Clicked"]
    assert sorted(e.payload["properties"]["machine"] for e in clicks) == [False, True]
    row = next(r for r in rt.measurement.kpis("channel") if r["channel"] == "sms")
    assert row["sent"] == 1 and row["clicked"] == 1


def test_a_hit_is_queued_by_the_api_and_recorded_once_by_the_workers(sent, smtp_server):
    """The API answers a hit without writing the event log (locally it never waits for the
    workers' transactions); the workers record it, and the same hit queued twice once."""
    link = tracked_links(mail_parts(smtp_server)[0])[0]
    path = urlparse(link).path
    for _ in range(2):  # a retried request at the same instant
        assert sent.client.http.get(path, headers={"User-Agent": BROWSER}).status_code == 302
    assert sent.runtime.stores.events.by_source("tracking") == []
    assert sent.runtime.stores.queue.depth("ingest") == 2
    sent.runtime.drain()
    (click,) = sent.runtime.stores.events.by_source("tracking")
    assert click.event == "Email Link Clicked" and click.payload["properties"]["machine"] is False
    assert click.timestamp == sent.runtime.clock.now() and sent.runtime.stores.queue.depth("ingest") == 0
