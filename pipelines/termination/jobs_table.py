"""Mark a job done in the jobs table with one conditional update, and remember its metrics.

The update applies to a job whose status is ``running``, or ``interrupted`` by the stuck
jobs sweep (``interrupted_by`` = ``stuck_jobs_sweep``): the sweep only guessed that the job
ended, and the agent's message records how it really ended. When the condition fails,
DynamoDB returns the item as it was (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), which
tells "already finished" (a repeat: success) from "no such job" (a warning) without a
second read.

Metrics are at least once: ``metrics_published_for`` on the record holds the ``completed_at``
of the completion whose JobDuration / JobSuccess / JobFailure were published. A repeat
message whose completion is on the record but not yet published (an earlier attempt marked
the job and then failed before or while publishing) publishes them then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from pipelines.common.aws import error_code, update_if
from pipelines.common.contract import FINISHED_STATUSES, iso, parse_iso as parse_time
from pipelines.termination.messages import Termination

Outcome = Literal["marked_done", "already_done", "unknown_job", "not_running"]

SWEEP = "stuck_jobs_sweep"  # the contract's interrupted_by value of the stuck jobs sweep
PUBLISHED = "metrics_published_for"


@dataclass(frozen=True)
class JobUpdate:
    """What the conditional update found: the outcome, the job's pool and times, and whether metrics are due."""

    outcome: Outcome
    job_id: str
    pool: str | None = None
    previous_status: str | None = None
    duration_seconds: float | None = None
    status: str | None = None  # the record's status after the update (the completion's)
    completed_at: str | None = None  # the record's completed_at after the update (the completion's)
    metrics_due: bool = False  # this completion's metrics were not published yet


def metrics_due_on_repeat(record: dict[str, str | None], termination: Termination, completed_at: str) -> bool:
    """A finished record met again: are this completion's metrics still to publish?

    Only for the same completion — the record's status is the message's and its
    ``completed_at`` is the message's (a message without ``completed_at`` names no time, so
    the status decides) — and only when no attempt recorded their publication. A late
    message about another completion (the record was finished differently) publishes nothing.
    """
    if record.get("status") != termination.status:
        return False
    if termination.completed_at is not None and record.get("completed_at") != completed_at:
        return False
    return record.get("completed_at") is not None and record.get(PUBLISHED) != record.get("completed_at")


def record_duration(record: dict[str, Any]) -> float | None:
    """A finished record's duration: its ``duration_seconds``, else ``completed_at`` − ``started_at``."""
    raw = record.get("duration_seconds")
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            pass
    started, completed = record.get("started_at"), record.get("completed_at")
    if started and completed:
        try:
            return max(0.0, (parse_time(completed) - parse_time(started)).total_seconds())
        except ValueError:
            return None
    return None


def mark_job_done(dynamodb: Any, table: str, termination: Termination, *, received_at: datetime) -> JobUpdate:
    """Set the job's final status, exit code, duration and times, if it is ``running`` (or sweep-interrupted).

    ``received_at`` stands in for ``completed_at`` when the message carries none (the
    archival keys on ``completed_at``, so a finished job must have one; the sent time of a
    message is the same on every delivery). Raises on AWS errors other than the failed
    condition; botocore has already retried throttling.
    """
    if termination.job_id is None or termination.status is None:
        raise ValueError("mark_job_done needs an agent termination (job_id and status)")
    completed_at = termination.completed_at or iso(received_at)
    names = {"#status": "status", "#completed_at": "completed_at", "#interrupted_by": "interrupted_by",
             "#published": PUBLISHED}
    values: dict[str, Any] = {
        ":running": {"S": "running"},
        ":interrupted": {"S": "interrupted"},
        ":sweep": {"S": SWEEP},
        ":status": {"S": termination.status},
        ":completed_at": {"S": completed_at},
    }
    sets = ["#status = :status", "#completed_at = :completed_at"]
    if termination.exit_code is not None:
        names["#exit_code"] = "exit_code"
        values[":exit_code"] = {"N": str(termination.exit_code)}
        sets.append("#exit_code = :exit_code")
    if termination.duration_seconds is not None:
        names["#duration"] = "duration_seconds"
        values[":duration"] = {"N": _number(termination.duration_seconds)}
        sets.append("#duration = :duration")
    if termination.started_at is not None:
        names["#started_at"] = "started_at"
        values[":started_at"] = {"S": termination.started_at}
        sets.append("#started_at = :started_at")
    update = update_if(
        dynamodb,
        TableName=table,
        Key={"job_id": {"S": termination.job_id}},
        # interrupted_by goes: the record now says how the job really ended, and a repeat
        # of this message must find it finished (not overwrite it again, publishing twice).
        # A new completion has no published metrics yet.
        UpdateExpression="SET " + ", ".join(sets) + " REMOVE #interrupted_by, #published",
        ConditionExpression="#status = :running OR (#status = :interrupted AND #interrupted_by = :sweep)",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
        ReturnValues="ALL_OLD",
    )
    if not update.applied:
        old = update.old_item
        if not old:
            return JobUpdate("unknown_job", termination.job_id)
        record = {k: _value(old, k) for k in ("status", "completed_at", "started_at", "duration_seconds", PUBLISHED)}
        previous = record["status"]
        if previous not in FINISHED_STATUSES:
            return JobUpdate("not_running", termination.job_id, pool=_string(old, "pool"), previous_status=previous)
        return JobUpdate(
            "already_done", termination.job_id, pool=_string(old, "pool"), previous_status=previous,
            duration_seconds=record_duration(record), status=previous, completed_at=record["completed_at"],
            metrics_due=metrics_due_on_repeat(record, termination, completed_at),
        )
    old = update.response.get("Attributes", {})
    duration = termination.duration_seconds
    started = termination.started_at or _string(old, "started_at")
    if duration is None and started:
        # The record's own start time gives the duration the message left out.
        try:
            duration = max(0.0, (parse_time(completed_at) - parse_time(started)).total_seconds())
        except ValueError:
            duration = None
    return JobUpdate("marked_done", termination.job_id, pool=_string(old, "pool"),
                     previous_status=_string(old, "status"), duration_seconds=duration,
                     status=termination.status, completed_at=completed_at, metrics_due=True)


def mark_metrics_published(dynamodb: Any, table: str, job_id: str, *, status: str, completed_at: str) -> bool:
    """Record that this completion's metrics are published; False when the record no longer holds it.

    Conditional on the completion, so a flag is never put on a record that moved on. Called
    only after PutMetricData succeeded; if this call fails the metrics may be published once
    more by a redelivery — at least once, never lost.
    """
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET #published = :completed_at",
            ConditionExpression="#status = :status AND #completed_at = :completed_at",
            ExpressionAttributeNames={"#published": PUBLISHED, "#status": "status", "#completed_at": "completed_at"},
            ExpressionAttributeValues={":status": {"S": status}, ":completed_at": {"S": completed_at}},
        )
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
        return False
    return True


def _string(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if isinstance(value, dict) else None


def _value(item: dict[str, Any], name: str) -> str | None:
    """A string or number attribute as text (None when absent or of another type)."""
    value = item.get(name)
    if not isinstance(value, dict):
        return None
    return value.get("S", value.get("N"))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
