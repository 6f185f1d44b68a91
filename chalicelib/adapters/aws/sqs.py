"""The queue port on SQS (standard queues; at-least-once, so every handler is idempotent)."""

from __future__ import annotations

import json
import threading
from typing import Any

from chalicelib.adapters.aws.clients import AwsClients
from chalicelib.ports import JSON, QueueMessage

SQS_BATCH = 10  # SendMessageBatch takes at most 10 entries


class SqsQueue:
    def __init__(self, clients: AwsClients, prefix: str) -> None:
        self.clients = clients
        self.prefix = prefix
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def url(self, queue: str) -> str:
        with self._lock:
            if queue not in self._urls:
                self._urls[queue] = self.clients.sqs.get_queue_url(QueueName=self.prefix + queue)["QueueUrl"]
            return self._urls[queue]

    def send(self, queue: str, body: JSON, *, delay_seconds: int = 0) -> None:
        self.clients.sqs.send_message(
            QueueUrl=self.url(queue), MessageBody=json.dumps(body), DelaySeconds=min(delay_seconds, 900)
        )

    def send_batch(self, queue: str, bodies: list[JSON]) -> None:
        url = self.url(queue)
        for start in range(0, len(bodies), SQS_BATCH):
            chunk = bodies[start : start + SQS_BATCH]
            entries = [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(chunk)]
            result: Any = self.clients.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            failed = result.get("Failed") or []
            if failed:
                # send the failed ones again once, one by one; a second failure raises
                for f in failed:
                    self.clients.sqs.send_message(QueueUrl=url, MessageBody=entries[int(f["Id"])]["MessageBody"])

    def receive(
        self, queue: str, *, max_messages: int = 10, visibility_seconds: int = 30, up_to: int | None = None
    ) -> list[QueueMessage]:
        if up_to is not None:
            raise NotImplementedError("SQS messages have no positions (up_to is the local queue's)")
        result = self.clients.sqs.receive_message(
            QueueUrl=self.url(queue),
            MaxNumberOfMessages=min(max_messages, 10),
            VisibilityTimeout=visibility_seconds,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            QueueMessage(
                receipt=m["ReceiptHandle"],
                body=json.loads(m["Body"]),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in result.get("Messages", [])
        ]

    def ack(self, queue: str, receipt: str) -> None:
        self.clients.sqs.delete_message(QueueUrl=self.url(queue), ReceiptHandle=receipt)

    def depth(self, queue: str) -> int:
        attrs = self.clients.sqs.get_queue_attributes(
            QueueUrl=self.url(queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
