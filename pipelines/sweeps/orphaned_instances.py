"""Orphaned instances: managed runners still running long after any job could need them → terminate.

The contract's rule: managed, running, launched more than its pool's ``max_runtime_minutes``
(360 when the pool is not in the pools table) + 10 minutes ago, not protected, and its
``runs-fleet:job-id`` tag (if any) names no job with status ``running`` in the jobs table.

Written as find → plan → act over boto3 clients; the Dagster op/job/schedule at the bottom
are the thin layer around it.
"""


from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import DefaultScheduleStatus, In, Out, Output, ScheduleDefinition, job, op

from pipelines.common.aws import EC2_TERMINATE_BATCH, batch_get_with_retry, chunks, error_code
from pipelines.common.requests import RequestableJob
from pipelines.common.safety import ActResult, PlannedAction, SweepConfig
from pipelines.sweeps.params import sweep_run_config
from pipelines.sweeps.plans import SweepPlan, guarded_act, plan_output
from pipelines.sweeps.runners import EC2_PAGE_SIZE, POOL_TAG, describe_instances_by_id, tags_of
from resources.aws import AwsClients
from resources.settings import FleetSettings

KIND = "orphaned_instances"
MANAGED_TAG = "runs-fleet:managed"
JOB_ID_TAG = "runs-fleet:job-id"
PROTECT_TAG = "runs-fleet:protect"
DEFAULT_MAX_RUNTIME_MINUTES = 360
GRACE_MINUTES = 10
# The contract's job statuses; any other value is malformed and keeps the instance.
JOB_STATUSES = frozenset({"queued", "running", "completed", "failed", "cancelled", "interrupted"})


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
        return self.tags.get(PROTECT_TAG, "").strip().lower() == "true"

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_TAG) == "true"


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


def load_max_runtimes(
    dynamodb: Any, pools_table: str, page_size: int | None = None
) -> tuple[dict[str, int], dict[str, str]]:
    """Pools table → (pool -> max_runtime_minutes, pool -> why its value is unusable). Scans every page."""
    runtimes: dict[str, int] = {}
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
            try:
                value = Decimal(raw) if raw is not None else None
            except InvalidOperation:
                value = None
            if value is None or value <= 0:
                bad[name] = f"pool {name} has no usable max_runtime_minutes ({raw!r})"
            else:
                runtimes[name] = int(value)
    return runtimes, bad


def lookup_job_statuses(dynamodb: Any, jobs_table: str, job_ids: Iterable[str]) -> dict[str, str | None]:
    """job_id -> status (None when the record has no usable status) for the jobs that exist; 100 keys a call."""
    keys = [{"job_id": {"S": j}} for j in sorted(set(job_ids))]
    items = batch_get_with_retry(dynamodb, jobs_table, keys, projection="job_id, #s", names={"#s": "status"})
    return {item["job_id"]["S"]: (item.get("status", {}).get("S") or None) for item in items}


def overdue(instance: Instance, max_runtime: int, now: datetime) -> bool:
    """Launched more than max runtime + 10 minutes ago (strictly)."""
    return now - instance.launch_time > timedelta(minutes=max_runtime + GRACE_MINUTES)


def plan_orphaned_instances(
    instances: list[Instance],
    max_runtimes: Mapping[str, int],
    bad_pools: Mapping[str, str],
    job_statuses: Mapping[str, str | None] | None,
    now: datetime,
    lookup_error: str | None = None,
) -> SweepPlan:
    """Apply the rule. ``job_statuses`` is None when the jobs table could not be read."""
    plan = SweepPlan(kind=KIND, found=len(instances))
    for instance in sorted(instances, key=lambda i: i.instance_id):
        pool = instance.pool
        if instance.protected:
            continue
        if pool in bad_pools:
            plan.kept.append((instance.instance_id, bad_pools[pool]))
            continue
        max_runtime = max_runtimes.get(pool, DEFAULT_MAX_RUNTIME_MINUTES) if pool else DEFAULT_MAX_RUNTIME_MINUTES
        if not overdue(instance, max_runtime, now):
            continue
        age = int((now - instance.launch_time).total_seconds() // 60)
        source = f"pool {pool}" if pool in max_runtimes else f"default, pool {pool or '(untagged)'} not in pools table"
        reason = f"running {age} min > max runtime {max_runtime} min ({source}) + {GRACE_MINUTES}"
        job_id = instance.job_id
        if job_statuses is None:
            # A missing dependency acts on nothing, tagged or not.
            plan.kept.append((instance.instance_id, f"jobs table lookup failed ({lookup_error}): kept"))
            continue
        if job_id is not None:
            if not job_id.strip():
                plan.kept.append((instance.instance_id, f"{JOB_ID_TAG} tag is empty: cannot tell whether it is busy"))
                continue
            if job_id not in job_statuses:
                reason += f"; job {job_id} not in the jobs table"
            else:
                status = job_statuses[job_id]
                if status is None:
                    plan.kept.append((instance.instance_id, f"job {job_id} record has no status: kept"))
                    continue
                if status not in JOB_STATUSES:
                    # A malformed status ("RUNNING", blanks) cannot prove the job is over.
                    plan.kept.append((instance.instance_id, f"job {job_id} record has status {status!r}, "
                                      "not a known status: kept"))
                    continue
                if status == "running":
                    continue
                reason += f"; job {job_id} is {status}"
        else:
            reason += "; no job assigned"
        plan.actions.append(PlannedAction(instance.instance_id, reason, "terminate", pool=pool))
        plan.targets[instance.instance_id] = job_id
    return plan


def find_and_plan(aws: AwsClients, settings: FleetSettings, now: datetime | None = None) -> SweepPlan:
    """Find managed running instances, read pools and (in batches) the jobs of the overdue ones, and plan."""
    now = now or datetime.now(timezone.utc)
    instances = find_managed_running(aws.ec2)
    try:
        max_runtimes, bad_pools = load_max_runtimes(aws.dynamodb, settings.pools_table)
    except (ClientError, BotoCoreError) as error:
        # Every instance's limit depends on the pools table: a sweep missing it acts on nothing.
        raise RuntimeError(
            f"pools table {settings.pools_table} could not be read ({error_code(error) or error}): acting on nothing"
        ) from error
    candidates = [
        i for i in instances
        if not i.protected and i.pool not in bad_pools
        and overdue(i, max_runtimes.get(i.pool or "", DEFAULT_MAX_RUNTIME_MINUTES), now)
    ]
    job_ids = [i.job_id for i in candidates if i.job_id and i.job_id.strip()]
    statuses: dict[str, str | None] | None = {}
    lookup_error = None
    if job_ids:
        try:
            statuses = lookup_job_statuses(aws.dynamodb, settings.jobs_table, job_ids)
        except (ClientError, BotoCoreError, RuntimeError) as error:
            statuses, lookup_error = None, error_code(error) or str(error)
    return plan_orphaned_instances(instances, max_runtimes, bad_pools, statuses, now, lookup_error)


def recheck(ec2: Any, targets: Mapping[str, str | None]) -> dict[str, str]:
    """Describe the planned instances again; returns id -> why it must now be skipped."""
    current = describe_instances_by_id(ec2, targets)
    changed: dict[str, str] = {}
    for instance_id, planned_job in targets.items():
        raw = current.get(instance_id)
        if raw is None:
            changed[instance_id] = "no longer known to EC2"
            continue
        instance = _instance(raw)
        if instance.state != "running":
            changed[instance_id] = f"now {instance.state}"
        elif not instance.managed:
            changed[instance_id] = f"no longer tagged {MANAGED_TAG}=true"
        elif instance.protected:
            changed[instance_id] = f"now protected ({PROTECT_TAG}=true)"
        elif instance.job_id != planned_job:
            changed[instance_id] = f"job-id tag changed from {planned_job!r} to {instance.job_id!r} (assigned since the plan)"
    return changed


def terminate(ec2: Any, plan: SweepPlan) -> ActResult:
    """Re-check every target, then TerminateInstances up to 1000 ids a call."""
    result = ActResult()
    if not plan.actions:
        return result
    by_id = {a.resource: a for a in plan.actions}
    try:
        changed = recheck(ec2, plan.targets)
    except (ClientError, BotoCoreError) as error:
        why = f"re-check DescribeInstances failed ({error_code(error) or error}): not terminated"
        result.failed = [(a, why) for a in plan.actions]
        return result
    result.skipped = [(by_id[i], why) for i, why in sorted(changed.items())]
    go = [a for a in plan.actions if a.resource not in changed]
    for batch in chunks(go, EC2_TERMINATE_BATCH):
        try:
            response = ec2.terminate_instances(InstanceIds=[a.resource for a in batch])
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


@op(name="plan_orphaned_instances", out=Out(SweepPlan))
def plan_orphaned_instances_op(context, aws: AwsClients, settings: FleetSettings) -> Output[SweepPlan]:
    """Find managed running instances past their pool's max runtime + 10 min with no running job; record the plan."""
    return plan_output(context.log, find_and_plan(aws, settings))


@op(ins={"plan": In(SweepPlan)})
def terminate_orphaned_instances(context, config: SweepConfig, plan: SweepPlan, aws: AwsClients,
                                 settings: FleetSettings) -> Output:
    """Terminate the planned instances (1000 a call) after re-checking each; dry run and blast radius guard it."""
    return guarded_act(context, plan, config, settings, aws, lambda p: terminate(aws.ec2, p),
                       "OrphanedInstancesTerminated")


@job(tags={"dagster/max_retries": "0", "runs-fleet/capability": "sweeps", "runs-fleet/exclusive": "orphaned_instances_sweep"})
def orphaned_instances_sweep() -> None:
    """Terminate managed instances running past their pool's max_runtime_minutes (default 360) + 10 min,
    unless protected (runs-fleet:protect=true) or their job is still running. Plan first; `dry_run`,
    `max_actions` and `max_fraction` are set on the terminate op's config."""
    terminate_orphaned_instances(plan_orphaned_instances_op())


orphaned_instances_schedule = ScheduleDefinition(
    name="orphaned_instances_every_15_minutes",
    job=orphaned_instances_sweep,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every 15 min: the orphaned instances sweep. Destructive: an operator turns it on.",
)

PLAN_OP = "plan_orphaned_instances"
ACT_OP = "terminate_orphaned_instances"

REQUEST = RequestableJob(
    task_type="orphaned_instances",
    job_name="orphaned_instances_sweep",
    build_run_config=lambda params: sweep_run_config(params, plan_op=PLAN_OP, act_op=ACT_OP),
)
