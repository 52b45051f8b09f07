"""One factory for a sweep's Dagster layer: plan op → act op job, its schedule and its housekeeping request.

Every sweep is the same shape; what differs is its rule (``find_and_plan``), its act step,
its names and its schedule. ``sweep_job`` builds the rest, so the guards (dry run, blast
radius, anomaly gate, two observations, re-check, metric, plan and actions assets) are
wired the same way for every sweep.

(No ``from __future__ import annotations`` here: Dagster reads the ops' ``config``
annotation, which is the sweep's own plan ``Config`` class, at definition time.)
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from dagster import (
    Config,
    DefaultScheduleStatus,
    In,
    JobDefinition,
    Out,
    Output,
    ScheduleDefinition,
    job,
    op,
)

from pipelines.common.fleets import FLEET_PARTITIONS, exclusive, fleet_schedule
from pipelines.common.requests import RequestableJob, requestable
from pipelines.common.safety import ActResult, SweepConfig
from pipelines.sweeps.plans import SweepPlan, guarded_act, plan_output
from resources.aws import AwsClients
from resources.settings import FleetSettings

FindAndPlan = Callable[[AwsClients, FleetSettings, Optional[Config]], SweepPlan]
Act = Callable[[AwsClients, FleetSettings, SweepPlan, ActResult], ActResult]  # fills the result it is given


@dataclass(frozen=True)
class Sweep:
    """A sweep's Dagster definitions and the names that address them in run config."""

    job: JobDefinition
    schedule: ScheduleDefinition
    request: RequestableJob
    plan_op: str
    act_op: str
    interval_minutes: int


def sweep_job(
    *,
    name: str,
    task_type: str,
    plan_op: str,
    act_op: str,
    find_and_plan: FindAndPlan,
    act: Act,
    metric: str,
    interval_minutes: int,
    cron: str,
    schedule_name: str,
    description: str,
    plan_description: str,
    act_description: str,
    plan_config: Optional[type] = None,
) -> Sweep:
    """Build the plan op, the act op, the job (one run at a time), its stopped schedule and its request."""

    if plan_config is None:
        @op(name=plan_op, out=Out(SweepPlan), description=plan_description)
        def plan_step(context, aws: AwsClients, settings: FleetSettings) -> Any:
            yield from plan_output(context, find_and_plan(aws, settings, None))
    else:
        def plan_with_config(context, config, aws: AwsClients, settings: FleetSettings) -> Any:
            yield from plan_output(context, find_and_plan(aws, settings, config))

        plan_with_config.__annotations__["config"] = plan_config
        plan_step = op(name=plan_op, out=Out(SweepPlan), description=plan_description)(plan_with_config)

    @op(name=act_op, ins={"plan": In(SweepPlan)}, description=act_description)
    def act_step(context, config: SweepConfig, plan: SweepPlan, aws: AwsClients, settings: FleetSettings) -> Output:
        return guarded_act(context, plan, config, settings, aws, lambda p, result: act(aws, settings, p, result), metric,
                           interval_minutes=interval_minutes)

    @job(name=name, description=description, partitions_def=FLEET_PARTITIONS, tags={
        "dagster/max_retries": "0", "runs-fleet/capability": "sweeps", **exclusive(name)})
    def sweep() -> None:
        act_step(plan_step())

    schedule = fleet_schedule(
        name=schedule_name,
        job=sweep,
        cron_schedule=cron,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"{cron} (UTC): {name}. Destructive: shipped stopped, an operator turns it on.",
    )
    configs = {act_op: SweepConfig, **({plan_op: plan_config} if plan_config else {})}
    return Sweep(sweep, schedule, requestable(task_type, name, configs), plan_op, act_op, interval_minutes)
