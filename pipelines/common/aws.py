"""Small, Dagster-free helpers over boto3 clients: batching, queue URLs, partial-failure retries, metrics."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")

# Service batch limits, named once.
SQS_BATCH = 10  # ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch, SendMessageBatch
SSM_DELETE_BATCH = 10  # DeleteParameters
DYNAMODB_WRITE_BATCH = 25  # BatchWriteItem
DYNAMODB_GET_BATCH = 100  # BatchGetItem
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


@dataclass(frozen=True)
class Metric:
    """One CloudWatch datum; ``pool`` becomes the ``Pool`` dimension when set."""

    name: str
    value: float
    unit: str = "Count"
    pool: str | None = None


def put_metrics(cloudwatch: Any, namespace: str, metrics: Iterable[Metric]) -> int:
    """Publish metrics in as few PutMetricData calls as the batch limit allows; returns calls made."""
    calls = 0
    for batch in chunks(metrics, METRIC_BATCH):
        data = []
        for metric in batch:
            datum: dict[str, Any] = {"MetricName": metric.name, "Value": float(metric.value), "Unit": metric.unit}
            if metric.pool:
                datum["Dimensions"] = [{"Name": "Pool", "Value": metric.pool}]
            data.append(datum)
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
        calls += 1
    return calls
