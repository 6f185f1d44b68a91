"""HTTP helpers shared by app.py and the route blueprints: errors as 4xx JSON, request parts."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice import Blueprint, Chalice, Response
from chalice.app import Request

from chalicelib.errors import BadRequest, OmnicastError

if TYPE_CHECKING:
    from chalicelib.runtime import Runtime


def get_runtime() -> Runtime:
    # imported on the first request, not at import: a cold start that serves /health stays small
    from chalicelib.runtime import get_runtime as runtime

    return runtime()


def answers_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Turn OmnicastError into its 4xx JSON answer (never a 500 with a traceback)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except OmnicastError as exc:
            return Response(body=exc.body(), status_code=exc.status, headers={"Content-Type": "application/json"})

    return wrapper


class Http:
    """The current request of one Chalice app or blueprint, in the shapes services take."""

    def __init__(self, owner: Chalice | Blueprint) -> None:
        self.owner = owner

    def request(self) -> Request:
        request = self.owner.current_request
        assert request is not None  # Chalice sets it for every route call
        return request

    def headers(self) -> dict[str, str]:
        return dict(self.request().headers.items())

    def query(self, name: str, default: str) -> str:
        params: dict[str, str] = dict(self.request().query_params or {})
        return params.get(name, default)

    def body(self) -> bytes:
        raw = self.request().raw_body
        return raw if isinstance(raw, bytes) else raw.encode()

    def json(self) -> Any:
        raw = self.body()
        if not raw.strip():
            raise BadRequest("body is empty; send a JSON object", field="body")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}", field="body") from exc

    def require_admin(self) -> None:
        headers = self.request().headers
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key")
        get_runtime().credentials.check_admin_key(key)
