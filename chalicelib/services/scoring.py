"""Training and scheduled scoring of the model plugins; scores as facts for segments.

Training (``omnicast models train``, and the weekly schedule) works on a time-based
split. With ``h`` the model's ``horizon_days`` and ``now`` the clock:

- fit on features as of ``now - 2h`` with labels from ``(now - 2h, now - h]``,
- evaluate that fit on features as of ``now - h`` against ``(now - h, now]`` (the holdout),
- deploy a refit on the holdout's features and labels (the same settings, the latest data).

A shop with fewer customers (with an order) than the model's ``min_customers`` gets the
model's heuristic instead, and every score says so (``heuristic: 37 customers < 500``).
Each training writes, in the blob store under ``models/<name>/<version>/``, the artifact
(an explicit JSON format, never a pickle), ``card.json`` and ``card.md``; then points
``models/<name>/current.json`` at it. Loading checks the artifact's SHA-256 against its
card, and the plugin refuses anything but its own format.

Scoring (daily schedule, ``omnicast models score``) splits the customers into shards.
Locally the runner scores them one after the other; on AWS each shard is one SQS message
(``scoring`` queue) handled by the ``scoring_worker`` function. A shard is claimed once per
(model versions, as_of, shard): a redelivered message changes nothing, and writing the
same scores again is a no-op too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.clock import Clock, iso, parse_iso
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, ConfigError, NotFound
from chalicelib.plugin_api import Artifact, FeatureTable, Model, ModelError
from chalicelib.plugin_host import PluginHost, plugin_settings
from chalicelib.ports import ActivityReader, JourneyStore, Stores, Timer

if TYPE_CHECKING:
    from chalicelib.features import Workbench

log = logging.getLogger("omnicast.scoring")
SCORING_QUEUE = "scoring"
SHARD_SIZE = 1000
FACTS_TTL_SECONDS = 60.0
SCORE_HOUR_UTC = 2  # daily scoring at 02:00 UTC, training on Sundays at 01:00 UTC
TRAIN_WEEKDAY, TRAIN_HOUR_UTC = 6, 1
DEFAULT_HORIZON_DAYS = 90.0
Progress = Callable[[str], None]


@dataclass
class ScoringReport:
    as_of: datetime
    shards: int = 0
    skipped_shards: int = 0  # already done (a redelivery or a second run with the same versions)
    customers: int = 0
    scores: int = 0
    seconds: float = 0.0
    models: dict[str, str] = field(default_factory=dict)  # name -> version

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": iso(self.as_of), "shards": self.shards, "skipped_shards": self.skipped_shards,
            "customers": self.customers, "scores": self.scores, "seconds": round(self.seconds, 3),
            "models": self.models,
        }


class ScoringService:
    def __init__(self, settings: Settings, stores: Stores, host: PluginHost, clock: Clock,
                 reader: ActivityReader | None = None) -> None:
        from chalicelib.features import reader as default_reader

        self.settings = settings
        self.stores = stores
        self.host = host
        self.clock = clock
        self.reader = reader or default_reader(stores)
        self._loaded: dict[str, tuple[str, Model]] = {}  # name -> (version, model)
        self._facts: dict[str, tuple[float, dict[str, Any]]] = {}  # profile -> (monotonic time, facts)

    # ------------------------------------------------------------------ which models
    def enabled(self) -> dict[str, type[Model]]:
        """kind -> model class: ``models.<kind>`` from the configuration ("none" turns a kind
        off), else the only registered model of that kind."""
        registry = self.host.registry.models
        by_kind: dict[str, list[type[Model]]] = {}
        for cls in registry.values():
            by_kind.setdefault(cls.kind, []).append(cls)
        chosen: dict[str, type[Model]] = {}
        for kind, name in self.settings.models.items():
            if name == "none":
                continue
            if name not in registry:
                known = ", ".join(sorted(registry)) or "none"
                raise ConfigError(f"models.{kind}: no model plugin named {name!r} (installed: {known})")
            if registry[name].kind != kind:
                raise ConfigError(f"models.{kind}: plugin {name!r} is a {registry[name].kind!r} model")
            chosen[kind] = registry[name]
        for kind, classes in by_kind.items():
            if kind in chosen or kind in self.settings.models:
                continue
            if len(classes) == 1:
                chosen[kind] = classes[0]
            else:
                log.warning("models.%s: several plugins (%s); choose one", kind, ", ".join(c.name for c in classes))
        return dict(sorted(chosen.items()))

    def _new(self, cls: type[Model]) -> Model:
        return cls(plugin_settings(cls.Settings, cls.name, self.settings))

    def _class(self, name: str) -> type[Model]:
        cls = self.host.registry.models.get(name)
        if cls is None:
            raise NotFound(f"no model plugin {name!r}; installed: {', '.join(sorted(self.host.registry.models))}",
                           field="name")
        return cls

    # ------------------------------------------------------------------ training
    def _profile_ids(self) -> list[str]:
        try:
            return self.reader.profile_ids()
        except NotImplementedError:
            ids: list[str] = []
            cursor: str | None = None
            while True:
                page, cursor = self.stores.profiles.scan(cursor, limit=1000)
                ids += [p.profile_id for p in page]
                if cursor is None:
                    return sorted(ids)

    def train(self, names: list[str] | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
        """Train (or, for small shops, set up the heuristic of) each enabled model; return the cards."""
        from chalicelib import features

        classes = [self._class(n) for n in names] if names else list(self.enabled().values())
        now = self.clock.now()
        step = progress or (lambda _msg: None)
        step("reading events")
        ids = self._profile_ids()
        bench = features.Workbench(self.reader.activity(ids, now), ids)
        latest = bench.build(now)
        buyers = latest.rows(latest.column("orders") > 0)
        cards = []
        for cls in classes:
            try:
                cards.append(self._train_one(cls, bench, buyers, now, step))
            except Exception:  # one broken plugin must not stop the others' training
                log.exception("training %s failed", cls.name)
        return cards

    def _train_one(self, cls: type[Model], bench: Workbench, buyers: FeatureTable, now: datetime,
                   step: Progress) -> dict[str, Any]:
        model = self._new(cls)
        horizon = float(getattr(model.settings, "horizon_days", DEFAULT_HORIZON_DAYS))
        minimum = int(getattr(model.settings, "min_customers", cls.min_customers))
        step(f"{cls.name}: features")
        train_at, holdout_at = now - timedelta(days=2 * horizon), now - timedelta(days=horizon)
        train = bench.training_set(train_at, horizon)
        holdout = bench.training_set(holdout_at, horizon)
        started = time.perf_counter()
        notes: list[str] = []
        step(f"{cls.name}: fit")
        if len(buyers) < minimum:
            model.use_heuristic(f"heuristic: {len(buyers)} customers < {minimum}", buyers)
            step(f"{cls.name}: evaluate")
            metrics = model.evaluate(holdout) if len(holdout.features) else {}
            deployed = model
        else:
            try:
                model.fit(train)
                step(f"{cls.name}: evaluate")
                metrics = model.evaluate(holdout)
                deployed = self._new(cls).fit(holdout)
                notes.append(
                    f"evaluated: fitted as of {iso(train_at)}, scored on the holdout as of {iso(holdout_at)}; "
                    f"deployed: refitted as of {iso(holdout_at)} with outcomes up to {iso(now)}"
                )
            except (ModelError, ValueError) as exc:
                reason = f"heuristic: model could not be fitted ({exc})"
                model = self._new(cls)
                model.use_heuristic(reason, buyers)
                metrics = model.evaluate(holdout) if len(holdout.features) else {}
                deployed = model
        step(f"{cls.name}: save")
        card = self._save(deployed, now, horizon, metrics, notes, {
            "train": {"as_of": iso(train_at), "customers": len(train.features)},
            "holdout": {"as_of": iso(holdout_at), "customers": len(holdout.features)},
            "customers_now": len(buyers),
            "fit_seconds": round(time.perf_counter() - started, 3),
        })
        return card

    def _save(self, model: Model, now: datetime, horizon: float, metrics: dict[str, Any], notes: list[str],
              data: dict[str, Any]) -> dict[str, Any]:
        version = f"{model.version}.{now:%Y%m%dT%H%M%S}"
        model.artifact_version = version
        artifact = model.dump()
        digest = hashlib.sha256(artifact.data).hexdigest()
        prefix = f"models/{model.name}/{version}/"
        card = {
            "name": model.name,
            "kind": model.kind,
            "title": model.title,
            "version": version,
            "trained_at": iso(now),
            "method": model.method,
            "horizon_days": horizon,
            "outputs": list(model.outputs),
            "features": list(model.features),
            "settings": json.loads(model.settings.model_dump_json()),
            "model": model.describe(),
            "data": data,
            "metrics": metrics,
            "notes": notes,
            "artifact": {"key": prefix + f"artifact.{artifact.format}", "format": artifact.format, "sha256": digest,
                         "bytes": len(artifact.data)},
        }
        blobs = self.stores.blobs
        blobs.put(card["artifact"]["key"], artifact.data, content_type="application/json")
        blobs.put(prefix + "card.json", json.dumps(card, indent=2).encode(), content_type="application/json")
        blobs.put(prefix + "card.md", card_markdown(card).encode(), content_type="text/markdown")
        blobs.put(f"models/{model.name}/current.json", json.dumps({"version": version}).encode(),
                  content_type="application/json")
        self._loaded.pop(model.name, None)
        return card

    # ------------------------------------------------------------------ artifacts
    def card(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The model card of ``name`` (the current version unless given)."""
        self._class(name)
        version = version or self.current_version(name)
        if version is None:
            raise NotFound(f"model {name!r} has not been trained yet (omnicast models train)", field="name")
        raw = self.stores.blobs.get(f"models/{name}/{version}/card.json")
        if raw is None:
            raise NotFound(f"model {name!r} has no version {version!r}", field="version")
        card: dict[str, Any] = json.loads(raw)
        return card

    def current_version(self, name: str) -> str | None:
        raw = self.stores.blobs.get(f"models/{name}/current.json")
        return str(json.loads(raw)["version"]) if raw else None

    def load(self, name: str, version: str | None = None) -> Model:
        """The trained model, its artifact checked against its card before the plugin reads it."""
        version = version or self.current_version(name)
        if version is None:
            raise ModelError(f"model {name!r} has not been trained yet")
        cached = self._loaded.get(name)
        if cached and cached[0] == version:
            return cached[1]
        card = self.card(name, version)
        meta = card["artifact"]
        data = self.stores.blobs.get(meta["key"])
        if data is None:
            raise ModelError(f"model {name!r} {version}: artifact missing")
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ModelError(f"model {name!r} {version}: artifact does not match its card's SHA-256; refused")
        model = self._new(self._class(name))
        model.artifact_version = version
        if card.get("method", "model") != "model":
            model.heuristic = card["method"]
        model.load(Artifact(format=meta["format"], data=data))
        self._loaded[name] = (version, model)
        return model

    # ------------------------------------------------------------------ scoring
    def versions(self) -> dict[str, str]:
        """name -> current version of every enabled, trained model."""
        out = {}
        for cls in self.enabled().values():
            version = self.current_version(cls.name)
            if version is None:
                log.warning("model %s is enabled but not trained: not scored", cls.name)
                continue
            out[cls.name] = version
        return out

    def as_of(self, at: datetime | None = None) -> datetime:
        """Scoring cutoffs are whole minutes, so a retried schedule lands on the same run."""
        return (at or self.clock.now()).replace(second=0, microsecond=0)

    def shards(self, as_of: datetime | None = None, shard_size: int = SHARD_SIZE) -> list[dict[str, Any]]:
        """One message per shard of customers: what the AWS fan-out sends and the runner runs."""
        if shard_size < 1:
            raise BadRequest("shard_size must be at least 1", field="shard_size")
        at = self.as_of(as_of)
        versions = self.versions()
        if not versions:
            return []
        ids = self._profile_ids()
        return [
            {"kind": "score_shard", "as_of": iso(at), "versions": versions, "shard": i // shard_size,
             "profile_ids": ids[i:i + shard_size]}
            for i in range(0, len(ids), shard_size)
        ]

    def enqueue(self, as_of: datetime | None = None, shard_size: int = SHARD_SIZE) -> int:
        """Fan a scoring run out over the ``scoring`` queue; returns the number of shards."""
        messages = self.shards(as_of, shard_size)
        for i in range(0, len(messages), 10):
            self.stores.queue.send_batch(SCORING_QUEUE, messages[i:i + 10])
        return len(messages)

    def run(self, as_of: datetime | None = None, shard_size: int = 5000,
            progress: Callable[[int], None] | None = None, processes: int = 1) -> ScoringReport:
        """Score every customer now, shard after shard (the local runner and the CLI).

        ``processes`` > 1 scores shards in that many worker processes (the embedded default
        on a data folder: each opens its own connection; SQLite in WAL mode serialises the
        writes, the reads and the model arithmetic run in parallel)."""
        started = time.perf_counter()
        messages = self.shards(as_of, shard_size)
        report = ScoringReport(as_of=self.as_of(as_of), models=messages[0]["versions"] if messages else {})
        if processes > 1 and len(messages) > 1 and self.settings.runtime == "local":
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(
                processes, initializer=_worker_init, initargs=(self.settings, self.clock)
            ) as pool:
                results = pool.imap_unordered(_worker_handle, messages)
                sizes = {m["shard"]: len(m["profile_ids"]) for m in messages}
                for shard, done in results:
                    self._count(report, done)
                    if progress:
                        progress(sizes[shard])
        else:
            for body in messages:
                self._count(report, self.handle(body))
                if progress:
                    progress(len(body["profile_ids"]))
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _count(report: ScoringReport, done: tuple[int, int] | None) -> None:
        report.shards += 1
        report.skipped_shards += done is None
        if done:
            report.customers += done[0]
            report.scores += done[1]

    def handle(self, body: dict[str, Any]) -> tuple[int, int] | None:
        """Score one shard message; None if this shard of this run was done already."""
        try:
            at = parse_iso(str(body["as_of"]))
            versions = {str(k): str(v) for k, v in dict(body["versions"]).items()}
            ids = [str(p) for p in body["profile_ids"]]
            shard = int(body["shard"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"scoring message: {exc}", field="body") from exc
        scores = self._store()
        run = hashlib.sha256(json.dumps([sorted(versions.items()), iso(at), shard]).encode()).hexdigest()[:32]
        if not scores.claim_run(run, self.clock.now()):
            return None
        try:
            return self.score_shard(ids, at, versions)
        except BaseException:
            scores.release_run(run)
            raise

    def score_shard(self, profile_ids: list[str], as_of: datetime, versions: dict[str, str]) -> tuple[int, int]:
        """Features as of ``as_of`` for these customers, every model, scores written.
        Returns (customers scored, scores written)."""
        from chalicelib import features

        activity = self.reader.activity(profile_ids, as_of)
        table = features.build(activity, profile_ids, as_of)
        buyers = table.rows(table.column("orders") > 0)
        written = 0
        for name, version in versions.items():
            try:
                model = self.load(name, version)
            except (ModelError, NotFound) as exc:
                log.error("model %s %s not scored: %s", name, version, exc)
                continue
            batch = [s.as_dict() for s in model.score(self._table_for(model, table, buyers))]
            written += self._store().put_many(batch)
        for pid in profile_ids:
            self._facts.pop(pid, None)
        return len(buyers), written

    @staticmethod
    def _table_for(model: Model, table: FeatureTable, buyers: FeatureTable) -> FeatureTable:
        # customer-value models score customers with an order; other kinds see everyone
        return buyers if model.kind in ("churn", "clv", "rfm") else table

    def _store(self) -> Any:
        if self.stores.scores is None:
            raise ConfigError("this adapter set has no score store")
        return self.stores.scores

    # ------------------------------------------------------------------ local schedule
    def schedule(self, journeys: JourneyStore, *, force: bool = False) -> bool:
        """Keep the local runner's timers: scoring daily, training weekly (each fires once and
        sets the next). Only once a model was trained (or with ``force``: ``omnicast serve``),
        so a shop that never asked for models runs no background training. On AWS the
        EventBridge schedules in ``app.py`` do this instead."""
        try:
            enabled = self.enabled()
        except ConfigError as exc:  # a bad models.<kind> must not stop the runtime that asked
            log.error("model schedule not set: %s", exc)
            return False
        if not force and not any(self.current_version(c.name) for c in enabled.values()):
            return False
        now = self.clock.now()
        for kind, due in (("models_score", self._next_score(now)), ("models_train", self._next_train(now))):
            journeys.schedule(Timer(f"{kind}-{due:%Y%m%dT%H}", due, {"kind": kind}))
        return True

    @staticmethod
    def _next_score(now: datetime) -> datetime:
        due = now.replace(hour=SCORE_HOUR_UTC, minute=0, second=0, microsecond=0)
        return due if due > now else due + timedelta(days=1)

    @staticmethod
    def _next_train(now: datetime) -> datetime:
        due = now.replace(hour=TRAIN_HOUR_UTC, minute=0, second=0, microsecond=0)
        due += timedelta(days=(TRAIN_WEEKDAY - due.weekday()) % 7)
        return due if due > now else due + timedelta(days=7)

    def on_timer(self, payload: dict[str, Any], journeys: JourneyStore) -> None:
        """A local schedule timer fired: train or fan a scoring run out, then set the next one.
        A failure is logged and the schedule goes on (a broken model must not stop journeys)."""
        kind = payload.get("kind")
        now = self.clock.now()
        try:
            if kind == "models_train":
                self.train()
            else:
                self.enqueue()
        except Exception:
            log.exception("scheduled %s failed", kind)
        due = self._next_train(now) if kind == "models_train" else self._next_score(now)
        journeys.schedule(Timer(f"{kind}-{due:%Y%m%dT%H}", due, {"kind": str(kind)}))

    # ------------------------------------------------------------------ reading
    def for_profile(self, profile_id: str) -> list[dict[str, Any]]:
        """A customer's current scores, each with its model, version and explanation."""
        return self._store().for_profile(profile_id)  # type: ignore[no-any-return]

    def forget(self, profile_id: str) -> None:
        """Erasure: the customer's scores go with the rest of their data."""
        if self.stores.scores is not None:
            self.stores.scores.forget(profile_id)
        self._facts.pop(profile_id, None)

    def profile_scores(self, profile_id: str) -> dict[str, Any]:
        """``GET /admin/profiles/{id}/scores``: every current score with its explanation."""
        scores = self.for_profile(profile_id)
        if not scores and self.stores.profiles.get(profile_id) is None:
            raise NotFound(f"no profile {profile_id!r}", field="profile_id")
        return {"profile_id": profile_id, "scores": scores}

    def describe(self) -> dict[str, Any]:
        """``GET /admin/models``: each enabled model, its current version and holdout headline."""
        out = []
        for kind, cls in self.enabled().items():
            row: dict[str, Any] = {"kind": kind, "name": cls.name, "title": cls.title, "plugin_version": cls.version,
                                   "outputs": list(cls.outputs), "version": self.current_version(cls.name)}
            if row["version"]:
                card = self.card(cls.name, row["version"])
                row.update(method=card["method"], trained_at=card["trained_at"],
                           metrics={k: v for k, v in card["metrics"].items() if not isinstance(v, list)},
                           artifact=card["artifact"])
            out.append(row)
        return {"models": out, "scores": self._store().count() if self.stores.scores is not None else 0}

    def facts(self, profile_id: str) -> dict[str, Any]:
        """Scores as segment rules read them: ``churn`` (the headline value),
        ``churn.probability``, ``churn.risk``, ``clv.expected_value``, ``rfm.segment``, ..."""
        if self.stores.scores is None:
            return {}
        # segments ask once per segment per event: scores change once a day, so a minute's cache
        # saves a read per segment on the ingest path
        now = time.monotonic()
        cached = self._facts.get(profile_id)
        if cached and now - cached[0] < FACTS_TTL_SECONDS:
            return cached[1]
        out: dict[str, Any] = {}
        for s in self.stores.scores.for_profile(profile_id):
            kind = s["kind"]
            out[kind] = s["value"]
            if s.get("label") is not None:
                out[f"{kind}.label"] = s["label"]
            for key, value in (s.get("values") or {}).items():
                if isinstance(value, int | float | str | bool):
                    out[f"{kind}.{key}"] = value
        if len(self._facts) >= 10_000:
            self._facts.clear()
        self._facts[profile_id] = (now, out)
        return out


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown (beside card.json)."""
    lines = [
        f"# {card['title'] or card['name']} ({card['name']} {card['version']})",
        "",
        f"- kind: {card['kind']}; method: {card['method']}",
        f"- trained at {card['trained_at']}; horizon {card['horizon_days']:g} days",
        f"- outputs: {', '.join(card['outputs'])}",
        f"- features: {', '.join(card['features'])}",
        f"- artifact: `{card['artifact']['key']}` ({card['artifact']['format']}, sha256 {card['artifact']['sha256']})",
        "",
        "## Data (time-based split)",
        "",
        f"- training cutoff {card['data']['train']['as_of']}: {card['data']['train']['customers']} customers",
        f"- holdout cutoff {card['data']['holdout']['as_of']}: {card['data']['holdout']['customers']} customers",
        f"- customers with an order now: {card['data']['customers_now']}",
        *(f"- {n}" for n in card["notes"]),
        "",
        "## Holdout metrics",
        "",
    ]
    metrics = card["metrics"]
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}
    for key, value in scalars.items():
        lines.append(f"- {key}: {value}")
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
    if metrics.get("reliability"):
        lines += ["", "Reliability (predicted vs observed):", "", "| bin | customers | predicted | observed |",
                  "|---|---|---|---|"]
        lines += [f"| {r['bin']} | {r['customers']} | {r['predicted']} | {r['observed']} |"
                  for r in metrics["reliability"]]
    if metrics.get("lift_by_decile"):
        lines += ["", "Lift by decile (highest predicted first):", "", "| decile | customers | rate | lift |",
                  "|---|---|---|---|"]
        lines += [f"| {r['decile']} | {r['customers']} | {r['rate']} | {r['lift']} |"
                  for r in metrics["lift_by_decile"]]
    lines += ["", "## Model", "", "```json", json.dumps(card["model"], indent=2), "```", ""]
    return "\n".join(lines)


_worker_service: ScoringService | None = None


def _worker_init(settings: Settings, clock: Clock) -> None:
    """A scoring worker process: its own stores (a new SQLite connection) and plugins."""
    global _worker_service
    from chalicelib.runtime import build_stores

    _worker_service = ScoringService(settings, build_stores(settings), PluginHost(settings.plugins).load(), clock)


def _worker_handle(body: dict[str, Any]) -> tuple[int, tuple[int, int] | None]:
    assert _worker_service is not None
    return int(body["shard"]), _worker_service.handle(body)
