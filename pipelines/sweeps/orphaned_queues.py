"""Orphaned queues: per-runner queues and tracking records whose runner is gone → archive, then delete.

The contract's rule: a per-runner queue (``{prefix}input|output|dlq-{runner-id}``) older than
24 h whose runner is gone → archive any messages it still holds to S3 (verified), then delete
it and its tracking record; tracking records idle more than 24 h whose runner is gone go too.
The archive-then-delete step is ``pipelines.common.runner_queues``, shared with termination
processing.
"""


from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.common.aws import batch_get_with_retry, batch_write_with_retry, error_code, queue_name
from pipelines.common.contract import QUEUE_GONE_CODES, parse_runner_queue_name
from pipelines.common.runner_queues import archive_and_delete_runner_queues
from pipelines.common.safety import ActResult, PlannedAction
from pipelines.sweeps import rules
from pipelines.sweeps.factory import sweep_job
from pipelines.sweeps.plans import Kept, SweepPlan
from pipelines.sweeps.runners import Liveness, runner_liveness
from resources.aws import AwsClients
from resources.settings import FleetSettings

KIND = "orphaned_queues"
MIN_AGE = timedelta(hours=24)
LIST_PAGE_SIZE = 1000  # ListQueues' maximum
WORKERS = 8  # runners handled side by side: SQS's per-queue APIs allow thousands of calls a second


@dataclass
class RunnerResources:
    """One runner's queues (kind -> URL) and its tracking record's last activity, as found."""

    runner_id: str
    queues: dict[str, str] = field(default_factory=dict)
    tracked: bool = False
    last_activity_ms: int | None = None
    tracking_problem: str | None = None


def find_runner_resources(
    aws: AwsClients, settings: FleetSettings, page_size: int = LIST_PAGE_SIZE, scan_page_size: int | None = None
) -> dict[str, RunnerResources]:
    """ListQueues by prefix (1000 a page, all pages) and Scan the tracking table (all pages), grouped by runner."""
    runners: dict[str, RunnerResources] = {}
    pages = aws.sqs.get_paginator("list_queues").paginate(
        QueueNamePrefix=settings.runner_queue_prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        for url in page.get("QueueUrls", []):
            parsed = parse_runner_queue_name(queue_name(url), settings.runner_queue_prefix)
            if parsed:
                kind, runner_id = parsed
                runners.setdefault(runner_id, RunnerResources(runner_id)).queues[kind] = url
    scan = aws.dynamodb.get_paginator("scan").paginate(
        TableName=settings.queue_tracking_table, ProjectionExpression="runner_id, last_activity",
        PaginationConfig={"PageSize": scan_page_size} if scan_page_size else {},
    )
    for page in scan:
        for item in page.get("Items", []):
            runner_id = item.get("runner_id", {}).get("S")
            if not runner_id:
                continue
            entry = runners.setdefault(runner_id, RunnerResources(runner_id))
            entry.tracked = True
            raw = item.get("last_activity", {}).get("N")
            try:
                entry.last_activity_ms = int(raw) if raw is not None else None
            except ValueError:
                entry.last_activity_ms = None
            if entry.last_activity_ms is None:
                entry.tracking_problem = f"no usable last_activity ({str(raw)[:40]!r})"
    return runners


def queue_created(sqs: Any, url: str) -> datetime | None:
    """A queue's CreatedTimestamp; None when the queue is already gone."""
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["CreatedTimestamp"])["Attributes"]
    except ClientError as error:
        if error_code(error) in QUEUE_GONE_CODES:
            return None
        raise
    # Epoch seconds; parsed as a float since stand-ins (moto) may return a fraction. A missing
    # or garbled value raises, which keeps the runner's queues.
    return datetime.fromtimestamp(float(attributes["CreatedTimestamp"]), timezone.utc)


def read_queue_ages(sqs: Any, runners: Mapping[str, RunnerResources], liveness: Mapping[str, Liveness]
                    ) -> dict[str, dict[str, datetime | None] | str]:
    """For each gone runner with queues: kind -> CreatedTimestamp (None: deleted since listed), or why unknown.

    One GetQueueAttributes per queue (SQS has no batch form), WORKERS at a time.
    """
    def ages_of(entry: RunnerResources) -> dict[str, datetime | None] | str:
        try:
            return {kind: queue_created(sqs, url) for kind, url in sorted(entry.queues.items())}
        except (ClientError, BotoCoreError, KeyError, ValueError, OverflowError, OSError) as error:
            return f"queue age lookup failed ({error_code(error) or repr(error)[:200]})"

    gone = [e for r, e in sorted(runners.items())
            if e.queues and (state := liveness.get(r)) is not None and state.state == "gone"]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return {entry.runner_id: ages for entry, ages in zip(gone, pool.map(ages_of, gone))}


def plan_orphaned_queues(
    runners: Mapping[str, RunnerResources], liveness: Mapping[str, Liveness],
    queue_ages: Mapping[str, Mapping[str, datetime | None] | str], now: datetime,
) -> SweepPlan:
    """Apply the rule to what was found: runners, their liveness and (for the gone) their queues' ages."""
    plan = SweepPlan(kind=KIND, found=len(runners))
    for runner_id in sorted(runners):
        entry = runners[runner_id]
        state = liveness.get(runner_id)
        if state is None:
            continue  # not looked up: a young, active tracking-only record
        if state.state == "uncertain":
            plan.kept.append(Kept(runner_id, "uncertain", state.why, state.pool))
            continue
        if state.state == "live":
            plan.kept.append(Kept(runner_id, "in use", "runner is live", state.pool))
            continue
        if entry.queues:
            ages = queue_ages.get(runner_id, "queue ages not looked up")
            if isinstance(ages, str):
                plan.kept.append(Kept(runner_id, "uncertain", ages, state.pool))
                continue
            names = {kind: queue_name(entry.queues[kind]) for kind, created in ages.items() if created is not None}
            urls = {kind: entry.queues[kind] for kind in names}
            young = [names[kind] for kind, created in ages.items() if created is not None and now - created <= MIN_AGE]
            if young:
                continue  # a queue younger than 24 h keeps the whole set until the next run
            if names:
                what = f"archive and delete {len(names)} queue(s)" + (" + tracking record" if entry.tracked else "")
                plan.actions.append(PlannedAction(
                    runner_id, f"runner gone ({state.why}); queues older than 24 h: {', '.join(sorted(names.values()))}",
                    what, pool=state.pool,
                ))
                plan.targets[runner_id] = {"queues": names, "urls": urls, "tracked": entry.tracked}
                continue
        if entry.tracked:
            problem = entry.tracking_problem or rules.activity_problem(entry.last_activity_ms, now)
            if problem:
                plan.kept.append(Kept(runner_id, "uncertain", f"tracking record: {problem}", state.pool))
                continue
            assert entry.last_activity_ms is not None  # activity_problem() said it is usable
            if rules.idle_longer_than(entry.last_activity_ms, MIN_AGE, now):
                idle_hours = (now.timestamp() * 1000 - entry.last_activity_ms) / 3_600_000
                plan.actions.append(PlannedAction(
                    runner_id, f"runner gone ({state.why}); tracking record idle {idle_hours:.1f} h, no queues",
                    "delete tracking record", pool=state.pool,
                ))
                plan.targets[runner_id] = {"queues": {}, "last_activity": entry.last_activity_ms}
    return plan


def find_and_plan(aws: AwsClients, settings: FleetSettings, now: datetime | None = None) -> SweepPlan:
    """Find queues and tracking records, look up the runners that could be orphaned (batched) and the
    ages of gone runners' queues, and plan."""
    now = now or datetime.now(timezone.utc)
    runners = find_runner_resources(aws, settings)
    # Tracking-only records still active are not candidates: skip their liveness lookups.
    candidates = set()
    for runner_id, entry in runners.items():
        problem = entry.tracking_problem or rules.activity_problem(entry.last_activity_ms, now) if entry.tracked else None
        idle = (entry.tracked and problem is None and entry.last_activity_ms is not None
                and rules.idle_longer_than(entry.last_activity_ms, MIN_AGE, now))
        if entry.queues or problem or idle:
            candidates.add(runner_id)
    liveness = runner_liveness(aws.ec2, aws.ecs, settings.ecs_cluster, candidates)
    return plan_orphaned_queues(runners, liveness, read_queue_ages(aws.sqs, runners, liveness), now)


def delete_orphaned(aws: AwsClients, settings: FleetSettings, plan: SweepPlan,
                    result: ActResult | None = None) -> tuple[ActResult, dict[str, int]]:
    """Re-check each runner is still gone, then archive-and-delete its queues, and batch-delete idle tracking records.

    Returns the outcome and, per runner, how many queues were deleted.
    """
    result = ActResult() if result is None else result
    deleted: dict[str, int] = {}
    if not plan.actions:
        return result, deleted
    now_state = runner_liveness(aws.ec2, aws.ecs, settings.ecs_cluster, plan.targets)
    go: list[PlannedAction] = []
    for action in plan.actions:
        state = now_state.get(action.resource)
        if state is None or state.state != "gone":
            result.skipped.append((action, f"runner re-checked: {state.why if state else 'not looked up'}"))
        else:
            go.append(action)

    tracking_only = [a for a in go if not plan.targets[a.resource]["queues"]]
    cleaned: list[PlannedAction] = []

    def clean(action: PlannedAction) -> Any:
        target = plan.targets[action.resource]
        try:
            return archive_and_delete_runner_queues(
                aws.sqs, aws.s3, aws.dynamodb, runner_id=action.resource, queue_names=target["queues"],
                queue_urls=target["urls"], bucket=settings.archive_bucket,
                tracking_table=settings.queue_tracking_table, delete_tracking=False,
            )
        except Exception as error:  # one runner's failure (S3, verification, SQS) must not wedge the sweep
            return error

    with_queues = [a for a in go if plan.targets[a.resource]["queues"]]
    # Runners are independent and each costs a few SQS/S3 round trips: clean them side by side.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(clean, with_queues))
    for action, cleanup in zip(with_queues, outcomes):
        if isinstance(cleanup, Exception):
            error = cleanup
            result.failed.append((action, f"archive/delete failed: {error_code(error) or type(error).__name__}: {error}"))
            continue
        deleted[action.resource] = len(cleanup.queues_deleted)
        if cleanup.complete:
            cleaned.append(action)
        else:
            kept = "; ".join(f"{name}: {why}" for name, why in cleanup.queues_kept.items())
            result.skipped.append((action, f"kept: {kept}"))

    # Tracking records of fully cleaned runners go 25 a call (a kept queue keeps its record,
    # so a later run finds the runner again).
    records = [a for a in cleaned if plan.targets[a.resource]["tracked"]]
    try:
        batch_write_with_retry(
            aws.dynamodb, settings.queue_tracking_table,
            [{"DeleteRequest": {"Key": {"runner_id": {"S": a.resource}}}} for a in records],
        )
        result.done += cleaned
    except (ClientError, BotoCoreError, RuntimeError) as error:
        why = f"queues deleted, tracking record delete failed ({error_code(error) or error}); the next run retries"
        result.failed += [(a, why) for a in records]
        result.done += [a for a in cleaned if a not in records]

    if tracking_only:
        _delete_idle_tracking(aws, settings, plan, tracking_only, result)
    return result, deleted


def _delete_idle_tracking(aws: AwsClients, settings: FleetSettings, plan: SweepPlan,
                          actions: list[PlannedAction], result: ActResult) -> None:
    table = settings.queue_tracking_table
    try:
        # Re-read the records (100 a call): one that saw activity since the plan is kept.
        items = batch_get_with_retry(
            aws.dynamodb, table, [{"runner_id": {"S": a.resource}} for a in actions],
            projection="runner_id, last_activity",
        )
    except (ClientError, BotoCoreError, RuntimeError) as error:
        result.failed += [(a, f"tracking re-check failed ({error_code(error) or error})") for a in actions]
        return
    current = {i["runner_id"]["S"]: i.get("last_activity", {}).get("N") for i in items}
    go: list[PlannedAction] = []
    for action in actions:
        if action.resource not in current:
            result.skipped.append((action, "tracking record already gone"))
        elif current[action.resource] != str(plan.targets[action.resource]["last_activity"]):
            result.skipped.append((action, "tracking record saw activity since the plan"))
        else:
            go.append(action)
    try:
        batch_write_with_retry(
            aws.dynamodb, table, [{"DeleteRequest": {"Key": {"runner_id": {"S": a.resource}}}} for a in go]
        )
    except (ClientError, BotoCoreError, RuntimeError) as error:
        result.failed += [(a, f"BatchWriteItem failed ({error_code(error) or error})") for a in go]
        return
    result.done += go


# --- Dagster layer --------------------------------------------------------------------------


def _delete_counting_queues(aws: AwsClients, settings: FleetSettings, plan: SweepPlan,
                            result: ActResult | None = None) -> ActResult:
    """``delete_orphaned``, with each runner counted in the metric by its queues deleted (0 for a tracking record)."""
    result, deleted = delete_orphaned(aws, settings, plan, result)
    result.units = {a.resource: deleted.get(a.resource, 0) for a in result.done}
    return result


SWEEP = sweep_job(
    name="orphaned_queues_sweep", task_type="orphaned_queues",
    plan_op="plan_orphaned_queues", act_op="delete_orphaned_queues",
    find_and_plan=lambda aws, settings, _config: find_and_plan(aws, settings),
    act=_delete_counting_queues, metric="OrphanedQueuesDeleted",
    interval_minutes=360, cron="0 */6 * * *", schedule_name="orphaned_queues_every_6_hours",
    description="Archive (to S3, verified) then delete per-runner queues older than 24 h whose runner is gone, with "
    "their tracking records; tracking records idle > 24 h of gone runners go too. Plan first (the "
    "orphaned_queues_sweep_plan asset); a runner's queues go once two plans six hours apart held them. `dry_run`, "
    "`max_actions`, `max_fraction`, `confirm_after_minutes` and `anomaly_factor` are set on the delete op's config.",
    plan_description="Find per-runner queues older than 24 h and tracking records idle > 24 h whose runner is gone; "
    "record the plan.",
    act_description="Archive each confirmed runner's messages to S3 (verified), then delete its queues and tracking "
    "record; re-checks the runner first; dry run, blast radius, the anomaly gate and two observations guard it.",
)
orphaned_queues_sweep, orphaned_queues_schedule, REQUEST = SWEEP.job, SWEEP.schedule, SWEEP.request
PLAN_OP, ACT_OP = SWEEP.plan_op, SWEEP.act_op
