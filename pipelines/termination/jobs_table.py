"""Mark a job done in the jobs table with one conditional update.

The update only applies to a job whose status is ``running``. When the condition fails,
DynamoDB returns the item as it was (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), which
tells "already finished" (a repeat: success) from "no such job" (a warning) without a
second read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from pipelines.termination.messages import FINISHED_STATUSES, Termination, iso, parse_time

Outcome = Literal["marked_done", "already_done", "unknown_job", "not_running"]


@dataclass(frozen=True)
class JobUpdate:
    """What the conditional update found: the outcome, and the job's pool and times for metrics."""

    outcome: Outcome
    job_id: str
    pool: str | None = None
    previous_status: str | None = None
    duration_seconds: float | None = None


def mark_job_done(dynamodb: Any, table: str, termination: Termination, *, received_at: datetime) -> JobUpdate:
    """Set the job's final status, exit code, duration and times, only if it is ``running``.

    ``received_at`` stands in for ``completed_at`` when the message carries none (the
    archival keys on ``completed_at``, so a finished job must have one). Raises on AWS
    errors other than the failed condition; botocore has already retried throttling.
    """
    if termination.job_id is None or termination.status is None:
        raise ValueError("mark_job_done needs an agent termination (job_id and status)")
    completed_at = termination.completed_at or iso(received_at)
    names = {"#status": "status", "#completed_at": "completed_at"}
    values: dict[str, Any] = {
        ":running": {"S": "running"},
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
    try:
        response = dynamodb.update_item(
            TableName=table,
            Key={"job_id": {"S": termination.job_id}},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="#status = :running",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        old = error.response.get("Item")
        if not old:
            return JobUpdate("unknown_job", termination.job_id)
        previous = _string(old, "status")
        outcome: Outcome = "already_done" if previous in FINISHED_STATUSES else "not_running"
        return JobUpdate(outcome, termination.job_id, pool=_string(old, "pool"), previous_status=previous)
    old = response.get("Attributes", {})
    duration = termination.duration_seconds
    started = termination.started_at or _string(old, "started_at")
    if duration is None and started:
        # The record's own start time gives the duration the message left out.
        try:
            duration = max(0.0, (parse_time(completed_at) - parse_time(started)).total_seconds())
        except ValueError:
            duration = None
    return JobUpdate("marked_done", termination.job_id, pool=_string(old, "pool"), previous_status="running",
                     duration_seconds=duration)


def _string(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if isinstance(value, dict) else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
