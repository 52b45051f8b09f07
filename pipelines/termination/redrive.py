"""Replay the termination DLQ into the termination queue, once an operator has fixed the cause.

The DLQ is found from the termination queue's own ``RedrivePolicy``, so there is no second
name to configure. Each DLQ message is sent back with its ``MessageGroupId`` (FIFO order
within a runner is kept) and its message attributes, 10 per SendMessageBatch, and deleted
from the DLQ, 10 per DeleteMessageBatch, only after its send succeeded.

Deduplication: the replay's ``MessageDeduplicationId`` is derived from the original one and
the DLQ message id. Re-sending the original id would be swallowed by SQS whenever the
replay falls within 5 minutes of the original send (FIFO deduplication window); the
derived id still makes a replay that is retried (a crash between send and DLQ delete)
deduplicate to one message.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pipelines.common.aws import SQS_BATCH, queue_url

logger = logging.getLogger(__name__)

MAX_MESSAGE_ATTRIBUTES = 10


class RedriveError(RuntimeError):
    """The termination queue has no DLQ to replay from."""


@dataclass
class RedriveReport:
    dlq_url: str
    dry_run: bool
    found: int = 0  # messages received from the DLQ this run
    dlq_depth: int = 0  # ApproximateNumberOfMessages of the DLQ before the run
    sent: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)  # "message_id: why"
    groups: set[str] = field(default_factory=set)


def dlq_url_of(sqs: Any, source_url: str) -> str:
    """The URL of ``source_url``'s dead-letter queue, from its RedrivePolicy."""
    attributes = sqs.get_queue_attributes(QueueUrl=source_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    raw = attributes.get("RedrivePolicy")
    if not raw:
        raise RedriveError(f"{source_url} has no RedrivePolicy, so no DLQ to replay from")
    arn = json.loads(raw)["deadLetterTargetArn"]
    _, _, _, _, account, name = arn.split(":", 5)
    return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


def replay_dedup_id(original: str | None, dlq_message_id: str) -> str:
    """A deduplication id stable for one DLQ message and distinct from the original send's."""
    return hashlib.sha256(f"{original or ''}|{dlq_message_id}".encode()).hexdigest()


def redrive_dlq(
    sqs: Any, termination_queue: str, *, max_messages: int, dry_run: bool, hold_seconds: int = 120,
    log: Any = logger,
) -> RedriveReport:
    """Move up to ``max_messages`` DLQ messages back to the termination queue (or only count them).

    In a dry run, messages are received to be counted (held while counting, so that the
    FIFO DLQ hands out the other groups' messages) and all made visible again at the end,
    so nothing changes. Messages whose send failed stay in the DLQ.
    """
    source = queue_url(sqs, termination_queue)
    dlq = dlq_url_of(sqs, source)
    report = RedriveReport(dlq_url=dlq, dry_run=dry_run)
    depth = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    report.dlq_depth = int(depth.get("ApproximateNumberOfMessages", "0"))
    seen: set[str] = set()
    held: list[str] = []
    try:
        _replay(sqs, source, dlq, report, seen, held, max_messages=max_messages, dry_run=dry_run,
                hold_seconds=hold_seconds, log=log)
    finally:
        # Dry run: hand every counted message straight back, untouched.
        for start in range(0, len(held), SQS_BATCH):
            sqs.change_message_visibility_batch(
                QueueUrl=dlq,
                Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                         for i, h in enumerate(held[start : start + SQS_BATCH])],
            )
    return report


def _replay(
    sqs: Any, source: str, dlq: str, report: RedriveReport, seen: set[str], held: list[str], *,
    max_messages: int, dry_run: bool, hold_seconds: int, log: Any,
) -> None:
    while report.found < max_messages:
        batch = sqs.receive_message(
            QueueUrl=dlq, MaxNumberOfMessages=min(SQS_BATCH, max_messages - report.found),
            WaitTimeSeconds=1, VisibilityTimeout=hold_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        if not fresh:
            break
        seen.update(m["MessageId"] for m in fresh)
        report.found += len(fresh)
        for m in fresh:
            report.groups.add(m.get("Attributes", {}).get("MessageGroupId", ""))
        if dry_run:
            held.extend(m["ReceiptHandle"] for m in fresh)
            log.info(f"dry run: would replay {', '.join(m['MessageId'] for m in fresh)}")
            continue
        entries = []
        for i, m in enumerate(fresh):
            attributes = m.get("Attributes", {})
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
            if attributes.get("MessageGroupId"):
                entry["MessageGroupId"] = attributes["MessageGroupId"]
                entry["MessageDeduplicationId"] = replay_dedup_id(attributes.get("MessageDeduplicationId"),
                                                                  m["MessageId"])
            message_attributes = _sendable(m.get("MessageAttributes", {}))
            if len(message_attributes) < MAX_MESSAGE_ATTRIBUTES:
                message_attributes["redriven_from"] = {"DataType": "String", "StringValue": m["MessageId"]}
            if message_attributes:
                entry["MessageAttributes"] = message_attributes
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=source, Entries=entries)
        sent = [fresh[int(ok["Id"])] for ok in response.get("Successful", [])]
        for bad in response.get("Failed", []):
            m = fresh[int(bad["Id"])]
            report.failed.append(f"{m['MessageId']}: {bad.get('Code')}")
            log.error(f"replay of DLQ message_id={m['MessageId']} failed: {bad.get('Code')}; left in the DLQ")
        report.sent += len(sent)
        if sent:
            deleted = sqs.delete_message_batch(
                QueueUrl=dlq, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)]
            )
            report.deleted += len(deleted.get("Successful", []))
            for bad in deleted.get("Failed", []):
                m = sent[int(bad["Id"])]
                # Sent but still in the DLQ: a later replay re-sends it with the same
                # deduplication id, which SQS collapses within 5 minutes; the processing is idempotent anyway.
                report.failed.append(f"{m['MessageId']}: replayed but not deleted from the DLQ ({bad.get('Code')})")
        log.info(f"replayed {len(sent)} message(s): {', '.join(m['MessageId'] for m in sent)}")


def _sendable(attributes: dict[str, Any]) -> dict[str, Any]:
    """Message attributes as SendMessage takes them (ReceiveMessage adds empty list fields)."""
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        entry = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                entry[key] = value[key]
        out[name] = entry
    return out
