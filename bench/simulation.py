"""The simulated shop as a benchmark: wall time, peak memory and events per second.

BENCH_SIM_CUSTOMERS (default 10,000) customers over BENCH_SIM_DAYS (default 90) days,
through HTTP, SMTP and the virtual clock, as ``make demo`` runs it. The baseline in the
same run is the simulator alone on the same seed: the same shop, its calls built, encoded
and signed but not sent (no Omnicast behind it, so no mail and no reactions to mail); the
ratio shows how much of the time is the simulator's own.
"""

from __future__ import annotations

import os
import resource
import time
from datetime import timedelta


def simulator_alone(customers: int, days: int) -> tuple[float, int]:
    """Seconds and calls of the simulator with a storefront that answers 200 to everything."""
    from chalicelib.clock import ManualClock
    from chalicelib.simulation import Mailbox, ShopSimulator, SimConfig, Storefront, Unplugged

    class Answering(Storefront):
        def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
            return 200

    config = SimConfig(customers=customers, days=days, seed=3)
    clock = ManualClock(config.start)
    front = Answering("http://127.0.0.1:9", "write-key", "shopify-secret")
    sim = ShopSimulator(config, front, Mailbox(None), clock)
    start = time.perf_counter()
    sim.run(Unplugged(), broadcast=lambda journey: 0)
    assert clock.now() >= config.start + timedelta(days=days)
    return time.perf_counter() - start, front.calls


def main() -> None:
    from chalicelib.simulation import SimConfig, run_simulation

    customers = int(os.environ.get("BENCH_SIM_CUSTOMERS", "10000"))
    days = int(os.environ.get("BENCH_SIM_DAYS", "90"))
    alone, calls = simulator_alone(customers, days)
    start = time.perf_counter()
    result = run_simulation(SimConfig(customers=customers, days=days, seed=3), quiet=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the largest of the other processes: Omnicast's API and sending process, the shop, the
    # shop's mail server, the models' process
    others_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    events = sum(result["events"].values())
    print(f"\nsimulation benchmark: {customers:,} customers x {days} days")
    print(f"  wall time {wall:.1f} s (simulated trade {result['seconds']:.1f} s, then models and report), "
          f"peak memory {peak_mb:.0f} MB (the workers' process; {result['peak_mb_after_trade']:.0f} MB before the "
          f"report; the largest other, of the API, sending, shop, mail server and models processes,"
          f" {others_mb:.0f} MB)")
    print(f"  {events:,} events stored ({events / wall:,.0f} events/s sustained), "
          f"{result['messages_sent']:,} messages sent")
    print(f"  baseline, the simulator alone (same seed, {calls:,} calls built and signed, none sent): "
          f"{alone:.2f} s; ratio {alone / wall:.3f}")
    print("  target: 10,000 customers x 90 days in a few minutes on 2 cores")
