"""A loopback HTTP server that answers as Twilio's Messages API documents it (tests only).

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth: 201 and a
Message resource (``sid`` SM + 32 hex), 401 with error 20003 for wrong credentials, and
whatever ``answers`` scripts next (400 with 21211, 429 with Retry-After, 5xx).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-tests"
FROM = "+15005550006"


def error(status: int, code: int, message: str) -> tuple[int, dict[str, str], bytes]:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


@dataclass
class TwilioApi:
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)  # the form of each accepted request
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)  # scripted, in order


@contextmanager
def twilio_api(account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> Iterator[TwilioApi]:
    api = TwilioApi()
    expected = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            if self.path != f"/2010-04-01/Accounts/{account_sid}/Messages.json":
                return self.answer(*error(404, 20404, "The requested resource was not found"))
            if self.headers.get("Authorization") != expected:
                return self.answer(*error(401, 20003, "Authenticate"))
            if api.answers:
                return self.answer(*api.answers.pop(0))
            if "Body" not in form or "To" not in form or not ({"From", "MessagingServiceSid"} & set(form)):
                return self.answer(*error(400, 21604, "A 'To' phone number is required."))
            api.received.append(form)
            body = form["Body"]
            segments = 1 if len(body) <= 160 else -(-len(body) // 153)  # plain ASCII bodies in these tests
            message = {
                "sid": "SM" + uuid.uuid4().hex, "account_sid": account_sid, "api_version": "2010-04-01",
                "to": form["To"], "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body, "status": "queued" if "From" in form else "accepted", "num_segments": str(segments),
                "num_media": "0", "direction": "outbound-api", "price": None, "price_unit": "USD",
                "error_code": None, "error_message": None,
            }
            self.answer(201, {"Content-Type": "application/json"}, json.dumps(message).encode())

        def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
