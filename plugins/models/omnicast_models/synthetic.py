"""A synthetic shop drawn from the models' own generative processes (tests, benchmark).

Customers arrive uniformly over ``[start, end]``; each buys as BG/NBD says (Poisson
purchases while alive, dropping out after each repeat purchase with probability p), each
order's value as Gamma-Gamma says, products from a catalog with a favourite category,
and a few product views and e-mails (with opens at a favourite hour) per customer.
Returned as plain columns, ready to be written as canonical events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

CATEGORIES = ("shoes", "bags", "shirts", "jackets", "hats", "socks", "belts", "scarves")


@dataclass
class SyntheticShop:
    start: datetime
    end: datetime
    customers: list[str]
    order_customer: np.ndarray  # index into customers
    order_time: np.ndarray  # datetime64[us]
    order_total: np.ndarray
    order_products: list[list[str]]
    view_customer: np.ndarray
    view_time: np.ndarray
    view_product: list[str]
    send_customer: np.ndarray
    send_time: np.ndarray
    open_of_send: np.ndarray  # bool per send: opened
    open_time: np.ndarray
    products: dict[str, str]  # product id -> category
    truth: dict[str, float]


def generate(n: int, *, start: datetime | None = None, days: int = 540, seed: int = 0,
             r: float = 0.6, alpha: float = 40.0, a: float = 0.8, b: float = 4.0,
             p: float = 4.0, q: float = 3.0, v: float = 60.0, views_per_customer: float = 2.0,
             emails_per_customer: float = 2.0) -> SyntheticShop:
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    first = rng.uniform(0, days * 0.9, n)
    lam = rng.gamma(r, 1.0 / alpha, n)
    drop = rng.beta(a, b, n)
    nu = rng.gamma(q, 1.0 / v, n)
    times = [first]
    who = [np.arange(n)]
    now = first.copy()
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0 / lam[idx])
        within = now[idx] <= days
        buy = idx[within]
        active[idx[~within]] = False
        times.append(now[buy].copy())
        who.append(buy)
        active[buy] = rng.random(len(buy)) >= drop[buy]
    cust = np.concatenate(who)
    t = np.concatenate(times)
    total = np.round(rng.gamma(p, 1.0 / nu[cust]), 2)
    favourite = rng.integers(0, len(CATEGORIES), n)
    products = {f"p{i}": CATEGORIES[i % len(CATEGORIES)] for i in range(64)}
    # a product from the favourite category two times in three, else any
    pick_fav = rng.random(len(cust)) < 2 / 3
    prod_idx = np.where(pick_fav, favourite[cust] + len(CATEGORIES) * rng.integers(0, 8, len(cust)),
                        rng.integers(0, 64, len(cust)))
    order_products = [[f"p{i}"] for i in prod_idx.tolist()]
    # views and e-mails spread over each customer's life (from the first purchase on)
    nv = rng.poisson(views_per_customer, n)
    view_customer = np.repeat(np.arange(n), nv)
    view_t = first[view_customer] + rng.uniform(0, 1, len(view_customer)) * (days - first[view_customer])
    view_prod = favourite[view_customer] + len(CATEGORIES) * rng.integers(0, 8, len(view_customer))
    ns = rng.poisson(emails_per_customer, n)
    send_customer = np.repeat(np.arange(n), ns)
    send_t = first[send_customer] + rng.uniform(0, 1, len(send_customer)) * (days - first[send_customer])
    hour = rng.integers(6, 23, n)
    opened = rng.random(len(send_customer)) < 0.4
    open_t = np.floor(send_t) + 1 + hour[send_customer] / 24.0 + rng.uniform(0, 1 / 24, len(send_customer))
    open_t = np.minimum(open_t, days)

    def stamp(x: np.ndarray) -> np.ndarray:
        base = np.datetime64(start.replace(tzinfo=None), "us")
        return base + (x * 86400e6).astype("timedelta64[us]")

    return SyntheticShop(
        start=start, end=end, customers=[f"c{i:07d}" for i in range(n)],
        order_customer=cust, order_time=stamp(t), order_total=total, order_products=order_products,
        view_customer=view_customer, view_time=stamp(view_t), view_product=[f"p{i}" for i in view_prod.tolist()],
        send_customer=send_customer, send_time=stamp(send_t), open_of_send=opened, open_time=stamp(open_t),
        products=products,
        truth={"r": r, "alpha": alpha, "a": a, "b": b, "p": p, "q": q, "v": v},
    )
