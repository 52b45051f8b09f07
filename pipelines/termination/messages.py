"""Termination-queue messages as typed results: act on it, nothing to do, or refused with a reason.

Two shapes arrive on the termination FIFO queue (see shared/fleet-contract.md); their schemas
are the strict pydantic models of ``pipelines/termination/models.py``:

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
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from pipelines.common.contract import loggable
from pipelines.termination.models import AgentMessage, EcsTaskStateChange, refusal, validate_message


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
    except RecursionError:
        return Invalid("body nests too deeply to read")
    except (TypeError, ValueError) as error:
        position = getattr(error, "pos", None)
        return Invalid(f"body is not valid JSON ({type(error).__name__} at position {position})")
    if not isinstance(data, dict):
        return Invalid(f"body is a JSON {type(data).__name__}, not an object")
    try:
        message = validate_message(data, ecs_cluster=ecs_cluster)
    except ValidationError as error:
        return Invalid(refusal(error))
    correlation = message.correlation_id or (loggable(correlation_id, 128) if correlation_id else None)
    if isinstance(message, EcsTaskStateChange):
        return _ecs_result(message, correlation)
    return _agent_result(message, correlation)


def _agent_result(message: AgentMessage, correlation_id: str | None) -> Termination:
    return Termination(
        runner_id=message.instance_id, source="agent", job_id=message.job_id, status=message.status,
        exit_code=message.exit_code, duration_seconds=message.duration, started_at=message.started_at,
        completed_at=message.completed_at, correlation_id=correlation_id,
    )


def _ecs_result(event: EcsTaskStateChange, correlation_id: str | None) -> Termination | Ignored:
    detail = event.detail
    if not detail.stopped:
        return Ignored(f"ECS task is {loggable(detail.last_status, 32)}, not STOPPED: nothing to clean up yet",
                       runner_id=detail.task_id)
    return Termination(runner_id=detail.task_id, source="ecs", correlation_id=correlation_id,
                       stopped_reason=detail.stopped_reason, completed_at=detail.stopped_at)
