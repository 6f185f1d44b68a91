"""Blobs in an S3 bucket."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws.clients import AwsClients


class S3BlobStore:
    def __init__(self, clients: AwsClients, bucket: str) -> None:
        self.clients = clients
        self.bucket = bucket

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self.clients.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes | None:
        s3 = self.clients.s3
        try:
            return bytes(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        pages: Any = self.clients.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.clients.s3.delete_object(Bucket=self.bucket, Key=key)
