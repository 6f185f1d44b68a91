"""Configuration: a TOML file and/or ``OMNICAST_*`` environment variables, validated.

Precedence: defaults < config file (``OMNICAST_CONFIG`` or ``<data_dir>/omnicast.toml``)
< environment. Nested keys use a double underscore in the environment::

    OMNICAST_RUNTIME=aws
    OMNICAST_CHANNELS__EMAIL=smtp             # which plugin serves the email channel
    OMNICAST_PLUGIN_SETTINGS__SMTP__PORT=2525 # a plugin's own setting
    OMNICAST_PLUGINS__BLOCK=sandbox_sms,foo   # comma-separated lists

Every error names the setting (``channels.email``) and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chalicelib.errors import ConfigError

ENV_PREFIX = "OMNICAST_"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginSelection(Strict):
    allow: list[str] | None = None  # None: every installed plugin
    block: list[str] = Field(default_factory=list)
    trace: bool = False  # log every hook call (pluggy tracing)


class AwsSettings(Strict):
    region: str = "us-east-1"
    table: str = "omnicast"
    bucket: str = "omnicast-data"
    queue_prefix: str = "omnicast-"
    ssm_prefix: str = "/omnicast/"
    endpoint_url: str | None = None  # e.g. moto's server for the local AWS stack


class SendPolicySettings(Strict):
    quiet_start_hour: int = Field(21, ge=0, le=23)
    quiet_end_hour: int = Field(9, ge=0, le=23)
    # per-country quiet hours where the law or custom differs, e.g. {"FR": [20, 8]}
    country_quiet_hours: dict[str, tuple[int, int]] = Field(default_factory=dict)
    default_timezone: str = "UTC"
    max_marketing_per_day: int = Field(2, ge=0)
    max_marketing_per_week: int = Field(5, ge=0)
    max_attempts: int = Field(5, ge=1)
    # sends per second per channel plugin, over the plugin's own documented limit
    provider_rate_per_second: dict[str, float] = Field(default_factory=dict)
    # a global control group that never gets marketing, so that lift can be measured
    holdout_percent: float = Field(0.0, ge=0, lt=100)


class FeedbackSettings(Strict):
    sns_topics: list[str] = Field(default_factory=list)  # accepted TopicArns (empty: any, signed)
    extra_cert_hosts: list[str] = Field(default_factory=list)  # tests only: a loopback certificate host


class ShopSettings(Strict):
    name: str = "Omnicast Demo Shop"
    url: str = "https://shop.example"
    currency: str = "EUR"
    locale: str = "en"


class AttributionWindows(Strict):
    """Hours after a touch within which an order is credited to it."""

    click: float = Field(120.0, ge=0)
    open: float = Field(24.0, ge=0)
    delivery: float = Field(24.0, ge=0)


class MeasurementSettings(Strict):
    track_links: bool = True  # rewrite links through /t/c/<signed token> (UTM-tagged)
    track_opens: bool = True  # a 1x1 pixel /t/o/<signed token> in HTML e-mail
    # attribution windows per touch type, in hours (an order within the window after the touch)
    windows_hours: AttributionWindows = Field(default_factory=lambda: AttributionWindows())
    fixed_costs: float = Field(0.0, ge=0)  # per period reported, e.g. the platform fee, added to total cost
    confidence: float = Field(0.95, gt=0.5, lt=1)


class JourneySettings(Strict):
    disabled: list[str] = Field(default_factory=list)  # built-in journeys to switch off by name


class Settings(Strict):
    runtime: Literal["local", "aws"] = "local"
    data_dir: Path = Path(".omnicast")
    max_body_bytes: int = Field(512 * 1024, gt=0)  # Segment's batch limit is 500 KB
    plugins: PluginSelection = Field(default_factory=PluginSelection)
    # channel kind -> plugin name; kinds not listed use the only plugin of that kind
    channels: dict[str, str] = Field(
        default_factory=lambda: {"email": "smtp", "sms": "sandbox_sms", "push": "sandbox_push"}
    )
    models: dict[str, str] = Field(default_factory=dict)
    plugin_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    send_policy: SendPolicySettings = Field(default_factory=lambda: SendPolicySettings())
    public_url: str = "http://127.0.0.1:8000"
    shop: ShopSettings = Field(default_factory=lambda: ShopSettings())
    feedback: FeedbackSettings = Field(default_factory=lambda: FeedbackSettings())
    journeys: JourneySettings = Field(default_factory=lambda: JourneySettings())
    measurement: MeasurementSettings = Field(default_factory=lambda: MeasurementSettings())


_LIST_KEYS = {("plugins", "allow"), ("plugins", "block")}


def _env_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another OMNICAST_ variable", field=name)
        leaf: Any = value
        if tuple(path) in _LIST_KEYS:
            leaf = [v.strip() for v in value.split(",") if v.strip()]
        node[path[-1]] = leaf
    return tree


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _format(error: ValidationError, origin: str) -> str:
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return f"invalid configuration ({origin}): " + "; ".join(parts)


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build Settings from the config file, the environment and explicit overrides."""
    environ = os.environ if environ is None else environ
    env = _env_tree(environ)
    data: dict[str, Any] = {}
    config_path = environ.get(ENV_PREFIX + "CONFIG")
    if config_path is None:
        data_dir = (overrides or {}).get("data_dir") or env.get("data_dir") or ".omnicast"
        candidate = Path(data_dir) / "omnicast.toml"
        config_path = str(candidate) if candidate.exists() else None
    origin = "defaults and environment"
    if config_path:
        path = Path(config_path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}", field="OMNICAST_CONFIG") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        origin = f"{path} and environment"
    data = _merge(_merge(data, env), overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, origin)) from exc
