"""Reading the tables the estimators take: any mapping of column name to a 1-D array-like.

A dict of lists, a dict of numpy arrays, a numpy structured array and a pandas DataFrame all
work (each supports ``table["column"]``). Bad input raises :class:`InvalidInput` naming the
column, which the HTTP layer turns into a 400.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from .errors import InvalidInput

__all__ = ["InvalidInput", "column", "epoch_seconds", "id_column", "lookup", "same_length"]


def n_rows(table: Any, required: str) -> int:
    return len(column(table, required))


def column(table: Any, name: str, *, required: bool = True, default: Any = None) -> Any:
    """``table[name]`` as a 1-D numpy array; ``default`` (broadcast later) when optional and absent."""
    try:
        values = table[name]
    except (KeyError, ValueError, IndexError, TypeError):
        if required:
            raise InvalidInput(f"the table has no column {name!r}", field=name) from None
        return default
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInput(f"column {name!r} must be one-dimensional, got shape {arr.shape}", field=name)
    return arr


def id_column(table: Any, name: str) -> np.ndarray:
    """An id column as unicode strings (ids are compared as text: 42 and "42" are one customer)."""
    arr = column(table, name)
    if arr.dtype.kind == "f":
        raise InvalidInput(f"column {name!r} holds floats; ids must be strings or integers", field=name)
    out = arr.astype(str)
    if len(out) and (out == "").any():
        raise InvalidInput(f"column {name!r} has an empty id at row {int(np.argmax(out == ''))}", field=name)
    return out


def epoch_seconds(values: Any, name: str) -> np.ndarray:
    """Timestamps as float seconds since the epoch (UTC).

    Accepts numpy datetime64 (taken as UTC), numbers (already epoch seconds) and datetime objects
    (naive ones are taken as UTC).
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise InvalidInput(f"column {name!r} has a missing timestamp", field=name)
        return arr.astype("datetime64[ms]").astype(np.int64) / 1000.0
    if arr.dtype.kind in "iuf":
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise InvalidInput(f"column {name!r} has a missing or infinite timestamp", field=name)
        return out
    out = np.empty(len(arr), dtype=np.float64)
    for i, v in enumerate(arr):
        if not isinstance(v, datetime):
            raise InvalidInput(f"column {name!r} row {i}: {type(v).__name__} is not a timestamp", field=name)
        out[i] = v.timestamp() if v.tzinfo else v.replace(tzinfo=UTC).timestamp()
    return out


def same_length(columns: dict[str, np.ndarray]) -> None:
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        bad = next(k for k, n in lengths.items() if n != lengths[first])
        raise InvalidInput(f"column {bad!r} has {lengths[bad]} rows, {first!r} has {lengths[first]}", field=bad)


def lookup(sorted_ids: np.ndarray, ids: Any) -> np.ndarray:
    """Positions of ``ids`` in the sorted ``sorted_ids``; -1 where absent (vectorised)."""
    wanted = np.asarray(ids).astype(str)
    if len(sorted_ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, wanted)
    pos = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == wanted, pos, -1).astype(np.int64)

