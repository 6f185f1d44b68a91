"""Secrets in SSM Parameter Store (SecureString), read lazily and cached briefly."""

from __future__ import annotations

import threading
import time

from chalicelib.adapters.aws.clients import AwsClients


class SsmSecrets:
    def __init__(self, clients: AwsClients, prefix: str, cache_seconds: float = 60.0) -> None:
        self.clients = clients
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def _name(self, name: str) -> str:
        return self.prefix + name

    def get(self, name: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(name)
            if hit and hit[0] > now:
                return hit[1]
        ssm = self.clients.ssm
        try:
            value: str | None = ssm.get_parameter(Name=self._name(name), WithDecryption=True)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound:
            value = None
        with self._lock:
            self._cache[name] = (now + self.cache_seconds, value)
        return value

    def put(self, name: str, value: str) -> None:
        self.clients.ssm.put_parameter(Name=self._name(name), Value=value, Type="SecureString", Overwrite=True)
        with self._lock:
            self._cache.pop(name, None)

    def delete(self, name: str) -> None:
        ssm = self.clients.ssm
        try:
            ssm.delete_parameter(Name=self._name(name))
        except ssm.exceptions.ParameterNotFound:
            pass
        with self._lock:
            self._cache.pop(name, None)

    def names(self, prefix: str) -> list[str]:
        out: list[str] = []
        paginator = self.clients.ssm.get_paginator("get_parameters_by_path")
        path = self.prefix.rstrip("/") or "/"
        for page in paginator.paginate(Path=path, Recursive=True, WithDecryption=False):
            for p in page["Parameters"]:
                name = p["Name"][len(self.prefix) :]
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)
