"""boto3 clients, created on first use and shared by the stores of one runtime."""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.config import AwsSettings


class AwsClients:
    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}  # API calls by "service.Operation", for the cost model

    def _count(self, params: Any, model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        self.calls[name] = self.calls.get(name, 0) + 1

    def get(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                import boto3  # ~180 ms: only when the aws runtime is in use

                client = boto3.session.Session().client(  # type: ignore[call-overload]
                    service, region_name=self.settings.region, endpoint_url=self.settings.endpoint_url
                )
                client.meta.events.register("before-call.*.*", self._count)
                self._clients[service] = client
            return client

    @property
    def dynamodb(self) -> Any:
        return self.get("dynamodb")

    @property
    def sqs(self) -> Any:
        return self.get("sqs")

    @property
    def s3(self) -> Any:
        return self.get("s3")

    @property
    def ssm(self) -> Any:
        return self.get("ssm")
