"""Per-customer features as of a cutoff, from the event log and the send ledger.

Nothing after the cutoff goes in: every event is filtered on its own timestamp here,
whatever the reader returned, so one :class:`~chalicelib.ports.Activity` read up to the
end of a holdout window gives both the training features (at an earlier cutoff) and
the outcomes after it, and a test proves that features at a cutoff ignore later events.

Vectorised with numpy: the columns are loaded once, customers are found by a sorted
search over their ids, and every aggregate is a ``bincount`` / sort over all events at
once. There is no Python loop per event.

Columns (all float64, NaN where undefined):

| column | meaning |
|---|---|
| ``orders`` | orders up to the cutoff (deduplicated on order id) |
| ``repeat_orders`` | ``orders - 1``: the BG/NBD "frequency" |
| ``recency_days`` | days from the last order to the cutoff |
| ``active_days`` | days from the first to the last order: the BG/NBD "recency" |
| ``age_days`` | days from the first order to the cutoff: the BG/NBD "T" |
| ``tenure_days`` | days from the first thing we know (order, view, message) to the cutoff |
| ``monetary`` | total spent |
| ``aov`` | average order value |
| ``repeat_aov`` | average value of repeat orders (Gamma-Gamma's input; NaN without any) |
| ``ipt_mean``, ``ipt_std`` | mean and standard deviation of days between orders |
| ``orders_90d``, ``spend_90d`` | orders and spend in the 90 days before the cutoff |
| ``views_30d``, ``views`` | product views in the last 30 days, in all |
| ``days_since_view`` | days since the last product view |
| ``categories`` | distinct categories bought or viewed |
| ``top_category_share`` | share of the most frequent category in the customer's items and views |
| ``sent_<ch>``, ``clicked_<ch>`` | messages sent and clicked per channel (email, sms, push, messenger) |
| ``open_rate_email`` | e-mails opened / e-mails sent |
| ``days_since_engagement`` | days since the last open or click |
| ``peak_hour`` | the UTC hour with most opens and clicks |

Extras (:attr:`~chalicelib.plugin_api.FeatureTable.extras`): ``engagement_hours``
(n x 24 counts of opens and clicks by UTC hour), ``categories`` (the top category names)
and ``category_affinity`` (n x len(categories) shares of items and views),
``interactions`` (dict of arrays ``row``, ``product``, ``kind`` "view"/"purchase",
``time``), ``channels``.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.plugin_api import FeatureTable, TrainingSet
from chalicelib.ports import Activity, ActivityReader, EventStore, SendLedger

if TYPE_CHECKING:
    import numpy as np

CHANNELS = ("email", "sms", "push", "messenger")
TOP_CATEGORIES = 20
COLUMNS: tuple[str, ...] = (
    "orders", "repeat_orders", "recency_days", "active_days", "age_days", "tenure_days",
    "monetary", "aov", "repeat_aov", "ipt_mean", "ipt_std", "orders_90d", "spend_90d",
    "views_30d", "views", "days_since_view", "categories", "top_category_share",
    *(f"sent_{c}" for c in CHANNELS), *(f"clicked_{c}" for c in CHANNELS),
    "open_rate_email", "days_since_engagement", "peak_hour",
)


def days(at: datetime) -> float:
    """Days since the Unix epoch (the time unit of :class:`~chalicelib.ports.Activity`)."""
    return at.timestamp() / 86400.0


def _rows(ids: np.ndarray, values: list[str]) -> np.ndarray:
    """Row of each value in the sorted ``ids`` (-1 where absent): one vectorised search."""
    import numpy as np

    if not values or len(ids) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    arr = np.asarray(values, dtype=str)
    pos = np.searchsorted(ids, arr)
    pos = np.minimum(pos, len(ids) - 1)
    return np.where(ids[pos] == arr, pos, -1).astype(np.int64)


def _f(values: list[float]) -> np.ndarray:
    import numpy as np

    return np.asarray(values, dtype=np.float64)


def _orders(a: Activity, ids: np.ndarray, cutoff: float, since: float | None = None) -> tuple[np.ndarray, ...]:
    """(row, time, total) of each order in (since, cutoff], one per (customer, order id)."""
    import numpy as np

    row = _rows(ids, a.order_profile)
    t = _f(a.order_time)
    total = _f(a.order_total)
    keep = (row >= 0) & (t <= cutoff)
    if since is not None:
        keep &= t > since
    row, t, total = row[keep], t[keep], total[keep]
    if len(row):
        _, code = np.unique(np.asarray(a.order_id, dtype=str)[keep], return_inverse=True)
        key = row * (int(code.max()) + 1) + code
        # the earliest copy of a duplicated order (a platform sending it twice) counts
        order = np.lexsort((t, key))
        first = np.r_[True, key[order][1:] != key[order][:-1]]
        pick = order[first]
        row, t, total = row[pick], t[pick], total[pick]
    return row, t, np.nan_to_num(total)


def build(activity: Activity, profile_ids: list[str], as_of: datetime) -> FeatureTable:
    """Features of ``profile_ids`` (rows in sorted id order) from events at or before ``as_of``."""
    import numpy as np

    ids = np.array(sorted(set(profile_ids)), dtype=str)
    n = len(ids)
    cutoff = days(as_of)
    cols: dict[str, np.ndarray] = {}
    nan = np.full(n, np.nan)

    # ---- orders: sorted by customer then time, so boundaries give first/last and gaps
    row, t, total = _orders(activity, ids, cutoff)
    order = np.lexsort((t, row))
    row, t, total = row[order], t[order], total[order]
    count = np.bincount(row, minlength=n).astype(np.float64)
    spent = np.bincount(row, weights=total, minlength=n)
    first_t, last_t, first_value = nan.copy(), nan.copy(), np.zeros(n)
    if len(row):
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        ends = np.r_[starts[1:] - 1, len(row) - 1]
        first_t[row[starts]] = t[starts]
        last_t[row[ends]] = t[ends]
        first_value[row[starts]] = total[starts]
        same = row[1:] == row[:-1]
        gaps = np.diff(t)[same]
        gap_rows = row[1:][same]
        gap_sq = np.bincount(gap_rows, weights=gaps * gaps, minlength=n)
    else:
        gap_sq = np.zeros(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        repeat = np.maximum(count - 1, 0)
        cols["orders"] = count
        cols["repeat_orders"] = repeat
        cols["recency_days"] = cutoff - last_t
        cols["active_days"] = np.where(count > 0, last_t - first_t, np.nan)
        cols["age_days"] = cutoff - first_t
        cols["monetary"] = spent
        cols["aov"] = np.where(count > 0, spent / count, np.nan)
        cols["repeat_aov"] = np.where(repeat > 0, (spent - first_value) / repeat, np.nan)
        ipt_mean = np.where(repeat > 0, (last_t - first_t) / repeat, np.nan)
        cols["ipt_mean"] = ipt_mean
        cols["ipt_std"] = np.where(repeat > 1, np.sqrt(np.maximum(gap_sq / repeat - ipt_mean**2, 0)), np.nan)
    recent = t > cutoff - 90
    cols["orders_90d"] = np.bincount(row[recent], minlength=n).astype(np.float64)
    cols["spend_90d"] = np.bincount(row[recent], weights=total[recent], minlength=n)

    # ---- product views
    vrow = _rows(ids, activity.view_profile)
    vt = _f(activity.view_time)
    vkeep = (vrow >= 0) & (vt <= cutoff)
    vrow, vt = vrow[vkeep], vt[vkeep]
    cols["views"] = np.bincount(vrow, minlength=n).astype(np.float64)
    cols["views_30d"] = np.bincount(vrow[vt > cutoff - 30], minlength=n).astype(np.float64)
    last_view = np.full(n, -np.inf)
    np.maximum.at(last_view, vrow, vt)
    cols["days_since_view"] = np.where(np.isfinite(last_view), cutoff - last_view, np.nan)

    # ---- category affinity: ordered products through the catalog, viewed products' category
    irow = _rows(ids, activity.item_profile)
    it = _f(activity.item_time)
    ikeep = (irow >= 0) & (it <= cutoff)
    products = np.asarray(activity.item_product, dtype=str)[ikeep] if activity.item_product else np.array([], str)
    uniq_products, pcode = np.unique(products, return_inverse=True)
    product_category = np.array([(activity.categories.get(p) or [""])[0] for p in uniq_products], dtype=str)
    item_cats = product_category[pcode] if len(pcode) else np.array([], str)
    view_cats = np.asarray(activity.view_category, dtype=str)[vkeep] if activity.view_category else np.array([], str)
    cat_rows = np.r_[irow[ikeep], vrow]
    cat_names = np.r_[item_cats, view_cats].astype(str)
    known = cat_names != ""
    cat_rows, cat_names = cat_rows[known], cat_names[known]
    vocab, ccode, ccount = np.unique(cat_names, return_inverse=True, return_counts=True)
    top = np.argsort(-ccount, kind="stable")[:TOP_CATEGORIES]
    remap = np.full(len(vocab), -1)
    remap[top] = np.arange(len(top))
    k = max(len(top), 1)
    all_counts = np.bincount(cat_rows * len(vocab) + ccode, minlength=n * len(vocab)).reshape(n, len(vocab)) \
        if len(vocab) and n * len(vocab) <= 50_000_000 else None
    if all_counts is not None:
        cols["categories"] = (all_counts > 0).sum(axis=1).astype(np.float64)
    else:  # very many customers x categories: count distinct (customer, category) pairs
        pairs = np.unique(cat_rows.astype(np.int64) * max(len(vocab), 1) + ccode)
        cols["categories"] = np.bincount(pairs // max(len(vocab), 1), minlength=n).astype(np.float64)
    mapped = remap[ccode] if len(ccode) else np.array([], dtype=np.int64)
    in_top = mapped >= 0
    affinity = np.bincount(cat_rows[in_top] * k + mapped[in_top], minlength=n * k).reshape(n, k).astype(np.float32)
    totals = np.bincount(cat_rows, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["top_category_share"] = np.where(totals > 0, affinity.max(axis=1) / totals, np.nan)
        affinity = np.where(totals[:, None] > 0, affinity / np.maximum(totals, 1)[:, None], 0).astype(np.float32)

    # ---- messages and engagement, by channel (the ledger key ties an open/click to its send)
    srow = _rows(ids, activity.send_profile)
    st = _f(activity.send_time)
    skeep = (srow >= 0) & (st <= cutoff)
    send_keys = np.asarray(activity.send_key, dtype=str)
    send_channels = np.asarray(activity.send_channel, dtype=str)
    for ch in CHANNELS:
        cols[f"sent_{ch}"] = np.bincount(srow[skeep & (send_channels == ch)], minlength=n).astype(np.float64)
    erow = _rows(ids, activity.engagement_profile)
    et = _f(activity.engagement_time)
    ekeep = (erow >= 0) & (et <= cutoff)
    erow, et = erow[ekeep], et[ekeep]
    ekind = np.asarray(activity.engagement_kind, dtype=str)[ekeep] if activity.engagement_kind else np.array([], str)
    ekeys = np.asarray(activity.engagement_key, dtype=str)[ekeep] if activity.engagement_key else np.array([], str)
    echannel = np.full(len(ekeys), "email", dtype=send_channels.dtype if len(send_channels) else "<U8")
    if len(send_keys) and len(ekeys):
        korder = np.argsort(send_keys)
        sk = send_keys[korder]
        pos = np.minimum(np.searchsorted(sk, ekeys), len(sk) - 1)
        hit = sk[pos] == ekeys
        echannel[hit] = send_channels[korder][pos[hit]]
    clicks = ekind == "click"
    for ch in CHANNELS:
        # a customer clicking one message twice counts once
        sel = clicks & (echannel == ch)
        _, first = np.unique(ekeys[sel], return_index=True)
        cols[f"clicked_{ch}"] = np.bincount(erow[sel][first], minlength=n).astype(np.float64)
    opens = (ekind == "open") & (echannel == "email")
    _, first_open = np.unique(ekeys[opens], return_index=True)
    opened = np.bincount(erow[opens][first_open], minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["open_rate_email"] = np.where(cols["sent_email"] > 0, np.minimum(opened / cols["sent_email"], 1), np.nan)
    last_eng = np.full(n, -np.inf)
    np.maximum.at(last_eng, erow, et)
    cols["days_since_engagement"] = np.where(np.isfinite(last_eng), cutoff - last_eng, np.nan)
    hours = np.floor((et % 1.0) * 24 + 1e-6).astype(np.int64) % 24  # + 1e-6: 19:00 is not 18.999
    engagement_hours = np.bincount(erow * 24 + hours, minlength=n * 24).reshape(n, 24).astype(np.float32)
    cols["peak_hour"] = np.where(engagement_hours.sum(axis=1) > 0, engagement_hours.argmax(axis=1), np.nan)

    # ---- tenure: the first thing we know about the customer
    first_seen = np.full(n, np.inf)
    np.minimum.at(first_seen, row, t)
    np.minimum.at(first_seen, vrow, vt)
    np.minimum.at(first_seen, srow[skeep], st[skeep])
    np.minimum.at(first_seen, erow, et)
    cols["tenure_days"] = np.where(np.isfinite(first_seen), cutoff - first_seen, np.nan)

    X = np.column_stack([cols[c] for c in COLUMNS]) if n else np.zeros((0, len(COLUMNS)))
    interactions = {
        "row": np.r_[irow[ikeep], vrow].astype(np.int64),
        "product": np.r_[products, np.asarray(activity.view_product, dtype=str)[vkeep]
                         if activity.view_product else np.array([], str)].astype(str),
        "kind": np.r_[np.full(int(ikeep.sum()), "purchase"), np.full(len(vrow), "view")],
        "time": np.r_[it[ikeep], vt],
    }
    return FeatureTable(
        as_of=as_of,
        profile_ids=ids.tolist(),
        columns=COLUMNS,
        X=X,
        extras={
            "engagement_hours": engagement_hours,
            "categories": [str(vocab[i]) for i in top],
            "category_affinity": affinity,
            "interactions": interactions,
            "channels": CHANNELS,
        },
    )


def outcomes(activity: Activity, table: FeatureTable, horizon_days: float) -> dict[str, Any]:
    """Orders and spend of each row of ``table`` in ``(as_of, as_of + horizon_days]``."""
    import numpy as np

    ids = np.asarray(table.profile_ids, dtype=str)
    start = days(table.as_of)
    row, _, total = _orders(activity, ids, start + horizon_days, since=start)
    n = len(ids)
    return {
        "orders": np.bincount(row, minlength=n).astype(np.float64),
        "spend": np.bincount(row, weights=total, minlength=n),
    }


def training_set(activity: Activity, profile_ids: list[str], as_of: datetime, horizon_days: float) -> TrainingSet:
    """Features at ``as_of`` of the customers who had ordered by then, with their outcomes
    in the ``horizon_days`` after it (``activity`` must reach ``as_of + horizon_days``)."""
    return _training_set(activity, build(activity, profile_ids, as_of), horizon_days)


def _training_set(activity: Activity, table: FeatureTable, horizon_days: float) -> TrainingSet:
    table = table.rows(table.column("orders") > 0)
    return TrainingSet(features=table, outcomes=outcomes(activity, table, horizon_days), horizon_days=horizon_days)


class Workbench:
    """The feature tables and training sets of one activity read and one list of customers,
    each cutoff built once: training every model reads the same two cutoffs per horizon
    (seven models, two horizons: 14 builds, 4 of them distinct; a build over the simulated
    quarter's 10,000 customers takes some 0.4 s). Every call answers a copy of its own, so
    a model that changes an array in place changes nothing for the next."""

    def __init__(self, activity: Activity, profile_ids: list[str]) -> None:
        self.activity = activity
        self.profile_ids = profile_ids
        self._tables: dict[datetime, FeatureTable] = {}
        self._sets: dict[tuple[datetime, float], TrainingSet] = {}

    def _table(self, as_of: datetime) -> FeatureTable:
        if as_of not in self._tables:
            self._tables[as_of] = build(self.activity, self.profile_ids, as_of)
        return self._tables[as_of]

    def build(self, as_of: datetime) -> FeatureTable:
        """:func:`build` at ``as_of``."""
        return copy.deepcopy(self._table(as_of))

    def training_set(self, as_of: datetime, horizon_days: float) -> TrainingSet:
        """:func:`training_set` at ``as_of`` over ``horizon_days``."""
        key = (as_of, float(horizon_days))
        if key not in self._sets:
            self._sets[key] = _training_set(self.activity, self._table(as_of), horizon_days)
        return copy.deepcopy(self._sets[key])


class PerProfileActivity:
    """:class:`~chalicelib.ports.ActivityReader` for any adapter set, through the event store's
    and ledger's per-profile reads (DynamoDB: one ``gsi1`` query each). Used by the scoring
    worker shard by shard where no bulk reader exists."""

    EVENTS = ("Order Completed", "Product Viewed", "Email Opened", "Email Link Clicked")

    def __init__(self, events: EventStore, ledger: SendLedger, catalog: Any = None, max_events: int = 10_000) -> None:
        self.events = events
        self.ledger = ledger
        self.catalog = catalog
        self.max_events = max_events

    def profile_ids(self) -> list[str]:
        raise NotImplementedError("list profiles through the profile store's scan")

    def activity(self, profile_ids: list[str] | None, until: datetime) -> Activity:
        if profile_ids is None:
            raise ValueError("profile_ids: the per-profile reader needs the profiles of one shard")
        a = Activity()
        for pid in profile_ids:
            for e in self.events.for_profile(pid, limit=self.max_events):
                if e.timestamp > until or e.event not in self.EVENTS:
                    continue
                t = days(e.timestamp)
                props = e.payload.get("properties") or {}
                if e.event == "Order Completed":
                    total = props.get("total", props.get("revenue"))
                    a.order_profile.append(pid)
                    a.order_time.append(t)
                    a.order_total.append(float(total) if isinstance(total, int | float) else 0.0)
                    a.order_id.append(str(props.get("order_id") or e.message_id))
                    for p in props.get("products") or []:
                        if isinstance(p, dict) and p.get("product_id") is not None:
                            a.item_profile.append(pid)
                            a.item_time.append(t)
                            a.item_product.append(str(p["product_id"]))
                elif e.event == "Product Viewed":
                    a.view_profile.append(pid)
                    a.view_time.append(t)
                    a.view_product.append(str(props.get("product_id") or ""))
                    a.view_category.append(str(props.get("category") or ""))
                elif not props.get("machine"):
                    a.engagement_profile.append(pid)
                    a.engagement_time.append(t)
                    a.engagement_kind.append("open" if e.event == "Email Opened" else "click")
                    a.engagement_key.append(str(props.get("ledger_key") or ""))
            for entry in self.ledger.for_profile(pid):
                if entry.status == "sent" and entry.created_at <= until:
                    a.send_key.append(entry.key)
                    a.send_profile.append(pid)
                    a.send_channel.append(entry.channel)
                    a.send_time.append(days(entry.created_at))
        if self.catalog is not None:
            for product in self.catalog.all():
                if product.categories:
                    a.categories.setdefault(product.product_id, list(product.categories))
        return a


def reader(stores: Any) -> ActivityReader:
    """The bulk reader of an adapter set, or the per-profile one."""
    if getattr(stores, "activity", None) is not None:
        return stores.activity  # type: ignore[no-any-return]
    return PerProfileActivity(stores.events, stores.ledger, stores.catalog)
