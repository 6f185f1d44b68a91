"""Where a customer's address for each channel kind lives on the profile.

A light module on purpose: the send path (which loads the template engine) and the inbound
webhook path (on the HTTP function, which must not) both read it.
"""

from __future__ import annotations

import json
from typing import Any

# channel kind -> the profile trait (and identifier kind) holding its address; a webhook goes
# to the shop's own endpoint (the plugin's setting) and names the customer by profile id
ADDRESS_TRAIT = {
    "email": "email",
    "sms": "phone",
    "push": "push_token",
    "messenger": "chat_id",
}


def address_text(value: Any) -> str:
    """A profile's address as channels get it: a Web Push subscription kept as an object is
    its JSON (keys sorted, so the same subscription is the same text)."""
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value) if value else ""
