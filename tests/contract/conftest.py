"""One contract suite, two adapter sets: every test runs on SQLite and on DynamoDB/SQS/S3/SSM (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from chalicelib.adapters.local import local_stores
from chalicelib.config import AwsSettings
from chalicelib.ports import Stores

QUEUES = ("ingest", "send", "test")


@pytest.fixture(params=["local", "aws"])
def stores(request, tmp_path, monkeypatch) -> Iterator[Stores]:
    if request.param == "local":
        yield local_stores(tmp_path / "data")
        return
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from chalicelib.adapters.aws import AwsClients, aws_stores, create_resources

    settings = AwsSettings(table="contract", bucket="contract-bucket", queue_prefix="contract-",
                           ssm_prefix="/contract/")
    with mock_aws():
        clients = AwsClients(settings)
        create_resources(settings, QUEUES, clients)
        yield aws_stores(settings, clients)
