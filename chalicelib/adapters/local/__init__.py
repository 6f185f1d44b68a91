"""The embedded default adapter set: SQLite (WAL) in a data folder and a blob folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from chalicelib.adapters.local.blobs import FolderBlobStore
from chalicelib.adapters.local.catalog import SqliteCatalogStore
from chalicelib.adapters.local.scores import SqliteActivity, SqliteScoreStore
from chalicelib.adapters.local.sqlite import (
    QUEUE_SCHEMA,
    Database,
    SqliteEventStore,
    SqliteJourneyStore,
    SqliteProfileStore,
    SqliteQueue,
    SqliteSecrets,
    SqliteSendLedger,
)
from chalicelib.ports import Stores
from chalicelib.services.ingest import INGEST_QUEUE


def local_stores(data_dir: str | Path | None) -> Stores:
    """Stores on ``<data_dir>/omnicast.db``; ``None`` gives an in-memory database (tests)."""
    if data_dir is None:
        db, inbox = Database(":memory:"), Database(":memory:", schema=QUEUE_SCHEMA)
        # the folder lives as long as the blob store does
        scratch = tempfile.TemporaryDirectory(prefix="omnicast-blobs-")
        blob_root = Path(scratch.name)
    else:
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)  # secrets and personal data live here
        db = Database(root / "omnicast.db")
        inbox = Database(root / "inbox.db", schema=QUEUE_SCHEMA)  # the ingest queue: what the API takes in
        blob_root = root / "blobs"
    blobs = FolderBlobStore(blob_root)
    if data_dir is None:
        blobs.scratch = scratch  # type: ignore[attr-defined]
    return Stores(
        events=SqliteEventStore(db),
        profiles=SqliteProfileStore(db),
        ledger=SqliteSendLedger(db),
        journeys=SqliteJourneyStore(db),
        queue=SqliteQueue(db, apart={INGEST_QUEUE: inbox}),
        blobs=blobs,
        secrets=SqliteSecrets(db),
        catalog=SqliteCatalogStore(db),
        scores=SqliteScoreStore(db),
        activity=SqliteActivity(db),
        transaction=db.tx,
    )


__all__ = ["Database", "FolderBlobStore", "local_stores"]
