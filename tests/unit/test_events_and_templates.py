"""Canonical Segment events and the Liquid template sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.errors import BadRequest
from chalicelib.events import parse_call
from chalicelib.services.templates import Template, TemplateRenderer

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_clock_skew_is_corrected_with_sent_at():
    # the device clock runs 1 hour fast: timestamp and sentAt both carry the error
    body = {"userId": "u", "event": "X", "timestamp": "2026-03-02T10:30:00Z", "sentAt": "2026-03-02T11:00:00Z"}
    call = parse_call("track", body, NOW).calls[0]
    assert call.timestamp == NOW - timedelta(minutes=30)


def test_numeric_user_ids_become_exact_text():
    call = parse_call("identify", {"userId": 12345678901234567890}, NOW).calls[0]
    assert call.userId == "12345678901234567890"


def test_type_must_match_the_path():
    with pytest.raises(BadRequest, match="does not match /v1/track") as err:
        parse_call("track", {"type": "identify", "userId": "u"}, NOW)
    assert err.value.field == "type"


def test_naive_timestamps_are_refused():
    with pytest.raises(BadRequest, match="time zone") as err:
        parse_call("track", {"userId": "u", "event": "X", "timestamp": "2026-03-02T10:00:00"}, NOW)
    assert err.value.field == "timestamp"


def test_all_six_calls_parse():
    bodies = {
        "identify": {"userId": "u", "traits": {"a": 1}},
        "track": {"anonymousId": "a", "event": "Cart Viewed"},
        "page": {"userId": "u", "name": "Home"},
        "screen": {"userId": "u", "name": "Cart"},
        "group": {"userId": "u", "groupId": 42},
        "alias": {"userId": "u", "previousId": "anon-1"},
    }
    for kind, body in bodies.items():
        assert parse_call(kind, body, NOW).calls[0].type == kind


def test_template_syntax_errors_are_caught_at_save_time():
    renderer = TemplateRenderer()
    with pytest.raises(BadRequest, match="template 'bad' subject") as err:
        renderer.validate(Template(name="bad", subject="Hi {% if %}", text="x"))
    assert err.value.field == "subject"


def test_templates_render_in_the_sandbox_and_refuse_undefined_variables():
    renderer = TemplateRenderer({"t": Template(name="t", subject="{{ p.name | default: 'you' }}", text="{{ secret }}")})
    with pytest.raises(Exception, match="'secret' is undefined"):
        renderer.render("t", {"p": {}})
    # Python attributes are out of reach: only the dicts we hand in are visible
    renderer = TemplateRenderer({"t": Template(name="t", subject="{{ p.__class__ }}", text="x")})
    subject, _, _ = TemplateRenderer({"t": Template(name="t", subject="{{ p.name }}", text="x")}).render(
        "t", {"p": {"name": "Ann"}}
    )
    assert subject == "Ann"
    with pytest.raises(Exception):  # noqa: B017 - any Liquid error: the attribute is not there
        renderer.render("t", {"p": {"name": "Ann"}})
