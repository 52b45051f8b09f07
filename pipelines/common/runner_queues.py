"""Archive a runner's per-runner queues to S3, verify the archive, then delete the queues and tracking record.

The one function both termination processing and the orphaned-queues sweep use. Nothing
is lost: a queue is deleted only after every message it held has been written to the
archive and read back; a queue with messages someone else holds in flight is left alone
(reported, retried on a later run), since those messages could not be archived now.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from pipelines.common.aws import SQS_BATCH, error_code

QUEUE_KINDS = ("input", "output", "dlq")
_GONE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


class ArchiveVerificationError(RuntimeError):
    """The archive read back does not match what was written; the queue was kept."""


@dataclass
class RunnerQueueCleanup:
    """What cleaning up one runner's queues did."""

    runner_id: str
    messages_archived: int = 0
    queues_deleted: list[str] = field(default_factory=list)
    queues_missing: list[str] = field(default_factory=list)
    queues_kept: dict[str, str] = field(default_factory=dict)  # name -> why
    archive_keys: list[str] = field(default_factory=list)
    tracking_deleted: bool = False

    @property
    def complete(self) -> bool:
        return not self.queues_kept


def archive_key(runner_id: str, kind: str, archived_at: datetime) -> str:
    """Contract layout: queues/runner_id=RUNNER/queue=KIND/archived_at=TIMESTAMP.jsonl.gz."""
    stamp = archived_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S-%fZ")
    return f"queues/runner_id={runner_id}/queue={kind}/archived_at={stamp}.jsonl.gz"


def _queue_url_or_none(sqs: Any, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error_code(error) in _GONE:
            return None
        raise


def _drain(sqs: Any, url: str, hold_seconds: int) -> list[dict[str, Any]]:
    """Receive every visible message, holding each invisible while the archive is written."""
    messages: dict[str, dict[str, Any]] = {}
    empty_polls = 0
    # Two empty receives in a row: SQS may return an empty answer while messages remain.
    while empty_polls < 2:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=SQS_BATCH, VisibilityTimeout=hold_seconds, WaitTimeSeconds=0,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        empty_polls = 0 if batch else empty_polls + 1
        for message in batch:
            messages.setdefault(message["MessageId"], message)
    return list(messages.values())


def _archive_record(message: dict[str, Any]) -> dict[str, Any]:
    attributes = message.get("Attributes", {})
    return {
        "message_id": message["MessageId"],
        "body": message["Body"],
        "attributes": attributes,
        "message_attributes": message.get("MessageAttributes", {}),
        "sent_timestamp": attributes.get("SentTimestamp"),
    }


def _write_and_verify(s3: Any, bucket: str, key: str, messages: list[dict[str, Any]]) -> None:
    records = [_archive_record(m) for m in messages]
    payload = gzip.compress("".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
    s3.put_object(Bucket=bucket, Key=key, Body=payload, ContentType="application/x-ndjson", ContentEncoding="gzip")
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = gzip.decompress(stored).decode().splitlines()
    ids = {json.loads(line)["message_id"] for line in lines}
    if len(lines) != len(records) or ids != {r["message_id"] for r in records}:
        raise ArchiveVerificationError(
            f"s3://{bucket}/{key}: read back {len(lines)} records, wrote {len(records)}"
        )


def archive_and_delete_runner_queues(
    sqs: Any,
    s3: Any,
    dynamodb: Any,
    *,
    runner_id: str,
    queue_names: dict[str, str],
    bucket: str,
    tracking_table: str,
    now: datetime | None = None,
    hold_seconds: int = 300,
) -> RunnerQueueCleanup:
    """Archive-then-delete each of ``queue_names`` (kind -> name); delete the tracking record when all are gone.

    Safe to re-run: a queue already gone counts as missing, a tracking record already gone is
    fine. The tracking record is kept while any queue had to be kept, so a later run (or
    the orphaned-queues sweep) finds the runner again.
    """
    now = now or datetime.now(timezone.utc)
    result = RunnerQueueCleanup(runner_id=runner_id)
    for kind in QUEUE_KINDS:
        name = queue_names.get(kind)
        if not name:
            continue
        url = _queue_url_or_none(sqs, name)
        if url is None:
            result.queues_missing.append(name)
            continue
        try:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
        except ClientError as error:
            if error_code(error) in _GONE:
                result.queues_missing.append(name)
                continue
            raise
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0"))
        if in_flight:
            # Someone (a live consumer, or an earlier run that crashed) holds messages we
            # cannot read now; deleting the queue would lose them.
            result.queues_kept[name] = f"{in_flight} message(s) in flight; retried when they become visible"
            continue
        messages = _drain(sqs, url, hold_seconds)
        if messages:
            key = archive_key(runner_id, kind, now)
            _write_and_verify(s3, bucket, key, messages)
            result.archive_keys.append(f"s3://{bucket}/{key}")
            result.messages_archived += len(messages)
        try:
            sqs.delete_queue(QueueUrl=url)
        except ClientError as error:
            if error_code(error) not in _GONE:
                raise
        result.queues_deleted.append(name)
    if result.complete:
        dynamodb.delete_item(TableName=tracking_table, Key={"runner_id": {"S": runner_id}})
        result.tracking_deleted = True
    return result
