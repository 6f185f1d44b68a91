"""Create the table, bucket and queues (tests, and the whole stack against moto's server).

In a real account CloudFormation creates them (``infra/resources.json``); this mirrors it.
"""

from __future__ import annotations

import json

from chalicelib.adapters.aws.clients import AwsClients
from chalicelib.config import AwsSettings


def create_resources(settings: AwsSettings, queues: tuple[str, ...] | list[str], clients: AwsClients | None = None):
    clients = clients or AwsClients(settings)
    ddb = clients.dynamodb
    existing = ddb.list_tables()["TableNames"]
    if settings.table not in existing:
        ddb.create_table(
            TableName=settings.table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "gsi1pk", "gsi1sk")],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "gsi1",
                    "KeySchema": [
                        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        ddb.get_waiter("table_exists").wait(TableName=settings.table, WaiterConfig={"Delay": 1})
        ddb.update_time_to_live(
            TableName=settings.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
    s3 = clients.s3
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if settings.bucket not in buckets:
        if settings.region == "us-east-1":
            s3.create_bucket(Bucket=settings.bucket)
        else:
            s3.create_bucket(Bucket=settings.bucket, CreateBucketConfiguration={"LocationConstraint": settings.region})
    sqs = clients.sqs
    for name in queues:
        dlq_url = sqs.create_queue(QueueName=f"{settings.queue_prefix}{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.create_queue(
            QueueName=settings.queue_prefix + name,
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
                "VisibilityTimeout": "60",
            },
        )
    return clients
