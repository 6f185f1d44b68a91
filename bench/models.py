"""Model scoring throughput, end to end and raw, in one run.

A synthetic shop (BG/NBD purchases, Gamma-Gamma order values, views, e-mails and opens;
``omnicast_models.synthetic``) is written straight into the embedded default's SQLite
tables (the ingest path has its own benchmark), then, in a separate process, the
churn, CLV and RFM models are trained on it. The measured process then:

- end to end: ``ScoringService.run`` - features from the stored events, orders, sends
  and opens as of now (SQL JSON functions + numpy), every enabled model, scores with
  their explanations written to the score store, shard by shard;
- raw: the same fitted models' ``predict_matrix`` (churn ``predict_proba``, BG/NBD
  expected purchases, RFM quintiles) on prebuilt matrices of the same customers.

Peak memory is the scoring process's peak RSS (``resource.getrusage``): building the
shop and training run in child processes, so they do not count.
``BENCH_MODELS_CUSTOMERS`` (default 100,000), ``BENCH_MODELS_SHARD`` (10,000) and
``BENCH_MODELS_PROCESSES`` (2) set the size.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

N = int(os.environ.get("BENCH_MODELS_CUSTOMERS", "100000"))
SHARD = int(os.environ.get("BENCH_MODELS_SHARD", "10000"))
PROCESSES = int(os.environ.get("BENCH_MODELS_PROCESSES", "2"))
TARGET_CUSTOMERS, TARGET_SECONDS, TARGET_MB = 1_000_000, 60.0, 2048
MODELS = ["churn", "clv", "rfm"]
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 540


def _iso(values: Any) -> list[str]:
    return [str(v) + "Z" for v in values.astype("datetime64[us]")]


def build_shop(data_dir: str, n: int) -> dict[str, Any]:
    """Write the synthetic shop into ``data_dir`` (a child process)."""
    from omnicast_models.synthetic import generate

    from chalicelib.adapters.local import local_stores

    started = time.perf_counter()
    shop = generate(n, start=START, days=DAYS, seed=1)
    stores = local_stores(data_dir)
    db = stores.events.db  # type: ignore[attr-defined]
    ids = shop.customers
    rows = []
    for i, (c, t, total, products) in enumerate(zip(shop.order_customer.tolist(), _iso(shop.order_time),
                                                    shop.order_total.tolist(), shop.order_products, strict=True)):
        payload = json.dumps({"type": "track", "event": "Order Completed", "properties": {
            "order_id": f"o{i}", "total": total, "products": [{"product_id": p} for p in products]}})
        rows.append(("shopify", f"o{i}", "track", ids[c], t, t, "Order Completed", payload, 1))
    for i, (c, t, p) in enumerate(zip(shop.view_customer.tolist(), _iso(shop.view_time), shop.view_product,
                                      strict=True)):
        payload = json.dumps({"type": "track", "event": "Product Viewed", "properties": {"product_id": p}})
        rows.append(("segment", f"v{i}", "track", ids[c], t, t, "Product Viewed", payload, 1))
    ledger = []
    for i, (c, t, opened, ot) in enumerate(zip(shop.send_customer.tolist(), _iso(shop.send_time),
                                               shop.open_of_send.tolist(), _iso(shop.open_time), strict=True)):
        key = f"{ids[c]}|newsletter|s{i}|-"
        ledger.append((key, ids[c], "newsletter", f"s{i}", "email", "sent", "sent", t, t, None, "{}"))
        if opened:
            payload = json.dumps({"type": "track", "event": "Email Opened",
                                  "properties": {"ledger_key": key, "machine": False}})
            rows.append(("tracking", f"op{i}", "track", ids[c], ot, ot, "Email Opened", payload, 1))
    with db.tx() as conn:
        conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?,?)", ledger)
        conn.executemany("INSERT INTO catalog VALUES (?,?,?)", [
            (p, "-", json.dumps({"product_id": p, "variant_id": "-", "categories": [c]}))
            for p, c in shop.products.items()])
    return {"events": len(rows), "sends": len(ledger), "orders": len(shop.order_customer),
            "seconds": time.perf_counter() - started}


def _runtime(data_dir: str) -> Any:
    from chalicelib.clock import ManualClock
    from chalicelib.config import load_settings
    from chalicelib.runtime import Runtime

    # only the three customer models: the engagement models have their own benchmark
    off = {k: "none" for k in ("recommendations", "send_time", "bandit", "best_channel")}
    settings = load_settings({}, overrides={"data_dir": data_dir, "models": off})
    return Runtime(settings, clock=ManualClock(START + timedelta(days=DAYS, minutes=1)))


def train(data_dir: str) -> dict[str, Any]:
    rt = _runtime(data_dir)
    started = time.perf_counter()
    cards = rt.scoring.train(MODELS)
    return {"seconds": time.perf_counter() - started,
            "cards": {c["name"]: {"method": c["method"], "metrics": {
                k: (v if k != "segments" else len(v)) for k, v in c["metrics"].items()
                if k in ("auc", "brier", "brier_baseline", "spend", "segments")}} for c in cards}}


def score_in_processes(data_dir: str, at: datetime) -> tuple[dict[str, Any], float]:
    scoring = _runtime(data_dir).scoring
    for name in MODELS:  # loaded before the workers fork, as in the one-process run
        scoring.load(name)
    report = scoring.run(as_of=at, shard_size=SHARD, processes=PROCESSES)
    return report.as_dict(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _child(fn: Any, *args: Any) -> Any:
    """Run ``fn`` in a fresh (non-daemonic, so it may have workers of its own) child process."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_run_child, args=(send, fn, args))
    process.start()
    result = receive.recv()
    process.join()
    return result


def _run_child(conn: Any, fn: Any, args: tuple[Any, ...]) -> None:
    conn.send(fn(*args))
    conn.close()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="omnicast-bench-models-") as tmp:
        data_dir = str(Path(tmp) / "data")
        shop = _child(build_shop, data_dir, N)
        print(f"shop: {N:,} customers, {shop['orders']:,} orders, {shop['events']:,} events, {shop['sends']:,} sends "
              f"(written in {shop['seconds']:.1f} s)")
        trained = _child(train, data_dir)
        print(f"training (churn, clv, rfm; time-based split): {trained['seconds']:.1f} s")
        for name, card in trained["cards"].items():
            print(f"  {name}: {card['method']}; holdout {json.dumps(card['metrics'])}")

        rss_before = _rss_mb()
        rt = _runtime(data_dir)
        scoring = rt.scoring
        from chalicelib import features

        for name in MODELS:  # imports (scikit-learn: about a second) and artifacts, outside the clock
            scoring.load(name)
        at = scoring.as_of()
        report = scoring.run(as_of=at, shard_size=SHARD)
        e2e = report.customers / report.seconds
        rss_e2e = _rss_mb()
        # the same run on both cores: shards in worker processes (a later as_of, so nothing is skipped),
        # driven from a child so that its workers' peak RSS is theirs alone
        report2, rss_workers = _child(score_in_processes, data_dir, at + timedelta(minutes=1))
        e2e2 = report2["customers"] / report2["seconds"]

        # raw: the same models on prebuilt matrices of the same customers
        from omnicast_models import RFM_FEATURES, bgnbd_summary, churn_matrix

        ids = scoring._profile_ids()
        at = scoring.as_of()
        table = features.build(rt.stores.activity.activity(None, at), ids, at)
        buyers = table.rows(table.column("orders") > 0)
        matrices = {"churn": churn_matrix(buyers)[1], "clv": bgnbd_summary(buyers),
                    "rfm": buyers.matrix(RFM_FEATURES)}
        models = {name: scoring.load(name) for name in MODELS}
        started = time.perf_counter()
        for name, model in models.items():
            model.predict_matrix(matrices[name])
        raw_seconds = time.perf_counter() - started
        raw = len(buyers) / raw_seconds

        print(f"end to end, one process (features from stored events -> churn, clv, rfm -> {report.scores:,} scores "
              f"written, {report.shards} shards of {SHARD:,}): {report.customers:,} customers in "
              f"{report.seconds:.1f} s = {e2e:,.0f} customers/s")
        print(f"end to end, {PROCESSES} worker processes: {report2['customers']:,} customers in "
              f"{report2['seconds']:.1f} s = {e2e2:,.0f} customers/s")
        print(f"raw predict on prebuilt matrices (same models, same customers, one process): {raw:,.0f} customers/s")
        print(f"ratio end to end / raw: {e2e / raw:.4f} (one process), {e2e2 / raw:.4f} ({PROCESSES} processes)")
        print(f"peak RSS: scoring process {rss_e2e:,.0f} MB (before scoring {rss_before:,.0f} MB, after the raw pass "
              f"{_rss_mb():,.0f} MB); largest worker process {rss_workers:,.0f} MB")
        projected = TARGET_CUSTOMERS / e2e2
        print(f"target: {TARGET_CUSTOMERS:,} customers in <= {TARGET_SECONDS:.0f} s on 2 cores, <= {TARGET_MB:,} MB: "
              f"at the {PROCESSES}-process rate {projected:.0f} s "
              f"({'meets' if projected <= TARGET_SECONDS else f'misses by {projected / TARGET_SECONDS:.1f}x'}); "
              f"memory is per shard ({SHARD:,} customers), so it does not grow with the customer count")
