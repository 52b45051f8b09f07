"""Stale SSM parameters: runner configs whose runner no longer exists → delete, 10 a call.

The contract's rule: a runner parameter (``{prefix}{runner-id}/config``) older than
``min_age_minutes`` (default 60, because a parameter is written before its runner is
visible) whose runner no longer exists (EC2 instance terminated or unknown; ECS task stopped
or unknown in the cluster) is deleted.
"""


from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import Config
from pydantic import Field

from pipelines.common.aws import SSM_DELETE_BATCH, chunks, error_code
from pipelines.common.contract import iso
from pipelines.common.safety import ActResult, PlannedAction
from pipelines.sweeps.factory import sweep_job
from pipelines.sweeps.plans import Kept, SweepPlan
from pipelines.sweeps.runners import Liveness, runner_liveness
from resources.aws import AwsClients
from resources.settings import FleetSettings

KIND = "stale_ssm"
DEFAULT_MIN_AGE_MINUTES = 60
DESCRIBE_PAGE_SIZE = 50  # DescribeParameters' maximum (GetParametersByPath stops at 10)


@dataclass(frozen=True)
class RunnerParameter:
    name: str
    runner_id: str
    last_modified: datetime


def runner_id_of(name: str, prefix: str) -> str | None:
    """The runner id of ``{prefix}{runner-id}/config``; None for any other parameter under the prefix."""
    if not name.startswith(prefix) or not name.endswith("/config"):
        return None
    runner_id = name[len(prefix) : -len("/config")]
    return runner_id if runner_id and "/" not in runner_id else None


def find_runner_parameters(
    ssm: Any, prefix: str, page_size: int = DESCRIBE_PAGE_SIZE
) -> tuple[list[RunnerParameter], int]:
    """Every runner parameter under ``prefix`` (DescribeParameters, recursive path filter, all pages).

    DescribeParameters rather than GetParametersByPath: it returns LastModifiedDate without
    the values (nothing secret crosses the wire) and pages 50 at a time instead of 10.
    Returns the runner parameters and how many other parameters were seen under the prefix.
    """
    path = prefix.rstrip("/") or "/"
    pages = ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [path]}],
        PaginationConfig={"PageSize": page_size},
    )
    found: list[RunnerParameter] = []
    others = 0
    for page in pages:
        for parameter in page.get("Parameters", []):
            runner_id = runner_id_of(parameter["Name"], prefix)
            if runner_id is None:
                others += 1
                continue
            modified = parameter["LastModifiedDate"]
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=timezone.utc)
            found.append(RunnerParameter(parameter["Name"], runner_id, modified))
    return found, others


def plan_stale_parameters(
    parameters: list[RunnerParameter], liveness: dict[str, Liveness], min_age_minutes: int, now: datetime
) -> SweepPlan:
    """Apply the rule to parameters and the liveness of their (old enough) runners."""
    plan = SweepPlan(kind=KIND, found=len(parameters))
    for parameter in sorted(parameters, key=lambda p: p.name):
        age = now - parameter.last_modified
        if age <= timedelta(minutes=min_age_minutes):
            continue
        state = liveness.get(parameter.runner_id)
        if state is None:
            plan.kept.append(Kept(parameter.name, "uncertain", f"liveness of runner {parameter.runner_id} not looked up"))
            continue
        if state.state == "uncertain":
            plan.kept.append(Kept(parameter.name, "uncertain", state.why, state.pool))
            continue
        if state.state == "live":
            plan.kept.append(Kept(parameter.name, "in use", f"runner {parameter.runner_id} is live", state.pool))
            continue
        reason = f"{int(age.total_seconds() // 60)} min old > {min_age_minutes}; runner {parameter.runner_id}: {state.why}"
        plan.actions.append(PlannedAction(parameter.name, reason, "delete parameter", pool=state.pool))
        plan.targets[parameter.name] = parameter
    return plan


def find_and_plan(
    aws: AwsClients, settings: FleetSettings, min_age_minutes: int = DEFAULT_MIN_AGE_MINUTES,
    now: datetime | None = None,
) -> SweepPlan:
    """List runner parameters, look up only the runners of old ones (batched), and plan."""
    now = now or datetime.now(timezone.utc)
    parameters, _ = find_runner_parameters(aws.ssm, settings.ssm_prefix)
    old_runners = {p.runner_id for p in parameters if now - p.last_modified > timedelta(minutes=min_age_minutes)}
    liveness = runner_liveness(aws.ec2, aws.ecs, settings.ecs_cluster, old_runners)
    return plan_stale_parameters(parameters, liveness, min_age_minutes, now)


def read_last_modified(ssm: Any, names: list[str]) -> dict[str, datetime]:
    """Each named parameter's LastModifiedDate now (absent: deleted), 50 names a DescribeParameters filter, paged.

    A batch's pages stop once every name asked for has answered: SSM hands back a NextToken with a
    full page even when nothing is left, and following it costs an empty call per batch.
    """
    found: dict[str, datetime] = {}
    for batch in chunks(sorted(names), DESCRIBE_PAGE_SIZE):
        pages = ssm.get_paginator("describe_parameters").paginate(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": batch}],
            PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE},
        )
        wanted = set(batch)
        for page in pages:
            for parameter in page.get("Parameters", []):
                modified = parameter["LastModifiedDate"]
                found[parameter["Name"]] = modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)
                wanted.discard(parameter["Name"])
            if not wanted:
                break
    return found


def delete_stale(aws: AwsClients, settings: FleetSettings, plan: SweepPlan, result: ActResult | None = None) -> ActResult:
    """Re-read what the plan relied on, then DeleteParameters 10 names a call.

    Just before deleting: each target's runner is looked up again (it must still be gone)
    and each parameter's LastModifiedDate read again (DescribeParameters, 50 names a call):
    a parameter written since the plan is someone's again and is kept.
    """
    result = ActResult() if result is None else result
    if not plan.actions:
        return result
    targets: dict[str, RunnerParameter] = plan.targets
    now_state = runner_liveness(aws.ec2, aws.ecs, settings.ecs_cluster, {t.runner_id for t in targets.values()})
    try:
        modified = read_last_modified(aws.ssm, [a.resource for a in plan.actions])
    except (ClientError, BotoCoreError) as error:
        why = f"re-check DescribeParameters failed ({error_code(error) or error}): not deleted"
        result.failed = [(a, why) for a in plan.actions]
        return result
    go: list[PlannedAction] = []
    for action in plan.actions:
        target = targets[action.resource]
        state = now_state.get(target.runner_id)
        if state is None or state.state != "gone":
            why = state.why if state else "runner not looked up"
            result.skipped.append((action, f"runner {target.runner_id} re-checked: {why}"))
        elif action.resource not in modified:
            result.skipped.append((action, "already gone"))
        elif modified[action.resource] != target.last_modified:
            result.skipped.append((action, f"written again at {iso(modified[action.resource])}, since the plan"))
        else:
            go.append(action)
    for batch in chunks(go, SSM_DELETE_BATCH):
        try:
            response = aws.ssm.delete_parameters(Names=[a.resource for a in batch])
        except (ClientError, BotoCoreError) as error:
            why = f"DeleteParameters failed ({error_code(error) or error})"
            result.failed += [(a, why) for a in batch]
            continue
        deleted = set(response.get("DeletedParameters", []))
        for action in batch:
            if action.resource in deleted:
                result.done.append(action)
            else:
                result.skipped.append((action, "already gone (InvalidParameters)"))
    return result


# --- Dagster layer --------------------------------------------------------------------------


class StaleSsmPlanConfig(Config):
    """How old a parameter must be before its runner's absence counts."""

    min_age_minutes: int = Field(
        default=DEFAULT_MIN_AGE_MINUTES, ge=1,
        description="Only parameters last modified more than this many minutes ago are considered "
        "(a parameter is written before its runner is visible).",
    )


SWEEP = sweep_job(
    name="stale_ssm_sweep", task_type="stale_ssm", plan_op="plan_stale_ssm", act_op="delete_stale_parameters",
    find_and_plan=lambda aws, settings, config: find_and_plan(aws, settings, config.min_age_minutes),
    act=delete_stale, metric="SSMParametersDeleted", plan_config=StaleSsmPlanConfig,
    interval_minutes=60, cron="0 * * * *", schedule_name="stale_ssm_hourly",
    description="Delete runner SSM parameters ({prefix}{runner-id}/config) older than min_age_minutes (default 60) "
    "whose runner no longer exists (EC2 instance terminated/unknown, ECS task stopped/unknown). Plan first (the "
    "stale_ssm_sweep_plan asset); a parameter is deleted once two plans an hour apart held it and its runner is "
    "looked up again. `min_age_minutes` is set on the plan op; `dry_run`, `max_actions`, `max_fraction`, "
    "`confirm_after_minutes` and `anomaly_factor` on the delete op.",
    plan_description="Find runner parameters older than min_age_minutes whose runner (EC2 or ECS) is gone; "
    "record the plan.",
    act_description="Delete the confirmed parameters (10 a call) after re-checking their runners; dry run, blast "
    "radius, the anomaly gate and two observations guard it.",
)
stale_ssm_sweep, stale_ssm_schedule, REQUEST = SWEEP.job, SWEEP.schedule, SWEEP.request
PLAN_OP, ACT_OP = SWEEP.plan_op, SWEEP.act_op
