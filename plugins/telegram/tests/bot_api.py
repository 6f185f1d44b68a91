"""A loopback Telegram Bot API: answers sendMessage and setWebhook as the Bot API docs say.

It checks the token in the path (401 Unauthorized otherwise), parses ``parse_mode=HTML``
strictly (an unsupported tag is 400 "can't parse entities"), enforces the 4096-character
limit after entity parsing, knows which chats exist and which users blocked the bot, and
can be told to answer the next calls with a scripted status (429 with retry_after, 5xx).
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "123456789:AAH-test_token-0123456789abcdefghij"
TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote", "tg-spoiler",
        "span", "tg-emoji"}


class EntityError(ValueError):
    pass


class StrictParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in TAGS:
            raise EntityError(f'Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            raise EntityError(f'Unexpected end tag "{tag}"')

    def handle_data(self, data):
        self.text.append(data)


def parse_entities(text: str) -> str:
    if "<" in text.replace("&lt;", ""):
        parser = StrictParser()
        parser.feed(text)
        parser.close()
        if parser.stack:
            raise EntityError(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"')
        return "".join(parser.text)
    return html.unescape(text)


@dataclass
class BotApiState:
    token: str = TOKEN
    chats: set[str] = field(default_factory=lambda: {"42", "12345"})
    blocked: set[str] = field(default_factory=set)
    script: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    next_id: int = 1
    url: str = ""


def error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        answer["parameters"] = parameters
    return answer


def handler(state: BotApiState) -> type[BaseHTTPRequestHandler]:
    class BotApi(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            state.paths.append(self.path)
            _, _, rest = self.path.partition("/bot")
            token, _, method = rest.rpartition("/")
            if token != state.token:
                return self.answer(401, error(401, "Unauthorized"))
            state.calls.append((method, body))
            if state.script:
                status, answer, headers = state.script.pop(0)
                return self.answer(status, answer, headers)
            if method == "setWebhook":
                return self.answer(200, {"ok": True, "result": True, "description": "Webhook was set"})
            if method != "sendMessage":
                return self.answer(404, error(404, "Not Found"))
            chat = str(body.get("chat_id", ""))
            if not body.get("text"):
                return self.answer(400, error(400, "Bad Request: message text is empty"))
            if chat in state.blocked:
                return self.answer(403, error(403, "Forbidden: bot was blocked by the user"))
            if chat not in state.chats:
                return self.answer(400, error(400, "Bad Request: chat not found"))
            try:
                text = parse_entities(body["text"]) if body.get("parse_mode") == "HTML" else body["text"]
            except EntityError as exc:
                return self.answer(400, error(400, f"Bad Request: can't parse entities: {exc}"))
            if len(text.encode("utf-16-le")) // 2 > 4096:
                return self.answer(400, error(400, "Bad Request: message is too long"))
            state.next_id += 1
            return self.answer(200, {"ok": True, "result": {
                "message_id": state.next_id - 1, "date": 1772445600, "text": text,
                "chat": {"id": int(chat), "type": "private", "first_name": "Ann"},
                "from": {"id": 123456789, "is_bot": True, "first_name": "Shop", "username": "shop_bot"}}})

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

    return BotApi


class BotApiServer:
    """Start with ``with BotApiServer() as api: api.state.url ...``."""

    def __init__(self) -> None:
        self.state = BotApiState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler(self.state))
        self.state.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> BotApiServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
