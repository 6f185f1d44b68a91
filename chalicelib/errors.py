"""Error classes. Each maps to one HTTP status and one message that names the problem."""

from __future__ import annotations


class OmnicastError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, object]:
        # "code" + "message" is also what Segment's and RudderStack's clients read from an error
        out: dict[str, object] = {"error": self.code, "code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class BadRequest(OmnicastError):
    status = 400
    code = "bad_request"


class Unauthorized(OmnicastError):
    status = 401
    code = "unauthorized"


class NotFound(OmnicastError):
    status = 404
    code = "not_found"


class PayloadTooLarge(OmnicastError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(OmnicastError):
    status = 415
    code = "unsupported_media_type"


class ConfigError(OmnicastError):
    """Invalid configuration: raised at start-up with the setting's name."""

    code = "config_error"


class PluginError(OmnicastError):
    code = "plugin_error"


class ConflictError(OmnicastError):
    """A conditional write lost: somebody else already did it."""

    status = 409
    code = "conflict"
