"""One survey of the fleet for the ledger: paged list and describe calls only, never a call per runner.

| source | call | page |
|---|---|---|
| managed instances, every state | DescribeInstances, filter tag runs-fleet:managed=true | 1000 |
| container runners | ECS ListTasks (desiredStatus RUNNING, then STOPPED) → DescribeTasks | 100, 100 ids a call |
| runner parameters (and their tier) | SSM DescribeParameters, recursive path filter on the prefix | 50 |
| per-runner queues (and the account's queue count) | SQS ListQueues (no prefix when counting the account's queues) | 1000 |
| tracking records | DynamoDB Scan, projected | 1 MB |
| job records | DynamoDB Scan, projected to the six attributes the rules read | 1 MB |
| pool limits and prices | DynamoDB Scan of the pools table (the sweeps' and the audit's own readers) | 1 MB |

The one optional per-queue read: a queue's message count and CreatedTimestamp exist only in
GetQueueAttributes, one call per queue. It is made only for queues of runners that are gone
(leaked queues, which a healthy fleet has few of), at most ``queue_attribute_reads`` of
them; without it a leaked queue is dated by its tracking record's created_at and its
messages are "not read". A read that fails raises: a ledger missing a source would class
live runners as gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from pipelines.audit.pool_audit import PoolRecord, read_pools
from pipelines.common.aws import chunks, error_code, queue_name
from pipelines.common.contract import MANAGED_TAG, POOL_TAG, QUEUE_GONE_CODES, parse_iso, parse_runner_queue_name, utc
from pipelines.ledger.rules import (
    Fleet, InstanceSeen, JobSeen, ParameterSeen, QueueSeen, TaskSeen, TrackingSeen, present,
)
from pipelines.sweeps.orphaned_instances import load_pool_limits
from pipelines.sweeps.rules import EARLIEST_PLAUSIBLE_MS
from pipelines.sweeps.runners import ECS_DESCRIBE_BATCH, tags_of, transition_time
from pipelines.sweeps.stale_ssm import runner_id_of
from resources.aws import AwsClients
from resources.settings import FleetSettings

EC2_PAGE = 1000
ECS_LIST_PAGE = 100
SSM_PAGE = 50
SQS_PAGE = 1000
JOB_ATTRIBUTES = {"#j": "job_id", "#s": "status", "#i": "instance_id", "#p": "pool", "#b": "started_at",
                  "#c": "completed_at"}
QUEUE_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp"]


@dataclass
class Survey:
    """What the survey read, and what it cost (calls per API operation; pages are calls)."""

    fleet: Fleet
    pools: dict[str, PoolRecord]
    account_queues: int | None  # every queue of the account and region, when counted
    parameters_by_tier: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    queue_reads_skipped: int = 0  # leaked queues whose attributes were not read (bound reached)


def _pages(calls: Counter[str], name: str, pages: Any) -> Iterator[dict[str, Any]]:
    for page in pages:
        calls[name] += 1
        yield page


def read_instances(ec2: Any, calls: Counter[str]) -> dict[str, InstanceSeen]:
    """Every managed instance in any state (terminated ones stay visible about an hour)."""
    found: dict[str, InstanceSeen] = {}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]}], PaginationConfig={"PageSize": EC2_PAGE})
    for page in _pages(calls, "ec2:DescribeInstances", pages):
        for reservation in page.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                tags = tags_of(raw)
                state = raw.get("State", {}).get("Name", "")
                found[raw["InstanceId"]] = InstanceSeen(
                    runner_id=raw["InstanceId"], state=state, launched=utc(raw["LaunchTime"]),
                    pool=(tags.get(POOL_TAG) or "").strip() or None, instance_type=raw.get("InstanceType", ""),
                    tags=tags, ended_at=transition_time(raw) if state in ("shutting-down", "terminated") else None)
    return found


def read_tasks(ecs: Any, cluster: str, calls: Counter[str]) -> dict[str, TaskSeen]:
    """Every task of the cluster ECS still lists (stopped ones stay about an hour), described 100 a call."""
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        pages = ecs.get_paginator("list_tasks").paginate(
            cluster=cluster, desiredStatus=desired, PaginationConfig={"PageSize": ECS_LIST_PAGE})
        for page in _pages(calls, "ecs:ListTasks", pages):
            arns += page.get("taskArns", [])
    found: dict[str, TaskSeen] = {}
    for batch in chunks(list(dict.fromkeys(arns)), ECS_DESCRIBE_BATCH):
        calls["ecs:DescribeTasks"] += 1
        for task in ecs.describe_tasks(cluster=cluster, tasks=batch).get("tasks", []):
            task_id = task.get("taskArn", "").rsplit("/", 1)[-1]
            started = task.get("startedAt") or task.get("createdAt")
            stopped = task.get("stoppedAt") or task.get("executionStoppedAt")
            found[task_id] = TaskSeen(task_id, task.get("lastStatus", ""),
                                      utc(started) if isinstance(started, datetime) else None,
                                      utc(stopped) if isinstance(stopped, datetime) else None)
    return found


def read_parameters(ssm: Any, prefix: str, calls: Counter[str]) -> tuple[dict[str, ParameterSeen], Counter[str]]:
    """Runner parameters under the prefix, and how many parameters of each tier are there (all names)."""
    found: dict[str, ParameterSeen] = {}
    tiers: Counter[str] = Counter()
    pages = ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [prefix.rstrip("/") or "/"]}],
        PaginationConfig={"PageSize": SSM_PAGE})
    for page in _pages(calls, "ssm:DescribeParameters", pages):
        for raw in page.get("Parameters", []):
            tier = raw.get("Tier") or "Standard"
            tiers[tier] += 1
            runner_id = runner_id_of(raw["Name"], prefix)
            if runner_id is not None:
                found[runner_id] = ParameterSeen(raw["Name"], runner_id, utc(raw["LastModifiedDate"]), tier)
    return found, tiers


def read_queues(sqs: Any, prefix: str, whole_account: bool, calls: Counter[str]
                ) -> tuple[dict[str, list[QueueSeen]], int | None]:
    """Per-runner queues by runner id; with ``whole_account``, one listing of every queue, which also counts them."""
    found: dict[str, list[QueueSeen]] = {}
    total = 0
    pages = sqs.get_paginator("list_queues").paginate(
        **({} if whole_account else {"QueueNamePrefix": prefix}), PaginationConfig={"PageSize": SQS_PAGE})
    for page in _pages(calls, "sqs:ListQueues", pages):
        for url in page.get("QueueUrls", []):
            total += 1
            parsed = parse_runner_queue_name(queue_name(url), prefix)
            if parsed:
                kind, runner_id = parsed
                found.setdefault(runner_id, []).append(QueueSeen(runner_id, kind, url))
    return found, total if whole_account else None


def _millis(item: dict[str, Any], name: str) -> datetime | None:
    try:
        value = int(item.get(name, {}).get("N"))
    except (TypeError, ValueError):
        return None
    if value < EARLIEST_PLAUSIBLE_MS:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def read_tracking(dynamodb: Any, table: str, calls: Counter[str]) -> dict[str, TrackingSeen]:
    found: dict[str, TrackingSeen] = {}
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression="runner_id, created_at, last_activity")
    for page in _pages(calls, "dynamodb:Scan", pages):
        for item in page.get("Items", []):
            runner_id = item.get("runner_id", {}).get("S")
            if runner_id:
                found[runner_id] = TrackingSeen(runner_id, _millis(item, "created_at"), _millis(item, "last_activity"))
    return found


def _time(item: dict[str, Any], name: str) -> datetime | None:
    try:
        return parse_iso(item[name]["S"])
    except (KeyError, TypeError, ValueError):
        return None


def read_jobs(dynamodb: Any, table: str, calls: Counter[str]) -> list[JobSeen]:
    """Every job record, projected to the six attributes the rules read (a record's other fields never leave AWS)."""
    found: list[JobSeen] = []
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression=", ".join(JOB_ATTRIBUTES), ExpressionAttributeNames=JOB_ATTRIBUTES)
    for page in _pages(calls, "dynamodb:Scan", pages):
        for item in page.get("Items", []):
            text = {k: item.get(k, {}).get("S") for k in ("job_id", "status", "instance_id", "pool")}
            if not text["job_id"]:
                continue
            found.append(JobSeen(text["job_id"], text["status"], (text["instance_id"] or "").strip() or None,
                                 text["pool"] or None, _time(item, "started_at"), _time(item, "completed_at")))
    return found


def read_queue_attributes(sqs: Any, queues: list[QueueSeen], calls: Counter[str]) -> dict[str, QueueSeen | None]:
    """url -> the queue with its messages held and CreatedTimestamp (one GetQueueAttributes each); None: deleted since."""
    found: dict[str, QueueSeen | None] = {}
    for queue in queues:
        calls["sqs:GetQueueAttributes"] += 1
        try:
            attributes = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=QUEUE_ATTRIBUTES)["Attributes"]
        except ClientError as error:
            if error_code(error) in QUEUE_GONE_CODES:
                found[queue.url] = None  # deleted since it was listed
                continue
            raise
        held = sum(int(attributes.get(name, 0)) for name in QUEUE_ATTRIBUTES[:3])
        created = attributes.get("CreatedTimestamp")
        found[queue.url] = QueueSeen(queue.runner_id, queue.kind, queue.url,
                                     datetime.fromtimestamp(float(created), timezone.utc) if created else None, held)
    return found


def survey(aws: AwsClients, settings: FleetSettings, *, count_account_queues: bool = True,
           queue_attribute_reads: int = 100) -> Survey:
    """Read the whole fleet once (see the module docstring for every call)."""
    calls: Counter[str] = Counter()
    fleet = Fleet()
    fleet.instances = read_instances(aws.ec2, calls)
    fleet.tasks = read_tasks(aws.ecs, settings.ecs_cluster, calls)
    fleet.parameters, tiers = read_parameters(aws.ssm, settings.ssm_prefix, calls)
    queues, account_queues = read_queues(aws.sqs, settings.runner_queue_prefix, count_account_queues, calls)
    fleet.tracking = read_tracking(aws.dynamodb, settings.queue_tracking_table, calls)
    fleet.jobs = read_jobs(aws.dynamodb, settings.jobs_table, calls)
    limits = load_pool_limits(aws.dynamodb, settings.pools_table)
    calls["dynamodb:Scan"] += 1  # the pools table: one page (a handful of pools)
    pools = read_pools(aws.dynamodb, settings.pools_table)
    calls["dynamodb:Scan"] += 1
    fleet.max_runtimes = {**limits.max_runtimes, **{name: None for name in limits.bad}}

    # Messages held and creation time, only for queues of runners that are gone, bounded.
    leaked = [q for runner_id, qs in sorted(queues.items()) if not present(fleet, runner_id)[0] for q in qs]
    read = read_queue_attributes(aws.sqs, leaked[:queue_attribute_reads], calls)
    for runner_id, qs in queues.items():
        kept = [read.get(q.url, q) for q in qs]
        if any(kept):
            fleet.queues[runner_id] = [q for q in kept if q is not None]
    return Survey(fleet, pools, account_queues, tiers, calls, max(0, len(leaked) - queue_attribute_reads))

