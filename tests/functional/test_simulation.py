"""End to end on a small seed: a simulated shop over HTTP, SMTP and the virtual clock.

No message is sent twice, none lands in the recipient's quiet hours, none goes without
consent, and the measured lift of the cart reminder is consistent with the planted one.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from chalicelib.simulation import SimConfig, run_simulation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    data = tmp_path_factory.mktemp("sim")
    config = SimConfig(customers=150, days=21, seed=11, holdout_percent=30)
    result = run_simulation(config, data_dir=data, quiet=True)
    from chalicelib.adapters.local.sqlite import Database

    return config, result, Database(data / "omnicast.db"), data


def test_no_message_twice(simulated):
    _, result, db, data = simulated
    keys = [k for (k,) in db.query("SELECT key FROM ledger")]
    assert len(keys) == len(set(keys))
    mails = sorted((data / "mailbox").glob("*.eml"))
    assert len(mails) == result["emails_received_by_smtp"] == result["messages_sent"] > 0
    ids = Counter(m.read_bytes().split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0] for m in mails)
    assert ids.most_common(1)[0][1] == 1


def test_no_marketing_in_quiet_hours_or_without_consent(simulated):
    _, _, db, _ = simulated
    rows = db.query("SELECT l.updated_at, l.detail, p.traits FROM ledger l JOIN profiles p "
                    "ON p.profile_id = l.profile_id WHERE l.status = 'sent'")
    assert rows
    for updated_at, detail, traits in rows:
        detail, traits = json.loads(detail), json.loads(traits)
        if detail["purpose"] != "marketing":
            continue
        local = datetime.fromisoformat(updated_at.replace("Z", "+00:00")).astimezone(ZoneInfo(traits["timezone"]))
        assert 9 <= local.hour < 21, (updated_at, traits["timezone"])
        assert (traits.get("consent") or {}).get("email") != "unsubscribed"


def test_the_measured_lift_is_consistent_with_the_planted_effect(simulated):
    config, result, _, _ = simulated
    lift = result["lift"]
    assert lift["treated"][1] > 0 and lift["holdout"][1] > 0
    assert lift["low"] <= config.cart_email_effect <= lift["high"]
    assert result["truth"]["orders"] > 0 and result["events"]["shopify"] > 0
