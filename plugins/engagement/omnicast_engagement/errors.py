"""The engagement plugin's input error (no numpy here: the HTTP path imports it)."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Bad input to an estimator or to the recommendations API; ``field`` names the culprit.

    The HTTP layer answers it with 400 and the field's name.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
