"""Many units of work in one commit, each failing alone.

A worker's batch (queued events, a wave of sends and what the channels answered) commits
once where the stores have transactions. A unit that fails must leave nothing behind while
the others are kept: a savepoint around each would do, but savepoints cost more than most
units' own writes (SQLite copies each page a unit changes before it changes it). Failures
are rare, so the batch runs without them first; if a unit fails, the whole batch rolls back
and runs again with a savepoint per unit, and only the failing ones roll back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

log = logging.getLogger("omnicast.batches")

# a unit: what it does, and what to do when it raises (in the careful run)
Unit = tuple[Callable[[], Any], Callable[[Exception], None]]


class _RunCarefully(Exception):
    """A unit of a batch run without savepoints failed: the batch runs again with them."""


def run_in_one_commit(transaction: Callable[[], AbstractContextManager[Any]] | None,
                      units: Callable[[], Iterable[Unit]]) -> None:
    """Run the units ``units()`` yields in one transaction. ``units`` is called again for the
    careful run (so whatever it collects starts afresh); code between its yields runs inside
    the transaction. Without a transaction (DynamoDB) each unit stands alone from the start."""
    tx = transaction or nullcontext
    careful = tx is nullcontext
    while True:
        try:
            with tx():
                for do, failed in units():
                    try:
                        with tx() if careful else nullcontext():
                            do()
                    except Exception as exc:
                        if not careful:
                            raise _RunCarefully from exc
                        failed(exc)
            return
        except _RunCarefully as again:
            # the type only: an exception's text may carry a customer's data
            log.info("a batch runs again, a savepoint per unit (a unit raised %s)", type(again.__cause__).__name__)
            careful = True
