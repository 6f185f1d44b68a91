"""The demo behind ``make demo``: a simulated shop's quarter through the real local stack.

See :mod:`chalicelib.simulation`: a real SMTP server (aiosmtpd) keeps every e-mail in
``<data-dir>/mailbox/``, the Omnicast app serves HTTP on a free port, a simulated
storefront sends Segment calls and signed Shopify webhooks, and a virtual clock runs the
days. At the end the report shows what went out and why, and the cart reminder's
measured lift beside the effect the simulator planted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from chalicelib.simulation import SimConfig, run_simulation


def run_demo(data_dir: Path, customers: int = 400, seed: int = 7, days: int = 90) -> int:
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    print(f"Omnicast demo: a simulated shop ({customers} customers, {days} days) through the local stack")
    run_simulation(SimConfig(customers=customers, days=days, seed=seed), data_dir=data_dir)
    print(f"\nData folder: {data_dir.resolve()} (SQLite database omnicast.db, e-mails in mailbox/)")
    print(f"Look around: omnicast serve --data-dir {data_dir}, then with an admin key "
          f"(omnicast keys create --kind admin --data-dir {data_dir}):")
    print("  curl -H 'Authorization: Bearer <key>' http://127.0.0.1:8000/admin/ledger?limit=20")
    return 0
