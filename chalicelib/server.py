"""The local stack: the HTTP API, queue workers and the timer scheduler in one process.

``chalice local`` serves HTTP routes only; this runs the same Chalice app on Chalice's
local server and adds what Lambda's SQS triggers and EventBridge schedule do on AWS,
as threads over the same runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, ClassVar

from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer

from chalicelib.runtime import QUEUES, Runtime, set_runtime

log = logging.getLogger("omnicast.server")


class QuietRequestHandler(ChaliceRequestHandler):
    """Logs method, path and status only: query strings carry tokens and e-mail addresses.

    Nagle's algorithm is off: the handler writes headers and body separately, and on a
    kept-alive connection the second write would wait for the client's delayed ACK (40 ms
    a request).

    The Date header is formatted once a second, not once a response (the ``email``
    package's formatdate, some 5 us of the ~250 us of CPU a response costs here)."""

    disable_nagle_algorithm = True
    _date: ClassVar[tuple[int, str]] = (-1, "")

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second, text = QuietRequestHandler._date
        now = int(time.time())
        if now != second:
            text = super().date_time_string(now)
            QuietRequestHandler._date = (now, text)
        return text

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.debug("%s %s %s", self.command, self.path.split("?", 1)[0], code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class LocalStack:
    def __init__(
        self, runtime: Runtime, host: str = "127.0.0.1", port: int = 8000, poll_seconds: float = 0.05,
        workers: bool = True,
    ):
        """``workers=False`` serves HTTP only: the caller drives the queues (the simulator does)."""
        self.runtime = runtime
        self.workers = workers
        self.host = host
        self.poll_seconds = poll_seconds
        import app as app_module  # the same app object that Lambda runs

        self.server = LocalDevServer(app_module.app, Config(), host, port, handler_cls=QuietRequestHandler)
        set_runtime(runtime)  # once the port is ours: a stack that cannot listen leaves no runtime behind
        self.port = self.server.server.server_address[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _worker(self, queue: str) -> None:
        while not self._stop.is_set():
            try:
                done = self.runtime.work(queue, max_messages=10)
            except Exception:
                log.exception("worker %s failed", queue)
                done = 0
            if not done:
                self._stop.wait(self.poll_seconds)

    def _scheduler(self) -> None:
        while not self._stop.is_set():
            try:
                self.runtime.tick()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(max(self.poll_seconds, 0.2))

    def start(self) -> LocalStack:
        # the HTTPServer itself: LocalDevServer.serve_forever would print its own banner
        threads = [threading.Thread(target=self.server.server.serve_forever, name="omnicast-http", daemon=True)]
        if self.workers:
            threads += [
                threading.Thread(target=self._worker, args=(q,), name=f"omnicast-worker-{q}", daemon=True)
                for q in QUEUES
            ]
            threads.append(threading.Thread(target=self._scheduler, name="omnicast-scheduler", daemon=True))
        for t in threads:
            t.start()
            self._threads.append(t)
        return self

    def idle(self) -> bool:
        """True when every queue is empty (timers may still be pending)."""
        return all(self.runtime.stores.queue.depth(q) == 0 for q in QUEUES)

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self.runtime.close()
        set_runtime(None)
