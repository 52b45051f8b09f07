"""The alert thresholds of queue health: DLQ rate and retry rate of the fleet queues over a window.

For each fleet queue that redrives to a DLQ (the termination queue; the housekeeping queue
where deployed), from SQS's own CloudWatch metrics (namespace `AWS/SQS`, dimension
`QueueName`), summed over the window (default the last 60 minutes, 5-minute periods):

- **received**: `NumberOfMessagesReceived` of the queue: every receive, first or repeated —
  the queue's operations.
- **retries**: received − `NumberOfMessagesDeleted` (at least 0). This project deletes a
  termination message or request only once it is fully handled, so a receive that is not
  followed by a delete is one the message comes back from: a retry.
- **DLQ arrivals**: the rises of the DLQ's `ApproximateNumberOfMessagesVisible`, summed
  between consecutive periods. Not the DLQ's `NumberOfMessagesSent`: SQS does not count a
  message its redrive moves there in that metric (only messages sent to the DLQ directly).
  A replay that empties the DLQ within the window hides nothing: only rises are summed.

**DLQ rate** = DLQ arrivals ÷ received; **retry rate** = retries ÷ received. A window in
which nothing was received has no rate and passes, saying so. A metric SQS has not
published (no datapoint) reads as 0. The rules are ``rate_outcome``; the call is
``read_activity`` (one `GetMetricData` for every queue, paged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

PERIOD_SECONDS = 300


@dataclass(frozen=True)
class QueueActivity:
    """What one fleet queue and its DLQ did in the window."""

    queue: str
    dlq: str
    received: int
    deleted: int
    dlq_arrivals: int

    @property
    def retries(self) -> int:
        return max(0, self.received - self.deleted)


@dataclass(frozen=True)
class RateOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any]


def window(now: datetime, minutes: int) -> tuple[datetime, datetime]:
    """[start, end) of the window ending at ``now``, on whole periods (CloudWatch aggregates by period)."""
    end = now.astimezone(timezone.utc).replace(microsecond=0)
    end -= timedelta(seconds=end.timestamp() % PERIOD_SECONDS)
    return end - timedelta(minutes=minutes), end


def read_activity(cloudwatch: Any, pairs: Sequence[tuple[str, str]], start: datetime, end: datetime
                  ) -> list[QueueActivity]:
    """Received, deleted and DLQ arrivals of each (queue, DLQ) pair in [start, end), one GetMetricData call (paged)."""
    if not pairs:
        return []

    def query(qid: str, queue: str, metric: str, stat: str) -> dict[str, Any]:
        return {"Id": qid, "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": "AWS/SQS", "MetricName": metric,
                       "Dimensions": [{"Name": "QueueName", "Value": queue}]},
            "Period": PERIOD_SECONDS, "Stat": stat}}

    queries = []
    for n, (queue, dlq) in enumerate(pairs):
        queries += [query(f"r{n}", queue, "NumberOfMessagesReceived", "Sum"),
                    query(f"d{n}", queue, "NumberOfMessagesDeleted", "Sum"),
                    query(f"v{n}", dlq, "ApproximateNumberOfMessagesVisible", "Maximum")]
    series: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
    request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end,
                               "ScanBy": "TimestampAscending"}
    while True:
        response = cloudwatch.get_metric_data(**request)
        for result in response.get("MetricDataResults", []):
            series[result["Id"]].update(zip(result.get("Timestamps", []), result.get("Values", [])))
        if not response.get("NextToken"):
            break
        request["NextToken"] = response["NextToken"]
    activity = []
    for n, (queue, dlq) in enumerate(pairs):
        visible = [value for _, value in sorted(series[f"v{n}"].items())]
        rises = sum(max(0.0, later - earlier) for earlier, later in zip(visible, visible[1:]))
        activity.append(QueueActivity(queue, dlq, int(sum(series[f"r{n}"].values())),
                                      int(sum(series[f"d{n}"].values())), int(rises)))
    return activity


def rate_outcome(kind: str, activity: Sequence[QueueActivity], threshold_percent: float, minutes: int,
                 start: datetime, end: datetime) -> RateOutcome:
    """Pass unless some queue's ``kind`` rate ("dlq" or "retry") is above ``threshold_percent`` over the window."""
    what = "DLQ arrivals" if kind == "dlq" else "retries"
    per_queue = {}
    worst: tuple[float, QueueActivity] | None = None
    for a in activity:
        count = a.dlq_arrivals if kind == "dlq" else a.retries
        rate = 100.0 * count / a.received if a.received else None
        per_queue[a.queue] = {"received": a.received, what.replace(" ", "_").lower(): count,
                              "rate_percent": None if rate is None else round(rate, 2)}
        if rate is not None and (worst is None or rate > worst[0]):
            worst = (rate, a)
    stated = f"over the last {minutes} min ({start:%H:%M}–{end:%H:%M} UTC, AWS/SQS metrics)"
    metadata: dict[str, Any] = {"window_minutes": minutes, "window_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "window_end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "threshold_percent": float(threshold_percent), "queues": per_queue}
    if worst is None:
        return RateOutcome(True, f"no fleet queue received a message {stated}: no {kind} rate to judge", metadata)
    rate, a = worst
    count = a.dlq_arrivals if kind == "dlq" else a.retries
    metadata.update({"worst_queue": a.queue, "rate_percent": round(rate, 2)})
    passed = rate <= threshold_percent
    return RateOutcome(
        passed,
        f"{a.queue}: {count} {what} per {a.received} received = {rate:.1f} % "
        f"({'within' if passed else 'above'} {threshold_percent:g} %) {stated}",
        metadata,
    )
