"""The SMTP channel against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from omnicast_smtp import SmtpChannel, SmtpSettings

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.clock import ManualClock
from chalicelib.plugin_api import ChannelContext, OutboundMessage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Handler:
    def __init__(self, rcpt_reply: str | None = None) -> None:
        self.received: list = []
        self.sessions: set = set()
        self.envelopes: list = []
        self.rcpt_reply = rcpt_reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.received.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def server():
    def start(rcpt_reply=None):
        handler = Handler(rcpt_reply)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        started.append(controller)
        return handler, controller.port

    started: list = []
    yield start
    for c in started:
        c.stop()


def channel(tmp_path, port, **extra):
    settings = SmtpSettings(port=port, **extra)
    return SmtpChannel(settings, ChannelContext(clock=ManualClock(datetime(2026, 3, 2, tzinfo=UTC)),
                                                blobs=FolderBlobStore(tmp_path)))


def message(i=1, **kw):
    base = dict(message_id=f"m_{i}", channel="email", to=f"ann{i}@example.com", subject="Hello",
                text="Plain text", html="<p>HTML</p>",
                headers={"List-Unsubscribe": "<https://shop.example/u?t=1>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    base.update(kw)
    return OutboundMessage(**base)


def test_multipart_with_unsubscribe_headers_and_a_stable_message_id(server, tmp_path):
    handler, port = server()
    result = channel(tmp_path, port).send(message())
    assert result.ok and result.provider_message_id == "<m_1@omnicast.local>"
    [msg] = handler.received
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] == "<m_1@omnicast.local>" and msg["X-Omnicast-Message-Id"] == "m_1"
    again = channel(tmp_path, port).send(message())  # a retry carries the same Message-ID
    assert again.provider_message_id == result.provider_message_id


def test_the_envelope_is_the_addresses_smtplib_would_write_each_read_once(server, tmp_path):
    import omnicast_smtp

    handler, port = server()
    omnicast_smtp._quoted.cache_clear()
    ch = channel(tmp_path, port, from_address='"Omnicast, the Shop" <shop@example.com>')
    assert all(r.ok for r in ch.send_batch([message(1), message(2), message(1, message_id="m_again")]))
    assert handler.envelopes == [("shop@example.com", ["ann1@example.com"]), ("shop@example.com", ["ann2@example.com"]),
                                 ("shop@example.com", ["ann1@example.com"])]
    # the shop's address on every message, the returning customer's: read once each
    assert omnicast_smtp._quoted.cache_info().hits == 3 and omnicast_smtp._quoted.cache_info().misses == 3


def test_text_only_when_there_is_no_html(server, tmp_path):
    handler, port = server()
    assert channel(tmp_path, port).send(message(html=None)).ok
    assert handler.received[0].get_content_type() == "text/plain"


def test_a_batch_uses_one_connection(server, tmp_path):
    handler, port = server()
    results = channel(tmp_path, port).send_batch([message(i) for i in range(5)])
    assert [r.ok for r in results] == [True] * 5
    assert len(handler.received) == 5 and len(handler.sessions) == 1


def test_a_batch_spread_over_parallel_connections_keeps_its_order_and_the_connections(server, tmp_path):
    handler, port = server()
    ch = channel(tmp_path, port, connections=3)
    batch = [message(i) for i in range(8)]
    results = ch.send_batch(batch)
    assert [r.provider_message_id for r in results] == [f"<m_{i}@omnicast.local>" for i in range(8)]
    assert sorted(m["To"] for m in handler.received) == sorted(f"ann{i}@example.com" for i in range(8))
    assert len(handler.sessions) == 3
    ch.send_batch([message(i) for i in range(8, 14)])  # the same three, kept alive
    assert len(handler.received) == 14 and len(handler.sessions) == 3
    ch.close()
    assert all(slot.conn is None for slot in ch._slots)


@pytest.mark.parametrize(("reply", "retryable"), [("550 5.1.1 no such user", False),
                                                  ("451 4.3.0 try again later", True)])
def test_refusals_map_to_retryable_or_not(server, tmp_path, reply, retryable):
    _, port = server(rcpt_reply=reply)
    result = channel(tmp_path, port).send(message())
    assert not result.ok and result.retryable is retryable and reply[:3] in result.error


def test_an_unreachable_server_is_retryable_and_the_password_never_shows(tmp_path):
    ch = channel(tmp_path, free_port(), username="shop", password="s3cr3t-value")
    result = ch.send(message())
    assert not result.ok and result.retryable
    assert "s3cr3t-value" not in f"{result} {ch!r} {ch.settings!r} {ch.settings}"


def test_header_injection_is_refused(server, tmp_path):
    handler, port = server()
    result = channel(tmp_path, port).send(message(subject="Hi\r\nBcc: victim@example.com"))
    assert not result.ok and not result.retryable and handler.received == []


def test_sends_share_one_kept_connection_until_idle_or_closed(server, tmp_path):
    handler, port = server()
    ch = channel(tmp_path, port)
    assert all(ch.send(message(i)).ok for i in range(3))
    assert len(handler.received) == 3 and len(handler.sessions) == 1
    ch.close()
    assert ch.send(message(4)).ok and len(handler.sessions) == 2  # a closed channel reconnects
    once = channel(tmp_path, port, idle_seconds=0)
    assert once.send(message(5)).ok and once.send(message(6)).ok
    assert len(handler.sessions) == 4  # idle_seconds=0: a connection per send


def test_a_connection_the_server_dropped_while_idle_is_reopened(tmp_path):
    port = free_port()
    first = Controller(Handler(), hostname="127.0.0.1", port=port)
    first.start()
    ch = channel(tmp_path, port)
    assert ch.send(message(1)).ok
    first.stop()  # the server goes away (closing the kept connection) and comes back
    handler = Handler()
    second = Controller(handler, hostname="127.0.0.1", port=port)
    second.start()
    try:
        result = ch.send(message(2))
        assert result.ok, result.error
        assert [m["To"] for m in handler.received] == ["ann2@example.com"]
    finally:
        second.stop()


def test_non_ascii_subject_names_and_bodies_survive_the_round_trip(server, tmp_path):
    handler, port = server()
    long_line = "x" * 1200
    result = channel(tmp_path, port, from_address="Zoë's Shop <shop@example.com>").send(
        message(to="Åsa Öberg <asa@example.com>", subject="Grüße — 10% off", text=f"Hallo Åsa\n{long_line}",
                html="<p>Grüße</p>"))
    assert result.ok
    [msg] = handler.received
    assert msg["Subject"] == "Grüße — 10% off"
    assert msg["From"].addresses[0].display_name == "Zoë's Shop"
    assert msg["To"].addresses[0].display_name == "Åsa Öberg"
    plain, html = msg.iter_parts()
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == f"Hallo Åsa\n{long_line}"
    assert html.get_content().strip() == "<p>Grüße</p>"


def test_the_fast_wire_bytes_equal_what_the_email_package_writes(monkeypatch):
    """``email_bytes`` writes the usual mail from strings; for every shape here it must be byte
    for byte what ``mime_email`` flattened with CRLF gives (the random boundary of a body that
    contains the fixed one aside), and None for an address that needs SMTPUTF8."""
    import re

    from chalicelib.plugin_api import _CRLF_POLICY, email_bytes, mime_email

    bodies = [("Hello Ann\nline2\n", "<p>Hi</p>\n<p>x</p>"), ("no newline", "<p>x</p>\n"),
              ("a\r\nb\rc\n\n", "\n\n<b>\n"), ("", ""), ("", "<p>only html</p>"), ("From here\n.dot\n", "x"),
              ("caf\u00e9 \u20ac", "<p>\u00e9</p>"), ("long " + "x" * 1200, "<p>y</p>"),
              ("t", "a =_omnicast-alternative_= b"), ("text only", None),
              # UTF-8 bodies: quoted-printable from the email package's own encoder
              ("Hi Mo,\n\nShop now: https://x.example/t/c/" + "a" * 150 + "\n--\nShop \u00b7 https://x.example\n",
               "<p>\u00b7 \u20ac</p>\n<p>" + "\u00e9" * 300 + "</p>"),
              ("caf\u00e9  \n  \t\nend \t", "x=y \u00e9 =3D\r\n.dot\n" + "\u00fc" * 74 + " \n" + "y" * 75 + "\u00e9"),
              ("caf\u00e9 =_omnicast-alternative_=", "<p>\u00e9</p>")]
    subjects = ["You left something", "Caf\u00e9 time \u2615", "x" * 1000, 'A "quoted" subject; with = signs']
    recipients = ["Ann <ann.1@example.com>", "ann@example.com", '"Doe, Jo" <jo@example.com>',
                  "Zo\u00eb <zoe@example.com>"]
    import chalicelib.plugin_api as plugin_api

    built = []  # the messages the email package built (not the quick way)
    monkeypatch.setattr(plugin_api, "mime_email",
                        lambda message, **kw: built.append(message) or mime_email(message, **kw))
    random_boundary = re.compile(rb"={15}\d+==")
    compared = 0
    for text, html in bodies:
        for to in recipients:
            for subject in subjects:
                for reply_to in (None, "help@example.com"):
                    message = OutboundMessage(message_id="m-1", channel="email", to=to, subject=subject, text=text,
                                              html=html, headers={"List-Unsubscribe": "<https://x.example/u>"})
                    kw = {"from_address": "Shop <shop@example.com>", "at": datetime(2026, 1, 1, tzinfo=UTC),
                          "message_id_domain": "example.com", "reply_to": reply_to}
                    wire = email_bytes(message, **kw)
                    expected = mime_email(message, **kw).as_bytes(policy=_CRLF_POLICY)
                    if wire is None:
                        assert not to.isascii()
                        continue
                    compared += 1
                    assert random_boundary.sub(b"B", wire) == random_boundary.sub(b"B", expected), (text, html, to)
    fast = compared - len(built)
    assert compared == 312 and fast == 108  # every mail with an HTML body, one-line ASCII headers, no boundary inside


def test_an_address_header_is_parsed_once_and_an_overlong_one_is_not_kept():
    """The sender's address is on every message: parsed once, as the email package writes it."""
    from email.utils import formataddr, parseaddr

    from chalicelib import plugin_api

    plugin_api._address_once.cache_clear()
    for value in ('"Doe, Jo" <jo@example.com>', "Shop <shop@example.com>", "plain@example.com"):
        expected = formataddr(parseaddr(value), charset="utf-8")
        assert plugin_api._address(value) == plugin_api._address(value) == expected
    info = plugin_api._address_once.cache_info()
    assert (info.hits, info.misses, info.currsize) == (3, 3, 3)
    overlong = "A" * 400 + " <a@example.com>"
    assert plugin_api._address(overlong) == formataddr(parseaddr(overlong), charset="utf-8")
    assert plugin_api._address_once.cache_info().currsize == 3
