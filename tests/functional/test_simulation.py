"""End to end on a small seed: a simulated shop over HTTP, SMTP and the virtual clock.

No message is sent twice, none lands in the recipient's quiet hours, none goes without
consent, and the measured lift of the cart reminder is consistent with the planted one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from chalicelib.simulation import SimConfig, run_simulation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    data = tmp_path_factory.mktemp("sim")
    # 500 customers: the overall lift's interval clears zero on each of seeds 11 to 14 (at 150, seeds 13
    # and 14 did not, nor 11 once browse abandonment left started checkouts to the cart reminder)
    config = SimConfig(customers=500, days=21, seed=11, holdout_percent=30)
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


def test_kpis_agree_with_a_recount_from_the_raw_tables_and_the_simulators_truth(simulated):
    """CTR, conversions, revenue, ROMI and CAC per journey and channel, recounted here with SQL
    and a last-touch rule written again from its definition, and opens and clicks against what
    the simulated customers actually did."""
    config, result, db, _ = simulated
    sent = {key: (journey, channel, json.loads(detail)) for key, journey, channel, detail in db.query(
        "SELECT key, journey, channel, detail FROM ledger WHERE status = 'sent'")}
    hits: dict[str, dict[str, set]] = {"Email Opened": {}, "Email Link Clicked": {}}
    touches: dict[str, list] = {}
    profile_of = dict(db.query("SELECT key, profile_id FROM ledger"))
    for key, (_, _, detail) in sent.items():
        touches.setdefault(profile_of[key], []).append((datetime.fromisoformat(detail["sent_at"]), 2, key))
    machine = 0
    for event, ts, payload in db.query(
            "SELECT event, timestamp, payload FROM events WHERE source = 'tracking'"):
        props = json.loads(payload)["properties"]
        if props["machine"]:
            machine += 1
            continue
        hits[event].setdefault(props["ledger_key"], set()).add(ts)
        rank = 0 if event == "Email Link Clicked" else 1
        touches.setdefault(profile_of[props["ledger_key"]], []).append(
            (datetime.fromisoformat(ts.replace("Z", "+00:00")), rank, props["ledger_key"]))
    window = {0: 5 * 86400, 1: 86400, 2: 86400}
    credited: Counter[str] = Counter()
    revenue: Counter[str] = Counter()
    new_customers: Counter[str] = Counter()
    seen, buyers = set(), set()
    orders = db.query("SELECT profile_id, timestamp, payload FROM events WHERE event = 'Order Completed' "
                      "ORDER BY timestamp")
    for profile_id, ts, payload in orders:
        props = json.loads(payload)["properties"]
        if props["order_id"] in seen:
            continue
        seen.add(props["order_id"])
        at = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        first = profile_id not in buyers
        buyers.add(profile_id)
        eligible = [t for t in touches.get(profile_id, []) if 0 < (at - t[0]).total_seconds() <= window[t[1]]]
        if eligible:
            best = sorted(eligible, key=lambda t: (t[1], -t[0].timestamp(), t[2]))[0]  # ties: by message key
            journey = sent[best[2]][0]
            credited[journey] += 1
            revenue[journey] += float(props["total"])
            new_customers[journey] += first
    fixed = round(config.monthly_fixed_cost * config.days / 30, 2)
    rows = {r["journey"]: r for r in result["kpis"]}
    assert set(rows) == {j for j, _, _ in sent.values()}
    for journey, row in rows.items():
        keys = [k for k, (j, _, _) in sent.items() if j == journey]
        opened = sum(1 for k in keys if k in hits["Email Opened"])
        clicked = sum(1 for k in keys if k in hits["Email Link Clicked"])
        cost = sum(sent[k][2].get("cost") or 0 for k in keys) + fixed * len(keys) / len(sent)
        assert (row["sent"], row["opened"], row["clicked"]) == (len(keys), opened, clicked), journey
        assert row["ctr"] == round(clicked / len(keys), 4)
        assert row["conversions"] == credited[journey] and row["revenue"] == round(revenue[journey], 2), journey
        assert row["cost"] == pytest.approx(cost, abs=1e-3)
        assert row["romi"] == round((row["revenue"] - row["cost"]) / row["cost"], 2)
        expected_cac = round(row["cost"] / new_customers[journey], 2) if new_customers[journey] else None
        assert row["cac"] == expected_cac, journey
    # what the simulated people did, as the simulator knows it
    truth = result["truth"]
    assert sum(r["opened"] for r in rows.values()) <= truth["human_opens"]
    assert sum(len(v) for v in hits["Email Link Clicked"].values()) == truth["clicks"] > 0
    assert machine == result["machine_hits"] == truth["proxy_opens"] > 0
    channels = {r["channel"]: r for r in result["channels"]}
    assert channels["email"]["sent"] == len(sent)
    assert sum(r["revenue"] for r in rows.values()) == pytest.approx(channels["email"]["revenue"], abs=0.01)


def test_the_overall_lift_interval_is_reported_with_the_holdout(simulated):
    _, result, _, _ = simulated
    lift = result["overall_lift"]
    assert lift["treated"]["units"] > 0 and lift["control"]["units"] > 0
    d = lift["difference"]
    assert d["low"] < d["value"] < d["high"]
    # marketing works in this shop (the reminder's planted effect): the whole interval is above zero
    assert d["low"] > 0


def test_seasons_and_the_black_friday_broadcast(tmp_path):
    from datetime import UTC, date

    from chalicelib.simulation import black_friday, seasonality

    assert [black_friday(y) for y in (2024, 2025, 2026)] == [date(2024, 11, 29), date(2025, 11, 28),
                                                            date(2026, 11, 27)]
    assert seasonality(date(2026, 11, 27))[1] == "Black Friday"
    assert seasonality(date(2026, 11, 30))[1] == "Cyber Monday"
    assert seasonality(date(2026, 12, 25))[0] < seasonality(date(2026, 12, 10))[0]
    config = SimConfig(customers=60, days=6, seed=3, holdout_percent=20,
                       start=datetime(2026, 11, 23, tzinfo=UTC))
    result = run_simulation(config, data_dir=tmp_path, quiet=True)
    truth = result["truth"]
    assert truth["seasonal_days"]["Black Friday"] == 1 and truth["broadcasts"] > 0
    rows = {r["journey"]: r for r in result["kpis"]}
    # the greeting went out through the journey (10:00 local, so some on Black Friday itself)
    assert rows["holiday_greetings"]["sent"] > 0


def test_the_models_train_beside_the_report_and_a_failed_models_process_is_a_line_of_it(tmp_path, monkeypatch,
                                                                                       capsys):
    """Two months of a small shop: the models' process answers their cards. When it cannot
    start, the report is still written and names why in one line (no traceback)."""
    from chalicelib import simulation

    config = SimConfig(customers=20, days=60, seed=3)
    cards = run_simulation(config, data_dir=tmp_path / "ok", quiet=True)["models"]
    assert {"churn", "clv", "rfm"} <= {c["name"] for c in cards} and not [c for c in cards if "error" in c]
    capsys.readouterr()
    real = simulation._start

    def start(role, plan):
        if role == "models":
            plan.overrides = {**plan.overrides, "runtime": "mainframe"}  # settings it refuses to start with
        return real(role, plan)

    monkeypatch.setattr(simulation, "_start", start)
    result = run_simulation(config, data_dir=tmp_path / "failed", quiet=True)
    (card,) = result["models"]
    assert card["name"] == "(training)" and "the models' process failed" in card["error"]
    assert "\n" not in card["error"] and "Traceback" not in capsys.readouterr().out
    assert result["kpis"] and result["messages_sent"] > 0  # the report is whole


def test_the_shops_process_reports_a_failure_instead_of_hanging(tmp_path):
    """The shop runs in its own process; when the stack cannot be reached its first call
    fails and it says why over the connection (the stack's side raises it as an error)."""
    import socket
    import threading
    from multiprocessing import Pipe

    from chalicelib.simulation import ShopPlan, shop_process

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    ours, theirs = Pipe()
    plan = ShopPlan(SimConfig(customers=5, days=1), f"http://127.0.0.1:{free_port()}", "write-key", "admin-key",
                    "secret", free_port(), tmp_path / "mailbox", quiet=True)
    worker = threading.Thread(target=shop_process, args=(plan, theirs), daemon=True)
    worker.start()
    assert ours.poll(30)
    kind, why = ours.recv()
    worker.join(30)
    assert kind == "failed" and "the storefront's call failed" in why and "Connection refused" in why


def test_the_api_process_reports_a_failure_to_start_instead_of_hanging(tmp_path):
    """Omnicast's API runs in a process of its own; when its port is taken it says why over
    the connection (run_simulation raises it as an error naming the process)."""
    import socket
    import threading
    from multiprocessing import Pipe

    from chalicelib import runtime as runtime_module
    from chalicelib.simulation import ApiPlan, api_process

    installed = runtime_module._runtime
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        ours, theirs = Pipe()
        plan = ApiPlan({"data_dir": str(tmp_path)}, taken.getsockname()[1], SimConfig().start)
        worker = threading.Thread(target=api_process, args=(plan, theirs), daemon=True)
        worker.start()
        assert ours.poll(60)
        kind, why = ours.recv()
        worker.join(30)
    assert kind == "failed" and "Address already in use" in why
    assert runtime_module._runtime is installed  # a stack that could not listen installed no runtime


def test_a_helper_process_that_cannot_start_is_an_error_naming_it_and_why():
    """The side that starts the shop's mail server (or the API) raises what went wrong over
    there, instead of waiting for a "ready" that never comes."""
    import socket

    import pytest

    from chalicelib.simulation import MailPlan, _Served

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(RuntimeError, match=r"the shop's mail process failed: .*(in use|Errno 98)"):
            _Served("mail", MailPlan(taken.getsockname()[1], None), "the shop's mail process")


def test_the_shops_entry_point_run_by_hand_says_what_to_run_instead():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "chalicelib.simulation"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "omnicast demo" in done.stderr and "Traceback" not in done.stderr


def test_the_shop_reads_the_mail_delivered_so_far_not_what_is_still_arriving():
    """The workers say how many messages they have delivered (the last hour's wave may still
    be on its way); the mailbox answers those, waiting for any not yet kept, and no more."""
    import threading
    from email.message import EmailMessage

    from chalicelib.simulation import Mailbox

    def mail(n):
        msg = EmailMessage()
        msg["Subject"], msg["Message-ID"] = f"Hello {n}", f"<{n}@sim>"
        msg.set_content(f"mail {n}")
        return bytes(msg)

    box = Mailbox(None)
    box.keep(["c0@shop.test"], mail(0))
    box.keep(["c1@shop.test"], mail(1))
    assert [r for r, *_ in box.since(0, 1)] == ["c0@shop.test"]  # the second is still arriving
    threading.Timer(0.05, box.keep, (["c2@shop.test"], mail(2))).start()
    assert [r for r, *_ in box.since(1, 3)] == ["c1@shop.test", "c2@shop.test"]  # waits for the third
    assert len(box.since(0)) == 3


def test_the_sending_process_delivers_a_batch_at_the_time_it_is_given(tmp_path, smtp_server):
    """The workers hand a wave's messages to Omnicast's sending process (which holds the SMTP
    connections) and read the answers when they need them; the mail bears the wave's time."""
    from email.utils import parsedate_to_datetime

    from chalicelib.clock import ManualClock
    from chalicelib.plugin_api import OutboundMessage
    from chalicelib.simulation import HELPER_NICENESS, SenderPlan, _SenderLink, _Served

    start = datetime(2026, 9, 1, 8, 0, tzinfo=ZoneInfo("UTC"))
    overrides = {"data_dir": str(tmp_path), "channels": {"email": "smtp"},
                 "plugin_settings": {"smtp": {"host": "127.0.0.1", "port": smtp_server.port, "connections": 2}}}
    sender = _Served("sender", SenderPlan(overrides, start), "Omnicast's sending process")
    try:
        # it yields the cores to the workers (the pipeline's slowest stage)
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, sender.process.pid) == min(ours + HELPER_NICENESS, 19) > ours
        wave_time = ManualClock(datetime(2026, 9, 1, 10, 0, tzinfo=ZoneInfo("UTC")))
        link = _SenderLink(sender, wave_time)
        messages = [OutboundMessage(message_id=f"m{i}", channel="email", to=f"c{i}@shop.test", subject=f"Hi {i}",
                                    text="Hello") for i in range(3)]
        pending = link([(None, [4, 5, 6], messages)])
        wave_time.set(datetime(2026, 9, 1, 11, 0, tzinfo=ZoneInfo("UTC")))  # the workers move on meanwhile
        ((positions, results),) = pending.result()
        assert positions == [4, 5, 6] and [r.ok for r in results] == [True, True, True]
        assert sorted(rcpts[0] for _, rcpts, _ in smtp_server.messages) == ["c0@shop.test", "c1@shop.test",
                                                                          "c2@shop.test"]
        dates = {parsedate_to_datetime(msg["Date"]).hour for _, _, msg in smtp_server.messages}
        assert dates == {10}
    finally:
        sender.stop()
        sender.process.wait(30)


def _shop_mail(**fields):
    from chalicelib.plugin_api import OutboundMessage, email_bytes

    base = {"message_id": "m-1", "channel": "email", "to": "Ann <ann@shop.test>", "subject": "Your cart",
            "text": "Back to your cart: https://sim.shop/t/c/abc.DEF-1_2?x=1\nThanks",
            "html": '<p>Back to <a href="https://sim.shop/t/c/abc.DEF-1_2">your cart</a></p>'
                    '<img src="https://sim.shop/t/o/tok.en-9" width="1" height="1" alt="">'}
    return email_bytes(OutboundMessage(**{**base, **fields}), from_address="Shop <shop@example.com>",
                       at=datetime(2026, 9, 1, 10, 0, tzinfo=ZoneInfo("UTC")), message_id_domain="omnicast.local")


def test_the_mailbox_reads_the_usual_mail_from_its_bytes_as_the_email_parser_does():
    from chalicelib.simulation import _read_parsed, _read_usual, read_mail

    usual = _shop_mail()
    read = _read_usual(usual)
    assert read is not None  # the quick reading was taken
    assert read == _read_parsed(usual) == read_mail(usual)
    subject, message_id, link, pixel = read
    assert (subject, link, pixel) == ("Your cart", "https://sim.shop/t/c/abc.DEF-1_2",
                                      "https://sim.shop/t/o/tok.en-9")
    assert message_id.startswith("<") and message_id.endswith("@omnicast.local>")
    no_link = _shop_mail(text="Nothing to click", html="<p>Nothing</p>")
    assert _read_usual(no_link) == _read_parsed(no_link) == ("Your cart", read[1], None, None)
    # UTF-8 bodies (quoted-printable, lines wrapped at 76 with soft breaks in the middle of the link)
    utf8 = _shop_mail(text="Nur 9,99 \u20ac heute: " + "x" * 60 + " https://sim.shop/t/c/abc.DEF-1_2" + "y" * 90
                      + "\n--\nShop \u00b7 https://sim.shop",
                      html='<p>9,99 \u20ac</p>' + "<b>\u00e9</b>" * 40 + '<img src="https://sim.shop/t/o/tok.en-9">')
    assert b"quoted-printable" in utf8
    assert _read_usual(utf8) == _read_parsed(utf8) is not None
    assert _read_usual(utf8)[2:] == ("https://sim.shop/t/c/abc.DEF-1_2" + "y" * 90, "https://sim.shop/t/o/tok.en-9")


def test_the_mailbox_leaves_any_other_mail_to_the_email_parser():
    """Encoded subjects, text-only mail, base64: the quick reading declines and the parser
    answers (decoded), so nothing the shop reads changes with the mail's shape."""
    from chalicelib.simulation import _read_parsed, _read_usual, read_mail

    cases = {
        "subject": _shop_mail(subject="Zurück im Lager: Ihr Lieblingsstück"),
        "text only": _shop_mail(html=None),
        "base64": _shop_mail().replace(b"7bit", b"base64"),
    }
    for name, content in cases.items():
        assert _read_usual(content) is None, name
        assert read_mail(content) == _read_parsed(content), name
    assert read_mail(cases["subject"])[0] == "Zurück im Lager: Ihr Lieblingsstück"
    assert read_mail(cases["text only"])[2:] == ("https://sim.shop/t/c/abc.DEF-1_2", None)


def test_the_shops_mail_server_remembers_addresses_but_refuses_what_aiosmtpd_refuses():
    import smtplib

    from chalicelib.simulation import Mailbox, mail_server
    from tests.conftest import free_port

    box = Mailbox(None)
    server = mail_server(box, free_port())
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            for _ in range(2):  # the second time from what the session remembers
                assert smtp.sendmail("shop@example.com", ["ann@shop.test"], _shop_mail()) == {}
                code, _ = smtp.docmd("MAIL FROM:<shop@@example..com>")
                assert code == 553  # a malformed address, as aiosmtpd answers it
                smtp.rset()
        assert [r for r, _ in box.received] == ["ann@shop.test", "ann@shop.test"]
        assert [links for links in box.links] == [("https://sim.shop/t/c/abc.DEF-1_2",
                                                   "https://sim.shop/t/o/tok.en-9")] * 2
    finally:
        server.stop()
