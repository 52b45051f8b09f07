"""Orphaned instances: managed runners still running long after any job could need them → terminate.

The contract's rule: managed, running, launched more than its pool's ``max_runtime_minutes``
(360 when the pool is not in the pools table) + 10 minutes ago, not protected, and its
``runs-fleet:job-id`` tag (if any) names no job with status ``running`` in the jobs table.

Written as find → plan → act over boto3 clients; the Dagster op/job/schedule at the bottom
are the thin layer around it.
"""


from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.common.aws import EC2_TERMINATE_BATCH, batch_get_with_retry, chunks, error_code
from pipelines.common.safety import ActResult, PlannedAction
from pipelines.sweeps import rules
from pipelines.sweeps.factory import sweep_job
from pipelines.sweeps.plans import Kept, SweepPlan
from pipelines.sweeps.rules import (
    DEFAULT_MAX_RUNTIME_MINUTES,
    GRACE_MINUTES,
    JOB_ID_TAG,
    MANAGED_TAG,
    POOL_TAG,
    JobLookup,
)
from pipelines.sweeps.runners import EC2_PAGE_SIZE, describe_instances_by_id, tags_of
from resources.aws import AwsClients
from resources.settings import FleetSettings

KIND = "orphaned_instances"


@dataclass(frozen=True)
class Instance:
    """A managed instance as DescribeInstances reported it."""

    instance_id: str
    state: str
    launch_time: datetime
    tags: Mapping[str, str]

    @property
    def pool(self) -> str | None:
        return self.tags.get(POOL_TAG) or None

    @property
    def job_id(self) -> str | None:
        """The job-id tag's value: None when untagged, "" when the tag is there but empty."""
        return self.tags.get(JOB_ID_TAG)

    @property
    def protected(self) -> bool:
        return rules.protected(self.tags)

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_TAG) == "true"


@dataclass(frozen=True)
class PoolLimits:
    """The pools table as the rule needs it: usable limits, and why the others are unusable."""

    max_runtimes: Mapping[str, Decimal]
    bad: Mapping[str, str]

    def limit_of(self, pool: str | None) -> tuple[Decimal | None, str]:
        """(max runtime, where it comes from); None with the reason when the pool's value is unusable."""
        if pool in self.bad:
            return None, self.bad[pool]
        if pool in self.max_runtimes:
            return self.max_runtimes[pool], f"pool {pool}"
        return DEFAULT_MAX_RUNTIME_MINUTES, f"default, pool {pool or '(untagged)'} not in pools table"


def _instance(raw: dict[str, Any]) -> Instance:
    launched = raw["LaunchTime"]
    if launched.tzinfo is None:
        launched = launched.replace(tzinfo=timezone.utc)
    return Instance(raw["InstanceId"], raw.get("State", {}).get("Name", ""), launched, tags_of(raw))


def find_managed_running(ec2: Any, page_size: int = EC2_PAGE_SIZE) -> list[Instance]:
    """Every managed, running instance, all pages (1000 a page)."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ],
        PaginationConfig={"PageSize": page_size},
    )
    return [_instance(i) for page in pages for r in page.get("Reservations", []) for i in r.get("Instances", [])]


def load_pool_limits(dynamodb: Any, pools_table: str, page_size: int | None = None) -> PoolLimits:
    """Pools table → each pool's usable max_runtime_minutes, and why the others are unusable. Scans every page."""
    runtimes: dict[str, Decimal] = {}
    bad: dict[str, str] = {}
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=pools_table, ProjectionExpression="pool_name, max_runtime_minutes",
        PaginationConfig={"PageSize": page_size} if page_size else {},
    )
    for page in pages:
        for item in page.get("Items", []):
            name = item.get("pool_name", {}).get("S")
            if not name:
                continue
            raw = item.get("max_runtime_minutes", {}).get("N")
            value = rules.parse_max_runtime(raw)
            if value is None:
                bad[name] = f"pool {name} has no usable max_runtime_minutes ({str(raw)[:40]!r})"
            else:
                runtimes[name] = value
    return PoolLimits(runtimes, bad)


def read_pool_limits(dynamodb: Any, pools_table: str) -> PoolLimits:
    try:
        return load_pool_limits(dynamodb, pools_table)
    except (ClientError, BotoCoreError) as error:
        # Every instance's limit depends on the pools table: a sweep missing it acts on nothing.
        raise RuntimeError(
            f"pools table {pools_table} could not be read ({error_code(error) or error}): acting on nothing"
        ) from error


def lookup_jobs(dynamodb: Any, jobs_table: str, job_ids: Iterable[str]) -> dict[str, JobLookup]:
    """job_id -> what the table says of it (absent ids included as not found); 100 keys a call."""
    wanted = sorted(set(job_ids))
    keys = [{"job_id": {"S": j}} for j in wanted]
    items = batch_get_with_retry(dynamodb, jobs_table, keys, projection="job_id, #s", names={"#s": "status"})
    statuses = {item["job_id"]["S"]: (item.get("status", {}).get("S") or None) for item in items}
    return {j: JobLookup(statuses[j]) if j in statuses else JobLookup(found=False) for j in wanted}


def read_jobs(aws: AwsClients, settings: FleetSettings, instances: Iterable[Instance]
              ) -> tuple[dict[str, JobLookup], str | None]:
    """The jobs named by these instances' job-id tags, or the error that kept them from being read."""
    job_ids = [i.job_id for i in instances if i.job_id and i.job_id.strip()]
    if not job_ids:
        return {}, None
    try:
        return lookup_jobs(aws.dynamodb, settings.jobs_table, job_ids), None
    except (ClientError, BotoCoreError, RuntimeError) as error:
        return {}, error_code(error) or str(error)


def overdue_instances(instances: Iterable[Instance], pools: PoolLimits, now: datetime
                      ) -> tuple[list[tuple[Instance, str]], list[Kept]]:
    """The age test: (instance, why overdue) for the overdue, and those kept because their limit is unusable."""
    candidates: list[tuple[Instance, str]] = []
    unusable: list[Kept] = []
    for instance in sorted(instances, key=lambda i: i.instance_id):
        limit, source = pools.limit_of(instance.pool)
        if limit is None:
            unusable.append(Kept(instance.instance_id, "uncertain", source, instance.pool))
        elif rules.overdue(instance.launch_time, limit, now):
            age = rules.minutes_since(instance.launch_time, now)
            candidates.append((instance, f"running {age:.0f} min > max runtime {limit} min ({source}) + {GRACE_MINUTES}"))
    return candidates, unusable


def plan_orphaned_instances(
    instances: list[Instance],
    pools: PoolLimits,
    jobs: Mapping[str, JobLookup],
    now: datetime,
    lookup_error: str | None = None,
) -> SweepPlan:
    """Apply the rule: every overdue candidate is in the plan, to terminate or kept with its category."""
    plan = SweepPlan(kind=KIND, found=len(instances))
    candidates, plan.kept = overdue_instances(instances, pools, now)
    for instance, age_reason in candidates:
        job = jobs.get(instance.job_id) if instance.job_id else None
        decision = rules.decide_overdue_instance(instance.tags, job, lookup_error)
        if decision.acts:
            plan.actions.append(PlannedAction(instance.instance_id, f"{age_reason}; {decision.reason}", "terminate",
                                              pool=instance.pool))
            plan.targets[instance.instance_id] = instance.job_id
        else:
            plan.kept.append(Kept(instance.instance_id, decision.outcome, decision.reason, instance.pool))
    return plan


def find_and_plan(aws: AwsClients, settings: FleetSettings, now: datetime | None = None) -> SweepPlan:
    """Find managed running instances, read pools and (in batches) the jobs of the overdue ones, and plan."""
    now = now or datetime.now(timezone.utc)
    instances = find_managed_running(aws.ec2)
    pools = read_pool_limits(aws.dynamodb, settings.pools_table)
    candidates, _ = overdue_instances(instances, pools, now)
    jobs, lookup_error = read_jobs(aws, settings, [i for i, _ in candidates if not i.protected])
    return plan_orphaned_instances(instances, pools, jobs, now, lookup_error)


def recheck(aws: AwsClients, settings: FleetSettings, targets: Mapping[str, str | None],
            now: datetime | None = None) -> dict[str, str]:
    """Read again everything the plan relied on and apply the rule again; returns id -> why to skip it.

    Just before TerminateInstances: DescribeInstances of the targets (state, tags, launch
    time), the pools table (a limit raised since the plan), and the jobs of every tagged target
    (BatchGetItem, 100 a call). A job that is running now (or appeared running), unreadable
    or malformed keeps its instance; so does a job-id tag that changed since the plan.
    """
    now = now or datetime.now(timezone.utc)
    current = {i: _instance(raw) for i, raw in describe_instances_by_id(aws.ec2, targets).items()}
    changed: dict[str, str] = {}
    live: list[Instance] = []
    for instance_id, planned_job in targets.items():
        instance = current.get(instance_id)
        if instance is None:
            changed[instance_id] = "no longer known to EC2"
        elif instance.state != "running":
            changed[instance_id] = f"now {instance.state}"
        elif not instance.managed:
            changed[instance_id] = f"no longer tagged {MANAGED_TAG}=true"
        elif instance.job_id != planned_job:
            changed[instance_id] = f"job-id tag changed from {planned_job!r} to {instance.job_id!r} (assigned since the plan)"
        else:
            live.append(instance)
    pools = read_pool_limits(aws.dynamodb, settings.pools_table)
    jobs, lookup_error = read_jobs(aws, settings, live)
    plan = plan_orphaned_instances(live, pools, jobs, now, lookup_error)
    for kept in plan.kept:
        changed[kept.resource] = f"kept ({kept.outcome}): {kept.reason}"
    for instance in live:
        if instance.instance_id not in plan.targets and instance.instance_id not in changed:
            changed[instance.instance_id] = "no longer overdue (pool limit changed since the plan)"
    return changed


def terminate(aws: AwsClients, settings: FleetSettings, plan: SweepPlan, result: ActResult | None = None) -> ActResult:
    """Re-check every target against a fresh reading of everything the rule uses, then TerminateInstances (1000 a call)."""
    result = ActResult() if result is None else result
    if not plan.actions:
        return result
    by_id = {a.resource: a for a in plan.actions}
    try:
        changed = recheck(aws, settings, plan.targets)
    except (ClientError, BotoCoreError, RuntimeError) as error:
        why = f"re-check failed ({error_code(error) or error}): not terminated"
        result.failed = [(a, why) for a in plan.actions]
        return result
    result.skipped = [(by_id[i], why) for i, why in sorted(changed.items())]
    go = [a for a in plan.actions if a.resource not in changed]
    for batch in chunks(go, EC2_TERMINATE_BATCH):
        try:
            response = aws.ec2.terminate_instances(InstanceIds=[a.resource for a in batch])
        except (ClientError, BotoCoreError) as error:
            why = f"TerminateInstances failed ({error_code(error) or error})"
            result.failed += [(a, why) for a in batch]
            continue
        terminated = {i["InstanceId"] for i in response.get("TerminatingInstances", [])}
        for action in batch:
            if action.resource in terminated:
                result.done.append(action)
            else:
                result.failed.append((action, "not in TerminateInstances' answer"))
    return result


# --- Dagster layer --------------------------------------------------------------------------

SWEEP = sweep_job(
    name="orphaned_instances_sweep", task_type="orphaned_instances",
    plan_op="plan_orphaned_instances", act_op="terminate_orphaned_instances",
    find_and_plan=lambda aws, settings, _config: find_and_plan(aws, settings),
    act=terminate, metric="OrphanedInstancesTerminated",
    interval_minutes=15, cron="*/15 * * * *", schedule_name="orphaned_instances_every_15_minutes",
    description="Terminate managed instances running past their pool's max_runtime_minutes (default 360) + 10 min, "
    "unless protected (runs-fleet:protect with any value but false) or their job is still running. Plan first (the "
    "orphaned_instances_sweep_plan asset); a target is terminated once two plans a schedule interval apart held it, "
    "after the instance, its pool and its job are read again. `dry_run`, `max_actions`, `max_fraction`, "
    "`confirm_after_minutes` and `anomaly_factor` are set on the terminate op's config.",
    plan_description="Find managed running instances past their pool's max runtime + 10 min with no running job; "
    "record the plan (every candidate, with what it spared and why).",
    act_description="Terminate the confirmed targets (1000 a call) after re-reading each instance, its pool and its "
    "job; dry run, blast radius, the anomaly gate and two observations guard it.",
)
orphaned_instances_sweep, orphaned_instances_schedule, REQUEST = SWEEP.job, SWEEP.schedule, SWEEP.request
PLAN_OP, ACT_OP = SWEEP.plan_op, SWEEP.act_op
