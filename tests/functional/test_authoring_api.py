"""Journeys, segments and templates through the admin API, with errors a marketer can act on."""

from __future__ import annotations

import json

import pytest

CART_REMINDER = """\
name: gentle_reminder
version: "1"
description: A softer cart reminder after two hours
trigger: {event: Checkout Started, entity: properties.checkout_id}
exit_on:
  - {event: Order Completed, entity: properties.checkout_id}
steps:
  - {id: wait_2h, type: wait, hours: 2}
  - {id: remind, type: send, channel: email, template: soft_reminder}
"""


def put(api, path, body, content_type="application/json"):
    raw = body if isinstance(body, str) else json.dumps(body)
    return api.client.http.put(path, body=raw, headers={"Authorization": f"Bearer {api.admin_key}",
                                                        "Content-Type": content_type})


def post(api, path, body):
    return api.client.http.post(path, body=json.dumps(body), headers={"Authorization": f"Bearer {api.admin_key}",
                                                                      "Content-Type": "application/json"})


@pytest.fixture
def customer(api):
    api.post("/v1/identify", {"userId": "u1", "messageId": "i1",
                              "traits": {"email": "ann@example.com", "first_name": "Ann",
                                         "timezone": "Europe/Paris"}})
    api.runtime.drain()
    return api.runtime.stores.profiles.resolve("user_id", "u1")


def test_a_journey_in_yaml_is_validated_saved_and_runs(api, smtp_server, customer, clock):
    r = put(api, "/admin/templates/soft_reminder", {"subject": "Still want it, {{ profile.first_name }}?",
                                                    "text": "Your cart: {{ event.checkout_id }}"})
    assert r.status_code == 200, r.body
    r = put(api, "/admin/journeys/gentle_reminder", CART_REMINDER, "application/yaml")
    assert r.status_code == 200, r.body
    listed = json.loads(api.admin_get("/admin/journeys").body)["journeys"]
    assert any(j["name"] == "gentle_reminder" and j["version"] == "1" for j in listed)
    # the built-in abandoned-cart journey would use this customer's contact budget first
    assert post(api, "/admin/journeys/abandoned_cart/pause", {}).status_code == 200
    api.post("/v1/track", {"userId": "u1", "event": "Checkout Started", "messageId": "c1",
                           "properties": {"checkout_id": "k1"}})
    api.runtime.drain()
    from datetime import timedelta

    clock.advance(timedelta(hours=3))
    api.runtime.drain()
    subjects = [m[2]["Subject"] for m in smtp_server.messages]
    assert "Still want it, Ann?" in subjects and "You left something in your cart" not in subjects


def test_journey_errors_name_line_and_field(api):
    r = put(api, "/admin/journeys/gentle_reminder", CART_REMINDER.replace("channel: email", "chanel: email"),
            "text/yaml")
    assert r.status_code == 400
    body = json.loads(r.body)
    assert body["message"].startswith("gentle_reminder.yaml:9: steps.1.chanel: unknown field")
    assert body["field"] == "steps.1.chanel"
    r = put(api, "/admin/journeys/other_name", CART_REMINDER, "text/yaml")
    assert r.status_code == 400 and json.loads(r.body)["field"] == "name"


def test_a_changed_journey_needs_a_new_version(api):
    assert put(api, "/admin/journeys/gentle_reminder", CART_REMINDER, "text/yaml").status_code == 200
    changed = CART_REMINDER.replace("hours: 2", "hours: 3")
    r = put(api, "/admin/journeys/gentle_reminder", changed, "text/yaml")
    assert r.status_code == 400 and "new version" in json.loads(r.body)["message"]
    assert put(api, "/admin/journeys/gentle_reminder", changed.replace('version: "1"', 'version: "2"'),
               "text/yaml").status_code == 200
    versions = next(j for j in json.loads(api.admin_get("/admin/journeys").body)["journeys"]
                    if j["name"] == "gentle_reminder")["versions"]
    assert versions == ["1", "2"]


def test_pause_resume_delete(api):
    assert post(api, "/admin/journeys/welcome/pause", {}).status_code == 200
    assert "welcome" in api.runtime.journeys.registry.paused
    assert post(api, "/admin/journeys/welcome/resume", {}).status_code == 200
    assert "welcome" not in api.runtime.journeys.registry.paused
    assert api.client.http.delete("/admin/journeys/welcome",
                                  headers={"Authorization": f"Bearer {api.admin_key}"}).status_code == 200
    assert all(j["name"] != "welcome" for j in json.loads(api.admin_get("/admin/journeys").body)["journeys"])
    r = post(api, "/admin/journeys/nope/pause", {})
    assert r.status_code == 404 and "no journey 'nope'" in json.loads(r.body)["message"]


def test_dry_run_shows_what_would_happen_and_sends_nothing(api, smtp_server, customer, clock):
    before = len(api.runtime.stores.ledger.all())
    r = post(api, "/admin/journeys/win_back/dry-run", {"profile_id": customer})
    assert r.status_code == 200, r.body
    plan = json.loads(r.body)["plan"]
    actions = [(p["step"], p["action"], p.get("decision")) for p in plan]
    assert actions[0] == ("we_miss_you", "send", "sent") or actions[0][2] == "deferred"
    assert ("wait_7_days", "wait", None) in actions and plan[-1]["action"] == "complete"
    assert plan[0]["subject"] == "We miss you, Ann"
    assert len(api.runtime.stores.ledger.all()) == before  # nothing written
    r = post(api, "/admin/journeys/win_back/dry-run", {})
    assert r.status_code == 400 and json.loads(r.body)["field"] == "profile_id"


def test_templates_are_checked_at_save_time_and_previewed(api, smtp_server, customer):
    r = put(api, "/admin/templates/broken", {"subject": "Hi {% if %}", "text": "x"})
    assert r.status_code == 400 and json.loads(r.body)["field"] == "subject"
    r = put(api, "/admin/templates/promo", {"subject": "Hi", "text": "x", "colour": "red"})
    assert r.status_code == 400 and json.loads(r.body)["field"] == "colour"
    put(api, "/admin/templates/promo", {"subject": "Bonjour {{ profile.first_name }}", "text": "Salut",
                                        "locale": "fr"})
    put(api, "/admin/templates/promo", {"subject": "Hello {{ profile.first_name }}", "text": "Hi"})
    r = post(api, "/admin/templates/promo/preview", {"profile_id": customer})
    assert json.loads(r.body)["subject"] == "Hello Ann"
    r = post(api, "/admin/templates/promo/test-send", {"profile_id": customer, "to": "tester@shop.example"})
    assert json.loads(r.body)["ok"] is True
    assert smtp_server.messages[-1][1] == ["tester@shop.example"]
    assert smtp_server.messages[-1][2]["Subject"] == "[TEST] Hello Ann"


def test_segments_api_and_a_broadcast(api, smtp_server, customer, clock):
    r = put(api, "/admin/segments/parisians", {"rule": {"trait": "timezone", "op": "=", "value": "Europe/Paris"}})
    assert r.status_code == 200, r.body
    preview = json.loads(api.admin_get("/admin/segments/parisians/preview").body)
    assert preview["count"] == 1 and preview["sample"] == [customer] and preview["method"] == "sql"
    r = put(api, "/admin/segments/bad", {"rule": {"trait": "x", "op": "~"}})
    assert r.status_code == 400 and json.loads(r.body)["field"] == "rule.op"
    r = post(api, "/admin/journeys/promotion/broadcast", {"segment": "parisians"})
    assert json.loads(r.body)["entered"] == 1
    r = post(api, "/admin/journeys/welcome/broadcast", {"segment": "parisians"})
    assert r.status_code == 400 and "not a broadcast" in json.loads(r.body)["message"]


def test_authoring_needs_the_admin_key(api):
    r = api.client.http.put("/admin/journeys/x", body=CART_REMINDER, headers={"Content-Type": "text/yaml"})
    assert r.status_code == 401
