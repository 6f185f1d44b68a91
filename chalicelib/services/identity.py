"""The identity graph: every identifier of a customer resolves to one profile.

Identifiers: ``user_id``, each platform's customer id (``shopify_customer_id``, ...),
``email`` (normalised), ``phone`` (E.164) and ``anonymous_id``. Each identifier points at
one profile (first writer wins, a conditional write). When one event carries identifiers
of two profiles, they merge, unless that would be unsafe:

- two profiles with different user ids (or different ids on one platform) never merge,
  even when they share an e-mail or a phone (a family address, a shared till login);
- an anonymous profile (only anonymous ids) always joins the known profile: the visitor's
  browsing history becomes the customer's.

A merged profile keeps a ``merged_into`` pointer that resolution follows, and the
surviving profile lists ``merged_from``; both record why, in ``traits._identity``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import phonenumbers

from chalicelib.clock import Clock, iso
from chalicelib.ports import Profile, ProfileStore

log = logging.getLogger("omnicast.identity")
NAMESPACE = uuid.UUID("6f6d6e69-6361-7374-0000-000000000001")
STRONG = ("user_id", "shopify_customer_id", "woocommerce_customer_id", "bigcommerce_customer_id", "stripe_customer_id")
ORDER = (*STRONG, "email", "phone", "anonymous_id")
MAX_LOG = 50


def normalise_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    if value.count("@") != 1 or value.startswith("@") or value.endswith("@") or " " in value:
        return None
    return value


def normalise_phone(value: Any, region: str | None = None) -> str | None:
    """E.164 (``+33612345678``), or None if it is not a valid number."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        number = phonenumbers.parse(str(value), (region or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _region(payload: dict[str, Any], traits: dict[str, Any]) -> str | None:
    address = traits.get("address")
    if isinstance(address, dict) and isinstance(address.get("country"), str) and len(address["country"]) == 2:
        return str(address["country"])
    locale = (payload.get("context") or {}).get("locale")
    if isinstance(locale, str) and len(locale) == 5:
        return locale[3:]
    return None


def identifiers(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Every identifier an event carries, strongest first, normalised, without repeats."""
    found: dict[tuple[str, str], None] = {}
    context = payload.get("context") or {}
    traits = payload.get("traits") or context.get("traits") or {}
    if payload.get("userId"):
        found[("user_id", str(payload["userId"]))] = None
    for ext in context.get("externalIds") or []:
        if isinstance(ext, dict) and ext.get("id") not in (None, "") and isinstance(ext.get("type"), str):
            kind = ext["type"]
            if kind == "email":
                email = normalise_email(ext["id"])
                if email:
                    found[("email", email)] = None
            elif kind == "phone":
                phone = normalise_phone(ext["id"], _region(payload, traits))
                if phone:
                    found[("phone", phone)] = None
            else:
                found[(kind, str(ext["id"]))] = None
    email = normalise_email(traits.get("email"))
    if email:
        found[("email", email)] = None
    phone = normalise_phone(traits.get("phone"), _region(payload, traits)) if traits.get("phone") else None
    if phone:
        found[("phone", phone)] = None
    if payload.get("anonymousId"):
        found[("anonymous_id", str(payload["anonymousId"]))] = None
    if payload.get("type") == "alias" and payload.get("previousId"):
        found[("anonymous_id", str(payload["previousId"]))] = None
    rank = {k: i for i, k in enumerate(ORDER)}
    return sorted(found, key=lambda kv: rank.get(kv[0], len(STRONG)))


def _note(profile: Profile, at: str, action: str, reason: str) -> None:
    meta = profile.traits.setdefault("_identity", {})
    entries = meta.setdefault("log", [])
    entries.append({"at": at, "action": action, "reason": reason})
    del entries[:-MAX_LOG]


def _strong(profile: Profile) -> dict[str, str]:
    return {k: v for k, v in profile.identifiers.items() if k in STRONG}


class IdentityResolver:
    def __init__(self, profiles: ProfileStore, clock: Clock) -> None:
        self.profiles = profiles
        self.clock = clock

    def canonical(self, profile_id: str, read: dict[str, Profile | None] | None = None) -> str:
        """Follow ``merged_into`` pointers to the surviving profile. ``read`` keeps the profiles
        read (one lookup of an event's identifiers reads each profile once, not once per identifier)."""
        read = {} if read is None else read
        for _ in range(10):
            if profile_id not in read:
                read[profile_id] = self.profiles.get(profile_id)
            profile = read[profile_id]
            target = profile and profile.traits.get("_identity", {}).get("merged_into")
            if not target:
                return profile_id
            profile_id = target
        return profile_id

    def resolve(self, ids: list[tuple[str, str]], read: dict[str, Profile | None] | None = None) -> str:
        """The profile id for an event's identifiers, merging and linking as the rules allow.

        ``read`` (if given) is left holding the profiles read on the way that are still as
        stored (a merged profile is dropped from it): the caller need not read them again."""
        if not ids:
            raise ValueError("an event without any identifier")
        owners: dict[tuple[str, str], str] = {}
        read = {} if read is None else read  # nothing is written until a target is chosen
        for kind, value in ids:
            pid = self.profiles.resolve(kind, value)
            if pid:
                owners[(kind, value)] = self.canonical(pid, read)
        incoming = {k: v for k, v in ids if k in STRONG}
        target = ""
        for pid in dict.fromkeys(owners.values()):  # owners of the strongest identifiers first
            owner = read[pid] if pid in read else self.profiles.get(pid)
            held = _strong(owner) if owner else {}
            if all(held.get(k, v) == v for k, v in incoming.items()):
                target = pid
                break
        if not target:
            kind, value = ids[0]
            # deterministic, so a redelivered first event creates the same profile
            target = "p_" + uuid.uuid5(NAMESPACE, f"{kind}:{value}").hex[:20]
        for other in dict.fromkeys(owners.values()):
            if other != target:
                read.pop(other, None)
                read.pop(target, None)
                self._merge(other, target, ids)
        for kind, value in ids:
            if owners.get((kind, value)) == target:
                continue  # already points here
            if not self.profiles.link(kind, value, target):
                holder = self.canonical(self.profiles.resolve(kind, value) or target)
                if holder != target:
                    log.info("identifier of kind %s stays with another profile (merge refused)", kind)
        return target

    def _merge(self, source_id: str, target_id: str, ids: list[tuple[str, str]]) -> bool:
        at = iso(self.clock.now())
        incoming = {k: v for k, v in ids if k in STRONG}
        for _ in range(10):
            source = self.profiles.get(source_id)
            target = self.profiles.get(target_id) or Profile(profile_id=target_id, created_at=self.clock.now())
            if source is None:
                return False
            conflicts = [k for k, v in _strong(source).items() if (_strong(target).get(k) or incoming.get(k, v)) != v]
            if conflicts:
                shared = ", ".join(sorted({k for k, _ in ids if k in ("email", "phone")})) or "an identifier"
                reason = f"refused: {shared} shared by profiles with different {', '.join(conflicts)}"
                _note(source, at, "merge_refused", f"{reason} ({target_id})")
                if self.profiles.save(source, source.version):
                    log.info("merge of two profiles refused: different %s", ", ".join(conflicts))
                    return False
                continue
            why = "anonymous visitor identified" if not _strong(source) else "same customer, matching identifiers"
            for key, value in source.traits.items():
                if not key.startswith("_"):
                    target.traits.setdefault(key, value)
            for kind, value in source.identifiers.items():
                target.identifiers.setdefault(kind, value)
            meta = target.traits.setdefault("_identity", {})
            meta["merged_from"] = sorted({*meta.get("merged_from", []), source_id})
            _note(target, at, "merged", f"{source_id} merged in: {why}")
            if not self.profiles.save(target, target.version):
                continue
            source.traits.setdefault("_identity", {})["merged_into"] = target_id
            _note(source, at, "merged_into", f"into {target_id}: {why}")
            self.profiles.save(source, source.version)
            return True
        return False
