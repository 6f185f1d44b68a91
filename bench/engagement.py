"""Engagement models: fit and recommend throughput of the item-to-item recommender, and the
scoring rate of send time, best channel and the bandit, with peak memory.

Synthetic shop: BENCH_ENG_CUSTOMERS customers (100,000 by default) x BENCH_ENG_ITEMS items
(5,000), about 11 interactions each (half purchases, half views) over 120 days with a planted
co-purchase structure; the first 90 days train, the last 30 are held out. The popularity
recommender on the same data is the baseline, both for speed and for precision@10.
"""

from __future__ import annotations

import os
import resource
import time

CUSTOMERS = int(os.environ.get("BENCH_ENG_CUSTOMERS", "100000"))
ITEMS = int(os.environ.get("BENCH_ENG_ITEMS", "5000"))
K = 10


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def recommender_bench() -> None:
    import numpy as np
    from omnicast_engagement import synthetic
    from omnicast_engagement.recommend import (
        ItemToItemRecommender,
        PopularityRecommender,
        precision_recall_at_k,
        time_split,
    )

    data, gen_s = timed(synthetic.interactions, CUSTOMERS, ITEMS, n_groups=max(ITEMS // 20, 1), per_customer=10.0,
                        seed=0)
    train, test = time_split(data, synthetic.T0 + 90 * synthetic.DAY)
    n_train = len(train["item_id"])
    print(f"item-to-item recommender: {CUSTOMERS:,} customers x {ITEMS:,} items, {len(data['item_id']):,} "
          f"interactions ({n_train:,} before the split; generated in {gen_s:.1f} s; peak {peak_mb():.0f} MB)")
    model, fit_s = timed(ItemToItemRecommender(n_neighbors=50).fit, train)
    base, base_fit_s = timed(PopularityRecommender().fit, train)
    print(f"  fit:       {fit_s:7.2f} s  ({n_train / fit_s:,.0f} interactions/s; {model.similarity_.nnz:,} similar "
          f"pairs kept)  peak {peak_mb():.0f} MB")
    print(f"  baseline fit (popularity): {base_fit_s:7.2f} s")
    customers = model.customer_ids_
    in_stock = model.item_ids_[np.arange(len(model.item_ids_)) % 10 != 0]  # 10 % out of stock
    (idx, _, similar), rec_s = timed(model.recommend_indices, customers, K, in_stock=in_stock)
    assert (idx >= 0).all()
    (_, _, _), base_s = timed(base.recommend_indices, customers, K, in_stock=in_stock)
    print(f"  recommend: {rec_s:7.2f} s for {len(customers):,} customers x {K}  ->  "
          f"{len(customers) * K / rec_s:,.0f} items/s ({len(customers) / rec_s:,.0f} customers/s; "
          f"{similar.mean():.0%} from co-occurrence)  peak {peak_mb():.0f} MB")
    print(f"  baseline recommend (popularity, same filters): {len(customers) * K / base_s:,.0f} items/s; "
          f"ratio item-to-item / popularity: {base_s / rec_s:.2f}")
    sample = customers[:20000]
    (_recs, _), objs_s = timed(lambda: (model.recommend(sample, K, in_stock=in_stock), None))
    print(f"  recommend() with Recommendation tuples: {len(sample) * K / objs_s:,.0f} items/s")
    ours, eval_s = timed(precision_recall_at_k, model, test, K, in_stock=in_stock)
    theirs = precision_recall_at_k(base, test, K, in_stock=in_stock)
    print(f"  held-out (last 30 days, {int(ours['customers']):,} customers): precision@{K} {ours['precision']:.4f} vs "
          f"popularity {theirs['precision']:.4f}; recall@{K} {ours['recall']:.4f} vs {theirs['recall']:.4f} "
          f"({eval_s:.1f} s)")
    artifact = model.to_bytes()
    print(f"  artifact (npz, no pickle): {len(artifact) / 1e6:.1f} MB")


def scoring_bench() -> None:
    import numpy as np
    from omnicast_engagement.bandit import ThompsonBandit
    from omnicast_engagement.best_channel import BestChannel
    from omnicast_engagement.send_time import SendTimeOptimizer

    rng = np.random.default_rng(1)
    ids = np.char.add("c", np.arange(CUSTOMERS).astype(str))
    counts = rng.poisson(0.4, (CUSTOMERS, 24))
    counts[np.arange(CUSTOMERS), rng.integers(0, 24, CUSTOMERS)] += rng.poisson(3, CUSTOMERS)
    model, fit_s = timed(SendTimeOptimizer().fit_counts, ids, counts)
    _best, s = timed(model.best_hours_for_counts, counts)
    print(f"send time: fit {fit_s:.2f} s; best hour + confidence ({model.n_samples} Dirichlet draws) for "
          f"{CUSTOMERS:,} customers in {s:.2f} s ({CUSTOMERS / s:,.0f} customers/s)  peak {peak_mb():.0f} MB")
    sent = rng.integers(0, 30, (CUSTOMERS, 3))
    clicked = rng.binomial(sent, [0.1, 0.2, 0.05])
    bc, fit_s = timed(BestChannel().fit_counts, ids, ["email", "sms", "push"], sent, clicked)
    _choices, s = timed(bc.best_channels_for_counts, ["email", "sms", "push"], sent, clicked)
    print(f"best channel: fit {fit_s:.2f} s; choice + P(best) ({bc.n_samples} draws) for {CUSTOMERS:,} customers in "
          f"{s:.2f} s ({CUSTOMERS / s:,.0f} customers/s)  peak {peak_mb():.0f} MB")
    bandit = ThompsonBandit(arms=("A", "B", "C"), min_samples=10**9)
    start = time.perf_counter()
    n = 20000
    for i in range(n):
        arm = bandit.choose()
        bandit.update(arm, float(rng.random() < 0.05), update_id=str(i))
    s = time.perf_counter() - start
    print(f"bandit: {n / s:,.0f} choose + update per second (one process, state in memory)")


def plugin_bench() -> None:
    """Model.score() of each engagement plugin on a FeatureTable shaped as chalicelib.features
    builds it (what the scoring service calls per shard), including the Score objects."""
    from datetime import UTC, datetime

    import numpy as np
    from omnicast_engagement import synthetic
    from omnicast_engagement.plugin import (
        BanditSettings,
        BestChannelModel,
        BestChannelSettings,
        ItemToItemModel,
        RecommendationSettings,
        SendTimeModel,
        SendTimeSettings,
        ThompsonBanditModel,
    )

    from chalicelib.features import CHANNELS, COLUMNS
    from chalicelib.plugin_api import FeatureTable, TrainingSet

    data = synthetic.interactions(CUSTOMERS, ITEMS, n_groups=max(ITEMS // 20, 1), per_customer=10.0, seed=0)
    ids, rows = np.unique(data["customer_id"], return_inverse=True)
    rng = np.random.default_rng(2)
    n = len(ids)
    X = np.zeros((n, len(COLUMNS)))
    for j, ch in enumerate(CHANNELS[:2]):
        sent = rng.integers(0, 20, n)
        X[:, COLUMNS.index(f"sent_{ch}")] = sent
        X[:, COLUMNS.index(f"clicked_{ch}")] = rng.binomial(sent, 0.1 + 0.1 * j)
    hours = rng.poisson(0.3, (n, 24)).astype(np.float32)
    extras = {"engagement_hours": hours, "channels": CHANNELS, "interactions": {
        "row": rows, "product": data["item_id"], "kind": data["kind"], "time": data["timestamp"] / 86400.0}}
    table = FeatureTable(datetime(2026, 5, 1, tzinfo=UTC), ids.tolist(), COLUMNS, X, extras)
    train = TrainingSet(table, {}, 30.0)
    print(f"model plugins: Model.score() over a {n:,}-customer FeatureTable (Score objects included)")
    for model in (ItemToItemModel(RecommendationSettings()), SendTimeModel(SendTimeSettings()),
                  BestChannelModel(BestChannelSettings()), ThompsonBanditModel(BanditSettings()),
                  ThompsonBanditModel(BanditSettings(context_features=("sent_email", "sent_sms")))):
        _, fit_s = timed(model.fit, train)
        scores, s = timed(model.score, table)
        assert len(scores) == n
        label = model.name + (" (contextual)" if getattr(model.settings, "context_features", ()) else "")
        print(f"  {label:<30} fit {fit_s:6.2f} s   score {n / s:10,.0f} customers/s   peak {peak_mb():.0f} MB")


def main() -> None:
    recommender_bench()
    scoring_bench()
    plugin_bench()


if __name__ == "__main__":
    main()
