"""Stuck jobs: ``running`` job records whose runner is gone → conditional update to ``interrupted``.

The contract's rule: a job record with status ``running`` that started more than
``grace_minutes`` ago (run config, default 30) whose runner (its ``instance_id``: EC2
instance or ECS task) is gone — terminated, shutting down, a stopped task, or unknown to
EC2/ECS — is set to ``interrupted`` with ``completed_at`` (when AWS says the runner ended,
else now) and ``interrupted_by`` = ``stuck_jobs_sweep``. Archival then takes it like any
finished job. A record without ``instance_id``, or whose runner cannot be looked up, is
kept and reported.

How running jobs are found: one Scan of the jobs table with ``FilterExpression status =
running`` and a ``ProjectionExpression`` of the five attributes the rule reads, paged to the
end. The ``completed_at-index`` GSI cannot serve: a running job has no ``completed_at``, so it
is not in that (sparse) index. A Scan is billed on the data it reads, not what the filter
returns, so a parallel Scan (Segment/TotalSegments) would read exactly as much and make at
least one call per segment; it only buys wall time, which a 15-minute sweep over a table that
archival keeps to about a week of jobs does not need. So: a sequential Scan, the fewest calls.

find → pure plan → re-check (BatchGetItem of the targets, 100 a call, consistent; their
runners looked up again; the same rule) → one conditional UpdateItem per job (DynamoDB has no
batch conditional update; TransactWriteItems would cancel all 100 when one job finished in
between). The condition (status = running, started_at and instance_id unchanged) is the last
guard: a job that completed or restarted after the re-check is skipped, not failed.
"""


from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import Config
from pydantic import Field

from pipelines.common.aws import batch_get_with_retry, error_code, update_if
from pipelines.common.safety import ActResult, PlannedAction
from pipelines.sweeps import rules
from pipelines.sweeps.factory import sweep_job
from pipelines.sweeps.plans import Kept, SweepPlan
from pipelines.sweeps.rules import JobRecord
from pipelines.sweeps.runners import Liveness, runner_liveness
from resources.aws import AwsClients
from resources.settings import FleetSettings

KIND = "stuck_jobs"
DEFAULT_GRACE_MINUTES = 30
INTERRUPTED_BY = "stuck_jobs_sweep"
# Every attribute the rule reads, and nothing else (a record may carry anything: it is never logged).
PROJECTION = "#job_id, #status, #started_at, #instance_id, #pool"
NAMES = {"#job_id": "job_id", "#status": "status", "#started_at": "started_at", "#instance_id": "instance_id",
         "#pool": "pool"}


@dataclass(frozen=True)
class StuckTarget:
    """What acting on one stuck job needs: the values the plan relied on, and the completed_at to set."""

    instance_id: str
    started_at: str
    completed_at: str
    grace_minutes: int


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if isinstance(value, dict) and isinstance(value.get("S"), str) else None


def job_record(item: Mapping[str, Any]) -> JobRecord:
    return JobRecord(job_id=_text(item, "job_id") or "", status=_text(item, "status"),
                     started_at=_text(item, "started_at"), instance_id=_text(item, "instance_id"),
                     pool=_text(item, "pool") or None)


def find_running_jobs(dynamodb: Any, jobs_table: str, page_size: int | None = None) -> list[JobRecord]:
    """Every job record with status ``running``: one Scan, filtered and projected, all pages."""
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=jobs_table, FilterExpression="#status = :running", ProjectionExpression=PROJECTION,
        ExpressionAttributeNames=NAMES, ExpressionAttributeValues={":running": {"S": "running"}},
        PaginationConfig={"PageSize": page_size} if page_size else {},
    )
    return [job_record(item) for page in pages for item in page.get("Items", [])]


def read_running_jobs(dynamodb: Any, jobs_table: str) -> list[JobRecord]:
    try:
        return find_running_jobs(dynamodb, jobs_table)
    except (ClientError, BotoCoreError) as error:
        # Every decision depends on the jobs table: a sweep missing it acts on nothing.
        raise RuntimeError(
            f"jobs table {jobs_table} could not be scanned ({error_code(error) or error}): acting on nothing"
        ) from error


def runners_to_look_up(jobs: Iterable[JobRecord], grace_minutes: int, now: datetime) -> set[str]:
    """The runners of the jobs only their runner can decide (running, past the grace, with an instance_id)."""
    return {j.instance_id for j in jobs if j.instance_id and rules.stuck_job_precheck(j, grace_minutes, now) is None}


def plan_stuck_jobs(jobs: list[JobRecord], liveness: Mapping[str, Liveness], grace_minutes: int,
                    now: datetime) -> SweepPlan:
    """Apply the rule: every running job past the grace is in the plan, to interrupt or kept with its category."""
    plan = SweepPlan(kind=KIND, found=len(jobs))
    for record in sorted(jobs, key=lambda j: j.job_id):
        if rules.shown(record.job_id) != record.job_id:
            # Its id would be the action's resource, logged as is: a newline in it would forge a log line.
            plan.kept.append(Kept(rules.shown(record.job_id), "uncertain",
                                  "job_id is blank, too long or holds control characters: not touched", record.pool))
            continue
        runner = liveness.get(record.instance_id) if record.instance_id else None
        decision = rules.decide_stuck_job(record, runner, grace_minutes, now)
        if decision.outcome in ("not running", "not stuck"):
            continue  # not a candidate
        if not decision.acts:
            plan.kept.append(Kept(record.job_id, decision.outcome, decision.reason, record.pool))
            continue
        started, _ = rules.parse_started_at(record.started_at, now)
        completed_at, source = rules.interrupted_at(runner, started, now)
        plan.actions.append(PlannedAction(record.job_id, f"{decision.reason}; completed_at {completed_at} ({source})",
                                          "interrupt", pool=record.pool))
        plan.targets[record.job_id] = StuckTarget(record.instance_id or "", record.started_at or "", completed_at,
                                                  grace_minutes)
    return plan


def find_and_plan(aws: AwsClients, settings: FleetSettings, grace_minutes: int = DEFAULT_GRACE_MINUTES,
                  now: datetime | None = None) -> SweepPlan:
    """Scan for running jobs, look up (batched) the runners of those past the grace, and plan."""
    now = now or datetime.now(timezone.utc)
    jobs = read_running_jobs(aws.dynamodb, settings.jobs_table)
    liveness = runner_liveness(aws.ec2, aws.ecs, settings.ecs_cluster, runners_to_look_up(jobs, grace_minutes, now))
    return plan_stuck_jobs(jobs, liveness, grace_minutes, now)


def lookup_jobs(dynamodb: Any, jobs_table: str, job_ids: Iterable[str]) -> dict[str, JobRecord]:
    """job_id -> its record now (consistent read, 100 keys a call); absent ids are left out."""
    keys = [{"job_id": {"S": j}} for j in sorted(set(job_ids))]
    items = batch_get_with_retry(dynamodb, jobs_table, keys, projection=PROJECTION, names=NAMES)
    return {record.job_id: record for record in map(job_record, items)}


def recheck(aws: AwsClients, settings: FleetSettings, targets: Mapping[str, StuckTarget],
            now: datetime | None = None) -> tuple[dict[str, str], dict[str, StuckTarget]]:
    """Read again everything the plan relied on and apply the rule again.

    Returns (job id -> why to skip it, job id -> target to act on with a fresh completed_at).
    The job record is read again (BatchGetItem, consistent): it must still be running with the
    same started_at and instance_id; its runner is looked up again and must still be gone.
    """
    now = now or datetime.now(timezone.utc)
    current = lookup_jobs(aws.dynamodb, settings.jobs_table, targets)
    changed: dict[str, str] = {}
    unchanged: dict[str, JobRecord] = {}
    for job_id, target in targets.items():
        record = current.get(job_id)
        if record is None:
            changed[job_id] = "job record no longer in the table"
        elif record.status != "running":
            changed[job_id] = f"job is now {rules.shown(record.status)}" if record.status else "job lost its status"
        elif record.started_at != target.started_at:
            changed[job_id] = (f"started_at changed from {target.started_at} to {rules.shown(record.started_at)} "
                               "(restarted)")
        elif record.instance_id != target.instance_id:
            changed[job_id] = f"instance_id changed from {target.instance_id} to {rules.shown(record.instance_id)}"
        else:
            unchanged[job_id] = record
    liveness = runner_liveness(aws.ec2, aws.ecs, settings.ecs_cluster,
                               {r.instance_id for r in unchanged.values() if r.instance_id})
    go: dict[str, StuckTarget] = {}
    for job_id, record in unchanged.items():
        target = targets[job_id]
        runner = liveness.get(record.instance_id or "")
        decision = rules.decide_stuck_job(record, runner, target.grace_minutes, now)
        if not decision.acts:
            changed[job_id] = f"kept ({decision.outcome}): {decision.reason}"
            continue
        started, _ = rules.parse_started_at(record.started_at, now)
        completed_at, _ = rules.interrupted_at(runner, started, now)
        go[job_id] = StuckTarget(target.instance_id, target.started_at, completed_at, target.grace_minutes)
    return changed, go


def mark_interrupted(dynamodb: Any, jobs_table: str, job_id: str, target: StuckTarget) -> str | None:
    """One conditional UpdateItem: running → interrupted. None when done; why not when the condition failed."""
    update = update_if(
        dynamodb,
        TableName=jobs_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET #status = :interrupted, #completed_at = :completed_at, #by = :by",
        ConditionExpression="#status = :running AND #started_at = :started_at AND #instance_id = :instance_id",
        ExpressionAttributeNames={"#status": "status", "#completed_at": "completed_at", "#by": "interrupted_by",
                                  "#started_at": "started_at", "#instance_id": "instance_id"},
        ExpressionAttributeValues={
            ":interrupted": {"S": "interrupted"}, ":running": {"S": "running"}, ":by": {"S": INTERRUPTED_BY},
            ":completed_at": {"S": target.completed_at}, ":started_at": {"S": target.started_at},
            ":instance_id": {"S": target.instance_id},
        },
    )
    if update.applied:
        return None
    if update.old_item is None:
        return "changed just before the update: job record no longer in the table"
    record = job_record(update.old_item)  # only the fields the rule reads are named, never the record
    return (f"changed just before the update (conditional check failed): status {rules.shown(record.status)}, "
            f"started_at {rules.shown(record.started_at)}, instance_id {rules.shown(record.instance_id)}")


def interrupt(aws: AwsClients, settings: FleetSettings, plan: SweepPlan, result: ActResult | None = None) -> ActResult:
    """Re-check every target, then one conditional UpdateItem per job; a failed condition is a skip."""
    result = ActResult() if result is None else result
    if not plan.actions:
        return result
    by_id = {a.resource: a for a in plan.actions}
    try:
        changed, go = recheck(aws, settings, plan.targets)
    except (ClientError, BotoCoreError, RuntimeError) as error:
        why = f"re-check failed ({error_code(error) or error}): not interrupted"
        result.failed = [(a, why) for a in plan.actions]
        return result
    result.skipped = [(by_id[j], why) for j, why in sorted(changed.items())]
    for action in plan.actions:
        if action.resource not in go:
            continue
        try:
            why_not = mark_interrupted(aws.dynamodb, settings.jobs_table, action.resource, go[action.resource])
        except (ClientError, BotoCoreError) as error:
            result.failed.append((action, f"UpdateItem failed ({error_code(error) or error})"))
            continue
        if why_not is None:
            result.done.append(action)
        else:
            result.skipped.append((action, why_not))
    return result


# --- Dagster layer --------------------------------------------------------------------------


class StuckJobsPlanConfig(Config):
    """How long a job must have run before its runner's absence makes it stuck."""

    grace_minutes: int = Field(
        default=DEFAULT_GRACE_MINUTES, ge=1,
        description="Only jobs whose started_at is more than this many minutes ago are considered "
        "(a runner may not be visible to EC2/ECS right after its job starts).",
    )


SWEEP = sweep_job(
    name="stuck_jobs_sweep", task_type="stuck_jobs", plan_op="plan_stuck_jobs", act_op="interrupt_stuck_jobs",
    find_and_plan=lambda aws, settings, config: find_and_plan(aws, settings, config.grace_minutes),
    act=interrupt, metric="StuckJobsInterrupted", plan_config=StuckJobsPlanConfig,
    interval_minutes=15, cron="*/15 * * * *", schedule_name="stuck_jobs_every_15_minutes",
    description="Set job records stuck at `running` to `interrupted` (with completed_at and interrupted_by) when the "
    "job started more than grace_minutes (default 30) ago and its runner is gone (EC2 instance terminated, "
    "shutting-down or unknown; ECS task stopped or unknown). Plan first (the stuck_jobs_sweep_plan asset); a job is "
    "interrupted once two plans 15 min apart held it, after its record and runner are read again. `grace_minutes` "
    "is set on the plan op; `dry_run`, `max_actions`, `max_fraction`, `confirm_after_minutes` and `anomaly_factor` "
    "on the interrupt op.",
    plan_description="Find running jobs started more than grace_minutes ago whose runner (EC2 or ECS) is gone; "
    "record the plan.",
    act_description="Set the confirmed jobs to interrupted (one conditional UpdateItem each) after re-reading each "
    "job and runner; dry run, blast radius, the anomaly gate and two observations guard it.",
)
stuck_jobs_sweep, stuck_jobs_schedule, REQUEST = SWEEP.job, SWEEP.schedule, SWEEP.request
PLAN_OP, ACT_OP = SWEEP.plan_op, SWEEP.act_op
