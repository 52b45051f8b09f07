"""What every sweep shares: a plan (targets, what it spared) and the thin Dagster layer around it.

The rule of each sweep lives in its own module as plain functions that return a
``SweepPlan`` and act on it. Here is what turns that into a guarded Dagster run:

- the plan op records the plan as output metadata and materializes the sweep's plan asset,
  ``<sweep job>_plan``, whose history holds each target's mark (first seen) and the plan
  sizes the anomaly gate compares with (``pipelines.sweeps.observations``);
- the act op refuses a plan over the blast radius or the anomaly gate, stops on dry run,
  acts only on targets confirmed by two observations ``confirm_after_minutes`` apart
  (first sightings are reported as ``marked``), and records and publishes the outcome
  (done, skipped at re-check, failed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import AssetKey, AssetMaterialization, AssetRecordsFilter, Failure, MetadataValue, Output, TableMetadataValue

from pipelines.common.aws import Metric, put_metrics
from pipelines.common.reporting import log_plan, outcome_metadata, plan_table
from pipelines.common.contract import iso, parse_iso
from pipelines.common.fleets import history_partition
from pipelines.common.tables import column, table
from pipelines.common.progress import Progress, watched
from pipelines.common.safety import (
    ActResult, BlastRadiusExceeded, SweepConfig, check_blast_radius, is_dry_run,
)
from pipelines.sweeps.observations import (
    HISTORY,
    MAX_MARKS,
    PlanRecord,
    anomaly,
    carry_marks,
    confirmed,
    pool_counts,
)
from resources.aws import AwsClients
from resources.settings import FleetSettings

MAX_KEPT_ROWS = 200


@dataclass(frozen=True)
class Kept:
    """A candidate the sweep spared, with the category an operator filters on and why.

    ``outcome``: ``protected``, ``job running`` or ``in use`` (the rule spares it), or
    ``uncertain`` (a lookup failed or a record is malformed: uncertainty keeps it alive).
    """

    resource: str
    outcome: str
    reason: str
    pool: str | None = None


@dataclass
class SweepPlan:
    """A sweep's plan: what was found, what it would act on and why, which candidates it spared and why.

    ``actions[i].resource`` is the target's id (instance id, parameter name, runner id);
    ``targets`` carries, per id, what the act step needs to re-check and act on it.
    """

    kind: str
    found: int
    actions: list[Any] = field(default_factory=list)  # PlannedAction
    kept: list[Kept] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    # Filled by the plan op from the plan asset's history (empty outside a Dagster run).
    observed_at: datetime | None = None
    marks: dict[str, datetime] = field(default_factory=dict)  # target -> first seen, unbroken
    history: list[PlanRecord] = field(default_factory=list)  # earlier plans, newest first

    @property
    def uncertain(self) -> list[Kept]:
        return [k for k in self.kept if k.outcome == "uncertain"]


KEPT_COLUMNS = [column("resource"), column("outcome"), column("reason"), column("pool")]
MARKED_COLUMNS = [column("resource"), column("pool"),
                  column("marked since", description="First seen in this sweep's plans (UTC); acted on once confirmed.")]


def _kept_table(kept: list[Kept]) -> TableMetadataValue:
    return table(KEPT_COLUMNS, ({"resource": k.resource, "outcome": f"kept: {k.outcome}", "reason": k.reason,
                                 "pool": k.pool} for k in kept), cap=MAX_KEPT_ROWS)


def _marked_table(waiting: list[tuple[Any, datetime]]) -> TableMetadataValue:
    return table(MARKED_COLUMNS, ({"resource": a.resource, "pool": a.pool, "marked since": iso(since)}
                                  for a, since in waiting), cap=MAX_KEPT_ROWS)


def plan_asset_key(job_name: str) -> AssetKey:
    """The plan asset of a sweep job (contract): ``<sweep job>_plan``."""
    return AssetKey(f"{job_name}_plan")


def actions_asset_key(job_name: str) -> AssetKey:
    """What a sweep job did on each real run, downstream of its plan: ``<sweep job>_actions``."""
    return AssetKey(f"{job_name}_actions")


def utcnow() -> datetime:
    """The one clock observations are read from (tests move it)."""
    return datetime.now(timezone.utc)


def _record(materialization: Any) -> PlanRecord:
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    return PlanRecord(
        observed_at=parse_iso(metadata["observed_at"]),
        planned=int(metadata["planned"]),
        pools={str(k): int(v) for k, v in (metadata.get("pools") or {}).items()},
        marks={str(k): parse_iso(v) for k, v in (metadata.get("marks") or {}).items()},
    )


def read_history(instance: Any, key: AssetKey, log: Any, partition: str | None = None) -> list[PlanRecord]:
    """The sweep's earlier plans (of ``partition``, the fleet, if any), newest first. Unreadable history is
    no history: every target is then a first sighting (a delay, never an action) and the gate has nothing
    to compare with."""
    try:
        records_filter = key if partition is None else AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
        records = instance.fetch_materializations(records_filter, limit=HISTORY).records
    except Exception as error:  # storage trouble must not turn into action
        log.warning(f"plan history of {key.to_user_string()} unreadable ({type(error).__name__}): "
                    "every target is a first sighting")
        return []
    history: list[PlanRecord] = []
    for record in records:
        try:
            history.append(_record(record.asset_materialization))
        except (AttributeError, KeyError, TypeError, ValueError):
            log.warning(f"plan history of {key.to_user_string()}: an unreadable record skipped")
    return history


def plan_output(context: Any, plan: SweepPlan) -> Any:
    """Log the plan, materialize the sweep's plan asset (marks, sizes), and output the plan."""
    log = context.log
    key = plan_asset_key(context.job_name)
    # Per fleet: each fleet's marks and baseline are its own (one fleet's plans confirm nothing in another).
    partition = history_partition(context)
    plan.history = read_history(context.instance, key, log, partition)
    plan.observed_at = utcnow()
    plan.marks = carry_marks(plan.targets, plan.history[0] if plan.history else None, plan.observed_at)
    log_plan(log, plan.kind, plan.actions, plan.found)
    outcomes = Counter(k.outcome for k in plan.kept)
    for kept in plan.kept:
        if kept.outcome == "in use":
            continue  # every live runner's pieces: counted below, listed in the plan table
        message = f"{plan.kind}: kept {kept.resource} ({kept.outcome}): {kept.reason}"
        # Uncertainty is worth an operator's look; a protected or busy runner is the rule working.
        (log.warning if kept.outcome == "uncertain" else log.info)(message)
    if outcomes["in use"]:
        log.info(f"{plan.kind}: kept {outcomes['in use']} in use (their runners are live)")
    table = plan_table(plan.actions, [(k.resource, f"kept: {k.outcome}", k.reason, k.pool) for k in plan.kept],
                       marks={t: iso(m) for t, m in plan.marks.items()})
    # Explicit ints: the plan asset's page plots each of them over its materializations.
    counts: dict[str, Any] = {
        "found": MetadataValue.int(plan.found),
        "planned": MetadataValue.int(len(plan.actions)),
        "kept_because_uncertain": MetadataValue.int(outcomes["uncertain"]),
        "kept_protected": MetadataValue.int(outcomes["protected"]),
        "kept_in_use": MetadataValue.int(outcomes["job running"] + outcomes["in use"]),
    }
    marks = dict(list(plan.marks.items())[:MAX_MARKS])
    yield AssetMaterialization(asset_key=key, partition=partition, description=f"{plan.kind} plan", metadata={
        **counts,
        "plan": table,
        "observed_at": iso(plan.observed_at),
        "pools": MetadataValue.json(pool_counts(a.pool for a in plan.actions)),
        "marks": MetadataValue.json({t: iso(m) for t, m in marks.items()}),
    })
    yield Output(plan, metadata={**counts, "plan": table, "kept": _kept_table(plan.kept)})


def metrics_by_pool(name: str, result: ActResult) -> list[Metric]:
    """One datum per pool (no dimension when the pool is unknown); a single 0 when nothing was done."""
    per_pool: Counter[str | None] = Counter()
    for action in result.done:
        per_pool[action.pool] += result.units.get(action.resource, 1)
    if not per_pool:
        return [Metric(name, 0)]
    return [Metric(name, value, pool=pool) for pool, value in sorted(per_pool.items(), key=lambda kv: kv[0] or "")]


def split_confirmed(plan: SweepPlan, window_minutes: int) -> tuple[SweepPlan, list[tuple[Any, datetime]]]:
    """The plan restricted to targets confirmed by two observations, and the first sightings (action, marked since)."""
    observed = plan.observed_at or utcnow()
    marks = plan.marks or {t: observed for t in plan.targets}  # no marks recorded: all first sightings
    ready, _ = confirmed(marks, observed, window_minutes)
    go = [a for a in plan.actions if a.resource in ready]
    waiting = [(a, marks.get(a.resource, observed)) for a in plan.actions if a.resource not in ready]
    confirmed_plan = SweepPlan(kind=plan.kind, found=plan.found, actions=go, kept=plan.kept,
                               targets={a.resource: plan.targets[a.resource] for a in go},
                               observed_at=plan.observed_at, marks=plan.marks, history=plan.history)
    return confirmed_plan, waiting


def guarded_act(
    context: Any,
    plan: SweepPlan,
    config: SweepConfig,
    settings: FleetSettings,
    aws: AwsClients,
    act: Callable[[SweepPlan, ActResult], ActResult],
    metric: str,
    *,
    interval_minutes: int,
) -> Output:
    """Blast radius and anomaly gate → fail naming the counts; dry run → stop; else act on the targets
    two observations confirm, publish the metric, record the outcome (first sightings as marked)."""
    log = context.log
    planned = len(plan.actions)
    window = interval_minutes if config.confirm_after_minutes is None else config.confirm_after_minutes
    blocked: str | None = None
    try:
        check_blast_radius(plan.kind, planned, plan.found, config.max_actions, config.max_fraction)
    except BlastRadiusExceeded as error:
        blocked = str(error)
    blocked = blocked or anomaly(plan.kind, planned, pool_counts(a.pool for a in plan.actions), plan.history,
                                 config.anomaly_factor)
    go, waiting = split_confirmed(plan, window)
    marked = {"marked": MetadataValue.int(len(waiting)), "confirm_after_minutes": window,
              "marked_targets": _marked_table(waiting)}
    if is_dry_run(config.dry_run, settings):
        source = "run config" if config.dry_run else "RUNS_FLEET_DRY_RUN=true"
        log.info(f"{plan.kind}: dry run ({source}): stopping after the plan; {planned} action(s) not taken")
        if blocked:
            log.warning(f"{plan.kind}: a real run would be blocked: {blocked}")
        return Output(None, metadata={"dry_run": True, "would_act": planned, "confirmed": len(go.actions), **marked,
                                      "would_be_blocked": blocked or "no"})
    if blocked:
        log.error(blocked)
        raise Failure(
            description=blocked,
            metadata={"planned": planned, "found": plan.found, "max_actions": config.max_actions,
                      "max_fraction": config.max_fraction, "anomaly_factor": config.anomaly_factor,
                      "recent_plans": MetadataValue.json([h.planned for h in plan.history])},
            allow_retries=False,
        )
    for action, since in waiting:
        log.info(f"{plan.kind}: marked {action.resource} (in the plans since {iso(since)}); acted on once it has "
                 f"been in them for {window} min")
    plan = go
    planned = len(plan.actions)
    if not planned:
        log.info(f"{plan.kind}: nothing to do")
    progress = Progress(log, f"{plan.kind}: acting", planned, unit="target")
    # The act function fills the result it is given as it goes; progress is read from it.
    result = ActResult()
    with watched(progress, lambda: result.handled):
        result = act(plan, result)
    for action, why in result.skipped:
        log.warning(f"{plan.kind}: skipped {action.resource} at re-check: {why}")
    for action, why in result.failed:
        log.error(f"{plan.kind}: failed on {action.resource}: {why}")
    progress.finish(
        f"{len(result.done)} done, {len(result.skipped)} skipped at re-check, {len(result.failed)} failed"
    )
    try:
        put_metrics(aws.cloudwatch, settings.metrics_namespace, metrics_by_pool(metric, result))
    except (ClientError, BotoCoreError) as error:
        # The actions are done; a lost datum must not turn a finished cleanup into a failed run.
        log.warning(f"{plan.kind}: could not publish {metric}: {error}")
    metadata: Mapping[str, Any] = {**outcome_metadata(result), **marked}
    # The actions asset: what each real run did, downstream of the plan it acted on (lineage).
    context.log_event(AssetMaterialization(asset_key=actions_asset_key(context.job_name),
                                           partition=history_partition(context),
                                           description=f"{plan.kind}: what the sweep did", metadata=metadata))
    if result.failed:
        raise Failure(
            description=f"{plan.kind}: {len(result.failed)} action(s) failed; a re-run retries them", metadata=metadata
        )
    return Output(None, metadata=metadata)
