"""Training, model cards, artifacts, scheduled scoring and scores as facts, on the local runtime."""

from __future__ import annotations

import json
import pickle

import pytest
from chalice.test import Client

from chalicelib.errors import BadRequest
from chalicelib.plugin_api import ModelError
from chalicelib.ports import Profile
from chalicelib.runtime import set_runtime
from tests.models.conftest import end_of, write_shop

MODELS = ["churn", "clv", "rfm"]


@pytest.fixture
def shop_runtime(make_runtime, clock, shop_medium):
    rt = make_runtime()
    write_shop(shop_medium, rt.stores)
    clock.set(end_of(shop_medium))
    return rt


@pytest.fixture
def trained(shop_runtime):
    cards = {c["name"]: c for c in shop_runtime.scoring.train(MODELS)}
    return shop_runtime, cards


def test_training_writes_versioned_artifacts_with_cards_and_holdout_metrics(trained):
    rt, cards = trained
    assert sorted(cards) == MODELS
    blobs = rt.stores.blobs
    for name, card in cards.items():
        assert card["method"] == "model"
        prefix = f"models/{name}/{card['version']}/"
        assert blobs.get(prefix + "artifact.json") is not None
        assert json.loads(blobs.get(prefix + "card.json"))["version"] == card["version"]
        assert "## Holdout metrics" in blobs.get(prefix + "card.md").decode()
        assert json.loads(blobs.get(f"models/{name}/current.json"))["version"] == card["version"]
        # a time-based split: the holdout cutoff is one horizon after the training cutoff
        assert card["data"]["train"]["as_of"] < card["data"]["holdout"]["as_of"] < card["trained_at"]
    churn = cards["churn"]["metrics"]
    assert churn["auc"] > 0.7
    assert churn["brier"] < churn["brier_baseline"]
    assert churn["lift_by_decile"][0]["lift"] > 1.2 > churn["lift_by_decile"][-1]["lift"]
    assert sum(b["customers"] for b in churn["reliability"]) == churn["customers"]
    clv = cards["clv"]["metrics"]
    assert clv["spend"]["mae"] < clv["spend_naive_baseline"]["mae"]
    assert clv["orders"]["predicted_total"] == pytest.approx(clv["orders"]["actual_total"], rel=0.3)
    # the synthetic shop is BG/NBD + Gamma-Gamma with known parameters: the deployed fit finds them
    truth = {"r": 0.6, "alpha": 40.0, "a": 0.8, "b": 4.0}
    fitted = cards["clv"]["model"]["bgnbd"]
    assert fitted["r"] == pytest.approx(truth["r"], rel=0.3)
    assert fitted["alpha"] == pytest.approx(truth["alpha"], rel=0.3)
    rfm = cards["rfm"]["metrics"]["segments"]
    assert rfm["Champions"]["bought_in_holdout"] > rfm["Lost"]["bought_in_holdout"]


def test_scores_are_stored_with_model_version_and_explanation_and_runs_are_idempotent(trained):
    rt, cards = trained
    scoring = rt.scoring
    report = scoring.run(shard_size=400)
    buyers = rt.stores.scores.count("churn")
    assert report.customers == buyers > 1000
    assert report.scores == 3 * buyers and report.shards == 4 and report.skipped_shards == 0
    pid = next(p for p in rt.stores.activity.profile_ids() if scoring.for_profile(p))
    scores = {s["kind"]: s for s in scoring.for_profile(pid)}
    assert sorted(scores) == MODELS
    for kind, s in scores.items():
        assert s["version"] == cards[kind]["version"] and s["model"] == kind
        assert len(s["explanation"]) == 3
        effects = [abs(c["effect"]) for c in s["explanation"]]
        assert effects == sorted(effects, reverse=True)
        assert {"feature", "value", "effect"} <= set(s["explanation"][0])
    assert 0 <= scores["churn"]["value"] <= 1 and scores["churn"]["values"]["risk"] in ("low", "medium", "high")
    assert scores["rfm"]["label"] == scores["rfm"]["values"]["segment"]
    # the same run again, and a redelivered shard message, change nothing
    before = json.dumps(scoring.for_profile(pid))
    again = scoring.run(shard_size=400)
    assert again.skipped_shards == again.shards == 4 and again.scores == 0
    assert scoring.handle(scoring.shards(shard_size=400)[0]) is None
    assert json.dumps(scoring.for_profile(pid)) == before
    assert rt.stores.scores.count() == 3 * buyers


def test_small_shop_gets_heuristics_and_every_score_says_so(make_runtime, clock, shop_small):
    rt = make_runtime()
    write_shop(shop_small, rt.stores)
    clock.set(end_of(shop_small))
    cards = {c["name"]: c for c in rt.scoring.train(MODELS)}
    n = cards["churn"]["data"]["customers_now"]
    assert n == 60
    assert cards["churn"]["method"] == cards["clv"]["method"] == f"heuristic: {n} customers < 500"
    assert cards["rfm"]["method"] == "model"  # quintiles are no overfitted model
    rt.scoring.run()
    scores = [s for p in shop_small.customers for s in rt.scoring.for_profile(p)]
    churn = [s for s in scores if s["kind"] == "churn"]
    assert len(churn) == n
    assert all(s["method"] == f"heuristic: {n} customers < 500" for s in churn)
    assert all(0 <= s["value"] <= 1 and s["explanation"] for s in churn)
    # the heuristic still ranks: customers quiet for longest are the likeliest to have churned
    by_recency = sorted(churn, key=lambda s: next(c["value"] for c in s["explanation"]
                                                   if c["feature"] == "recency_days"))
    assert sum(s["value"] for s in by_recency[-10:]) > sum(s["value"] for s in by_recency[:10])


def test_a_tampered_or_foreign_artifact_is_refused(trained):
    rt, cards = trained
    blobs = rt.stores.blobs
    key = cards["churn"]["artifact"]["key"]
    original = blobs.get(key)
    blobs.put(key, original.replace(b'"C": 1.0', b'"C": 9.0'))
    with pytest.raises(ModelError, match="SHA-256"):
        rt.scoring.load("churn")
    # a pickle smuggled in with a card that vouches for it: the plugin reads only its own JSON
    payload = pickle.dumps({"state": "anything"})
    blobs.put(key, payload)
    card = json.loads(blobs.get(key.replace("artifact.json", "card.json")))
    import hashlib

    card["artifact"]["sha256"] = hashlib.sha256(payload).hexdigest()
    blobs.put(key.replace("artifact.json", "card.json"), json.dumps(card).encode())
    with pytest.raises(ModelError, match="not JSON"):
        rt.scoring.load("churn")
    card["artifact"]["format"] = "pickle"
    blobs.put(key.replace("artifact.json", "card.json"), json.dumps(card).encode())
    with pytest.raises(ModelError, match="format 'pickle' refused"):
        rt.scoring.load("churn")
    # scoring goes on without the refused model
    rt.scoring.run()
    assert rt.stores.scores.count("churn") == 0 and rt.stores.scores.count("clv") > 0


def test_scores_feed_segments_and_journey_rules(trained):
    rt, _ = trained
    rt.scoring.run()
    rt.segments.save({"name": "churn_risk", "rule": {"score": "churn.probability", "op": ">=", "value": 0.7}})
    rt.segments.save({"name": "predicted_vip", "rule": {"score": "clv.expected_value", "op": ">=", "value": 400}})
    ids = rt.stores.activity.profile_ids()
    facts = {p: rt.scoring.facts(p) for p in ids}
    risky = next(p for p in ids if facts[p].get("churn.probability", 0) >= 0.9)
    safe = next(p for p in ids if 0 < facts[p].get("churn.probability", 1) < 0.3)
    vip = max(ids, key=lambda p: facts[p].get("clv.expected_value", 0))
    for pid in (risky, safe, vip):
        rt.stores.profiles.save(Profile(profile_id=pid, traits={"email": f"{pid}@example.com"}), 0)
    assert "churn_risk" in rt.segments.update(risky)[0]
    assert "churn_risk" not in rt.segments.update(safe)[0]
    assert "predicted_vip" in rt.segments.update(vip)[0] or "predicted_vip" in rt.segments.members_of(
        rt.stores.profiles.get(vip))
    # the churn_save journey starts for the customer entering churn_risk
    states = rt.stores.journeys.for_profile(risky)
    assert [s.journey for s in states if s.journey == "churn_save"] == ["churn_save"]
    assert not [s for s in rt.stores.journeys.for_profile(safe) if s.journey == "churn_save"]
    # the decision log says which scores the message rests on, with the model's explanation
    rt.drain()
    (entry,) = [e for e in rt.stores.ledger.for_profile(risky) if e.journey == "churn_save"]
    used = entry.detail["scores"]
    assert set(used) == {"churn.probability", "clv.expected_value"}
    assert used["churn.probability"]["value"] == facts[risky]["churn.probability"] >= 0.7
    assert used["churn.probability"]["model"] == "churn" and used["churn.probability"]["explanation"]
    assert used["churn.probability"]["version"] == rt.scoring.current_version("churn")


def test_admin_api_shows_scores_with_explanations_and_model_cards(trained):
    import app as app_module

    rt, cards = trained
    rt.scoring.run()
    set_runtime(rt)
    key = rt.credentials.create_key("admin", "ops")
    headers = {"Authorization": f"Bearer {key}"}
    pid = next(p for p in rt.stores.activity.profile_ids() if rt.scoring.for_profile(p))
    with Client(app_module.app) as client:
        r = client.http.get(f"/admin/profiles/{pid}/scores", headers=headers)
        assert r.status_code == 200
        body = json.loads(r.body)
        assert {s["kind"] for s in body["scores"]} == set(MODELS)
        assert all(s["explanation"] and s["version"] for s in body["scores"])
        r = client.http.get("/admin/profiles/nobody/scores", headers=headers)
        assert r.status_code == 404 and "profile_id" in r.body.decode()
        models = {m["name"]: m for m in json.loads(client.http.get("/admin/models", headers=headers).body)["models"]}
        assert models["churn"]["version"] == cards["churn"]["version"] and models["churn"]["metrics"]["auc"] > 0.7
        r = client.http.get("/admin/models/churn", headers=headers)
        assert json.loads(r.body)["artifact"]["sha256"] == cards["churn"]["artifact"]["sha256"]
        assert client.http.get("/admin/models/nope", headers=headers).status_code == 404
        assert client.http.get("/admin/models", headers={}).status_code == 401


def test_a_bad_scoring_message_is_a_clear_error(shop_runtime):
    with pytest.raises(BadRequest) as err:
        shop_runtime.scoring.handle({"kind": "score_shard", "as_of": "yesterday", "versions": {}, "shard": 0,
                                     "profile_ids": []})
    assert err.value.field == "body"
    with pytest.raises(BadRequest, match="shard_size"):
        shop_runtime.scoring.shards(shard_size=0)


def test_the_local_schedule_trains_weekly_and_scores_daily(trained, clock):
    from datetime import timedelta

    rt, cards = trained
    assert rt.scoring.schedule(rt.stores.journeys)  # a model was trained: the schedule starts
    kinds = {t.payload["kind"]: t.due_at for t in rt.stores.journeys.due(clock.now() + timedelta(days=8), 50)}
    assert set(kinds) >= {"models_score", "models_train"}
    clock.set(kinds["models_score"])
    rt.tick()  # fans out the day's run over the scoring queue
    assert rt.stores.queue.depth("scoring") >= 1
    while rt.work("scoring"):
        pass
    assert rt.stores.scores.count("churn") > 1000
    clock.set(kinds["models_train"])
    rt.tick()
    assert rt.scoring.current_version("churn") != cards["churn"]["version"]
    later = [t for t in rt.stores.journeys.due(clock.now() + timedelta(days=8), 50)
             if t.payload.get("kind") == "models_train"]
    assert len(later) == 1 and later[0].due_at > clock.now()  # the next week's training is set


def test_erasure_forgets_the_customers_scores(trained):
    rt, _ = trained
    rt.scoring.run()
    pid = next(p for p in rt.stores.activity.profile_ids() if rt.scoring.for_profile(p))
    rt.stores.profiles.save(Profile(profile_id=pid, traits={"email": f"{pid}@example.com"}), 0)
    assert rt.scoring.facts(pid)
    rt.erasure.erase(pid)
    assert rt.scoring.for_profile(pid) == [] and rt.scoring.facts(pid) == {}


def test_the_simulations_models_process_trains_and_scores_the_shop_on_disk(tmp_path, shop_small):
    """The simulated shop trains its models in a process of its own while the report is
    written: it answers every enabled model's card and leaves the scores in the database."""
    from chalicelib.clock import ManualClock
    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime
    from chalicelib.simulation import ModelsPlan, _Served

    overrides = {"data_dir": str(tmp_path)}
    at = end_of(shop_small)
    rt = Runtime(load_settings({}, overrides=overrides), clock=ManualClock(at))
    try:
        write_shop(shop_small, rt.stores)
        enabled = sorted(cls.name for cls in rt.scoring.enabled().values())
        assert rt.stores.scores.count() == 0
        models = _Served("models", ModelsPlan(overrides, at), "the models' process")
        try:
            cards = models.ask("train", None)
        finally:
            models.stop()
            models.process.wait(30)
        assert sorted(c["name"] for c in cards) == enabled and not [c for c in cards if "error" in c]
        assert all(c["trained_at"].startswith(at.isoformat()[:16]) for c in cards)  # at the shop's closing time
        assert rt.stores.scores.count("churn") > 10 and rt.scoring.versions().keys() == set(enabled)
    finally:
        rt.close()
