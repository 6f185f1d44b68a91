"""python -m bench [name ...]: run the named benchmarks (all by default)."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "coldstart": "bench.coldstart",
    "ingest": "bench.ingest",
    "journeys": "bench.journeys",
    "simulation": "bench.simulation",
    "cost": "bench.cost",
    "models": "bench.models",
    "engagement": "bench.engagement",
    "channels": "bench.channels",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(BENCHES[name]).main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
