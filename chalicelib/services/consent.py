"""Consent changes that customers make themselves (unsubscribe links, one-click)."""

from __future__ import annotations

from chalicelib.clock import Clock, iso
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ports import ProfileStore
from chalicelib.services.credentials import Credentials


class ConsentService:
    def __init__(self, profiles: ProfileStore, credentials: Credentials, clock: Clock) -> None:
        self.profiles = profiles
        self.credentials = credentials
        self.clock = clock

    def set_consent(self, profile_id: str, channel: str, state: str) -> None:
        for _ in range(10):
            profile = self.profiles.get(profile_id)
            if profile is None:
                raise NotFound("the profile behind this link no longer exists", field="token")
            expected = profile.version
            consent = dict(profile.traits.get("consent") or {})
            consent[channel] = state
            profile.traits["consent"] = consent
            profile.traits[f"consent_{channel}_changed_at"] = iso(self.clock.now())
            profile.updated_at = self.clock.now()
            if self.profiles.save(profile, expected):
                return
        raise RuntimeError("profile kept changing")

    def unsubscribe(self, token: str) -> str:
        """Honour an unsubscribe link (GET) or an RFC 8058 one-click POST. Idempotent."""
        if not token:
            raise BadRequest("token is required", field="token")
        data = self.credentials.verify("unsubscribe", token)
        self.set_consent(data["p"], data["c"], "unsubscribed")
        return data["c"]
