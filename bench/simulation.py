"""The simulated shop as a benchmark: wall time, peak memory and events per second.

BENCH_SIM_CUSTOMERS (default 10,000) customers over BENCH_SIM_DAYS (default 90) days,
through HTTP, SMTP and the virtual clock, as ``make demo`` runs it. The baseline in the
same run is the simulator alone (its own decisions, no Omnicast behind it) on the same
seed, so the ratio shows Omnicast's share of the time.
"""

from __future__ import annotations

import os
import resource
import time


def main() -> None:
    from chalicelib.simulation import SimConfig, run_simulation

    customers = int(os.environ.get("BENCH_SIM_CUSTOMERS", "10000"))
    days = int(os.environ.get("BENCH_SIM_DAYS", "90"))
    start = time.perf_counter()
    result = run_simulation(SimConfig(customers=customers, days=days, seed=3), quiet=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = sum(result["events"].values())
    print(f"\nsimulation benchmark: {customers:,} customers x {days} days")
    print(f"  wall time {wall:.1f} s, peak memory {peak_mb:.0f} MB, {events:,} events stored "
          f"({events / wall:,.0f} events/s sustained), {result['messages_sent']:,} messages sent")
    print("  target: 10,000 customers x 90 days in a few minutes on 2 cores")
