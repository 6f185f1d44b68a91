"""The plugin API: everything a plugin (built-in or third-party) imports from Omnicast.

A plugin is a distribution with an entry point in the ``omnicast`` group that points at a
module implementing some of the hooks in :mod:`chalicelib.hookspecs`::

    # pyproject.toml
    [project.entry-points.omnicast]
    my_sms = "my_sms_plugin"

    # my_sms_plugin.py
    from chalicelib.plugin_api import Channel, OutboundMessage, SendResult, hookimpl

    class MySms(Channel):
        name = "my_sms"
        channel = "sms"
        def send(self, message: OutboundMessage) -> SendResult: ...

    @hookimpl
    def register_channels(register):
        register(MySms)

Plugins receive settings as pydantic models built by the core from configuration; they
never read the environment. Secret settings are ``pydantic.SecretStr`` and never print.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email import quoprimime
from email._policybase import Compat32
from email.charset import QP, Charset
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate, parseaddr
from typing import Any, ClassVar, NamedTuple

import pluggy
from pydantic import BaseModel, ConfigDict

from chalicelib.clock import Clock
from chalicelib.ports import BlobStore

PROJECT = "omnicast"
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "FEEDBACK_KINDS",
    "Artifact",
    "AwsChannel",
    "CatalogItem",
    "Channel",
    "ChannelContext",
    "Contribution",
    "Delivery",
    "DeliveryFeedback",
    "EventSource",
    "FeatureTable",
    "InboundResult",
    "Model",
    "ModelError",
    "NoSettings",
    "OutboundMessage",
    "PluginSettings",
    "Score",
    "SendResult",
    "SignatureError",
    "SourceOutput",
    "TrainingSet",
    "WebhookRequest",
    "email_bytes",
    "header_injection",
    "hmac_sha256",
    "hookimpl",
    "matches_any",
    "message_id_header",
    "mime_email",
    "money",
    "sms_segments",
    "standard_webhooks_signature",
    "verify_base64_hmac",
]


class PluginSettings(BaseModel):
    """Base for a plugin's settings: strict, unknown keys are an error naming the key; a
    validation error never echoes the value (it may be a secret)."""

    # defer_build: a plugin settings model is built when first used, not when the plugin loads
    # (16 plugins load at every cold start; most settings models are never used by that function)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, defer_build=True)


class NoSettings(PluginSettings):
    """For plugins that take no settings."""


# --------------------------------------------------------------------------- channels
@dataclass(frozen=True)
class OutboundMessage:
    """One rendered message, ready for a channel.

    ``message_id`` is Omnicast's id for this send (stable across retries, so a provider
    that supports idempotency keys can use it). ``to`` is the channel address (an email
    address, an E.164 number, a device token, a chat id).
    """

    message_id: str
    channel: str
    to: str
    subject: str | None = None
    text: str = ""
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # journey, step, profile_id...


@dataclass(frozen=True)
class SendResult:
    """What a provider said about one message."""

    ok: bool
    provider_message_id: str | None = None
    status: str = "sent"  # sent (handed over), delivered, failed
    retryable: bool = False  # a failure worth retrying later (429, 5xx, timeouts)
    error: str | None = None  # a short reason, never containing secrets
    cost_estimate: float = 0.0  # in USD, from the provider's list price
    retry_after_seconds: float | None = None
    # what the send itself revealed about the address, applied by the core like inbound
    # feedback: e.g. a push service answering 410 Gone -> a "token_gone" item
    feedback: tuple[DeliveryFeedback, ...] = ()

    @classmethod
    def failed(
        cls, error: str, *, retryable: bool, retry_after: float | None = None,
        feedback: tuple[DeliveryFeedback, ...] = (),
    ) -> SendResult:
        return cls(
            ok=False,
            status="failed",
            retryable=retryable,
            error=error,
            retry_after_seconds=retry_after,
            feedback=feedback,
        )


FEEDBACK_KINDS = frozenset({
    "delivered",  # a delivery receipt: the provider reached the handset/inbox
    "failed",  # a receipt saying it could not deliver (detail: error code)
    "bounced",  # permanent failure of the address: suppressed
    "complained",  # marked as spam: suppressed
    "opened", "clicked",
    "replied",  # an inbound message (detail["text"])
    "opted_out",  # STOP, /stop, unsubscribe: consent withdrawn for the channel
    "opted_in",  # START, UNSTOP: consent given again
    "help",  # HELP: the provider or the plugin answered it
    "token_gone",  # a push token / chat the provider says no longer exists: removed from the profile
    "linked",  # a chat started from a signed start link (detail["token"]): the address joins that profile
})


@dataclass(frozen=True)
class DeliveryFeedback:
    """Something a provider told us later: receipt, bounce, complaint, reply, STOP, dead token.

    ``address`` is the channel address exactly as the channel sends to it (E.164 number,
    device token, chat id); ``kind`` is one of :data:`FEEDBACK_KINDS`.
    """

    kind: str
    channel: str
    address: str
    at: datetime
    provider_message_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class InboundResult:
    """What a channel read from one inbound webhook, and what to answer the provider."""

    feedback: list[DeliveryFeedback] = field(default_factory=list)
    status_code: int = 200
    body: str = ""  # e.g. empty TwiML, a WhatsApp verification challenge
    content_type: str = "text/plain"


@dataclass(frozen=True)
class ChannelContext:
    """What the core lends a channel: the clock and a blob store (for sandbox outboxes)."""

    clock: Clock
    blobs: BlobStore


class Channel:
    """Base class of every channel plugin.

    Subclasses set the class-level metadata and implement :meth:`send`. Retries, rate
    limits, consent and the send ledger live in the core: ``send`` makes one attempt and
    reports what happened.
    """

    name: ClassVar[str]  # plugin name used in configuration, e.g. "smtp"
    channel: ClassVar[str]  # the channel kind it serves: email, sms, push, messenger, ...
    title: ClassVar[str] = ""
    max_body_chars: ClassVar[int | None] = None
    batch_size: ClassVar[int] = 1  # the provider API's largest batch
    rate_per_second: ClassVar[float | None] = None  # the provider's documented throttle
    required_packages: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type[PluginSettings]] = NoSettings

    def __init__(self, settings: PluginSettings, context: ChannelContext) -> None:
        self.settings = settings
        self.context = context

    def send(self, message: OutboundMessage) -> SendResult:
        """Make one attempt to hand ``message`` to the provider."""
        raise NotImplementedError

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        """Send up to ``batch_size`` messages; one result per message, in order.

        The default sends one by one; providers with a batch API override it.
        """
        return [self.send(m) for m in messages]

    def inbound(self, request: WebhookRequest) -> InboundResult:
        """Verify and read one inbound webhook from the provider (receipts, replies, STOP,
        dead tokens), served at ``/v1/inbound/<plugin name>`` (GET and POST).

        Raise :class:`SignatureError` when the request does not verify; the core answers
        401 and records nothing. The core applies the returned feedback (consent, receipts,
        removal of dead addresses, linking) and answers the provider with ``status_code``,
        ``body`` and ``content_type``. Channels without inbound traffic keep this default.
        """
        raise NotImplementedError(f"{self.name} takes no inbound webhooks")

    def close(self) -> None:
        """Release connections; called when the runtime shuts down."""

    def __repr__(self) -> str:
        # settings' SecretStr fields print as '**********'
        return f"<{type(self).__name__} {self.name} ({self.channel}) {self.settings!r}>"


class AwsChannel(Channel):
    """A channel that talks to one AWS service through boto3: the client is made on the first
    send (boto3's import and the client cost about 200 ms, never paid at a cold start that
    sends nothing) from the settings' ``region`` and ``endpoint_url`` (a local AWS endpoint
    in tests), once per instance, thread-safe. ``client_timeout`` (seconds) sets botocore's
    connect and read timeouts with one attempt: the core retries, not botocore."""

    aws_service: ClassVar[str]
    required_packages: ClassVar[tuple[str, ...]] = ("boto3",)

    def __init__(self, settings: PluginSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3

                options: dict[str, Any] = {}
                timeout = getattr(self.settings, "timeout", None)
                if timeout:
                    from botocore.config import Config

                    options["config"] = Config(connect_timeout=timeout, read_timeout=timeout,
                                               retries={"max_attempts": 1})
                self._client = boto3.session.Session().client(  # type: ignore[call-overload]
                    self.aws_service, region_name=getattr(self.settings, "region", None),
                    endpoint_url=getattr(self.settings, "endpoint_url", None), **options)
            return self._client


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable bodies (the module default for UTF-8 is base64)
# "=_" cannot occur in quoted-printable text, so one fixed boundary serves every message whose 7bit
# parts do not contain it; a receiver's parser then compiles its boundary pattern once, not per mail
_BOUNDARY = "=_omnicast-alternative_="


class _MimePolicy(Compat32):
    """compat32 that writes a short ASCII header as it is and folds only past RFC 5322's 998
    octets (a folded List-Unsubscribe URL reads back with a leading space); the stock policy
    runs every header through ``Header.encode``, a third of the cost of a mail."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and "\n" not in value and "\r" not in value
                and len(name) + len(value) + 2 <= 998):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc]  # typeshed lacks the private _fold


_MIME_POLICY = _MimePolicy(max_line_length=998)


def _fits_7bit(body: str) -> bool:
    return body.isascii() and all(len(line) <= 998 for line in body.splitlines())


def _text_part(body: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype, policy=_MIME_POLICY)
    del part["MIME-Version"]  # said once, on the outer message
    if _fits_7bit(body):
        part.set_payload(body, "us-ascii")  # 7bit
    else:
        part.set_payload(body, _UTF8_QP)  # quoted-printable also wraps lines over 998 octets
    return part


def _address(value: str) -> str:
    # the email package's address parser costs some 11 us a header; the sender's address is
    # on every message and a customer's on each of theirs, so an address is parsed once
    # (a value past any real address's length is parsed, not kept)
    return _address_once(value) if len(value) <= 320 else _formatted(value)


def _formatted(value: str) -> str:
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8") if addr else value


_address_once = functools.lru_cache(maxsize=4096)(_formatted)


def message_id_header(message: OutboundMessage, domain: str) -> str:
    """The Message-ID an e-mail channel gives a message (a retry carries the same one)."""
    return f"<{message.message_id}@{domain}>"


def _headers_of(message: OutboundMessage, from_address: str, at: datetime, message_id_domain: str,
                reply_to: str | None) -> list[tuple[str, str]]:
    headers = [("From", from_address), ("To", message.to), ("Subject", message.subject or ""),
               ("Date", formatdate(at.timestamp(), localtime=False)),
               ("Message-ID", message_id_header(message, message_id_domain))]
    if reply_to:
        headers.append(("Reply-To", reply_to))
    headers.append(("X-Omnicast-Message-Id", message.message_id))
    headers += list(message.headers.items())
    return headers


def mime_email(
    message: OutboundMessage, *, from_address: str, at: datetime, message_id_domain: str,
    reply_to: str | None = None,
) -> Message:
    """The e-mail every e-mail channel sends: multipart text + HTML, a Message-ID derived from
    Omnicast's message id (a retry carries the same one; receivers dedupe on it), and the
    message's own headers (List-Unsubscribe, List-Unsubscribe-Post).

    Built with the ``email.mime`` classes (compat32), about 4x faster than ``EmailMessage``
    with the default policy, whose header objects cost more than the rest of the mail.
    An address that is not ASCII (SMTPUTF8) takes the ``EmailMessage`` path, which knows it."""
    headers = _headers_of(message, from_address, at, message_id_domain, reply_to)
    if not all(value.isascii() for name, value in headers if name in ("From", "To", "Reply-To")):
        international = EmailMessage()
        for name, value in headers:
            international[name] = value
        international.set_content(message.text or "")
        if message.html:
            international.add_alternative(message.html, subtype="html")
        return international
    msg: Message
    if message.html:
        boundary = None if _BOUNDARY in (message.text or "") or _BOUNDARY in message.html else _BOUNDARY
        msg = MIMEMultipart("alternative", boundary=boundary, policy=_MIME_POLICY)
        msg.attach(_text_part(message.text or "", "plain"))
        msg.attach(_text_part(message.html, "html"))
    else:
        msg = _text_part(message.text or "", "plain")
        msg["MIME-Version"] = "1.0"
    for name, value in headers:
        if name in ("From", "To", "Reply-To"):
            msg[name] = _address(value)
        else:
            msg[name] = value if value.isascii() else Header(value, "utf-8").encode()
    return msg


_CRLF_POLICY = _MIME_POLICY.clone(linesep="\r\n")
_PART_7BIT = 'MIME-Version: 1.0\r\nContent-Type: text/{}; charset="us-ascii"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
_PART_QP = ('MIME-Version: 1.0\r\nContent-Type: text/{}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n")


def _crlf(text: str) -> str:
    """Every line ending as CRLF (what the generator's line splitting does)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def _wire_part(body: str, subtype: str) -> str | None:
    """``_text_part(body, subtype)`` as the generator writes it (CRLF), or None for a body
    that holds the fixed boundary or a lone surrogate (the ``email`` package handles those)."""
    if _BOUNDARY in body:
        return None
    if _fits_7bit(body):  # as _text_part decides
        return _PART_7BIT.format(subtype) + _crlf(body)
    try:
        octets = body.encode("utf-8").decode("latin-1")  # what Charset.body_encode hands the encoder
    except UnicodeEncodeError:
        return None
    return _PART_QP.format(subtype) + _crlf(quoprimime.body_encode(octets))


def email_bytes(
    message: OutboundMessage, *, from_address: str, at: datetime, message_id_domain: str,
    reply_to: str | None = None,
) -> bytes | None:
    """``mime_email(...)`` as wire bytes (CRLF), ready for SMTP ``DATA`` or a raw-mail API;
    None when an address is not ASCII (SMTPUTF8: send the ``EmailMessage`` instead).

    The usual mail (ASCII headers, a text and an HTML body, either 7bit or UTF-8 that the
    ``email`` package's own quoted-printable encoder writes) is put together straight from
    strings, byte for byte what the ``email`` package writes for it (tested), in about a
    third of the time; anything else (a text-only mail too) is built and flattened by the
    ``email`` package."""
    headers = _headers_of(message, from_address, at, message_id_domain, reply_to)
    if not all(value.isascii() for name, value in headers if name in ("From", "To", "Reply-To")):
        return None
    lines = [(name, _address(value) if name in ("From", "To", "Reply-To") else value) for name, value in headers]
    parts = None
    if message.html and all(v.isascii() and "\r" not in v and "\n" not in v and len(n) + len(v) + 2 <= 998
                            for n, v in lines):
        text, html = _wire_part(message.text or "", "plain"), _wire_part(message.html, "html")
        parts = (text, html) if text is not None and html is not None else None
    if parts is None:
        msg = mime_email(message, from_address=from_address, at=at, message_id_domain=message_id_domain,
                         reply_to=reply_to)
        return msg.as_bytes(policy=_CRLF_POLICY)
    head = "".join(f"{name}: {value}\r\n" for name, value in lines)
    return (f'Content-Type: multipart/alternative; boundary="{_BOUNDARY}"\r\nMIME-Version: 1.0\r\n{head}\r\n'
            f"--{_BOUNDARY}\r\n{parts[0]}\r\n--{_BOUNDARY}\r\n{parts[1]}\r\n"
            f"--{_BOUNDARY}--\r\n").encode("ascii")


# GSM 03.38 basic character set and its extension table (the extension costs two septets)
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def sms_segments(text: str) -> tuple[str, int]:
    """(encoding, segments): GSM-7 fits 160 septets in one part and 153 per part when
    concatenated; anything outside GSM-7 makes the whole message UCS-2 (70, then 67)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        septets = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        return "GSM-7", 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2  # emoji take two UTF-16 code units
    return "UCS-2", 1 if units <= 70 else -(-units // 67)


def header_injection(*values: str | None) -> bool:
    """True if any value would break out of its header line."""
    return any(v is not None and ("\r" in v or "\n" in v) for v in values)


# --------------------------------------------------------------------------- models
class Contribution(NamedTuple):
    """One feature's share in one customer's score: why the model said what it said.

    ``value`` is the customer's feature value; ``effect`` the signed push it gave the
    score, in the model's own units (log-odds for a logistic model, currency for CLV,
    quantile points for RFM); larger ``abs(effect)`` matters more. (A named tuple: a
    scoring run makes millions of them.)
    """

    feature: str
    value: float
    effect: float

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "effect": self.effect}


@functools.lru_cache(maxsize=64)
def _isoformat(at: datetime) -> str:
    # a scoring run writes one cutoff on millions of scores: format it once
    return at.isoformat()


@dataclass(slots=True)
class Score:
    """One model's verdict on one customer as of a cutoff, with its explanation.

    ``value`` is the headline number (churn probability, expected value, RFM score);
    ``values`` holds every output by name (the first of :attr:`Model.outputs` equals
    ``value``); ``label`` a name where the model has one (an RFM segment, a risk band).
    ``method`` is ``"model"`` or, when the shop was too small to fit one, the heuristic
    and why (``"heuristic: 37 customers < 500"``).
    """

    profile_id: str
    model: str
    kind: str
    version: str
    as_of: datetime
    value: float
    values: dict[str, Any] = field(default_factory=dict)
    explanation: tuple[Contribution, ...] = ()
    label: str | None = None
    method: str = "model"

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile_id": self.profile_id,
            "model": self.model,
            "kind": self.kind,
            "version": self.version,
            "as_of": _isoformat(self.as_of),
            "value": self.value,
            "values": self.values,
            "label": self.label,
            "method": self.method,
            "explanation": [{"feature": c[0], "value": c[1], "effect": c[2]} for c in self.explanation],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        return cls(
            profile_id=data["profile_id"],
            model=data["model"],
            kind=data["kind"],
            version=data["version"],
            as_of=datetime.fromisoformat(data["as_of"]),
            value=data["value"],
            values=dict(data.get("values") or {}),
            explanation=tuple(Contribution(**c) for c in data.get("explanation") or ()),
            label=data.get("label"),
            method=data.get("method", "model"),
        )


@dataclass
class FeatureTable:
    """Per-customer features as of a cutoff (nothing after ``as_of`` went into them).

    ``X`` is a float64 numpy array of shape ``(len(profile_ids), len(columns))``; missing
    values are NaN (e.g. inter-purchase time of a one-order customer). ``extras`` holds
    what does not fit a column, by name, each documented in :mod:`chalicelib.features`:
    ``engagement_hours`` (n x 24 opens+clicks per UTC hour), ``category_affinity``
    (n x len(``categories``) shares), ``categories``, ``interactions`` (profile row,
    item id, kind, time: for recommendation models).
    """

    as_of: datetime
    profile_ids: list[str]
    columns: tuple[str, ...]
    X: Any
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.profile_ids)

    def column(self, name: str) -> Any:
        """One feature column as a 1-D array (KeyError naming the column if absent)."""
        try:
            return self.X[:, self.columns.index(name)]
        except ValueError:
            raise KeyError(f"no feature column {name!r}; have {', '.join(self.columns)}") from None

    def matrix(self, names: tuple[str, ...] | list[str]) -> Any:
        """The columns ``names``, in that order, as an (n, len(names)) array."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise KeyError(f"no feature column(s) {', '.join(missing)}")
        return self.X[:, [self.columns.index(n) for n in names]]

    def rows(self, index: Any) -> FeatureTable:
        """A subset of customers (``index``: a boolean mask or integer indices)."""
        import numpy as np

        n = len(self.profile_ids)
        idx = np.arange(n)[index]
        extras = {
            k: (v[idx] if hasattr(v, "shape") and getattr(v, "ndim", 0) >= 1 and len(v) == n else v)
            for k, v in self.extras.items()
        }
        inter = self.extras.get("interactions")
        if isinstance(inter, dict) and "row" in inter:
            # interactions point at rows: keep those of the kept customers, renumbered
            new_row = np.full(n, -1)
            new_row[idx] = np.arange(len(idx))
            mapped = new_row[np.asarray(inter["row"], dtype=np.int64)]
            keep = mapped >= 0
            extras["interactions"] = {
                k: (np.asarray(v)[keep] if k != "row" else mapped[keep]) for k, v in inter.items()
            }
        return FeatureTable(self.as_of, [self.profile_ids[i] for i in idx], self.columns, self.X[idx], extras)


@dataclass
class TrainingSet:
    """Features as of a cutoff plus what each customer did in the ``horizon_days`` after it.

    ``outcomes`` holds arrays aligned with ``features`` rows: ``orders`` (count) and
    ``spend`` (order totals) in ``(as_of, as_of + horizon_days]``. Labels are derived
    from them by the model (churn: ``orders == 0``).
    """

    features: FeatureTable
    outcomes: dict[str, Any]
    horizon_days: float


@dataclass(frozen=True)
class Artifact:
    """A model's learned state in an explicit, safe format: never a pickle.

    ``format`` is ``"json"``, ``"npz"`` (numpy arrays, loaded with ``allow_pickle=False``)
    or ``"skops"`` (loaded only with an allow-list of trusted types). The core stores the
    bytes beside the model card and checks their SHA-256 before handing them back.
    """

    format: str
    data: bytes


class ModelError(ValueError):
    """A model cannot be fitted, loaded or used as asked (bad artifact, too little data)."""


class Model:
    """Base class of a model plugin: glue around a scikit-learn compatible estimator.

    The core builds the :class:`FeatureTable` (see :mod:`chalicelib.features`), then:

    - training: ``fit(train)`` on features as of an earlier cutoff with outcomes after it,
      ``evaluate(holdout)`` on a later cutoff, ``dump()`` to a versioned artifact beside
      its model card; when the shop has fewer than ``min_customers`` customers the core
      calls ``use_heuristic(reason)`` instead of ``fit``, and every score says so;
    - scoring: ``load(artifact)``, then ``score(table)`` per chunk of customers.

    Heavy imports (numpy, scikit-learn) belong inside methods or in the plugin's own
    modules, never at this module's level, so the HTTP function starts without them.
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # churn, clv, rfm, recommendations, send_time, bandit, best_channel, ...
    version: ClassVar[str] = "0"  # the plugin's code version; artifacts add the training cutoff
    title: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = ()  # keys of Score.values; the first is Score.value
    features: ClassVar[tuple[str, ...]] = ()  # FeatureTable columns it reads (documentation, card)
    min_customers: ClassVar[int] = 0  # fewer customers with history than this: heuristics
    Settings: ClassVar[type[PluginSettings]] = NoSettings

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.heuristic: str | None = None  # e.g. "heuristic: 37 customers < 500"
        # the trained artifact's version, set by the core (code version + training cutoff);
        # every Score carries it
        self.artifact_version: str = self.version

    def use_heuristic(self, reason: str, table: FeatureTable | None = None) -> None:
        """Score without a fitted estimator; ``reason`` goes into every score's ``method``.

        ``table`` (the customers as of the latest cutoff) lets a heuristic learn shop-wide
        numbers (the median days between orders, the average order value); override to use it.
        """
        self.heuristic = reason

    @property
    def method(self) -> str:
        return self.heuristic or "model"

    def fit(self, data: TrainingSet) -> Model:
        """Fit the estimator on ``data``; return self."""
        raise NotImplementedError

    def evaluate(self, data: TrainingSet) -> dict[str, Any]:
        """Holdout metrics (JSON-able) of the fitted model on ``data`` (a later cutoff)."""
        return {}

    def score(self, table: FeatureTable) -> list[Score]:
        """One score per row of ``table``, each with its top contributing features."""
        raise NotImplementedError

    def predict_matrix(self, X: Any) -> Any:
        """The raw prediction on a prebuilt matrix of :attr:`features` (benchmarks)."""
        raise NotImplementedError

    def dump(self) -> Artifact:
        """The learned state (or the heuristic's parameters) as a safe artifact."""
        raise NotImplementedError

    def load(self, artifact: Artifact) -> None:
        """Restore state saved by :meth:`dump`; raise :class:`ModelError` if it is not trusted."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the model card shows about the estimator: hyper-parameters, learned values."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.kind}) v{self.version} {self.method}>"


# --------------------------------------------------------------------------- sources
class SignatureError(Exception):
    """A webhook failed verification; ``reason`` is safe to return to the caller (401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class WebhookRequest:
    """One inbound webhook exactly as received: the raw bytes are what was signed."""

    source: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: datetime
    query: dict[str, str] = field(default_factory=dict)

    def header(self, *names: str) -> str | None:
        """The first header present among ``names`` (case-insensitive)."""
        for name in names:
            value = self.headers.get(name.lower())
            if value is not None:
                return value
        return None


@dataclass(frozen=True)
class Delivery:
    """What a verified webhook is, read from headers and a cheap look at the body.

    ``delivery_id`` deduplicates retries of the same delivery; ``event_id`` (when the
    platform has one shared by all deliveries of one action) deduplicates the action.
    ``ping`` marks a set-up request that must be answered 200 and otherwise ignored.
    """

    delivery_id: str
    topic: str
    event_id: str | None = None
    ping: bool = False


@dataclass
class SourceOutput:
    """What one webhook means, in canonical terms.

    ``events``: Segment-shaped dicts (``type`` identify/track, ``messageId``, ``userId``
    and/or ``anonymousId``, ``timestamp`` ISO 8601 with zone, ``traits`` or ``event`` +
    ``properties``, ``context``). Identifiers beyond the user id go in
    ``context.externalIds`` as ``{"id", "type", "collection": "users"}`` with types such
    as ``shopify_customer_id``, ``email``, ``phone``. Ids stay exact (strings or ints,
    never floats). ``catalog``: product changes as :class:`CatalogItem`.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    catalog: list[CatalogItem] = field(default_factory=list)


@dataclass(frozen=True)
class CatalogItem:
    """One product variant as the shop's catalog now has it (None = not in this payload)."""

    product_id: str
    variant_id: str | None = None
    title: str | None = None
    price: float | None = None
    currency: str | None = None
    stock: int | None = None
    categories: tuple[str, ...] | None = None
    url: str | None = None
    image_url: str | None = None
    status: str | None = None  # active, draft, archived
    # platforms that count stock per inventory item (Shopify): an item with only this and
    # ``stock`` updates the variant a product webhook linked to it
    inventory_item_id: str | None = None


class EventSource:
    """Base class of an event source plugin (a shop platform's webhooks).

    The core calls, in order: :meth:`verify` (before anything parses the body), then
    :meth:`delivery` (dedupe and pings, still on the HTTP path), then later, in a
    worker, :meth:`to_output`. ``secrets`` are the source's active signing secrets,
    newest first (several during rotation).
    """

    name: ClassVar[str]  # "shopify", "woocommerce", ...
    title: ClassVar[str] = ""
    Settings: ClassVar[type[PluginSettings]] = NoSettings
    replay_tolerance_seconds: ClassVar[int | None] = None  # for schemes with a timestamp

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings

    def verify(self, request: WebhookRequest, secrets: list[str]) -> None:
        """Raise :class:`SignatureError` unless ``request`` is signed by one of ``secrets``."""
        raise NotImplementedError

    def delivery(self, request: WebhookRequest) -> Delivery:
        """Identify a verified delivery (raise ValueError naming the missing header/field)."""
        raise NotImplementedError

    def to_output(self, request: WebhookRequest) -> SourceOutput:
        """Map a verified delivery to canonical events and catalog changes (in a worker)."""
        raise NotImplementedError


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    """HMAC-SHA256, the primitive every shop platform signs with."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(key, message, "sha256")


def matches_any(expected: list[bytes], given: list[bytes]) -> bool:
    """Constant-time: does any given signature equal any expected one?"""
    found = False
    for e in expected:
        for g in given:
            found |= hmac.compare_digest(e, g)
    return found


def verify_base64_hmac(request: WebhookRequest, secrets: list[str], *header_names: str) -> None:
    """The common scheme (Shopify, WooCommerce): base64(HMAC-SHA256(secret, raw body)) in a header.

    Raises :class:`SignatureError` naming the first header name when it is missing, not
    base64, or matches none of ``secrets``.
    """
    given = request.header(*header_names)
    label = header_names[0]
    if not given:
        raise SignatureError(f"missing {label} header")
    try:
        signature = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{label} is not base64") from exc
    if not matches_any([hmac_sha256(s, request.body) for s in secrets], [signature]):
        raise SignatureError("signature does not match")


def money(value: Any) -> float | None:
    """A price as the platforms send it ("404.95", 404.95, None) as a rounded float, or None."""
    try:
        return None if value in (None, "") or isinstance(value, bool) else round(float(value), 2)
    except (TypeError, ValueError):
        return None


def standard_webhooks_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` per the Standard Webhooks spec (a ``whsec_`` secret is base64 after the prefix)."""
    key: bytes = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    mac = hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(mac).decode()
