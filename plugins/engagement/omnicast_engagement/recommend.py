"""Item-to-item product recommendations from co-purchase and co-view, with a popularity fallback.

Input: an interactions table (see :mod:`._tables`) with columns ``customer_id``, ``item_id``,
``kind`` (``purchase`` / ``view``, or the Segment names ``Order Completed`` / ``Product
Viewed``; optional, default purchase) and ``timestamp`` (optional unless ``half_life_days``).

``fit`` builds the sparse customer x item matrix M (a purchase weighs 1, a view
``view_weight``, each optionally decayed by age), the item x item co-occurrence C = M^T M,
normalises it (cosine: C_ij / sqrt(C_ii C_jj); lift: C_ij N / (C_ii C_jj)), drops pairs seen
together by fewer than ``min_support`` customers and keeps each item's ``n_neighbors`` most
similar items. ``recommend`` scores a customer's items as history x similarity, ranks every
item with a similarity score ahead of popular items (the fallback for cold customers and for
filling up to k), and never returns an item the customer bought or one not in stock.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._tables import InvalidInput, column, epoch_seconds, id_column, lookup, same_length
from .artifact import ExplicitArtifact

PURCHASE_KINDS = ("purchase", "Order Completed")
VIEW_KINDS = ("view", "Product Viewed")
CHUNK = 2048  # customers scored at once: CHUNK x n_items floats in memory


class Recommendation(NamedTuple):
    item_id: str
    score: float  # similarity score ("similar") or number of purchasers ("popular")
    source: str  # "similar" or "popular"


class _Interactions(NamedTuple):
    customers: np.ndarray  # str
    items: np.ndarray  # str
    purchase: np.ndarray  # bool
    timestamps: np.ndarray | None  # epoch seconds


def read_interactions(X: Any) -> _Interactions:
    customers = id_column(X, "customer_id")
    items = id_column(X, "item_id")
    kind = column(X, "kind", required=False)
    ts = column(X, "timestamp", required=False)
    cols = {"customer_id": customers, "item_id": items}
    if kind is not None:
        cols["kind"] = kind
    if ts is not None:
        cols["timestamp"] = ts
    same_length(cols)
    if kind is None:
        purchase = np.ones(len(customers), dtype=bool)
    else:
        kind = kind.astype(str)
        purchase = np.isin(kind, PURCHASE_KINDS)
        unknown = ~purchase & ~np.isin(kind, VIEW_KINDS)
        if unknown.any():
            bad = kind[int(np.argmax(unknown))]
            raise InvalidInput(f"column 'kind' has {bad!r}; use purchase or view", field="kind")
    seconds = epoch_seconds(ts, "timestamp") if ts is not None else None
    return _Interactions(customers, items, purchase, seconds)


class _RecommenderBase(ExplicitArtifact, BaseEstimator):
    """What both recommenders share: vocabularies, history, popularity and the ranking."""

    # fitted: customer_ids_, item_ids_ (sorted str arrays), history_ (customers x items, float32),
    # purchased_ (customers x items, bool), popularity_ (decayed purchasers per item),
    # purchasers_ (distinct purchasers per item), similarity_ (items x items)

    def _fit_common(self, data: _Interactions, half_life_days: float | None, view_weight: float) -> sparse.csr_matrix:
        if len(data.customers) == 0:
            raise InvalidInput("the interactions table is empty", field="customer_id")
        self.customer_ids_, c = np.unique(data.customers, return_inverse=True)
        self.item_ids_, i = np.unique(data.items, return_inverse=True)
        shape = (len(self.customer_ids_), len(self.item_ids_))
        weight = np.ones(len(c))
        if half_life_days is not None:
            if data.timestamps is None:
                raise InvalidInput("half_life_days needs a 'timestamp' column", field="timestamp")
            age_days = (data.timestamps.max() - data.timestamps) / 86400.0
            weight = 0.5 ** (age_days / half_life_days)
        p = data.purchase
        purchases = sparse.csr_matrix((weight[p], (c[p], i[p])), shape=shape, dtype=np.float64)
        views = sparse.csr_matrix((weight[~p], (c[~p], i[~p])), shape=shape, dtype=np.float64)
        purchases.data = np.minimum(purchases.data, 1.0)  # buying an item twice is one signal, not two
        views.data = np.minimum(views.data, 1.0)
        self.purchased_ = (purchases > 0).astype(bool).tocsr()
        self.popularity_ = np.asarray(purchases.sum(axis=0)).ravel()
        self.purchasers_ = np.asarray(self.purchased_.sum(axis=0)).ravel().astype(np.int64)
        history = (purchases + view_weight * views).tocsr().astype(np.float32)
        history.eliminate_zeros()
        history.sort_indices()  # ties in explanations go to the lowest item index
        self.history_ = history
        return views

    # ------------------------------------------------------------------ ranking
    def _stock_mask(self, in_stock: Any) -> np.ndarray:
        n = len(self.item_ids_)
        if in_stock is None:
            return np.ones(n, dtype=bool)
        if callable(in_stock):
            return np.fromiter((bool(in_stock(x)) for x in self.item_ids_), dtype=bool, count=n)
        arr = np.asarray(list(in_stock) if not isinstance(in_stock, np.ndarray) else in_stock)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise InvalidInput(f"in_stock as a mask needs {n} booleans, got {arr.shape}", field="in_stock")
            return arr
        return np.isin(self.item_ids_, arr.astype(str))

    def recommend_indices(
        self, customer_ids: Any, k: int = 10, *, in_stock: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised form of :meth:`recommend`: (item index, score, is_similar) arrays of shape
        (n_customers, k); index -1 where fewer than k items qualify."""
        check_is_fitted(self, "similarity_")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}", field="k")
        rows = lookup(self.customer_ids_, customer_ids)
        k = int(k)
        stock = self._stock_mask(in_stock)
        # the fallback order: items in stock, most purchased first (ties by id)
        popular = np.argsort(-self.popularity_, kind="stable")
        popular = popular[stock[popular]]
        out_idx = np.full((len(rows), k), -1, dtype=np.int64)
        out_score = np.zeros((len(rows), k))
        out_similar = np.zeros((len(rows), k), dtype=bool)
        known = np.clip(rows, 0, None)
        for start in range(0, len(rows), CHUNK):
            r = known[start:start + CHUNK]
            n = len(r)
            unknown = rows[start:start + CHUNK] < 0
            if len(self.customer_ids_) == 0:  # a history with no customers (e.g. a fresh chunk)
                history = sparse.csr_matrix((n, len(self.item_ids_)), dtype=np.float32)
                bought = sparse.csr_matrix((n, len(self.item_ids_)), dtype=bool)
            else:
                history = self.history_[r]
                bought = self.purchased_[r]
            if unknown.any() and len(self.customer_ids_):  # unknown: no history (row 0 is someone else's)
                keep = sparse.diags((~unknown).astype(np.float32))
                history = (keep @ history).tocsr()
                bought = (keep @ bought.astype(np.float32)).astype(bool).tocsr()
            # 1. items with a similarity score: sparse, in stock, not bought; top k per row
            sim_r, sim_c, sim_v = _top_k_per_row((history @ self.similarity_).tocsr(), bought, stock, k)
            rank = np.arange(len(sim_r)) - np.searchsorted(sim_r, np.arange(n))[sim_r]
            top = rank < k
            picks = np.full((n, k), -1, dtype=np.int64)
            picks[sim_r[top], rank[top]] = sim_c[top]
            block = slice(start, start + n)
            out_idx[block] = picks
            out_score[block][sim_r[top], rank[top]] = sim_v[top]
            out_similar[block][sim_r[top], rank[top]] = True
            n_sim = np.bincount(sim_r[top], minlength=n)
            # 2. fill with popular items not bought and not picked: a prefix of the popular order
            # long enough for the customer who bought the most of it
            need = k - n_sim
            if not need.any() or not len(popular):
                continue
            prefix_len = min(len(popular), k + int(np.diff(bought.indptr).max(initial=0)))
            prefix = popular[:prefix_len]
            excluded = bought[:, prefix].toarray()
            excluded |= (prefix[None, :, None] == picks[:, None, :]).any(axis=2)
            allowed = ~excluded
            slot = np.cumsum(allowed, axis=1) - 1 + n_sim[:, None]
            take = allowed & (slot < k)
            tr, tc = np.nonzero(take)
            out_idx[block][tr, slot[tr, tc]] = prefix[tc]
            out_score[block][tr, slot[tr, tc]] = self.popularity_[prefix[tc]]
        return out_idx, out_score, out_similar

    def recommend(self, customer_ids: Any, k: int = 10, *, in_stock: Any = None) -> list[list[Recommendation]]:
        """Up to ``k`` items per customer, best first, as :class:`Recommendation` tuples.

        ``in_stock``: None (everything is in stock), a collection of item ids in stock, a boolean
        mask over ``item_ids_`` or a predicate on an item id. Unknown and cold customers get the
        popular items; bought items are never recommended.
        """
        idx, score, similar = self.recommend_indices(customer_ids, k, in_stock=in_stock)
        ids = self.item_ids_
        out: list[list[Recommendation]] = []
        for row_idx, row_score, row_sim in zip(idx.tolist(), score.tolist(), similar.tolist(), strict=True):
            out.append([
                Recommendation(str(ids[j]), s, "similar" if m else "popular")
                for j, s, m in zip(row_idx, row_score, row_sim, strict=True) if j >= 0
            ])
        return out

    def reason(self, customer_id: str, item_id: str) -> dict[str, Any]:
        """The structured why: ``{"because": anchor item or None, "co_purchased": n, "co_viewed": n,
        "similarity": s, "purchasers": n}``; ``because`` is the customer's item that contributed
        most to ``item_id``'s score (None for a popularity pick)."""
        check_is_fitted(self, "similarity_")
        (j,) = lookup(self.item_ids_, [item_id])
        if j < 0:
            raise InvalidInput(f"{item_id!r} is not in the model's catalogue", field="item_id")
        out: dict[str, Any] = {"because": None, "co_purchased": 0, "co_viewed": 0, "similarity": 0.0,
                               "purchasers": int(self.purchasers_[j])}
        (c,) = lookup(self.customer_ids_, [customer_id])
        if c >= 0:
            contrib = self.history_[c].toarray().ravel() * self.similarity_[:, j].toarray().ravel()
            if contrib.max(initial=0.0) > 0:
                i = int(np.argmax(contrib))
                out.update(because=str(self.item_ids_[i]), similarity=float(self.similarity_[i, j]),
                           co_purchased=int(self.copurchase_[i, j]) if hasattr(self, "copurchase_") else 0,
                           co_viewed=int(self.coview_[i, j]) if hasattr(self, "coview_") else 0)
        return out

    def reasons(self, customer_ids: Any, idx: np.ndarray,
                similar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised :meth:`reason` for the output of :meth:`recommend_indices`: for each
        recommended item with a similarity score, the customer's item that contributed most
        (index into ``item_ids_``, -1 for popular picks) and how many customers bought or viewed
        the two together; arrays shaped like ``idx``."""
        check_is_fitted(self, "similarity_")
        anchor = np.full(idx.shape, -1, dtype=np.int64)
        bought = np.zeros(idx.shape, dtype=np.int64)
        viewed = np.zeros(idx.shape, dtype=np.int64)
        rows = lookup(self.customer_ids_, customer_ids)
        pr, ps = np.nonzero(similar & (idx >= 0) & (rows[:, None] >= 0))
        if len(pr) == 0:
            return anchor, bought, viewed
        j = idx[pr, ps]
        history = self.history_[rows[pr]]  # one history row per (customer, item) pair
        pair = np.repeat(np.arange(len(pr)), np.diff(history.indptr))
        contribution = history.data.astype(np.float64) * _values_at(self.similarity_, history.indices, j[pair])
        # per pair, the largest contribution (ties: lowest item index): one stable sort of a
        # composite key, as in _top_k_per_row
        key = pair * 2.0 + (1.0 - contribution / (contribution.max(initial=0.0) * (1 + 1e-9) or 1.0))
        order = np.argsort(key, kind="stable")
        first = order[np.searchsorted(pair[order], np.arange(len(pr)))]
        best = history.indices[first].astype(np.int64)
        anchor[pr, ps] = best
        if hasattr(self, "copurchase_"):
            bought[pr, ps] = _values_at(self.copurchase_, best, j)
            viewed[pr, ps] = _values_at(self.coview_, best, j)
        return anchor, bought, viewed

    def explain(self, customer_id: str, item_id: str) -> str:
        """Why ``item_id`` is recommended to ``customer_id``, in one sentence."""
        r = self.reason(customer_id, item_id)
        if r["because"] is None:
            return f"popular: bought by {r['purchasers']} customers"
        if r["co_purchased"] > 0:
            return f"co-purchased with {r['because']} by {r['co_purchased']} customers"
        return f"viewed together with {r['because']} by {r['co_viewed']} customers"

    def with_history(self, X: Any) -> _RecommenderBase:
        """A copy that keeps the learned similarities and popularity but recommends from the
        customers' histories in the interactions table ``X`` (e.g. fresher than the training
        data, so what a customer bought yesterday is excluded today). Items the model never saw
        are ignored."""
        check_is_fitted(self, "similarity_")
        data = read_interactions(X)
        new = copy.copy(self)
        j = lookup(self.item_ids_, data.items)
        keep = j >= 0
        new.customer_ids_, c = np.unique(data.customers[keep], return_inverse=True)
        j, purchase = j[keep], data.purchase[keep]
        shape = (len(new.customer_ids_), len(self.item_ids_))
        view_weight = float(getattr(self, "view_weight", 0.0))
        weight = np.where(purchase, 1.0, view_weight)
        if getattr(self, "half_life_days", None) is not None and data.timestamps is not None:
            age_days = (data.timestamps[keep].max(initial=0.0) - data.timestamps[keep]) / 86400.0
            weight = weight * 0.5 ** (age_days / self.half_life_days)
        bought = sparse.csr_matrix((np.ones(int(purchase.sum())), (c[purchase], j[purchase])), shape=shape)
        new.purchased_ = (bought > 0).astype(bool).tocsr()
        p = sparse.csr_matrix((weight[purchase], (c[purchase], j[purchase])), shape=shape)
        v = sparse.csr_matrix((weight[~purchase], (c[~purchase], j[~purchase])), shape=shape)
        p.data = np.minimum(p.data, 1.0)
        v.data = np.minimum(v.data, view_weight) if view_weight > 0 else v.data * 0
        history = (p + v).tocsr().astype(np.float32)
        history.eliminate_zeros()
        history.sort_indices()  # ties in explanations go to the lowest item index
        new.history_ = history
        return new

    def as_popularity(self) -> PopularityRecommender:
        """The popularity baseline of the same training data (shares the fitted arrays)."""
        check_is_fitted(self, "similarity_")
        base = PopularityRecommender(half_life_days=getattr(self, "half_life_days", None))
        for name in ("customer_ids_", "item_ids_", "history_", "purchased_", "popularity_", "purchasers_"):
            setattr(base, name, getattr(self, name))
        n = len(self.item_ids_)
        base.similarity_ = sparse.csr_matrix((n, n), dtype=np.float32)
        return base

    def scores(self, history: Any) -> Any:
        """Raw item scores for a prebuilt (n_customers, n_items) history matrix: history x similarity."""
        check_is_fitted(self, "similarity_")
        return sparse.csr_matrix(history) @ self.similarity_


class ItemToItemRecommender(_RecommenderBase):
    """Item-to-item recommender (cosine or lift-normalised co-occurrence, optional time decay).

    Parameters
    ----------
    similarity : "cosine" or "lift"
    view_weight : weight of a view relative to a purchase (0 ignores views)
    half_life_days : age at which an interaction counts half; None for no decay
    n_neighbors : similar items kept per item
    min_support : fewest customers who must share a pair for it to count
    """

    def __init__(self, similarity: str = "cosine", view_weight: float = 0.25, half_life_days: float | None = None,
                 n_neighbors: int = 50, min_support: int = 2) -> None:
        self.similarity = similarity
        self.view_weight = view_weight
        self.half_life_days = half_life_days
        self.n_neighbors = n_neighbors
        self.min_support = min_support

    def _check_params(self) -> None:
        if self.similarity not in ("cosine", "lift"):
            raise InvalidInput(f"similarity must be 'cosine' or 'lift', got {self.similarity!r}", field="similarity")
        if not 0 <= self.view_weight <= 1:
            raise InvalidInput(f"view_weight must be in [0, 1], got {self.view_weight!r}", field="view_weight")
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise InvalidInput(f"half_life_days must be > 0, got {self.half_life_days!r}", field="half_life_days")
        if int(self.n_neighbors) < 1:
            raise InvalidInput(f"n_neighbors must be >= 1, got {self.n_neighbors!r}", field="n_neighbors")
        if int(self.min_support) < 1:
            raise InvalidInput(f"min_support must be >= 1, got {self.min_support!r}", field="min_support")

    def fit(self, X: Any, y: None = None) -> ItemToItemRecommender:
        """Learn item-item similarities from the interactions table ``X``; returns self."""
        self._check_params()
        views = self._fit_common(read_interactions(X), self.half_life_days, self.view_weight)
        m = self.history_.astype(np.float64)
        co = (m.T @ m).tocsr()
        degree = co.diagonal()
        bought = self.purchased_.astype(np.float32)
        viewed = (views > 0).astype(np.float32)
        copurchase = (bought.T @ bought).tocsr()
        coview = (viewed.T @ viewed).tocsr()
        touched = ((m > 0).astype(np.float32)).tocsr()
        support = (touched.T @ touched).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        co = co.tocoo()
        pair_support = _values_at(support, co.row, co.col)
        keep = pair_support >= self.min_support
        r, c, v = co.row[keep], co.col[keep], co.data[keep]
        if self.similarity == "cosine":
            v = v / np.sqrt(degree[r] * degree[c])
        else:
            v = v * len(self.customer_ids_) / (degree[r] * degree[c])
        self.similarity_ = _top_per_row(r, c, v, len(self.item_ids_), int(self.n_neighbors))
        pattern = self.similarity_.tocoo()
        self.copurchase_ = _at(copurchase, pattern)
        self.coview_ = _at(coview, pattern)
        return self


class PopularityRecommender(_RecommenderBase):
    """The baseline: most-purchased items (optionally time-decayed), same filters as above."""

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = half_life_days

    def fit(self, X: Any, y: None = None) -> PopularityRecommender:
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise InvalidInput(f"half_life_days must be > 0, got {self.half_life_days!r}", field="half_life_days")
        self._fit_common(read_interactions(X), self.half_life_days, 0.0)
        n = len(self.item_ids_)
        self.similarity_ = sparse.csr_matrix((n, n), dtype=np.float32)
        return self


def _top_k_per_row(scores: sparse.csr_matrix, bought: sparse.csr_matrix, stock: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, value) of each row's k best positive entries that are in stock and not bought,
    sorted by row, then value descending, then column (ties broken by item index).

    One stable sort of a composite key (row, then 1 - value / max) over the nonzero entries,
    columns sorted within rows first so that equal values keep item order.
    """
    n = scores.shape[0]
    if scores.nnz == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    scores.sort_indices()
    row_of = np.repeat(np.arange(n), np.diff(scores.indptr))
    data = scores.data.astype(np.float64)
    valid = (data > 0) & stock[scores.indices]
    if bought.nnz:
        valid &= _values_at(bought.astype(np.int8).tocsr(), row_of, scores.indices) == 0
    row_of, cols, data = row_of[valid], scores.indices[valid].astype(np.int64), data[valid]
    if len(data) == 0:
        return row_of.astype(np.int64), cols, data
    key = row_of * 2.0 + (1.0 - data / (data.max() * (1 + 1e-9)))
    order = np.argsort(key, kind="stable")
    row_of, cols, data = row_of[order], cols[order], data[order]
    rank = np.arange(len(row_of)) - np.searchsorted(row_of, np.arange(n))[row_of]
    top = rank < k
    return row_of[top].astype(np.int64), cols[top], data[top]


def _top_per_row(r: np.ndarray, c: np.ndarray, v: np.ndarray, n: int, k: int) -> sparse.csr_matrix:
    """Keep the k largest values of each row (vectorised: sort by row, then by value)."""
    order = np.lexsort((-v, r))
    r, c, v = r[order], c[order], v[order]
    starts = np.searchsorted(r, np.arange(n))
    rank = np.arange(len(r)) - starts[r]
    keep = rank < k
    return sparse.csr_matrix((v[keep].astype(np.float32), (r[keep], c[keep])), shape=(n, n))


def _values_at(matrix: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if len(rows) == 0:
        return np.zeros(0, dtype=matrix.dtype)
    return np.asarray(matrix[rows, cols]).ravel()


def _at(matrix: sparse.csr_matrix, pattern: sparse.coo_matrix) -> sparse.csr_matrix:
    values = _values_at(matrix, pattern.row, pattern.col).astype(np.int32)
    return sparse.csr_matrix((values, (pattern.row, pattern.col)), shape=pattern.shape)


# --------------------------------------------------------------------------- evaluation
def time_split(X: Any, cutoff: float | np.datetime64) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(before, from) ``cutoff``: the training interactions and the held-out ones."""
    ts = epoch_seconds(column(X, "timestamp"), "timestamp")
    cut = float(epoch_seconds(np.asarray([cutoff]), "cutoff")[0])
    names = [n for n in ("customer_id", "item_id", "kind", "timestamp") if column(X, n, required=False) is not None]
    cols = {n: column(X, n) for n in names}
    before = ts < cut
    return {n: a[before] for n, a in cols.items()}, {n: a[~before] for n, a in cols.items()}


def precision_recall_at_k(model: _RecommenderBase, held_out: Any, k: int = 10, *,
                          in_stock: Any = None) -> dict[str, float]:
    """Mean precision@k and recall@k over customers with a held-out purchase of an item the
    model knows and they had not bought before (what a recommendation could have hit)."""
    data = read_interactions(held_out)
    customers, items = data.customers[data.purchase], data.items[data.purchase]
    j = lookup(model.item_ids_, items)
    c = lookup(model.customer_ids_, customers)
    known = j >= 0
    new = known.copy()
    seen = c >= 0
    idx = np.nonzero(known & seen)[0]
    new[idx] = ~np.asarray(model.purchased_[c[idx], j[idx]]).ravel().astype(bool)
    customers, j = customers[new], j[new]
    if len(customers) == 0:
        return {"precision": 0.0, "recall": 0.0, "customers": 0.0}
    who, inverse = np.unique(customers, return_inverse=True)
    truth = sparse.csr_matrix((np.ones(len(j)), (inverse, j)), shape=(len(who), len(model.item_ids_)))
    truth.data[:] = 1.0
    rec, _, _ = model.recommend_indices(who, k, in_stock=in_stock)
    rows = np.repeat(np.arange(len(who)), rec.shape[1])
    cols = rec.ravel()
    ok = cols >= 0
    hits = np.zeros(len(who))
    np.add.at(hits, rows[ok], _values_at(truth, rows[ok], cols[ok]))
    relevant = np.asarray(truth.sum(axis=1)).ravel()
    return {
        "precision": float(np.mean(hits / k)),
        "recall": float(np.mean(hits / relevant)),
        "customers": float(len(who)),
    }
