"""Small, Dagster-free helpers over boto3 clients: batching, queue URLs, partial-failure retries, metrics."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")

# Service batch limits, named once.
SQS_BATCH = 10  # ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch, SendMessageBatch
SSM_DELETE_BATCH = 10  # DeleteParameters
DYNAMODB_WRITE_BATCH = 25  # BatchWriteItem
DYNAMODB_GET_BATCH = 100  # BatchGetItem
DYNAMODB_TRANSACT_BATCH = 100  # TransactWriteItems: up to 100 actions
DYNAMODB_TRANSACT_BYTES = 4 * 1024 * 1024  # TransactWriteItems: aggregate size of the items
EC2_TERMINATE_BATCH = 1000  # TerminateInstances accepts up to 1000 ids
METRIC_BATCH = 1000  # PutMetricData: up to 1000 metrics per request


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of at most ``size`` items, in order, from any iterable."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def backoff_sleep(attempt: int, *, base: float = 0.05, cap: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> None:
    """Full-jitter exponential backoff: sleep a random time in [0, min(cap, base * 2**attempt)]."""
    sleep(random.uniform(0, min(cap, base * (2**attempt))))


@dataclass(frozen=True)
class ConditionalUpdate:
    """A conditional UpdateItem's result: applied (with the response), or its condition failed (with the
    item as it was then, None when there was no item)."""

    applied: bool
    response: dict[str, Any] = field(default_factory=dict)
    old_item: dict[str, Any] | None = None


def update_if(dynamodb: Any, **request: Any) -> ConditionalUpdate:
    """UpdateItem whose failed condition is an answer, not an error: DynamoDB returns the item as it was
    (``ReturnValuesOnConditionCheckFailure=ALL_OLD``, one call, no read after). Other errors raise."""
    try:
        response = dynamodb.update_item(**request, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
        return ConditionalUpdate(False, old_item=error.response.get("Item") or None)
    return ConditionalUpdate(True, response=response)


def queue_url(sqs: Any, name_or_url: str) -> str:
    """A queue URL from a URL (returned as is) or a name (resolved with GetQueueUrl)."""
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    return sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"]


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def batch_write_with_retry(
    dynamodb: Any, table: str, requests: Sequence[dict[str, Any]], *, max_attempts: int = 8
) -> int:
    """BatchWriteItem ``requests`` 25 a call, re-sending ``UnprocessedItems`` with backoff.

    Returns the number of calls made. Raises RuntimeError naming the table if items are
    still unprocessed after ``max_attempts`` tries of one batch.
    """
    calls = 0
    for batch in chunks(requests, DYNAMODB_WRITE_BATCH):
        pending: dict[str, list[dict[str, Any]]] = {table: list(batch)}
        for attempt in range(max_attempts):
            calls += 1
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                break
            backoff_sleep(attempt)
        else:
            left = len(pending.get(table, []))
            raise RuntimeError(f"{table}: {left} writes still unprocessed after {max_attempts} attempts")
    return calls


def batch_get_with_retry(
    dynamodb: Any, table: str, keys: Sequence[dict[str, Any]], *, projection: str | None = None,
    names: dict[str, str] | None = None, max_attempts: int = 8,
) -> list[dict[str, Any]]:
    """BatchGetItem ``keys`` 100 a call, re-asking for ``UnprocessedKeys`` with backoff; returns the items found."""
    found: list[dict[str, Any]] = []
    for batch in chunks(keys, DYNAMODB_GET_BATCH):
        request: dict[str, Any] = {"Keys": list(batch), "ConsistentRead": True}
        if projection:
            request["ProjectionExpression"] = projection
        if names:
            request["ExpressionAttributeNames"] = names
        pending: dict[str, Any] = {table: request}
        for attempt in range(max_attempts):
            response = dynamodb.batch_get_item(RequestItems=pending)
            found += response.get("Responses", {}).get(table, [])
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            backoff_sleep(attempt)
        else:
            raise RuntimeError(f"{table}: keys still unprocessed after {max_attempts} attempts")
    return found


# Per-item reasons a transaction was cancelled that another try can cure, and whole-call
# errors likewise (botocore's own retries may already have spent theirs on the latter).
TRANSACT_RETRY_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
TRANSACT_RETRY_ERRORS = {
    "ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "TransactionInProgressException", "InternalServerError",
}


@dataclass
class TransactOutcome:
    """What ``transact_write_with_retry`` did: keys written, keys whose condition failed, calls, capacity."""

    written: list[Any] = field(default_factory=list)
    # Condition failed: (key, the item as it stands, or None if it no longer exists).
    condition_failed: list[tuple[Any, dict[str, Any] | None]] = field(default_factory=list)
    calls: int = 0
    capacity_units: float = 0.0  # as DynamoDB reported it (ReturnConsumedCapacity=TOTAL); 0 if it did not


def transact_write_with_retry(
    dynamodb: Any, actions: Sequence[tuple[Any, dict[str, Any]]], *, max_attempts: int = 8,
    size_of: Callable[[dict[str, Any]], int] = lambda action: 0,
) -> TransactOutcome:
    """TransactWriteItems ``actions`` ((key, action) pairs), 100 a call, each action conditional on its own.

    A transaction is all or nothing: one failed condition cancels the call, and DynamoDB says
    per action why (``CancellationReasons``, in request order; ``None`` for the innocent). The
    actions whose condition failed are dropped and reported with the item as it stands (ask
    for it with ``ReturnValuesOnConditionCheckFailure: ALL_OLD``), and the rest are sent again
    at once. Conflicts with another transaction and throttling are sent again with backoff.
    ``size_of`` bounds a call by DYNAMODB_TRANSACT_BYTES as well. Raises RuntimeError if a
    call still fails after ``max_attempts`` tries, or on a reason no retry can cure.
    """
    outcome = TransactOutcome()
    for batch in _transact_batches(actions, size_of):
        pending = list(batch)
        attempt = 0
        while pending:
            outcome.calls += 1
            try:
                response = dynamodb.transact_write_items(
                    TransactItems=[action for _, action in pending], ReturnConsumedCapacity="TOTAL")
            except ClientError as error:
                code = error_code(error)
                if code == "TransactionCanceledException":
                    pending, cured_by_waiting = _after_cancellation(error, pending, outcome)
                else:
                    if code not in TRANSACT_RETRY_ERRORS:
                        raise
                    cured_by_waiting = True
                if cured_by_waiting:
                    attempt += 1
                    if attempt >= max_attempts:
                        raise RuntimeError(
                            f"TransactWriteItems: {len(pending)} action(s) still failing after {max_attempts} attempts ({code})"
                        ) from error
                    backoff_sleep(attempt)
                continue
            outcome.written += [key for key, _ in pending]
            outcome.capacity_units += sum(c.get("CapacityUnits", 0.0) for c in response.get("ConsumedCapacity", []))
            pending = []
    return outcome


def _transact_batches(
    actions: Sequence[tuple[Any, dict[str, Any]]], size_of: Callable[[dict[str, Any]], int],
) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    batch: list[tuple[Any, dict[str, Any]]] = []
    size = 0
    for key, action in actions:
        action_size = size_of(action)
        if batch and (len(batch) == DYNAMODB_TRANSACT_BATCH or size + action_size > DYNAMODB_TRANSACT_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((key, action))
        size += action_size
    if batch:
        yield batch


def _after_cancellation(
    error: ClientError, pending: list[tuple[Any, dict[str, Any]]], outcome: TransactOutcome,
) -> tuple[list[tuple[Any, dict[str, Any]]], bool]:
    """The actions to send again after a cancelled transaction, and whether to wait first."""
    reasons = error.response.get("CancellationReasons") or []
    if len(reasons) != len(pending):
        # Without a reason per action there is no telling which condition failed: retrying
        # blindly could loop, and guessing could drop a good action. Stop, nothing written.
        raise RuntimeError(f"TransactWriteItems cancelled with {len(reasons)} reason(s) for {len(pending)} action(s)") from error
    again, wait = [], False
    for (key, action), reason in zip(pending, reasons):
        code = reason.get("Code") or "None"
        if code == "ConditionalCheckFailed":
            outcome.condition_failed.append((key, reason.get("Item")))
        elif code == "None":
            again.append((key, action))
        elif code in TRANSACT_RETRY_REASONS:
            again.append((key, action))
            wait = True
        else:
            raise RuntimeError(f"TransactWriteItems cancelled for {key!r}: {code} {reason.get('Message', '')}") from error
    # Cancelled with nothing to drop: whatever it was, only time can cure it.
    return again, wait or len(again) == len(pending)


@dataclass(frozen=True)
class Metric:
    """One CloudWatch datum; ``pool`` becomes the ``Pool`` dimension when set, ``dimensions`` adds (name, value) pairs."""

    name: str
    value: float
    unit: str = "Count"
    pool: str | None = None
    dimensions: tuple[tuple[str, str], ...] = ()


def put_metrics(cloudwatch: Any, namespace: str, metrics: Iterable[Metric]) -> int:
    """Publish metrics in as few PutMetricData calls as the batch limit allows; returns calls made."""
    calls = 0
    for batch in chunks(metrics, METRIC_BATCH):
        data = []
        for metric in batch:
            datum: dict[str, Any] = {"MetricName": metric.name, "Value": float(metric.value), "Unit": metric.unit}
            dimensions = [*metric.dimensions, *((("Pool", metric.pool),) if metric.pool else ())]
            if dimensions:
                datum["Dimensions"] = [{"Name": name, "Value": value} for name, value in dimensions]
            data.append(datum)
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
        calls += 1
    return calls
