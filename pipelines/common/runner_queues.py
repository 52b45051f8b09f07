"""Archive a runner's per-runner queues to S3, verify the archive, then delete the queues and tracking record.

The one function both termination processing and the orphaned-queues sweep use
(``archive_and_delete_runner_queues``), and its batched form for many runners at once
(``archive_and_delete_many``: tracking records read 100 a call and deleted 25 a call).
Nothing is lost: a queue is deleted only after every message it held has been written to
the archive and read back; a queue with messages someone else holds in flight (or delayed
messages, which cannot be received yet) is left alone, reported, and retried on a later run.

Cost per queue: one GetQueueAttributes (visible, in-flight and delayed counts in one call)
and one DeleteQueue when the queue is empty, which is the common case; a GetQueueUrl only
when the caller has no URL for it (the tracking record holds all three). The counts are
SQS's approximate ones, which is also what the in-flight check has always relied on: a
runner's queues are cleaned only after the runner has ended, so nothing is still writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from pipelines.common.aws import SQS_BATCH, batch_get_with_retry, batch_write_with_retry, error_code, queue_name
from pipelines.common.contract import QUEUE_GONE_CODES as _GONE, QUEUE_KINDS  # noqa: F401 - re-exported
from pipelines.common.message_archive import (  # noqa: F401 (ArchiveVerificationError: raised from here, as before)
    ArchiveVerificationError, archive_record, check_read_back, encode_archive,
)


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


def _drain(sqs: Any, url: str, hold_seconds: int, expected: int = 0) -> list[dict[str, Any]]:
    """Receive every visible message, holding each invisible while the archive is written.

    Stops after one empty receive once ``expected`` (the visible count) messages are in
    hand, or after two empty receives in a row before that: a short-polling receive samples
    a subset of SQS's servers and may come back empty while messages remain.
    """
    messages: dict[str, dict[str, Any]] = {}
    empty_polls = 0
    while empty_polls < (1 if len(messages) >= expected else 2):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=SQS_BATCH, VisibilityTimeout=hold_seconds, WaitTimeSeconds=0,
            # Every system attribute (SentTimestamp, ApproximateReceiveCount, MessageGroupId, AWSTraceHeader…)
            # and every message attribute: the archive keeps the message whole. MessageSystemAttributeNames
            # is the current name of the deprecated AttributeNames.
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        empty_polls = 0 if batch else empty_polls + 1
        for message in batch:
            messages.setdefault(message["MessageId"], message)
    return list(messages.values())


def _write_and_verify(s3: Any, bucket: str, key: str, messages: list[dict[str, Any]]) -> None:
    """Write the messages' archive object, read it back and check it (``message_archive.check_read_back``)."""
    records = [archive_record(m) for m in messages]
    s3.put_object(Bucket=bucket, Key=key, Body=encode_archive(records), ContentType="application/x-ndjson",
                  ContentEncoding="gzip")
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    check_read_back(f"s3://{bucket}/{key}", stored, records)


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
    queue_urls: Mapping[str, str] | None = None,
    delete_tracking: bool = True,
) -> RunnerQueueCleanup:
    """Archive-then-delete each of ``queue_names`` (kind -> name); delete the tracking record when all are gone.

    Safe to re-run: a queue already gone counts as missing, a tracking record already gone is
    fine. The tracking record is kept while any queue had to be kept, so a later run (or
    the orphaned-queues sweep) finds the runner again.

    ``queue_urls`` (kind -> URL, e.g. from the tracking record) saves the GetQueueUrl calls;
    a URL is used only if it names the expected queue, so a bad record can never point the
    delete at another queue. With ``delete_tracking=False`` the caller deletes the tracking
    record itself (``archive_and_delete_many`` batches those deletes).
    """
    now = now or datetime.now(timezone.utc)
    result = RunnerQueueCleanup(runner_id=runner_id)
    urls = queue_urls or {}
    for kind in QUEUE_KINDS:
        name = queue_names.get(kind)
        if not name:
            continue
        known = urls.get(kind)
        url = known if known and queue_name(known) == name else _queue_url_or_none(sqs, name)
        if url is None:
            result.queues_missing.append(name)
            continue
        try:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
        except ClientError as error:
            if error_code(error) in _GONE:
                result.queues_missing.append(name)
                continue
            raise
        visible = int(attributes.get("ApproximateNumberOfMessages", "0"))
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0"))
        delayed = int(attributes.get("ApproximateNumberOfMessagesDelayed", "0"))
        if in_flight:
            # Someone (a live consumer, or an earlier run that crashed) holds messages we
            # cannot read now; deleting the queue would lose them.
            result.queues_kept[name] = f"{in_flight} message(s) in flight; retried when they become visible"
            continue
        if delayed:
            result.queues_kept[name] = f"{delayed} delayed message(s) not receivable yet; retried later"
            continue
        if visible:
            messages = _drain(sqs, url, hold_seconds, expected=visible)
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
    if result.complete and delete_tracking:
        dynamodb.delete_item(TableName=tracking_table, Key={"runner_id": {"S": runner_id}})
        result.tracking_deleted = True
    return result


TRACKING_URL_FIELDS = {"input": "input_queue_url", "output": "output_queue_url", "dlq": "dlq_url"}


def archive_and_delete_many(
    sqs: Any,
    s3: Any,
    dynamodb: Any,
    *,
    runner_ids: Iterable[str],
    queue_names_of: Callable[[str], dict[str, str]],
    bucket: str,
    tracking_table: str,
    now: datetime | None = None,
    hold_seconds: int = 300,
    executor: ThreadPoolExecutor | None = None,
) -> dict[str, RunnerQueueCleanup | Exception]:
    """``archive_and_delete_runner_queues`` for many runners, batching the tracking table calls.

    Reads the runners' tracking records 100 a call (their queue URLs save the GetQueueUrl
    calls), cleans each runner's queues (in parallel on ``executor`` when given) and
    deletes the tracking records of fully cleaned runners 25 a call. A runner whose cleanup
    raised maps to its exception and keeps its tracking record; the others are unaffected.
    Raises only if the tracking table cannot be read or written.
    """
    now = now or datetime.now(timezone.utc)
    ids = list(dict.fromkeys(runner_ids))
    if not ids:
        return {}
    records = batch_get_with_retry(dynamodb, tracking_table, [{"runner_id": {"S": r}} for r in ids])
    urls_of: dict[str, dict[str, str]] = {}
    for record in records:
        runner = record["runner_id"]["S"]
        urls_of[runner] = {kind: record[f]["S"] for kind, f in TRACKING_URL_FIELDS.items() if "S" in record.get(f, {})}

    def one(runner_id: str) -> RunnerQueueCleanup | Exception:
        try:
            return archive_and_delete_runner_queues(
                sqs, s3, dynamodb, runner_id=runner_id, queue_names=queue_names_of(runner_id), bucket=bucket,
                tracking_table=tracking_table, now=now, hold_seconds=hold_seconds,
                queue_urls=urls_of.get(runner_id), delete_tracking=False,
            )
        except Exception as error:  # reported per runner; one bad runner must not wedge the batch
            return error

    outcomes = list(executor.map(one, ids)) if executor else [one(r) for r in ids]
    results = dict(zip(ids, outcomes))
    done = [r for r, out in results.items() if isinstance(out, RunnerQueueCleanup) and out.complete]
    # A runner without a tracking record has nothing to delete: skip the write.
    batch_write_with_retry(
        dynamodb, tracking_table, [{"DeleteRequest": {"Key": {"runner_id": {"S": r}}}} for r in done if r in urls_of]
    )
    for runner in done:
        results[runner].tracking_deleted = True  # type: ignore[union-attr]
    return results
