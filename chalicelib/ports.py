"""Ports: the storage and transport interfaces the core talks to.

Two adapter sets implement them: ``chalicelib.adapters.local`` (SQLite in WAL mode, a
durable SQLite queue, a blob folder) and ``chalicelib.adapters.aws`` (one DynamoDB
table, SQS, S3, SSM Parameter Store). One contract suite (``tests/contract``) runs
against both and must pass identically, so the behaviour described in each docstring
here is the specification, not a hint.

Conventions shared by every port:
- Timestamps are timezone-aware UTC ``datetime``; adapters never read the wall clock,
  they are handed the time by the caller (who got it from the injected Clock).
- "Conditional" methods return ``False`` (never raise) when the condition loses, so that
  two workers racing on the same key produce exactly one winner.
- JSON-like values (``dict[str, Any]``) hold only str, int, float, bool, None, lists and
  dicts; integers are kept exact (Shopify ids exceed 2**53).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from chalicelib.clock import iso, parse_iso

JSON = dict[str, Any]


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class StoredEvent:
    """One canonical event as kept in the event log."""

    message_id: str  # the sender's id (Segment messageId or a platform delivery id)
    type: str  # identify, track, page, screen, group, alias
    profile_id: str | None  # the profile it landed on once processed
    received_at: datetime
    timestamp: datetime  # when it happened, by the sender's clock
    event: str | None  # the track event name ("Order Completed"), None for identify etc.
    source: str  # "segment", "shopify", ...
    payload: JSON  # the canonical event body
    processed: bool = False


@runtime_checkable
class EventStore(Protocol):
    def append(self, event: StoredEvent) -> bool:
        """Store ``event`` unless one with the same ``(source, message_id)`` exists.

        Returns True if it was new, False for a duplicate (the stored one is unchanged).
        """
        ...

    def get(self, source: str, message_id: str) -> StoredEvent | None: ...

    def mark_processed(self, source: str, message_id: str, profile_id: str) -> None:
        """Record that the event was applied to ``profile_id``."""
        ...

    def for_profile(self, profile_id: str, limit: int = 100, *, since: datetime | None = None) -> list[StoredEvent]:
        """The profile's processed events, oldest first by ``timestamp``, at most ``limit``;
        with ``since``, only those at or after it."""
        ...

    def by_source(self, source: str, after: str | None = None, limit: int = 500, *,
                  events: Collection[str] | None = None) -> list[StoredEvent]:
        """A page of one source's events ordered by message id, after ``after`` (audit, replay);
        with ``events``, only the events of those names (the page holds up to ``limit`` of them)."""
        ...

    def count(self, source: str | None = None) -> int:
        """How many events are stored, of one source or of all (reports and tests)."""
        ...


# --------------------------------------------------------------------------- profiles
@dataclass
class Profile:
    profile_id: str
    traits: JSON = field(default_factory=dict)
    identifiers: dict[str, str] = field(default_factory=dict)  # kind -> value
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0  # optimistic concurrency: bumped on every save


@runtime_checkable
class ProfileStore(Protocol):
    def get(self, profile_id: str) -> Profile | None: ...

    def save(self, profile: Profile, expected_version: int) -> bool:
        """Write ``profile`` if the stored version equals ``expected_version`` (0 = new).

        On success the stored version becomes ``expected_version + 1`` and
        ``profile.version`` is updated to it. Returns False if the condition lost.
        """
        ...

    def resolve(self, kind: str, value: str) -> str | None:
        """The profile id an identifier (``kind`` e.g. "user_id", "email") points to."""
        ...

    def link(self, kind: str, value: str, profile_id: str) -> bool:
        """Point an identifier at a profile if it points nowhere yet.

        Returns True if it now points at ``profile_id`` (newly, or already did), False if
        it already points at another profile.
        """
        ...

    def count(self) -> int: ...

    def scan(self, cursor: str | None = None, limit: int = 1000) -> tuple[list[Profile], str | None]:
        """A page of profiles and the cursor of the next page (None at the end).

        For sweeps and previews; the order is stable but unspecified.
        """
        ...


# --------------------------------------------------------------------------- send ledger
@dataclass
class LedgerEntry:
    """One intended message, keyed so that it can be sent at most once."""

    key: str  # profile + journey + step + entity, built by the core
    profile_id: str
    journey: str
    step: str
    channel: str
    status: str  # claimed, sent, failed, skipped, deferred
    reason: str  # why it was sent or withheld, in words a marketer can read
    created_at: datetime
    updated_at: datetime
    provider_message_id: str | None = None
    detail: JSON = field(default_factory=dict)


@runtime_checkable
class SendLedger(Protocol):
    def claim(self, entry: LedgerEntry) -> bool:
        """Create the entry if no entry with ``entry.key`` exists. True if this call won."""
        ...

    def update(
        self,
        key: str,
        *,
        status: str,
        reason: str,
        at: datetime,
        provider_message_id: str | None = None,
        detail: JSON | None = None,
    ) -> None:
        """Record the outcome of a claimed entry (status, reason, provider id, detail)."""
        ...

    def transition(self, key: str, *, from_status: str, to_status: str, at: datetime) -> bool:
        """Move an entry from ``from_status`` to ``to_status`` only if it is in ``from_status``.

        The conditional step that lets a deferred or retried message be picked up by
        exactly one worker. False if the entry is missing or in another status.
        """
        ...

    def get(self, key: str) -> LedgerEntry | None: ...

    def by_provider_message_id(self, provider_message_id: str) -> LedgerEntry | None:
        """The entry a provider's message id was recorded on (delivery receipts find their
        message this way), or None. If several carry it, the most recently updated."""
        ...

    def for_profile(self, profile_id: str, *, sent_after: datetime | None = None) -> list[LedgerEntry]:
        """Every entry of one profile, oldest first (the decision log); with ``sent_after``, only
        those sent later than it (``status`` sent, ``updated_at`` after it: the contact budget)."""
        ...

    def all(self, limit: int = 1000) -> list[LedgerEntry]:
        """Entries oldest first, at most ``limit`` (reports)."""
        ...


# --------------------------------------------------------------------------- journeys
@dataclass
class JourneyState:
    """Where one profile is in one journey for one entity (cart, order, or "-")."""

    profile_id: str
    journey: str
    entity: str
    version: str  # the journey definition version the profile entered on
    step: str
    status: str  # active, waiting, completed, exited
    entered_at: datetime
    data: JSON = field(default_factory=dict)


@dataclass(frozen=True)
class Timer:
    timer_id: str
    due_at: datetime
    payload: JSON


@runtime_checkable
class JourneyStore(Protocol):
    def enter(self, state: JourneyState) -> bool:
        """Create the state unless ``(profile_id, journey, entity)`` exists. True if new."""
        ...

    def get(self, profile_id: str, journey: str, entity: str) -> JourneyState | None: ...

    def put(self, state: JourneyState) -> None:
        """Overwrite an existing state (step, status, data changes)."""
        ...

    def for_profile(
        self, profile_id: str, *, journey: str | None = None, statuses: tuple[str, ...] | None = None
    ) -> list[JourneyState]:
        """A profile's journey states, oldest first; only one journey's, or only those in
        ``statuses``, when given (the event path reads active states only: a repeating
        journey leaves many finished runs behind)."""
        ...

    def last_run(self, profile_id: str, journey: str, entity: str) -> JourneyState | None:
        """The latest run of ``entity`` in ``journey``: the state keyed ``entity`` itself or
        ``entity#n`` with the highest n (re-entry numbers its runs), whatever its status."""
        ...

    def schedule(self, timer: Timer) -> bool:
        """Store a timer unless one with the same id exists. True if new."""
        ...

    def due(self, now: datetime, limit: int = 100) -> list[Timer]:
        """Timers with ``due_at <= now``, earliest first, at most ``limit``."""
        ...

    def take(self, timer_id: str) -> bool:
        """Delete a timer; True only for the one caller that removed it (fires once)."""
        ...


# --------------------------------------------------------------------------- queue
@dataclass(frozen=True)
class QueueMessage:
    receipt: str  # opaque handle for ack
    body: JSON
    receive_count: int


@runtime_checkable
class Queue(Protocol):
    def send(self, queue: str, body: JSON, *, delay_seconds: int = 0) -> None:
        """Enqueue one message (durably) on the named queue."""
        ...

    def send_batch(self, queue: str, bodies: list[JSON]) -> None:
        """Enqueue several messages, batched as the transport allows."""
        ...

    def receive(
        self, queue: str, *, max_messages: int = 10, visibility_seconds: int = 30, up_to: int | None = None
    ) -> list[QueueMessage]:
        """Take up to ``max_messages`` visible messages; they reappear after
        ``visibility_seconds`` unless acknowledged (at-least-once delivery).

        ``up_to``: only messages sent up to that position (the local queue's ``position()``:
        the simulator's worker takes one hour's calls while the next hour's arrive); SQS has
        no positions and refuses it."""
        ...

    def ack(self, queue: str, receipt: str) -> None:
        """Delete a received message for good."""
        ...

    def depth(self, queue: str) -> int:
        """Messages waiting or in flight (approximate on SQS)."""
        ...


# --------------------------------------------------------------------------- blobs
@runtime_checkable
class BlobStore(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def delete(self, key: str) -> None: ...


# --------------------------------------------------------------------------- secrets
@runtime_checkable
class Secrets(Protocol):
    def get(self, name: str) -> str | None: ...

    def put(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def names(self, prefix: str) -> list[str]:
        """Names under ``prefix``, sorted (values are never listed)."""
        ...


# --------------------------------------------------------------------------- catalog
@dataclass
class Product:
    """One sellable variant (``variant_id`` "-" for products without variants)."""

    product_id: str
    variant_id: str
    title: str = ""
    price: float | None = None
    currency: str | None = None
    stock: int | None = None  # None: the shop does not track stock
    categories: list[str] = field(default_factory=list)
    url: str | None = None
    image_url: str | None = None
    status: str = "active"
    updated_at: datetime | None = None


def product_json(p: Product) -> dict[str, Any]:
    return {
        "product_id": p.product_id,
        "variant_id": p.variant_id,
        "title": p.title,
        "price": p.price,
        "currency": p.currency,
        "stock": p.stock,
        "categories": p.categories,
        "url": p.url,
        "image_url": p.image_url,
        "status": p.status,
        "updated_at": iso(p.updated_at) if p.updated_at else None,
    }


def product_from(d: dict[str, Any]) -> Product:
    return Product(**{**d, "updated_at": parse_iso(d["updated_at"]) if d.get("updated_at") else None})


@runtime_checkable
class CatalogStore(Protocol):
    def get(self, product_id: str, variant_id: str) -> Product | None: ...

    def put(self, product: Product) -> None:
        """Insert or replace a variant."""
        ...

    def variants(self, product_id: str) -> list[Product]:
        """Every variant of a product, sorted by variant id."""
        ...

    def all(self, limit: int = 10_000) -> list[Product]: ...


# --------------------------------------------------------------------------- scores
@runtime_checkable
class ScoreStore(Protocol):
    """Each customer's latest score per model kind (churn, clv, rfm, ...) and scoring runs.

    A score is a JSON dict as :meth:`chalicelib.plugin_api.Score.as_dict` gives it
    (``profile_id``, ``kind``, ``model``, ``version``, ``as_of``, ``value``, ``values``,
    ``label``, ``method``, ``explanation``).
    """

    def put_many(self, scores: list[JSON]) -> int:
        """Keep each score as its profile's current one for its kind, unless the stored
        one has a later ``as_of`` (an old run finishing late never wins). Writing the same
        score again changes nothing. Returns how many were given."""
        ...

    def for_profile(self, profile_id: str) -> list[JSON]:
        """The profile's current scores, one per kind, sorted by kind."""
        ...

    def claim_run(self, key: str, at: datetime) -> bool:
        """Mark one unit of scoring work (a shard of a run: model versions + as_of + shard)
        done-or-in-progress; True only for the first caller, so a redelivered shard does
        nothing. Markers may expire after 30 days."""
        ...

    def release_run(self, key: str) -> None:
        """Forget a claimed unit that failed, so that its retry runs it."""
        ...

    def forget(self, profile_id: str) -> None:
        """Delete every score of a profile (erasure)."""
        ...

    def count(self, kind: str | None = None) -> int:
        """How many current scores are stored (of one kind, or all)."""
        ...


@dataclass
class Activity:
    """What customers did up to a cutoff, as aligned columns (plain lists): the raw
    material of :mod:`chalicelib.features`. Times are days since the Unix epoch (float).

    - orders: ``order_profile``, ``order_time``, ``order_total``, ``order_id``
    - ordered products: ``item_profile``, ``item_time``, ``item_product``
    - product views: ``view_profile``, ``view_time``, ``view_product``, ``view_category``
    - messages sent (send ledger, status sent): ``send_key``, ``send_profile``,
      ``send_channel``, ``send_time``
    - opens and clicks by people (tracking events, machine opens left out):
      ``engagement_profile``, ``engagement_time``, ``engagement_kind`` ("open"/"click"),
      ``engagement_key`` (the ledger key of the message)
    - ``categories``: product id -> category names, from the catalog
    """

    order_profile: list[str] = field(default_factory=list)
    order_time: list[float] = field(default_factory=list)
    order_total: list[float] = field(default_factory=list)
    order_id: list[str] = field(default_factory=list)
    item_profile: list[str] = field(default_factory=list)
    item_time: list[float] = field(default_factory=list)
    item_product: list[str] = field(default_factory=list)
    view_profile: list[str] = field(default_factory=list)
    view_time: list[float] = field(default_factory=list)
    view_product: list[str] = field(default_factory=list)
    view_category: list[str] = field(default_factory=list)
    send_key: list[str] = field(default_factory=list)
    send_profile: list[str] = field(default_factory=list)
    send_channel: list[str] = field(default_factory=list)
    send_time: list[float] = field(default_factory=list)
    engagement_profile: list[str] = field(default_factory=list)
    engagement_time: list[float] = field(default_factory=list)
    engagement_kind: list[str] = field(default_factory=list)
    engagement_key: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)


@runtime_checkable
class ActivityReader(Protocol):
    def activity(self, profile_ids: list[str] | None, until: datetime) -> Activity:
        """Everything in :class:`Activity` that happened at or before ``until``, for
        ``profile_ids`` (None: every profile). Nothing after ``until`` is returned."""
        ...

    def profile_ids(self) -> list[str]:
        """Every profile id with at least one processed event, sorted."""
        ...


@dataclass
class Stores:
    """The full set of ports one runtime runs on."""

    events: EventStore
    profiles: ProfileStore
    ledger: SendLedger
    journeys: JourneyStore
    queue: Queue
    blobs: BlobStore
    secrets: Secrets
    catalog: CatalogStore | None = None  # products, variants, prices, stock
    scores: ScoreStore | None = None  # model scores with their explanations
    activity: ActivityReader | None = None  # a fast bulk reader for features (else per profile)
    # a unit of work around a worker batch where the adapter has transactions (SQLite):
    # nested calls are savepoints. None where each write stands alone (DynamoDB).
    transaction: Callable[[], AbstractContextManager[Any]] | None = None
