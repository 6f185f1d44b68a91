"""A loopback WhatsApp Cloud API: answers POST /{version}/{phone_number_id}/messages as Meta's docs say.

It checks the Bearer token (401, code 190), the path (400, code 100), the body, and keeps
each customer's 24-hour window itself: free-form text to a customer whose window is
closed is refused with 131047, as the real API does; templates must be approved, with
the right number of body parameters (132001, 132000). Scripted answers (429, 130429,
5xx) take precedence when queued.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCESS_TOKEN = "EAAG-test-access-token-0123456789"
PHONE_NUMBER_ID = "106540352242922"
VERSION = "v21.0"


def graph_error(code: int, message: str, details: str | None = None, kind: str = "OAuthException") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGhIjK"}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


@dataclass
class CloudApiState:
    open_windows: set[str] = field(default_factory=set)  # customers who wrote within 24 hours
    templates: dict[tuple[str, str], int] = field(default_factory=lambda: {
        ("cart_reminder", "en_US"): 2, ("hello_world", "en_US"): 0})
    script: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    next_id: int = 1
    url: str = ""


def handler(state: CloudApiState) -> type[BaseHTTPRequestHandler]:
    class CloudApi(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.auth.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
                return self.answer(401, graph_error(190, "Invalid OAuth access token - Cannot parse access token"))
            if self.path != f"/{VERSION}/{PHONE_NUMBER_ID}/messages":
                return self.answer(400, graph_error(100, "Unsupported post request.", kind="GraphMethodException"))
            body = json.loads(raw)
            if state.script:
                status, answer, headers = state.script.pop(0)
                return self.answer(status, answer, headers)
            if body.get("messaging_product") != "whatsapp":
                return self.answer(400, graph_error(100, "(#100) The parameter messaging_product is required."))
            to = body.get("to", "")
            if body.get("type") == "text":
                if to not in state.open_windows:
                    return self.answer(400, graph_error(
                        131047, "(#131047) Re-engagement message", "Message failed to send because more than 24 "
                        "hours have passed since the customer last replied to this number."))
                if not body.get("text", {}).get("body"):
                    return self.answer(400, graph_error(100, "(#100) Param text['body'] is required."))
            elif body.get("type") == "template":
                template = body["template"]
                key = (template["name"], template["language"]["code"])
                if key not in state.templates:
                    return self.answer(404, graph_error(132001, "(#132001) Template name does not exist in the "
                                                        "translation"))
                params = [p for c in template.get("components", []) if c["type"] == "body" for p in c["parameters"]]
                if len(params) != state.templates[key]:
                    return self.answer(400, graph_error(132000, "(#132000) Number of parameters does not match "
                                                        "the expected number of params"))
            else:
                return self.answer(400, graph_error(100, "(#100) Invalid parameter"))
            state.sent.append(body)
            state.next_id += 1
            answer: dict[str, Any] = {
                "messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": f"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI{state.next_id - 1:04d}"}]}
            if body.get("type") == "template":
                answer["messages"][0]["message_status"] = "accepted"
            return self.answer(200, answer)

        def answer(self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(answer).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    return CloudApi


class CloudApiServer:
    def __init__(self) -> None:
        self.state = CloudApiState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler(self.state))
        self.state.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> CloudApiServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
