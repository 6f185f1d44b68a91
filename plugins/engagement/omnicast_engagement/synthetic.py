"""Synthetic shop data with planted structure, for tests, benchmarks and demos.

``interactions``: each customer has a taste (one of ``n_groups`` groups of items); most of
their purchases and views come from their group (a real co-purchase structure), the rest from
a global Zipf popularity. Timestamps are spread over ``days`` days so a time split holds out
later purchases of the same tastes.
"""

from __future__ import annotations

import numpy as np

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def interactions(n_customers: int = 2000, n_items: int = 400, *, n_groups: int = 40, per_customer: float = 8.0,
                 in_group: float = 0.8, view_share: float = 0.5, days: int = 120,
                 seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_customer, n_customers) + 1
    customer = np.repeat(np.arange(n_customers), counts)
    n = len(customer)
    group_of_customer = rng.integers(0, n_groups, n_customers)
    group_size = n_items // n_groups
    zipf = 1.0 / np.arange(1, n_items + 1) ** 1.1
    zipf /= zipf.sum()
    popular = rng.choice(n_items, n, p=zipf)
    # within a group, items are not equally liked either (so co-purchase is informative)
    within_p = 1.0 / np.arange(1, group_size + 1) ** 0.5
    within_p /= within_p.sum()
    in_group_item = group_of_customer[customer] * group_size + rng.choice(group_size, n, p=within_p)
    item = np.where(rng.random(n) < in_group, in_group_item, popular)
    kind = np.where(rng.random(n) < view_share, "view", "purchase")
    ts = T0 + rng.random(n) * days * DAY
    return {
        "customer_id": np.char.add("c", customer.astype(str)),
        "item_id": np.char.add("p", item.astype(str)),
        "kind": kind,
        "timestamp": ts,
    }
