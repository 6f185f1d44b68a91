"""Journeys and segments on the embedded default, each against a baseline in the same run.

1. Journey step evaluations per second: customers walk a journey of branch, split,
   update-profile and send steps through the engine (state and ledger writes, queueing)
   against the baseline of evaluating the same branch rule in a plain loop.
2. Segment preview over BENCH_PROFILES profiles (1,000,000 by default): the segment
   service's preview (rule compiled to SQL) against the same filter written by hand as
   one SQL query; and the profile-by-profile evaluation on a 20,000-profile slice for
   comparison.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.adapters.local.sqlite import sqlite3  # the same SQLite as the stores (one copy per process)

PROFILES = int(os.environ.get("BENCH_PROFILES", "1000000"))
WALKERS = int(os.environ.get("BENCH_JOURNEY_CUSTOMERS", "5000"))
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
RULE = {"all": [{"computed": "orders_count", "op": ">=", "value": 2}, {"trait": "country", "op": "=", "value": "FR"},
                {"consent": "email", "purpose": "marketing"}]}
JOURNEY = """
name: bench_steps
trigger: {event: Bench}
reentry: always
steps:
  - {id: check, type: branch, if: {all: [{computed: orders_count, op: ">=", value: 2},
                                          {trait: country, op: "=", value: FR}]}, then: vip, else: split}
  - {id: split, type: split, variants: {a: 50, b: 50}, goto: {b: tag}}
  - {id: plain, type: send, channel: email, template: welcome, purpose: transactional, then: end}
  - {id: vip, type: update_profile, set: {vip: true}}
  - {id: tag, type: update_profile, set: {nudged: true}}
  - {id: offer, type: send, channel: email, template: welcome_tips, purpose: transactional}
"""


def traits(rng: random.Random, i: int) -> dict[str, Any]:
    t: dict[str, Any] = {"email": f"c{i}@example.com", "country": rng.choice(["FR", "DE", "US", "GB", "ES"]),
                         "orders_count": rng.randint(0, 6), "total_spent": round(rng.random() * 900, 2)}
    if rng.random() < 0.1:
        t["consent"] = {"email": "unsubscribed"}
    return t


def journeys_bench() -> None:
    from chalicelib.adapters.local import local_stores
    from chalicelib.clock import ManualClock
    from chalicelib.config import load_settings
    from chalicelib.journey_model import load_journey
    from chalicelib.ports import Profile
    from chalicelib.runtime import Runtime
    from chalicelib.services.rules import Facts, evaluate, parse_rule

    with tempfile.TemporaryDirectory() as d:
        rt = Runtime(load_settings({}, overrides={"data_dir": d, "journeys": {"disabled": []}}),
                     stores=local_stores(Path(d) / "data"), clock=ManualClock(NOW))
        journey = load_journey(JOURNEY)
        rt.journeys.registry.add(journey)
        rng = random.Random(1)
        profiles = []
        for i in range(WALKERS):
            p = Profile(f"p{i:07d}", traits=traits(rng, i))
            rt.stores.profiles.save(p, 0)
            profiles.append(p)
        start = time.perf_counter()
        with rt.stores.transaction():  # type: ignore[misc]
            for p in profiles:
                rt.journeys.enter(journey, p, "-", {})
        elapsed = time.perf_counter() - start
        steps = 0
        for p in profiles:
            state = rt.stores.journeys.get(p.profile_id, "bench_steps", "-")
            assert state is not None and state.status == "completed"
            steps += 3  # branch, then split + update + send, or update + send: three steps each
        rule = parse_rule({"all": [{"computed": "orders_count", "op": ">=", "value": 2},
                                   {"trait": "country", "op": "=", "value": "FR"}]})
        start = time.perf_counter()
        for _ in range(3):
            for p in profiles:
                evaluate(rule, Facts(p, [], {}, NOW))
        base = time.perf_counter() - start
        rate, base_rate = steps / elapsed, 3 * len(profiles) / base
        print(f"journey step evaluations ({WALKERS} customers, branch / split / update / send, stored):")
        print(f"  engine:   {rate:10.0f} steps/s")
        print(f"  baseline: {base_rate:10.0f} rule evaluations/s (the branch rule alone, in memory)")
        print(f"  ratio engine / baseline: {rate / base_rate:.3f}")


def segments_bench() -> None:
    from chalicelib.adapters.local import local_stores
    from chalicelib.clock import ManualClock
    from chalicelib.services.rules import Facts, evaluate, parse_rule
    from chalicelib.services.segments import SegmentService

    with tempfile.TemporaryDirectory() as d:
        stores = local_stores(Path(d) / "data")
        db = stores.profiles.db  # type: ignore[attr-defined]
        rng = random.Random(2)
        start = time.perf_counter()
        stamp = NOW.isoformat()
        with db.tx() as conn:
            batch = []
            for i in range(PROFILES):
                batch.append((f"p{i:08d}", json.dumps(traits(rng, i)), "{}", stamp, stamp, 1))
                if len(batch) == 50_000:
                    conn.executemany("INSERT INTO profiles VALUES (?,?,?,?,?,?)", batch)
                    batch.clear()
            conn.executemany("INSERT INTO profiles VALUES (?,?,?,?,?,?)", batch)
        print(f"segment preview over {PROFILES:,} profiles (loaded in {time.perf_counter() - start:.1f} s)")
        service = SegmentService(stores.profiles, stores.events, stores.blobs, ManualClock(NOW))
        service.save({"name": "fr_repeat_subscribers", "rule": RULE})
        preview = service.preview("fr_repeat_subscribers")
        conn = sqlite3.connect(db.path)
        start = time.perf_counter()
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM profiles WHERE COALESCE(json_extract(traits, '$.orders_count'), 0) >= 2 "
            "AND json_extract(traits, '$.country') = 'FR' AND json_extract(traits, '$.email') IS NOT NULL "
            "AND COALESCE(json_extract(traits, '$.consent.email'), '') NOT IN ('unsubscribed', 'suppressed')"
        ).fetchone()
        base = time.perf_counter() - start
        conn.close()
        assert count == preview.count, (count, preview.count)
        print(f"  preview ({preview.method}):        {preview.seconds:8.3f} s  -> {preview.count:,} members")
        print(f"  baseline (hand-written SQL): {base:8.3f} s  -> {count:,} members")
        print(f"  ratio baseline / preview time: {base / preview.seconds:.3f}")
        rule = parse_rule(RULE)
        page, _ = stores.profiles.scan(None, 20_000)
        start = time.perf_counter()
        n = sum(evaluate(rule, Facts(p, [], {}, NOW)) for p in page)
        scan = time.perf_counter() - start
        print(f"  profile-by-profile evaluation, 20,000-profile slice: {scan:.3f} s "
              f"({len(page) / scan:,.0f} profiles/s; {n} members) - the path for event and score rules")


def main() -> None:
    journeys_bench()
    segments_bench()


if __name__ == "__main__":
    main()
