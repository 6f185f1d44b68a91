"""The aws adapter set: one DynamoDB table, SQS, S3 and SSM Parameter Store.

Key design of the single table (``pk`` / ``sk`` strings, one GSI ``gsi1`` on
``gsi1pk`` / ``gsi1sk``, TTL on ``expires_at``):

| item | pk | sk | gsi1pk / gsi1sk |
|---|---|---|---|
| event | ``EVT#<source>#<message id>`` | ``E`` | ``PEVT#<profile>`` / ``<timestamp>#<message id>`` once processed |
| profile | ``PROF#<id>`` | ``P`` | |
| identifier | ``ID#<kind>#<value>`` | ``I`` | |
| ledger entry | ``LEDGER#<key>`` | ``L`` | ``PLEDGER#<profile>`` / ``<created>#<key>`` |
| journey state | ``JS#<profile>`` | ``<journey>#<entity>`` | |
| timer | ``TIMER#<id>`` | ``T`` | ``TIMERS#<shard 0-7>`` / ``<due at>#<id>`` |
| product | ``PRODUCT#<product id>`` | ``V#<variant id>`` | |
| score (one per kind) | ``SCORE#<profile>`` | ``<kind>`` | |
| scoring run marker | ``SCORERUN#<key>`` | ``R`` | |

Every "only if new" write is a ``PutItem`` with ``attribute_not_exists(pk)``; profile
saves check ``version``; ledger transitions check ``status``; taking a timer is a
conditional ``DeleteItem``. A lost condition returns False. Raw webhook deliveries'
dedupe records carry ``expires_at`` (30 days: platforms retry for at most a few days),
so the table does not grow with them forever. Clients are created on first use, never
at import (moto must be active first, and cold starts stay short).
"""

from __future__ import annotations

from chalicelib.adapters.aws.clients import AwsClients
from chalicelib.adapters.aws.dynamodb import (
    DynamoCatalogStore,
    DynamoEventStore,
    DynamoJourneyStore,
    DynamoProfileStore,
    DynamoSendLedger,
)
from chalicelib.adapters.aws.resources import create_resources
from chalicelib.adapters.aws.s3 import S3BlobStore
from chalicelib.adapters.aws.scores import DynamoScoreStore
from chalicelib.adapters.aws.sqs import SqsQueue
from chalicelib.adapters.aws.ssm import SsmSecrets
from chalicelib.config import AwsSettings
from chalicelib.ports import Stores


def aws_stores(settings: AwsSettings, clients: AwsClients | None = None) -> Stores:
    clients = clients or AwsClients(settings)
    table = settings.table
    return Stores(
        events=DynamoEventStore(clients, table),
        profiles=DynamoProfileStore(clients, table),
        ledger=DynamoSendLedger(clients, table),
        journeys=DynamoJourneyStore(clients, table),
        queue=SqsQueue(clients, settings.queue_prefix),
        blobs=S3BlobStore(clients, settings.bucket),
        secrets=SsmSecrets(clients, settings.ssm_prefix),
        catalog=DynamoCatalogStore(clients, table),
        scores=DynamoScoreStore(clients, table),
    )


__all__ = ["AwsClients", "aws_stores", "create_resources"]
