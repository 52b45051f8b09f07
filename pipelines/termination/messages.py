"""Parse and validate termination-queue messages into typed results.

Two shapes arrive on the termination FIFO queue (see shared/fleet-contract.md):

- the runner agent's **termination** message (``instance_id``, ``job_id``, ``status`` required);
- EventBridge's **ECS Task State Change** event; only ``lastStatus`` = ``STOPPED`` matters and
  the runner id is the task id (the last segment of ``taskArn``).

``parse_message`` never raises on bad input: it returns a ``Termination`` (act on it), an
``Ignored`` (a well-formed event that asks for nothing, e.g. an ECS task that is only
``RUNNING``) or an ``Invalid`` carrying a reason that names the bad field. Reasons never
quote the body, so they are safe to log.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.common.contract import FINISHED_STATUSES, iso, loggable, parse_iso  # noqa: F401 - re-exported

ECS_SOURCE = "aws.ecs"
ECS_DETAIL_TYPE = "ECS Task State Change"

# A runner id becomes part of an SSM parameter name and three queue names, so it must be a
# plain token: no '/', no spaces. EC2 ids (i-0abc…) and ECS task ids (hex) both fit.
# SQS names allow 80 characters; the longest prefix ("…-output-") leaves room for 64.
_RUNNER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_JOB_ID_MAX = 256
_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]00:00)$")


@dataclass(frozen=True)
class Termination:
    """A runner that ended: what to mark done and what to clean up."""

    runner_id: str
    source: Literal["agent", "ecs"]
    job_id: str | None = None  # ECS events carry no job id
    status: str | None = None  # one of FINISHED_STATUSES for agent messages
    exit_code: int | None = None
    duration_seconds: float | None = None
    started_at: str | None = None
    completed_at: str | None = None
    correlation_id: str | None = None
    stopped_reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True)
class Ignored:
    """Well formed, but nothing to do (an ECS task state other than STOPPED)."""

    reason: str
    runner_id: str | None = None


@dataclass(frozen=True)
class Invalid:
    """Cannot be acted on; ``reason`` names the bad part and is safe to log."""

    reason: str


ParseResult = Termination | Ignored | Invalid


def parse_message(body: str, *, ecs_cluster: str, correlation_id: str | None = None) -> ParseResult:
    """Turn a message body into a ``Termination``, ``Ignored`` or ``Invalid``; never raises.

    ``correlation_id`` (e.g. from a message attribute) is used when the body carries none.
    ECS events from a cluster other than ``ecs_cluster`` are invalid: their task ids are not
    this fleet's runners.
    """
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as error:
        position = getattr(error, "pos", None)
        return Invalid(f"body is not valid JSON ({type(error).__name__} at position {position})")
    if not isinstance(data, dict):
        return Invalid(f"body is a JSON {type(data).__name__}, not an object")
    body_correlation = data.get("correlation_id")
    if isinstance(body_correlation, str) and body_correlation:
        correlation_id = body_correlation
    correlation_id = loggable(correlation_id, 128) if correlation_id else None
    if data.get("source") == ECS_SOURCE or "detail-type" in data:
        return _parse_ecs(data, ecs_cluster=ecs_cluster, correlation_id=correlation_id)
    return _parse_agent(data, correlation_id=correlation_id)


def _parse_agent(data: dict[str, Any], *, correlation_id: str | None) -> ParseResult:
    missing = [f for f in ("instance_id", "job_id", "status") if data.get(f) in (None, "")]
    if missing:
        return Invalid(f"missing required field(s): {', '.join(missing)}")
    runner_id = data["instance_id"]
    if not isinstance(runner_id, str) or not _RUNNER_ID.match(runner_id):
        return Invalid("instance_id is not a runner id (letters, digits, '-' or '_', at most 64)")
    job_id = data["job_id"]
    if isinstance(job_id, bool) or not isinstance(job_id, (str, int)):
        return Invalid(f"job_id is a {type(job_id).__name__}, not a string")
    job_id = str(job_id)
    if len(job_id) > _JOB_ID_MAX or not job_id.strip():
        return Invalid("job_id is blank or longer than 256 characters")
    # The job id is logged and used as a table key: a newline would forge log lines, a lone
    # surrogate cannot be written as UTF-8, a right-to-left mark hides what is shown.
    if any(unicodedata.category(c)[0] in "CZ" for c in job_id):
        return Invalid("job_id holds a space, control, format or surrogate character")
    status = data["status"]
    if status not in FINISHED_STATUSES:
        shown = status if isinstance(status, str) and len(status) <= 32 else f"<{type(status).__name__}>"
        return Invalid(f"status {shown!r} is not one of {', '.join(FINISHED_STATUSES)}")

    exit_code = data.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        return Invalid(f"exit_code is a {type(exit_code).__name__}, not an integer")
    duration = data.get("duration_seconds")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration):
            return Invalid("duration_seconds is not a number")
        if duration < 0:
            return Invalid("duration_seconds is negative")
    times: dict[str, str | None] = {}
    for name in ("started_at", "completed_at"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or not _ISO_UTC.match(value)):
            return Invalid(f"{name} is not an ISO 8601 UTC time (e.g. 2026-11-22T10:05:14Z)")
        times[name] = value
    if duration is None and times["started_at"] and times["completed_at"]:
        duration = (parse_time(times["completed_at"]) - parse_time(times["started_at"])).total_seconds()
        if duration < 0:
            return Invalid("completed_at is before started_at")
    return Termination(
        runner_id=runner_id, source="agent", job_id=job_id, status=status, exit_code=exit_code,
        duration_seconds=None if duration is None else float(duration), started_at=times["started_at"],
        completed_at=times["completed_at"], correlation_id=correlation_id,
    )


def _parse_ecs(data: dict[str, Any], *, ecs_cluster: str, correlation_id: str | None) -> ParseResult:
    if data.get("source") != ECS_SOURCE or data.get("detail-type") != ECS_DETAIL_TYPE:
        return Invalid("event is not an 'ECS Task State Change' from aws.ecs")
    detail = data.get("detail")
    if not isinstance(detail, dict):
        return Invalid("ECS event has no 'detail' object")
    task_arn = detail.get("taskArn")
    if not isinstance(task_arn, str) or ":task/" not in task_arn:
        return Invalid("ECS event has no taskArn of the form arn:aws:ecs:…:task/CLUSTER/TASK_ID")
    task_path = task_arn.split(":task/", 1)[1].split("/")
    task_id = task_path[-1]
    if not _RUNNER_ID.match(task_id):
        return Invalid("taskArn does not end in a task id")
    # The cluster is in the long task ARN format (task/CLUSTER/ID) and in clusterArn.
    cluster = None
    cluster_arn = detail.get("clusterArn")
    if isinstance(cluster_arn, str) and ":cluster/" in cluster_arn:
        cluster = cluster_arn.split(":cluster/", 1)[1]
    elif len(task_path) == 2:
        cluster = task_path[0]
    if cluster is None:
        return Invalid("ECS event names no cluster (short taskArn and no clusterArn)")
    if cluster != ecs_cluster:
        return Invalid(f"ECS event is for cluster {cluster[:64]!r}, not the fleet's cluster {ecs_cluster!r}")
    last_status = detail.get("lastStatus")
    if not isinstance(last_status, str) or not last_status:
        return Invalid("ECS event has no lastStatus")
    if last_status != "STOPPED":
        return Ignored(f"ECS task is {loggable(last_status, 32)}, not STOPPED: nothing to clean up yet", runner_id=task_id)
    reason = detail.get("stoppedReason")
    stopped_at = detail.get("stoppedAt")
    return Termination(
        runner_id=task_id, source="ecs", correlation_id=correlation_id,
        stopped_reason=loggable(reason, 256) if isinstance(reason, str) else None,
        completed_at=_normalise_time(stopped_at) if isinstance(stopped_at, str) else None,
    )


# The contract's time helpers under the names this package has always used.
parse_time = parse_iso


def _normalise_time(value: str) -> str | None:
    try:
        return iso(parse_time(value))
    except ValueError:
        return None
