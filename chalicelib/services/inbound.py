"""Inbound webhooks from channel providers: receipts, replies, STOP / START, dead tokens, chat links.

HTTP (``GET|POST /v1/inbound/{plugin}``): the channel plugin verifies and reads the request
(:meth:`chalicelib.plugin_api.Channel.inbound`) before anything else looks at it; the core
then applies each :class:`~chalicelib.plugin_api.DeliveryFeedback` and answers the provider
with the plugin's status, body and content type.

Applying one feedback: the profile is found from (channel kind, address) through the
identity graph (or, for a receipt, from the send-ledger entry its provider message id was
recorded on); an event is recorded on it under a message id derived from the feedback, so
a provider delivering the same webhook twice changes nothing; then, by kind:

- ``opted_out`` / ``opted_in``: the channel's consent becomes ``opted_out`` / ``subscribed``;
- ``bounced`` / ``complained``: the channel is ``suppressed``;
- ``token_gone``: the address is removed from the profile, so nothing is sent to it again;
- ``delivered`` / ``failed``: the ledger entry keeps its status (``sent`` is what the
  exactly-once logic and the contact budget count) and gets ``detail.delivery``
  (``delivered`` / ``failed``), ``detail.delivery_at`` and ``detail.delivery_error``;
- ``replied``: a ``Message Replied`` event with the text;
- ``linked``: the address joins the profile named by a start-link token signed by the core
  (:meth:`InboundService.start_link_token`).

This module is on the HTTP path: it must not import the template engine (``send.py`` does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import struct
from collections.abc import Callable
from typing import Any

from chalicelib.addresses import ADDRESS_TRAIT, address_text
from chalicelib.clock import Clock, iso
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, ConfigError, NotFound, OmnicastError, PayloadTooLarge, Unauthorized
from chalicelib.plugin_api import (
    FEEDBACK_KINDS,
    Channel,
    ChannelContext,
    DeliveryFeedback,
    InboundResult,
    SignatureError,
    WebhookRequest,
)
from chalicelib.plugin_host import PluginHost, plugin_settings
from chalicelib.ports import StoredEvent, Stores
from chalicelib.services.consent import ConsentService
from chalicelib.services.credentials import Credentials
from chalicelib.services.identity import IdentityResolver, normalise_email, normalise_phone

log = logging.getLogger("omnicast.inbound")

EVENT_NAMES = {
    "delivered": "Message Delivered",
    "failed": "Message Failed",
    "bounced": "Message Bounced",
    "complained": "Message Complained",
    "opened": "Message Opened",
    "clicked": "Message Clicked",
    "replied": "Message Replied",
    "opted_out": "Channel Opted Out",
    "opted_in": "Channel Opted In",
    "help": "Help Requested",
    "token_gone": "Channel Address Removed",
    "linked": "Channel Linked",
}
CONSENT_STATE = {"opted_out": "opted_out", "opted_in": "subscribed", "bounced": "suppressed",
                 "complained": "suppressed"}
LINK_PURPOSE = "link"
LINK_TTL_SECONDS = 30 * 86400  # a start link in an e-mail stays usable for a month
# compact start-link tokens: Telegram's start parameter takes at most 64 of [A-Za-z0-9_-]
LINK_CHANNELS = ("email", "sms", "push", "messenger", "webhook")
LINK_MAC_BYTES = 12


def feedback_message_id(plugin: str, fb: DeliveryFeedback) -> str:
    """Deterministic: the same feedback delivered twice gets the same id (and is a duplicate)."""
    if fb.provider_message_id:
        basis = f"{plugin}|{fb.kind}|{fb.channel}|{fb.provider_message_id}|{fb.address}"
    else:  # no provider id (a dead token, a chat event): the time and detail the provider gave
        detail = sorted((str(k), str(v)) for k, v in fb.detail.items())
        basis = f"{plugin}|{fb.kind}|{fb.channel}|{fb.address}|{iso(fb.at)}|{detail}"
    return "fb_" + hashlib.sha256(basis.encode()).hexdigest()[:32]


class InboundService:
    def __init__(
        self,
        *,
        settings: Settings,
        host: PluginHost,
        channel_for: Callable[[str], Channel],
        stores: Stores,
        consent: ConsentService,
        credentials: Credentials,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.host = host
        self.channel_for = channel_for  # the runtime's configured instance per channel kind
        self.stores = stores
        self.events = stores.events
        self.profiles = stores.profiles
        self.ledger = stores.ledger
        self.consent = consent
        self.credentials = credentials
        self.clock = clock
        self.identity = IdentityResolver(stores.profiles, clock)
        self._own: dict[str, Channel] = {}

    # ------------------------------------------------------------------ HTTP
    def channel(self, name: str) -> Channel:
        """The instance of channel plugin ``name`` that takes its inbound webhooks.

        The configured plugin of its kind shares the sender's instance; another installed
        one (say, the provider a shop just left, whose late receipts still arrive) gets its
        own, with its own settings.
        """
        cls = self.host.registry.channels.get(name)
        if cls is None:
            known = ", ".join(sorted(self.host.registry.channels)) or "none installed"
            raise NotFound(f"no channel plugin {name!r} (installed: {known})", field="plugin")
        if cls.inbound is Channel.inbound:
            raise NotFound(f"channel plugin {name!r} takes no inbound webhooks", field="plugin")
        try:
            configured = self.host.channel_class(cls.channel, self.settings.channels) is cls
        except ConfigError:
            configured = False
        if configured:
            return self.channel_for(cls.channel)
        if name not in self._own:
            context = ChannelContext(clock=self.clock, blobs=self.stores.blobs)
            self._own[name] = cls(plugin_settings(cls.Settings, name, self.settings), context)
        return self._own[name]

    def handle(self, name: str, body: bytes, headers: dict[str, str], query: dict[str, str]) -> InboundResult:
        """Verify, read and apply one inbound webhook; the plugin's answer to the provider."""
        channel = self.channel(name)
        if len(body) > self.settings.max_body_bytes:
            raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {self.settings.max_body_bytes}",
                                  field="body")
        request = WebhookRequest(
            source=name,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            received_at=self.clock.now(),
            query=dict(query),
        )
        try:
            result = channel.inbound(request)
        except SignatureError as exc:
            raise Unauthorized(exc.reason, field="signature") from exc
        except NotImplementedError as exc:
            raise NotFound(f"channel plugin {name!r} takes no inbound webhooks", field="plugin") from exc
        except OmnicastError:
            raise
        except (ValueError, KeyError) as exc:
            # plugins name the field in the message (and may set ``exc.field``)
            message = f"missing field {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
            field = getattr(exc, "field", None) or (str(exc.args[0]) if isinstance(exc, KeyError) else "body")
            raise BadRequest(message, field=field) from exc
        outcomes: dict[str, int] = {}
        for fb in result.feedback:
            outcome = self.apply(name, fb)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcomes:
            log.info("inbound %s: %s", name, ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        return result

    # ------------------------------------------------------------------ applying feedback
    def apply(self, plugin: str, fb: DeliveryFeedback, profile_id: str | None = None) -> str:
        """Apply one feedback once. Returns what happened, in a word (for logs and tests).

        ``profile_id``: the profile the core already knows the address belongs to (feedback a
        send returned, :attr:`SendResult.feedback`); otherwise found from the address.
        """
        if fb.kind not in FEEDBACK_KINDS:  # a plugin bug: the rest of the batch still applies
            log.warning("%s reported an unknown feedback kind %r; ignored", plugin, fb.kind)
            return "unknown_kind"
        mid = feedback_message_id(plugin, fb)
        existing = self.events.get(plugin, mid)
        if existing is not None and existing.processed:
            return "duplicate"
        entry = None
        if fb.kind in ("delivered", "failed") and fb.provider_message_id:
            entry = self.ledger.by_provider_message_id(fb.provider_message_id)
        link: dict[str, str] | None = None
        if fb.kind == "linked":
            link = self._link_target(fb)
            profile_id = link.get("profile_id")
        elif profile_id is None:
            profile_id = (self.identity.canonical(entry.profile_id) if entry is not None
                          else self.profile_for(fb.channel, fb.address))
        properties: dict[str, Any] = {
            **{k: v for k, v in fb.detail.items() if k != "token"},  # a link token is a credential
            "channel": fb.channel,
            "feedback": fb.kind,
            "plugin": plugin,
            "provider_message_id": fb.provider_message_id,
        }
        if entry is not None:
            properties["ledger_key"] = entry.key
        if link is not None and link.get("refused"):
            properties["refused"] = link["refused"]
        name = EVENT_NAMES[fb.kind]
        event = StoredEvent(
            message_id=mid,
            type="track",
            profile_id=profile_id,
            received_at=self.clock.now(),
            timestamp=fb.at,
            event=name,
            source=plugin,
            payload={"type": "track", "event": name, "messageId": mid, "timestamp": iso(fb.at),
                     "properties": properties},
            processed=profile_id is None,  # nothing to apply to: recorded for the audit only
        )
        if existing is None and not self.events.append(event):
            again = self.events.get(plugin, mid)
            if again is not None and again.processed:
                return "duplicate"  # a concurrent delivery of the same webhook won
        if profile_id is None:
            return "unknown_address" if not link else "link_refused"
        outcome = self._act(fb, profile_id, entry, link)
        # marked only once the action is done: a crash in between lets the provider's retry finish it
        self.events.mark_processed(plugin, mid, profile_id)
        return outcome

    def _act(self, fb: DeliveryFeedback, profile_id: str, entry: Any, link: dict[str, str] | None) -> str:
        if fb.kind in CONSENT_STATE:
            profile = self.profiles.get(profile_id)
            current = ((profile.traits.get("consent") or {}) if profile else {}).get(fb.channel)
            if fb.kind == "opted_out" and current == "suppressed":
                return "suppressed"  # already stricter: suppression blocks transactional messages too
            self.consent.set_consent(profile_id, fb.channel, CONSENT_STATE[fb.kind])
            return CONSENT_STATE[fb.kind]
        if fb.kind == "token_gone":
            self._forget_address(profile_id, fb.channel, fb.address)
            return "address_removed"
        if fb.kind == "linked":
            return "link_refused" if link and link.get("refused") else "linked"
        if fb.kind in ("delivered", "failed"):
            if entry is None:
                return "receipt_without_ledger_entry"
            detail: dict[str, Any] = {"delivery": fb.kind, "delivery_at": iso(fb.at)}
            error = fb.detail.get("error_code") or fb.detail.get("error")
            if error:
                detail["delivery_error"] = str(error)
            # status, reason and updated_at stay: "sent" and its time are what the exactly-once
            # claim, the contact budget and attribution read
            self.ledger.update(entry.key, status=entry.status, reason=entry.reason, at=entry.updated_at,
                               detail=detail)
            return fb.kind
        return "recorded"  # replied, help, opened, clicked: the event is the record

    # ------------------------------------------------------------------ addresses
    def profile_for(self, channel: str, address: str) -> str | None:
        """The profile an address of a channel kind belongs to (through the identity graph)."""
        kind = ADDRESS_TRAIT.get(channel, channel)
        value: str | None = address
        if kind == "phone":
            value = normalise_phone(address) or address
        elif kind == "email":
            value = normalise_email(address) or address
        found = self.profiles.resolve(kind, value) if value else None
        return self.identity.canonical(found) if found else None

    def _forget_address(self, profile_id: str, channel: str, address: str) -> None:
        kind = ADDRESS_TRAIT.get(channel, channel)
        for _ in range(10):
            profile = self.profiles.get(profile_id)
            if profile is None:
                return
            expected = profile.version
            changed = False
            if address_text(profile.traits.get(kind)) == address:
                del profile.traits[kind]
                changed = True
            if profile.identifiers.get(kind) == address:
                del profile.identifiers[kind]
                changed = True
            if not changed:
                return
            profile.traits[f"{kind}_removed_at"] = iso(self.clock.now())
            profile.updated_at = self.clock.now()
            if self.profiles.save(profile, expected):
                return
        raise RuntimeError("profile kept changing")

    # ------------------------------------------------------------------ start links
    def start_link_token(self, profile_id: str, channel: str, ttl_seconds: int = LINK_TTL_SECONDS) -> str:
        """A token for a messenger start link (``https://t.me/<bot>?start=<token>``): when the
        customer opens the chat through it, the plugin reports ``linked`` with the token and
        the chat joins ``profile_id``.

        Signed with the core's key and bound to the channel kind and an expiry. Only
        ``[A-Za-z0-9_-]``, and 52 characters for the core's own profile ids, so it fits
        Telegram's 64-character start parameter.
        """
        if channel not in LINK_CHANNELS:
            raise BadRequest(f"no start links for channel {channel!r}", field="channel")
        expires = int(self.clock.now().timestamp()) + ttl_seconds
        payload = struct.pack(">BI", LINK_CHANNELS.index(channel), expires) + profile_id.encode()
        mac = hmac.new(self.credentials.signing_key(), LINK_PURPOSE.encode() + b"." + payload,
                       hashlib.sha256).digest()[:LINK_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def verify_link_token(self, token: str) -> dict[str, str]:
        """``{"p": profile_id, "c": channel}`` of a valid start-link token; BadRequest otherwise.

        Also takes the longer ``Credentials.sign("link", {"p", "c"})`` form."""
        if "." in token:
            return self.credentials.verify(LINK_PURPOSE, token)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("invalid or tampered token", field="token") from exc
        payload, mac = raw[:-LINK_MAC_BYTES], raw[-LINK_MAC_BYTES:]
        expected = hmac.new(self.credentials.signing_key(), LINK_PURPOSE.encode() + b"." + payload,
                            hashlib.sha256).digest()[:LINK_MAC_BYTES]
        if len(payload) < 6 or not hmac.compare_digest(mac, expected):
            raise BadRequest("invalid or tampered token", field="token")
        code, expires = struct.unpack(">BI", payload[:5])
        if expires < self.clock.now().timestamp():
            raise BadRequest("the token has expired", field="token")
        if code >= len(LINK_CHANNELS):
            raise BadRequest("invalid or tampered token", field="token")
        return {"p": payload[5:].decode(), "c": LINK_CHANNELS[code]}

    def _link_target(self, fb: DeliveryFeedback) -> dict[str, str]:
        """Link the address to the token's profile; ``{"profile_id"}`` and why it was refused."""
        try:
            data = self.verify_link_token(str(fb.detail.get("token") or ""))
        except BadRequest as exc:
            # the provider's request was genuine; a customer's bad or old link is not its fault
            known = self.profile_for(fb.channel, fb.address)
            return {"refused": exc.message, **({"profile_id": known} if known else {})}
        if data.get("c") != fb.channel:
            return {"refused": f"the link is for {data.get('c')}, not {fb.channel}"}
        profile_id = self.identity.canonical(data["p"])
        kind = ADDRESS_TRAIT.get(fb.channel, fb.channel)
        if self.profiles.get(profile_id) is None:
            return {"refused": "the profile behind this link no longer exists"}
        if not self.profiles.link(kind, fb.address, profile_id):
            holder = self.identity.canonical(self.profiles.resolve(kind, fb.address) or profile_id)
            if holder != profile_id:
                log.info("a %s address linked to another profile stays there", fb.channel)
                return {"refused": "the address belongs to another profile", "profile_id": holder}
        for _ in range(10):
            profile = self.profiles.get(profile_id)
            if profile is None:
                break
            expected = profile.version
            if profile.traits.get(kind) == fb.address and profile.identifiers.get(kind) == fb.address:
                break
            profile.traits[kind] = fb.address
            profile.identifiers[kind] = fb.address
            profile.traits.pop(f"{kind}_removed_at", None)
            profile.updated_at = self.clock.now()
            if self.profiles.save(profile, expected):
                break
        return {"profile_id": profile_id}
