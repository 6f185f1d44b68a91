"""Item-to-item recommender: beats popularity on held-out interactions where a co-purchase
structure is planted, never recommends bought or out-of-stock items, explains itself."""

from __future__ import annotations

import numpy as np
import pytest
from omnicast_engagement import synthetic
from omnicast_engagement._tables import InvalidInput
from omnicast_engagement.artifact import ArtifactError
from omnicast_engagement.recommend import (
    ItemToItemRecommender,
    PopularityRecommender,
    precision_recall_at_k,
    time_split,
)

DAY = synthetic.DAY


@pytest.fixture(scope="module")
def split():
    data = synthetic.interactions(3000, 400, n_groups=40, seed=7)
    return time_split(data, synthetic.T0 + 90 * DAY)


@pytest.mark.parametrize("params", [
    {},
    {"similarity": "lift", "min_support": 3},
    {"half_life_days": 30.0},
    {"view_weight": 0.0},
])
def test_beats_popularity_on_held_out_purchases(split, params):
    train, test = split
    model = ItemToItemRecommender(**params).fit(train)
    base = PopularityRecommender().fit(train)
    ours = precision_recall_at_k(model, test, 10)
    theirs = precision_recall_at_k(base, test, 10)
    assert ours["customers"] == theirs["customers"] > 1000
    # the planted structure makes co-purchase far more predictive than popularity
    assert ours["precision"] > 2.5 * theirs["precision"], (ours, theirs)
    assert ours["recall"] > 2.5 * theirs["recall"], (ours, theirs)
    assert theirs["precision"] > 0.005  # the baseline is a real baseline, not zero


def test_without_structure_it_does_not_beat_popularity_by_much():
    """Sanity of the evaluation itself: with no planted taste the advantage disappears."""
    data = synthetic.interactions(3000, 400, n_groups=40, in_group=0.0, seed=3)
    train, test = time_split(data, synthetic.T0 + 90 * DAY)
    ours = precision_recall_at_k(ItemToItemRecommender().fit(train), test, 10)
    theirs = precision_recall_at_k(PopularityRecommender().fit(train), test, 10)
    assert ours["precision"] < 1.3 * theirs["precision"]


def test_as_popularity_matches_a_popularity_fit(split):
    train, test = split
    model = ItemToItemRecommender().fit(train)
    assert precision_recall_at_k(model.as_popularity(), test, 10) == precision_recall_at_k(
        PopularityRecommender().fit(train), test, 10)


def test_never_bought_never_out_of_stock(split):
    train, _ = split
    model = ItemToItemRecommender().fit(train)
    out_of_stock = {f"p{i}" for i in range(0, 400, 3)}
    in_stock = [x for x in model.item_ids_ if x not in out_of_stock]
    customers = model.customer_ids_
    recs = model.recommend(customers, 10, in_stock=in_stock)
    bought: dict[str, set[str]] = {}
    for c, i, k in zip(train["customer_id"], train["item_id"], train["kind"], strict=True):
        if k == "purchase":
            bought.setdefault(str(c), set()).add(str(i))
    assert len(recs) == len(customers)
    for c, items in zip(customers, recs, strict=True):
        ids = [r.item_id for r in items]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert not set(ids) & out_of_stock
        assert not set(ids) & bought.get(str(c), set())
        scores = [(r.source == "similar", r.score) for r in items]
        assert [s for s, _ in scores] == sorted((s for s, _ in scores), reverse=True)  # similar before popular


def test_stock_as_mask_and_predicate_agree(split):
    train, _ = split
    model = ItemToItemRecommender().fit(train)
    mask = np.array([int(x[1:]) % 2 == 0 for x in model.item_ids_])
    by_mask = model.recommend(["c1", "c2"], 5, in_stock=mask)
    by_fn = model.recommend(["c1", "c2"], 5, in_stock=lambda x: int(x[1:]) % 2 == 0)
    assert by_mask == by_fn
    assert all(int(r.item_id[1:]) % 2 == 0 for row in by_mask for r in row)


def test_cold_and_unknown_customers_get_popular_items_in_stock():
    table = {
        "customer_id": ["a", "a", "b", "b", "c", "d", "e"],
        "item_id": ["x", "y", "x", "y", "x", "z", "y"],
        "kind": ["purchase"] * 5 + ["view", "purchase"],
    }
    model = ItemToItemRecommender(min_support=1).fit(table)
    (unknown,) = model.recommend(["stranger"], 3)
    assert [(r.item_id, r.score, r.source) for r in unknown] == [("x", 3.0, "popular"), ("y", 3.0, "popular"),
                                                                 ("z", 0.0, "popular")]
    (no_x,) = model.recommend(["stranger"], 3, in_stock={"y", "z"})
    assert [r.item_id for r in no_x] == ["y", "z"]
    # "c" bought x: y (bought with x by a and b) comes first, as a similar item
    (c,) = model.recommend(["c"], 3)
    assert c[0].item_id == "y" and c[0].source == "similar"
    assert "x" not in [r.item_id for r in c]


def test_explanations_count_the_customers():
    table = {
        "customer_id": ["a", "a", "b", "b", "c", "c", "d", "e"],
        "item_id": ["tent", "stove", "tent", "stove", "tent", "stove", "tent", "mug"],
    }
    model = ItemToItemRecommender(min_support=1).fit(table)
    (recs,) = model.recommend(["d"], 2)
    assert recs[0].item_id == "stove"
    assert model.explain("d", "stove") == "co-purchased with tent by 3 customers"
    assert model.explain("d", "mug") == "popular: bought by 1 customers"
    assert model.reason("d", "stove") == {"because": "tent", "co_purchased": 3, "co_viewed": 0,
                                          "similarity": pytest.approx(3 / np.sqrt(4 * 3)), "purchasers": 3}
    views = {"customer_id": ["a", "a", "b", "b", "c"], "item_id": ["x", "y", "x", "y", "x"],
             "kind": ["view", "view", "view", "view", "purchase"]}
    vm = ItemToItemRecommender(min_support=1).fit(views)
    assert vm.explain("c", "y") == "viewed together with x by 2 customers"


def test_min_support_drops_rare_pairs():
    table = {"customer_id": ["a", "a", "b", "b", "b"], "item_id": ["x", "y", "x", "z", "y"]}
    assert ItemToItemRecommender(min_support=1).fit(table).similarity_.nnz == 6
    strict = ItemToItemRecommender(min_support=2).fit(table)
    assert strict.similarity_.nnz == 2  # only x-y was bought together by two customers
    assert strict.similarity_[0, 1] > 0 and strict.similarity_[1, 0] > 0


def test_time_decay_prefers_recent_co_purchases():
    # long ago, many bought tent + old_stove; lately, fewer bought tent + new_stove
    rows = []
    for i in range(10):
        rows += [(f"o{i}", "tent", 0.0), (f"o{i}", "old_stove", 0.0)]
    for i in range(4):
        rows += [(f"n{i}", "tent", 300 * DAY), (f"n{i}", "new_stove", 300 * DAY)]
    rows.append(("me", "tent", 300 * DAY))
    table = {"customer_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
             "timestamp": [synthetic.T0 + r[2] for r in rows]}
    (plain,) = ItemToItemRecommender(min_support=1).fit(table).recommend(["me"], 1)
    (decayed,) = ItemToItemRecommender(min_support=1, half_life_days=30).fit(table).recommend(["me"], 1)
    assert plain[0].item_id == "old_stove"
    assert decayed[0].item_id == "new_stove"


def test_duplicate_rows_change_nothing(split):
    train, _ = split
    doubled = {k: np.concatenate([v, v[:5000]]) for k, v in train.items()}
    a = ItemToItemRecommender().fit(train)
    b = ItemToItemRecommender().fit(doubled)
    assert (a.similarity_ != b.similarity_).nnz == 0
    assert np.array_equal(a.popularity_, b.popularity_)


def test_fit_is_independent_of_row_order(split):
    train, _ = split
    order = np.random.default_rng(0).permutation(len(train["item_id"]))
    a = ItemToItemRecommender().fit(train)
    b = ItemToItemRecommender().fit({k: v[order] for k, v in train.items()})
    assert abs(a.similarity_ - b.similarity_).max() < 1e-6
    assert a.recommend(["c5", "c9"], 10) == b.recommend(["c5", "c9"], 10)


def test_with_history_excludes_fresh_purchases(split):
    train, _ = split
    model = ItemToItemRecommender().fit(train)
    (before,) = model.recommend(["c1"], 3)
    fresh = {k: v[train["customer_id"] == "c1"] for k, v in train.items()}
    fresh = {k: np.append(v, x) for (k, v), x in zip(
        fresh.items(), ["c1", before[0].item_id, "purchase", fresh["timestamp"].max() + 1], strict=True)}
    (after,) = model.with_history(fresh).recommend(["c1"], 3)
    assert before[0].item_id not in [r.item_id for r in after]
    assert model.recommend(["c1"], 3)[0] == before  # the original is unchanged


def test_artifact_round_trip_and_tampering(split):
    train, _ = split
    model = ItemToItemRecommender(similarity="lift", n_neighbors=20).fit(train)
    data = model.to_bytes()
    back = ItemToItemRecommender.from_bytes(data)
    assert back.get_params() == model.get_params()
    assert back.recommend(model.customer_ids_[:50], 10) == model.recommend(model.customer_ids_[:50], 10)
    assert back.explain("c1", back.recommend(["c1"], 1)[0][0].item_id) == model.explain(
        "c1", model.recommend(["c1"], 1)[0][0].item_id)
    with pytest.raises(ArtifactError):
        PopularityRecommender.from_bytes(data)  # another class's artifact
    with pytest.raises(ArtifactError):
        ItemToItemRecommender.from_bytes(data[:100])
    with pytest.raises(ArtifactError):
        ItemToItemRecommender.from_bytes(b"\x80\x04K\x01.")  # a pickle is not an artifact


@pytest.mark.parametrize(("table", "field"), [
    ({"item_id": ["x"]}, "customer_id"),
    ({"customer_id": ["a"]}, "item_id"),
    ({"customer_id": ["a", "b"], "item_id": ["x"]}, "item_id"),
    ({"customer_id": ["a"], "item_id": ["x"], "kind": ["refund"]}, "kind"),
    ({"customer_id": [1.5], "item_id": ["x"]}, "customer_id"),
    ({"customer_id": [""], "item_id": ["x"]}, "customer_id"),
    ({"customer_id": ["a"], "item_id": ["x"], "timestamp": ["yesterday"]}, "timestamp"),
    ({"customer_id": [], "item_id": []}, "customer_id"),
])
def test_bad_tables_name_the_column(table, field):
    with pytest.raises(InvalidInput) as err:
        ItemToItemRecommender().fit(table)
    assert err.value.field == field


@pytest.mark.parametrize(("params", "field"), [
    ({"similarity": "jaccard"}, "similarity"), ({"view_weight": 2}, "view_weight"),
    ({"half_life_days": 0}, "half_life_days"), ({"n_neighbors": 0}, "n_neighbors"), ({"min_support": 0}, "min_support"),
])
def test_bad_parameters_name_the_parameter(params, field):
    with pytest.raises(InvalidInput) as err:
        ItemToItemRecommender(**params).fit({"customer_id": ["a"], "item_id": ["x"]})
    assert err.value.field == field


def test_half_life_needs_timestamps_and_k_must_be_positive():
    with pytest.raises(InvalidInput) as err:
        ItemToItemRecommender(half_life_days=7).fit({"customer_id": ["a"], "item_id": ["x"]})
    assert err.value.field == "timestamp"
    model = ItemToItemRecommender().fit({"customer_id": ["a"], "item_id": ["x"]})
    for k in (0, -1, 2.5, True):
        with pytest.raises(InvalidInput) as err:
            model.recommend(["a"], k)
        assert err.value.field == "k"
    with pytest.raises(InvalidInput) as err:
        model.recommend(["a"], 1, in_stock=np.array([True, False]))
    assert err.value.field == "in_stock"


def test_artifact_cannot_set_anything_but_fitted_attributes(split):
    import io
    import json

    train, _ = split
    model = PopularityRecommender().fit({k: v[:200] for k, v in train.items()})
    archive = np.load(io.BytesIO(model.to_bytes()), allow_pickle=False)
    arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())

    def rebuilt(arrays, meta):
        buf = io.BytesIO()
        np.savez(buf, **{**arrays, "__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})
        return buf.getvalue()

    assert PopularityRecommender.from_bytes(rebuilt(arrays, meta)).popularity_.tolist() == model.popularity_.tolist()
    for bad_meta in ({**meta, "state": {"__class__": 1}}, {**meta, "params": {"evil": 1}},
                     {**meta, "sparse": ["recommend"]}):
        with pytest.raises(ArtifactError):
            PopularityRecommender.from_bytes(rebuilt(arrays, bad_meta))
    with pytest.raises(ArtifactError):
        PopularityRecommender.from_bytes(rebuilt({**arrays, "_private": np.zeros(1)}, meta))


def test_ranking_matches_a_dense_brute_force(split):
    """The sparse ranking equals the obvious dense one: scored items by score, then popular ones."""
    train, _ = split
    model = ItemToItemRecommender().fit(train)
    stock = np.array([int(x[1:]) % 5 != 0 for x in model.item_ids_])
    customers = model.customer_ids_[::7]
    rows = np.searchsorted(model.customer_ids_, customers)
    got, got_scores, got_similar = model.recommend_indices(customers, 12, in_stock=stock)
    scores = (model.history_[rows] @ model.similarity_).toarray()
    bought = model.purchased_[rows].toarray()
    for i in range(len(customers)):
        ok = stock & ~bought[i]
        scored = [j for j in np.lexsort((np.arange(len(ok)), -scores[i])) if ok[j] and scores[i, j] > 0]
        rest = [j for j in np.argsort(-model.popularity_, kind="stable") if ok[j] and scores[i, j] <= 0]
        expected = (scored + rest)[:12]
        assert got[i].tolist() == expected
        assert got_similar[i].tolist() == [j in set(scored) for j in expected]
        assert np.allclose(got_scores[i][got_similar[i]], scores[i, got[i][got_similar[i]]])


def test_vectorised_reasons_agree_with_reason(split):
    train, _ = split
    model = ItemToItemRecommender().fit(train)
    customers = np.array([*model.customer_ids_[:300], "stranger"])
    idx, _, similar = model.recommend_indices(customers, 10)
    anchor, bought, viewed = model.reasons(customers, idx, similar)
    checked = 0
    for r, c in enumerate(customers):
        for s in range(10):
            why = model.reason(c, model.item_ids_[idx[r, s]])
            if similar[r, s]:
                assert (model.item_ids_[anchor[r, s]], bought[r, s], viewed[r, s]) == (
                    why["because"], why["co_purchased"], why["co_viewed"])
                checked += 1
            else:
                assert anchor[r, s] == -1 and why["because"] is None
    assert checked > 2000
