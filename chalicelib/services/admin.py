"""Read models for the admin API: a profile, its decision log, the send ledger."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from chalicelib.clock import iso
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import LedgerEntry, Stores


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    out = asdict(entry)
    out["created_at"] = iso(entry.created_at)
    out["updated_at"] = iso(entry.updated_at)
    return out


class AdminService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def profile(self, profile_id: str) -> dict[str, Any]:
        profile = self.stores.profiles.get(profile_id)
        if profile is None:
            raise NotFound(f"no profile {profile_id!r}", field="profile_id")
        return {
            "profile_id": profile.profile_id,
            "traits": profile.traits,
            "identifiers": profile.identifiers,
            "created_at": iso(profile.created_at) if profile.created_at else None,
            "updated_at": iso(profile.updated_at) if profile.updated_at else None,
            "journeys": [
                {
                    "journey": s.journey,
                    "entity": s.entity,
                    "version": s.version,
                    "step": s.step,
                    "status": s.status,
                    "entered_at": iso(s.entered_at),
                }
                for s in self.stores.journeys.for_profile(profile_id)
            ],
        }

    def decisions(self, profile_id: str) -> list[dict[str, Any]]:
        return [entry_json(e) for e in self.stores.ledger.for_profile(profile_id)]

    def ledger(self, limit: str | int) -> list[dict[str, Any]]:
        try:
            n = int(limit)
        except ValueError as exc:
            raise BadRequest("limit must be an integer", field="limit") from exc
        if not 1 <= n <= 10_000:
            raise BadRequest("limit must be between 1 and 10000", field="limit")
        return [entry_json(e) for e in self.stores.ledger.all(n)]
