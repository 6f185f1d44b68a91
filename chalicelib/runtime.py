"""The runtime: settings + clock + one adapter set + plugins, wired into services.

``app.py`` builds one lazily per process (so importing the app costs no I/O and moto can
be started before any AWS client exists); the CLI and the tests build their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, cast

from chalicelib.batches import Unit, run_in_one_commit
from chalicelib.clock import Clock, HeldClock, SystemClock
from chalicelib.config import Settings, load_settings
from chalicelib.plugin_api import Channel, ChannelContext
from chalicelib.plugin_host import PluginHost
from chalicelib.ports import Profile, QueueMessage, Stores
from chalicelib.services.admin import AdminService
from chalicelib.services.consent import ConsentService
from chalicelib.services.credentials import Credentials
from chalicelib.services.ingest import INGEST_QUEUE, IngestService
from chalicelib.services.webhooks import WebhookService, WebhookSources

if TYPE_CHECKING:
    from chalicelib.services.authoring import Authoring
    from chalicelib.services.bandit_splits import BanditSplits
    from chalicelib.services.catalog import CatalogService
    from chalicelib.services.erasure import ErasureService
    from chalicelib.services.feedback import FeedbackService
    from chalicelib.services.feeds import FeedService
    from chalicelib.services.inbound import InboundService
    from chalicelib.services.ingest import EventProcessor
    from chalicelib.services.journeys import JourneyEngine
    from chalicelib.services.measurement import Measurement
    from chalicelib.services.recommendations import RecommendationsService
    from chalicelib.services.scoring import ScoringService
    from chalicelib.services.segments import SegmentService
    from chalicelib.services.send import Sending, SendService
    from chalicelib.services.tracking import Tracking
    from chalicelib.services.webhooks import WebhookProcessor

log = logging.getLogger("omnicast.runtime")
SEND_QUEUE = "send"
JOURNEY_TIMERS = frozenset({"journey_resume", "journey_timeout", "journey_date"})  # storage-only timers
SCORING_QUEUE = "scoring"  # shards of a scoring run (chalicelib.services.scoring)
QUEUES = (INGEST_QUEUE, SEND_QUEUE, SCORING_QUEUE)


def build_stores(settings: Settings) -> Stores:
    if settings.runtime == "aws":
        from chalicelib.adapters.aws import aws_stores

        return aws_stores(settings.aws)
    from chalicelib.adapters.local import local_stores

    return local_stores(settings.data_dir)


@dataclass
class DrainReport:
    ingested: int = 0
    sends: int = 0
    timers: int = 0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        stores: Stores | None = None,
        clock: Clock | None = None,
        host: PluginHost | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.stores = stores or build_stores(settings)
        self.host = host or PluginHost(settings.plugins).load()
        self.credentials = Credentials(self.stores.secrets, self.clock)
        self._channels: dict[str, Channel] = {}
        self._channel_lock = threading.Lock()
        self._batch = threading.local()  # .profiles: whose segments a transactional batch re-evaluates at its end
        self.channel_clock = HeldClock(self.clock)  # the channels' clock (see drain's leave_sends_in_flight)
        # a drain's last wave of sends still with its channels, and the send tasks it answers
        self._in_flight: tuple[list[QueueMessage], Sending] | None = None
        self._transmitter: ThreadPoolExecutor | None = None
        self.delivered = 0  # deliveries a channel accepted ("sent") recorded by this runtime
        self._score_refs: dict[str, tuple[Any, Any, frozenset[str]]] = {}  # see score_refs
        # the HTTP function needs only these; the workers' services are built on first use,
        # so an API cold start never imports the template engine or parses the journey library
        self.ingest = IngestService(self.stores.queue, self.credentials, self.clock, settings.max_body_bytes)
        self.sources = WebhookSources(self.host, settings)
        self.webhooks = WebhookService(
            self.sources, self.credentials, self.stores.queue, self.stores.blobs, self.clock, settings.max_body_bytes
        )
        self.consent = ConsentService(self.stores.profiles, self.credentials, self.clock)
        self.admin = AdminService(self.stores)

    @cached_property
    def journeys(self) -> JourneyEngine:
        from chalicelib.services.authoring import load_stored
        from chalicelib.services.journeys import JourneyEngine, JourneyRegistry

        registry = JourneyRegistry()
        for name in self.settings.journeys.disabled:
            registry.paused.add(name)
        load_stored(registry, self.stores.blobs)
        engine = JourneyEngine(
            self.stores.journeys,
            self.stores.queue,
            self.clock,
            profiles=self.stores.profiles,
            events=self.stores.events,
            registry=registry,
            default_timezone=self.settings.send_policy.default_timezone,
            scores=self.scoring.facts,  # branch and exit rules can read model scores
        )
        engine.bandit = self.bandit_splits
        engine.schedule_broadcasts()
        return engine

    @cached_property
    def bandit_splits(self) -> BanditSplits:
        from chalicelib.journey_model import SplitStep
        from chalicelib.services.bandit_splits import BanditSplits

        def experiment(journey: str) -> dict[str, Any]:
            definition = self.journeys.registry.get(journey)
            splits = [s for s in definition.steps if isinstance(s, SplitStep)] if definition else []
            control = splits[0].control if splits else None
            return self.measurement.experiment(journey, control=control)

        def bandit() -> Any:
            cls = self.scoring.enabled().get("bandit")
            return self.scoring._new(cls) if cls is not None else None

        return BanditSplits(experiment, bandit)

    @cached_property
    def processor(self) -> EventProcessor:
        from chalicelib.services.ingest import EventProcessor

        processor = EventProcessor(self.stores.events, self.stores.profiles, self.host, self.journeys, self.clock)
        processor.after_event = self._after_event
        return processor

    def _after_event(self, profile: Profile) -> None:
        """Segments follow each event; in a transactional ingest batch, once per profile at the
        batch's end (a visit's events come together: one evaluation, not one per event)."""
        later: dict[str, Profile] | None = getattr(self._batch, "profiles", None)
        if later is None:
            self.segments.update(profile.profile_id, profile)
        else:
            later[profile.profile_id] = profile  # the latest, as saved last

    @cached_property
    def segments(self) -> SegmentService:
        from chalicelib.services.segments import SegmentService

        return SegmentService(
            self.stores.profiles, self.stores.events, self.stores.blobs, self.clock, on_change=self.journeys.on_segment,
            scores=cast("Callable[[str], dict[str, float]]", self.scoring.facts),
        )

    @cached_property
    def recommendations(self) -> RecommendationsService:
        from chalicelib.services.recommendations import RecommendationsService

        return RecommendationsService(self.scoring, self.credentials, self.stores)

    @cached_property
    def scoring(self) -> ScoringService:
        from chalicelib.services.scoring import ScoringService

        service = ScoringService(self.settings, self.stores, self.host, self.clock)
        if self.settings.runtime == "local":  # on AWS, EventBridge schedules run training and scoring
            service.schedule(self.stores.journeys)
        return service

    @cached_property
    def catalog(self) -> CatalogService | None:
        from chalicelib.services.catalog import CatalogService

        if self.stores.catalog is None:
            return None
        return CatalogService(self.stores.catalog, self.stores.events, on_event=self.journeys.on_catalog_event)

    @cached_property
    def webhook_processor(self) -> WebhookProcessor:
        from chalicelib.services.webhooks import WebhookProcessor

        return WebhookProcessor(self.sources, self.stores.events, self.stores.blobs, self.processor, self.catalog)

    @cached_property
    def sender(self) -> SendService:
        from chalicelib.services.authoring import load_templates
        from chalicelib.services.send import SendService

        sender = SendService(
            settings=self.settings,
            clock=self.clock,
            profiles=self.stores.profiles,
            ledger=self.stores.ledger,
            journeys=self.stores.journeys,
            host=self.host,
            credentials=self.credentials,
            channel_factory=self.channel,
            events=self.stores.events,
            transaction=self.stores.transaction,
        )
        load_templates(sender, self.stores.blobs)
        sender.tracking = self.tracking
        sender.inbound = self.inbound
        sender.scores_used = self.scores_used
        return sender

    def score_refs(self, journey_name: str) -> set[str]:
        """Score paths (``churn.probability``) a journey decides on: in its trigger segment's
        rule, its trigger condition and its branch rules."""
        from chalicelib.journey_model import BranchStep

        def refs(node: Any) -> set[str]:
            if hasattr(node, "model_dump"):  # a parsed rule
                node = node.model_dump(by_alias=True)
            if isinstance(node, dict):
                found = {str(node["score"])} if isinstance(node.get("score"), str) else set()
                for value in node.values():
                    found |= refs(value)
                return found
            if isinstance(node, list):
                return set().union(*(refs(v) for v in node)) if node else set()
            return set()

        journey = self.journeys.registry.get(journey_name)
        if journey is None:
            return set()
        segment = journey.trigger.segment_entered
        rule = self.segments.segments[segment].rule if segment and segment in self.segments.segments else None
        # read once per definition (every send task asks): a new version or segment rule is a new object
        known = self._score_refs.get(journey_name)
        if known is not None and known[0] is journey and known[1] is rule:
            return set(known[2])
        found = refs(journey.trigger.condition)
        for step in journey.steps:
            if isinstance(step, BranchStep):
                found |= refs(step.if_)
        if rule is not None:
            found |= refs(rule)
        self._score_refs[journey_name] = (journey, rule, frozenset(found))
        return found

    def scores_used(self, journey_name: str, profile_id: str) -> dict[str, Any]:
        """For the decision log: each score the journey decides on, this customer's value, and
        the model's explanation (the features that weighed most)."""
        paths = self.score_refs(journey_name)
        if not paths:
            return {}
        facts = self.scoring.facts(profile_id)
        by_model = {s.get("model"): s for s in self.scoring.for_profile(profile_id)}
        by_kind = {s.get("kind"): s for s in by_model.values()}
        out: dict[str, Any] = {}
        for path in sorted(paths):
            head = path.split(".")[0]
            score = by_kind.get(head) or by_model.get(head) or {}
            out[path] = {"value": facts.get(path), "model": score.get("model"), "version": score.get("version"),
                         "as_of": score.get("as_of"), "explanation": score.get("explanation")}
        return out

    @cached_property
    def tracking(self) -> Tracking:
        from chalicelib.services.tracking import Tracking

        m = self.settings.measurement
        return Tracking(self.credentials, self.stores.events, self.stores.ledger, self.clock, self.settings.public_url,
                        links=m.track_links, opens=m.track_opens, blobs=self.stores.blobs, queue=self.stores.queue)

    @cached_property
    def measurement(self) -> Measurement:
        from chalicelib.services.measurement import SNAPSHOT_EVENTS, Measurement, all_events

        m = self.settings.measurement
        sources = ["tracking", "segment", "import", "ses", *self.host.registry.sources, *self.host.registry.channels]
        return Measurement(
            self.stores.ledger,
            lambda: all_events(self.stores.events, sources, names=SNAPSHOT_EVENTS),
            m.windows_hours.model_dump(),
            fixed_costs=m.fixed_costs,
            confidence=m.confidence,
            segments_of=self._segments_of,
        )

    def _segments_of(self) -> dict[str, list[str]]:
        from chalicelib.services.segments import MEMBERSHIP

        out: dict[str, list[str]] = {}
        cursor = None
        while True:
            page, cursor = self.stores.profiles.scan(cursor, 1000)
            for p in page:
                out[p.profile_id] = list(p.traits.get(MEMBERSHIP) or [])
            if cursor is None:
                return out

    def kpis(self, group: str) -> list[dict[str, Any]]:
        return self.measurement.kpis(group)

    @cached_property
    def feedback(self) -> FeedbackService:
        from chalicelib.services.feedback import FeedbackService, SnsVerifier

        fb = self.settings.feedback
        return FeedbackService(
            SnsVerifier(tuple(fb.extra_cert_hosts)),
            self.stores.events,
            self.stores.profiles,
            self.consent,
            self.clock,
            tuple(fb.sns_topics),
        )

    @cached_property
    def inbound(self) -> InboundService:
        from chalicelib.services.inbound import InboundService

        return InboundService(settings=self.settings, host=self.host, channel_for=self.channel, stores=self.stores,
                              consent=self.consent, credentials=self.credentials, clock=self.clock)

    @cached_property
    def authoring(self) -> Authoring:
        from chalicelib.services.authoring import Authoring

        return Authoring(self.journeys, self.sender, self.stores.blobs)

    @cached_property
    def feeds(self) -> FeedService:
        from chalicelib.services.feeds import FeedService

        return FeedService(profiles=self.stores.profiles, events=self.stores.events, blobs=self.stores.blobs,
                           catalog=self.stores.catalog, segments=self.segments, clock=self.clock,
                           shop_name=self.settings.shop.name, currency=self.settings.shop.currency)

    @cached_property
    def erasure(self) -> ErasureService:
        from chalicelib.services.erasure import ErasureService

        return ErasureService(self.stores.profiles, self.stores.events, self.stores.journeys, self.clock,
                              after_erase=self._after_erase)

    def _after_erase(self, profile_id: str) -> None:
        self.scoring.forget(profile_id)  # model scores are personal data too
        self.segments.update(profile_id)

    def channel(self, kind: str) -> Channel:
        """The configured channel plugin instance for ``kind`` (created once)."""
        with self._channel_lock:
            if kind not in self._channels:
                context = ChannelContext(clock=self.channel_clock, blobs=self.stores.blobs)
                self._channels[kind] = self.host.make_channel(kind, self.settings, context)
            return self._channels[kind]

    # ------------------------------------------------------------------ workers
    def handle_message(self, queue: str, body: dict[str, Any]) -> Any:
        if queue == INGEST_QUEUE:
            if body.get("kind") == "webhook":
                return self.webhook_processor.handle(body)
            if body.get("kind") == "tracking":  # an open or a click the API took
                return self.tracking.store(body["event"])
            return self.processor.handle(body)
        if queue == SEND_QUEUE:
            return self.sender.handle(body)
        if queue == SCORING_QUEUE:
            return self.scoring.handle(body)
        raise ValueError(f"unknown queue {queue!r}")

    def work(self, queue: str, max_messages: int = 10, *, up_to: int | None = None) -> int:
        """Receive and process one batch from ``queue`` (sent up to the position ``up_to``, if
        given); acknowledged only on success."""
        messages = self.stores.queue.receive(queue, max_messages=max_messages, visibility_seconds=60, up_to=up_to)
        if not messages:
            return 0
        # ingest work is all storage: one transaction per batch where the adapter has them
        # (acknowledged in the same commit). Sends talk to providers, so they never hold a
        # transaction open.
        if queue == SEND_QUEUE:
            return self._send(messages)
        tx = self.stores.transaction if queue == INGEST_QUEUE and self.stores.transaction else nullcontext
        # a queue kept apart from the stores' transactions (the local ingest queue, so that the
        # API never waits for the workers) is acknowledged once the batch has committed: a
        # crash between the two redelivers messages already applied, which change nothing
        apart = getattr(self.stores.queue, "own_database", lambda name: False)(queue)
        # a message that fails rolls back alone, the rest commit once (run_in_one_commit)
        handled: list[str] = []
        later: dict[str, Profile] = {}

        def units() -> Iterator[Unit]:
            handled.clear()
            later.clear()
            self._batch.profiles = later if tx is not nullcontext else None
            for msg in messages:
                yield partial(process, msg), partial(failed, msg)
            self._batch.profiles = None
            for profile_id, profile in list(later.items()):  # in the batch's commit
                yield partial(self.segments.update, profile_id, profile), segments_failed

        def process(msg: QueueMessage) -> None:
            self.handle_message(queue, msg.body)
            if not apart:
                self.stores.queue.ack(queue, msg.receipt)
            handled.append(msg.receipt)

        def failed(msg: QueueMessage, exc: Exception) -> None:
            log.error("processing a %s message failed (receive #%d)", queue, msg.receive_count, exc_info=exc)

        def segments_failed(exc: Exception) -> None:  # the membership stays as it was until the next event or sweep
            log.error("re-evaluating a profile's segments after a batch failed", exc_info=exc)

        try:
            run_in_one_commit(tx, units)
        finally:
            self._batch.profiles = None
        done = len(handled)
        if apart and handled:
            self.stores.queue.ack_batch(queue, handled)  # type: ignore[attr-defined]
        return done

    def _send(self, messages: list[QueueMessage], timers: list[dict[str, Any]] | tuple[()] = (), *,
              leave_in_flight: bool = False) -> int:
        """Deliver a batch of send tasks and due send timers (taken) together: sends talk to
        providers, so they never hold a transaction open; the deliveries go to each channel
        together (send_batch), and each task is acknowledged once handled. A wave left in
        flight before is recorded first (this batch's budget sees it). ``leave_in_flight``:
        the last wave is left with its channels (``settle_sends`` records it); its tasks are
        counted here, as handled."""
        if not messages and not timers:
            return 0
        self.settle_sends()  # counted when it was started
        bodies = [msg.body for msg in messages]
        if not leave_in_flight:
            return self._acknowledge(messages, self.sender.start_many(bodies, timers))
        if self._transmitter is None:
            self._transmitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transmit")
        self.channel_clock.held = self.clock.now()  # the wave's messages bear its time
        sending = self.sender.start_many(bodies, timers, background=self._transmitter)
        if not sending.in_flight:
            self.channel_clock.held = None
            return self._acknowledge(messages, sending)
        self._in_flight = (messages, sending)
        return len(messages)

    def settle_sends(self) -> int:
        """Wait for the wave left with its channels (if any), record what they answered and
        acknowledge its tasks. Returns how many were acknowledged."""
        with self._channel_lock:  # one thread takes it (a scheduler's tick may meet a drain)
            taken, self._in_flight = self._in_flight, None
        if taken is None:
            return 0
        messages, sending = taken
        try:
            return self._acknowledge(messages, sending)
        finally:
            self.channel_clock.held = None

    def _acknowledge(self, messages: list[QueueMessage], sending: Sending) -> int:
        done = 0
        outcomes = sending.finish()
        self.delivered += outcomes.count("sent")
        with (self.stores.transaction or nullcontext)():
            for msg, outcome in zip(messages, outcomes[:len(messages)], strict=True):
                if isinstance(outcome, Exception):
                    log.error("processing a %s message failed (receive #%d)", SEND_QUEUE, msg.receive_count,
                              exc_info=outcome)
                    continue
                self.stores.queue.ack(SEND_QUEUE, msg.receipt)
                done += 1
        for outcome in outcomes[len(messages):]:
            if isinstance(outcome, Exception):
                log.error("a deferred send failed after its timer was taken", exc_info=outcome)
        return done

    def tick(self, limit: int = 500) -> int:
        """Fire due timers (each once): journey waits and deferred or retried sends.

        Journey timers are all storage: where the adapter has transactions they are taken and
        run in one, so a timer and what it did commit together (a crash leaves both undone, to
        be fired again), and the batch commits once. Scoring and broadcasts run long, so each
        is taken and run on its own; due sends are taken together (one commit) and delivered
        together, outside any transaction while the providers are called."""
        fired, sends = self._fire_due(limit)
        if sends:
            self._send([], sends)
        return fired + len(sends)

    def _fire_due(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Fire the due timers but the sends; those are taken and returned, to be delivered."""
        fired = 0
        due = self.stores.journeys.due(self.clock.now(), limit=limit)
        storage_only = [t for t in due if t.payload.get("kind") in JOURNEY_TIMERS]
        if storage_only:
            with (self.stores.transaction or nullcontext)():
                for timer in storage_only:
                    if self.stores.journeys.take(timer.timer_id):  # else another worker fired it
                        self.journeys.resume(timer.payload)
                        fired += 1
        sends = []
        due_sends = [t for t in due if t.payload.get("kind") == "send"]
        if due_sends:  # taken together (one commit), delivered together by the caller
            with (self.stores.transaction or nullcontext)():
                sends = [t.payload for t in due_sends if self.stores.journeys.take(t.timer_id)]
        for timer in due:
            kind = timer.payload.get("kind")
            if kind in JOURNEY_TIMERS or kind == "send" or not self.stores.journeys.take(timer.timer_id):
                continue
            if kind in ("models_score", "models_train"):
                self.scoring.on_timer(timer.payload, self.stores.journeys)
            elif kind == "journey_broadcast":
                members = self.segments.members(timer.payload["segment"]) if timer.payload.get("segment") else []
                self.authoring.broadcast(timer.payload["journey"], members)
            else:
                log.warning("timer %s has unknown kind %r", timer.timer_id, kind)
            fired += 1
        return fired, sends

    def drain(self, max_rounds: int = 10_000, *, ingest_up_to: int | None = None,
              leave_sends_in_flight: bool = False) -> DrainReport:
        """Run queues and due timers until nothing is left (tests, CLI, the simulator).

        ``ingest_up_to``: the ingest queue's position (local queue) past which calls are left
        for a later drain: the simulator's API process takes the next hour's calls meanwhile.
        ``leave_sends_in_flight``: the last wave of sends is left with its channels, recorded
        (as of now) by the next drain before it sends, after it has taken the events: the
        workers take the next hour's events while the channels deliver this hour's mail.
        Every decision about the wave is taken here; the channels read this time meanwhile."""
        report = DrainReport()
        for _ in range(max_rounds):
            # ingest takes 500 at a time here (one transaction; SQS's limit of 10 is the cloud's):
            # fewer commits, and a page touched by several events of the batch is written once
            a = 0
            while n := self.work(INGEST_QUEUE, 500, up_to=ingest_up_to):
                a += n
            # then the journeys' timers, and the sends they and the events queued delivered with
            # the due deferred ones: one wave of deliveries for the hour, spread over the channel's
            # connections (SQS's batch of 10 is the cloud's; here up to 500 at once)
            c, due_sends = self._fire_due(500)
            b = self._send(self.stores.queue.receive(SEND_QUEUE, max_messages=500, visibility_seconds=60), due_sends,
                           leave_in_flight=leave_sends_in_flight)
            c += len(due_sends)
            report.ingested += a
            report.sends += b
            report.timers += c
            if not (a or b or c):
                break
        if not leave_sends_in_flight:
            self.settle_sends()
        return report

    def close(self) -> None:
        try:
            self.settle_sends()
        except Exception:  # closing after a failure: the wave's tasks stay queued, its claims in the ledger
            log.exception("the sends left in flight could not be recorded")
        finally:
            if self._transmitter is not None:
                self._transmitter.shutdown()
                self._transmitter = None
        for channel in self._channels.values():
            channel.close()


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use from the environment."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(load_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (the CLI's ``serve`` and the tests)."""
    global _runtime
    with _lock:
        _runtime = runtime
