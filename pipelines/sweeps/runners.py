"""Does a runner still exist? The one liveness rule the stale-SSM and orphaned-queues sweeps share.

A runner is an EC2 instance (id ``i-…``) or an ECS task (any other id: the last segment of
its task ARN). It is *gone* when the instance is terminated or unknown, or the task is
STOPPED or unknown in the fleet's cluster. Anything else — a lookup that failed, a cluster
that cannot be found, an answer we do not understand — is *uncertain*, and uncertainty keeps
the runner's resources alive.
"""

from __future__ import annotations

import re

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.common.aws import chunks, error_code
from pipelines.sweeps.rules import POOL_TAG

# DescribeInstances accepts up to 200 values per filter. The `instance-id` filter is used
# instead of InstanceIds because InstanceIds fails the whole call (InvalidInstanceID.NotFound)
# when one id in the batch is unknown, and an unknown id is exactly what a sweep looks for.
EC2_FILTER_VALUES = 200
EC2_PAGE_SIZE = 1000
ECS_DESCRIBE_BATCH = 100  # DescribeTasks accepts up to 100 task ids

State = Literal["live", "gone", "uncertain"]
# Lenient on length and case (stand-ins and older formats differ), strict on characters.
_EC2_ID = re.compile(r"i-[A-Za-z0-9]{1,64}")
_ECS_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# EC2's StateTransitionReason, e.g. "User initiated (2026-11-22 10:05:14 GMT)" (moto writes UTC).
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


@dataclass(frozen=True)
class Liveness:
    """What is known about one runner: live, gone, or uncertain, with why (and its pool if known)."""

    state: State
    why: str
    pool: str | None = None
    # What AWS said, for sweeps that read more into it than live/gone (the stuck jobs sweep):
    # the raw EC2 state name or ECS lastStatus, and when AWS says the runner ended, if it says.
    aws_state: str = ""
    ended_at: datetime | None = None


def is_ec2_runner(runner_id: str) -> bool:
    return runner_id.startswith("i-")


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}


def transition_time(instance: dict[str, Any]) -> datetime | None:
    """The time in an instance's StateTransitionReason (when it was stopped or terminated), if any."""
    match = _TRANSITION_TIME.search(instance.get("StateTransitionReason") or "")
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def describe_instances_by_id(ec2: Any, instance_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every instance AWS knows among ``instance_ids`` (unknown ids are simply absent), paged, 200 ids a call."""
    found: dict[str, dict[str, Any]] = {}
    paginator = ec2.get_paginator("describe_instances")
    for batch in chunks(sorted(set(instance_ids)), EC2_FILTER_VALUES):
        pages = paginator.paginate(
            Filters=[{"Name": "instance-id", "Values": batch}], PaginationConfig={"PageSize": EC2_PAGE_SIZE}
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    found[instance["InstanceId"]] = instance
    return found


def ec2_liveness(ec2: Any, instance_ids: Iterable[str]) -> dict[str, Liveness]:
    ids = sorted(set(instance_ids))
    if not ids:
        return {}
    try:
        found = describe_instances_by_id(ec2, ids)
    except (ClientError, BotoCoreError) as error:
        why = f"DescribeInstances failed ({error_code(error) or type(error).__name__}): runner kept"
        return {i: Liveness("uncertain", why) for i in ids}
    result: dict[str, Liveness] = {}
    for instance_id in ids:
        instance = found.get(instance_id)
        if instance is None:
            result[instance_id] = Liveness("gone", "instance unknown to EC2")
            continue
        state = instance.get("State", {}).get("Name", "")
        pool = tags_of(instance).get(POOL_TAG) or None
        ended = transition_time(instance)
        if state == "terminated":
            result[instance_id] = Liveness("gone", "instance terminated", pool, state, ended)
        elif state:
            result[instance_id] = Liveness("live", f"instance {state}", pool, state, ended)
        else:
            result[instance_id] = Liveness("uncertain", "instance has no state in the answer: runner kept", pool)
    return result


def ecs_liveness(ecs: Any, cluster: str, task_ids: Iterable[str]) -> dict[str, Liveness]:
    ids = sorted(set(task_ids))
    result: dict[str, Liveness] = {}
    for batch in chunks(ids, ECS_DESCRIBE_BATCH):
        try:
            response = ecs.describe_tasks(cluster=cluster, tasks=batch)
        except (ClientError, BotoCoreError) as error:
            # ClusterNotFoundException included: a missing dependency acts on nothing.
            why = f"ECS DescribeTasks in cluster {cluster} failed ({error_code(error) or type(error).__name__}): runner kept"
            result.update({t: Liveness("uncertain", why) for t in batch})
            continue
        seen: set[str] = set()
        for task in response.get("tasks", []):
            task_id = task.get("taskArn", "").rsplit("/", 1)[-1]
            if task_id not in batch:
                continue
            seen.add(task_id)
            status = task.get("lastStatus", "")
            ended = task.get("stoppedAt") or task.get("executionStoppedAt")
            ended = ended if isinstance(ended, datetime) else None
            if status == "STOPPED":
                result[task_id] = Liveness("gone", "ECS task stopped", aws_state=status, ended_at=ended)
            elif status:
                result[task_id] = Liveness("live", f"ECS task {status}", aws_state=status)
            else:
                result[task_id] = Liveness("uncertain", "ECS task has no lastStatus: runner kept")
        for failure in response.get("failures", []):
            task_id = failure.get("arn", "").rsplit("/", 1)[-1]
            if task_id not in batch or task_id in seen:
                continue
            seen.add(task_id)
            reason = failure.get("reason", "")
            if reason == "MISSING":
                result[task_id] = Liveness("gone", "ECS task unknown in the cluster")
            else:
                result[task_id] = Liveness("uncertain", f"ECS DescribeTasks failure {reason!r}: runner kept")
        for task_id in batch:
            # Neither described nor reported as a failure: the cluster does not know it.
            result.setdefault(task_id, Liveness("gone", "ECS task unknown in the cluster"))
    return result


def malformed_runner_id(runner_id: str) -> str | None:
    """Why an id (taken from a parameter or queue name) cannot be a runner's; None when it can.

    Checked before any lookup: one odd id in a DescribeTasks batch of 100 would otherwise
    fail the whole batch (InvalidParameterException) and keep 99 innocent runners' pieces.
    """
    pattern = _EC2_ID if is_ec2_runner(runner_id) else _ECS_TASK_ID
    if pattern.fullmatch(runner_id):
        return None
    return f"runner id {runner_id[:80]!r} is not an EC2 instance id nor an ECS task id: kept"


def runner_liveness(ec2: Any, ecs: Any, cluster: str, runner_ids: Iterable[str]) -> dict[str, Liveness]:
    """Liveness of every runner id: EC2 ids looked up 200 a call, ECS task ids 100 a call."""
    ids = set(runner_ids)
    result = {r: Liveness("uncertain", why) for r in ids if (why := malformed_runner_id(r))}
    ids -= set(result)
    result.update(ec2_liveness(ec2, [r for r in ids if is_ec2_runner(r)]))
    result.update(ecs_liveness(ecs, cluster, [r for r in ids if not is_ec2_runner(r)]))
    return result
