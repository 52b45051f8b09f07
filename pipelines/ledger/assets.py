"""The Dagster layer of the ledger: the asset `fleet_ledger`, its invariant and quota checks, its freshness.

(No ``from __future__ import annotations``: Dagster reads the asset's ``config`` annotation.)
"""

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    FreshnessPolicy,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from pipelines.audit.pool_audit import load_price_table
from pipelines.common.fleets import FLEET_PARTITIONS, own_records
from pipelines.common.aws import put_metrics
from pipelines.common.contract import iso
from pipelines.ledger import report
from pipelines.ledger.forecast import ERROR, OK, Forecast, forecast
from pipelines.ledger.rules import Thresholds, classify, overdue_leaks, overdue_stuck
from pipelines.ledger.survey import survey
from resources.aws import AwsClients
from resources.settings import FleetSettings

ASSET = "fleet_ledger"
CHECK_LEAKS, CHECK_STUCK = "no_overdue_leaks", "no_overdue_stuck_jobs"
CHECK_SSM, CHECK_QUEUES = "ssm_parameter_headroom", "queue_headroom"
# Counts the headroom checks forecast from, recorded on every materialization.
SSM_COUNT, QUEUE_COUNT = "ssm_parameters_standard", "account_queues"
MAX_IDS = 50  # ids named in a failing check's description; the metadata carries up to 500


class LedgerConfig(Config):
    """The sweeps' thresholds the invariants are judged by, how much the survey reads, and the quota limits."""

    parameter_min_age_minutes: int = Field(default=60, ge=0, description="The stale SSM sweep's min_age_minutes.")
    queue_min_age_hours: int = Field(default=24, ge=0, description="The orphaned queues sweep's age (24 h).")
    stuck_grace_minutes: int = Field(default=30, ge=0, description="The stuck jobs sweep's grace_minutes.")
    count_account_queues: bool = Field(
        default=True, description="List every queue of the account (no prefix) so the queue quota is judged on the "
        "account's count; off: only per-runner queues are listed and counted.")
    queue_attribute_reads: int = Field(
        default=100, ge=0, le=10_000, description="At most this many GetQueueAttributes calls (one per queue), only "
        "for queues of gone runners: their messages held and CreatedTimestamp. 0: pages only.")
    ssm_standard_limit: int = Field(default=10_000, ge=1, description="SSM standard parameters per account and "
                                    "region (AWS quota: 10,000).")
    ssm_advanced_limit: int = Field(default=100_000, ge=1, description="SSM advanced parameters (AWS quota: 100,000).")
    account_queue_limit: int = Field(
        default=1_000_000, ge=1, description="Queues per account and region. SQS documents no such quota (only "
        "1,000 queues per ListQueues page); set your own ceiling.")
    history_points: int = Field(default=48, ge=1, le=1000, description="Earlier materializations the forecast reads.")
    warn_days: float = Field(default=7, gt=0, description="WARN when headroom runs out within this many days.")
    error_days: float = Field(default=1, gt=0, description="ERROR when headroom runs out within this many days.")

    def thresholds(self) -> Thresholds:
        return Thresholds(parameter_min_age_minutes=self.parameter_min_age_minutes,
                          queue_min_age_minutes=self.queue_min_age_hours * 60,
                          stuck_grace_minutes=self.stuck_grace_minutes)


def _history(context: AssetExecutionContext, limit: int) -> list[Mapping[str, Any]]:
    """Earlier materializations' numeric metadata with their time (the current one is stored after this run)."""
    result = context.instance.fetch_materializations(own_records(context), limit=limit)
    points = []
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        values = {k: getattr(v, "value", None) for k, v in materialization.metadata.items()}
        points.append({"at": datetime.fromtimestamp(record.timestamp, timezone.utc), **values})
    return points


def _series(history: list[Mapping[str, Any]], key: str) -> list[tuple[datetime, float]]:
    return [(h["at"], float(h[key])) for h in history if isinstance(h.get(key), (int, float))]


def _headroom_result(name: str, what: str, result: Forecast, extra: Mapping[str, Any]) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name, passed=result.status == OK,
        severity=AssetCheckSeverity.ERROR if result.status == ERROR else AssetCheckSeverity.WARN,
        description=result.describe(what),
        metadata={"status": result.status, "count": result.count, "limit": result.limit, "headroom": result.headroom,
                  "net_rate_per_day": result.rate_per_day if result.rate_per_day is not None else 0.0,
                  "days_left": MetadataValue.text("never" if result.days_left is None else f"{result.days_left:.2f}"),
                  "points": result.points, **extra},
    )


def _overdue_text(items: list[Any]) -> str:
    shown = [f"{o.kind} {o.resource} (runner {o.runner_id}, {o.age.total_seconds() / 3600:.1f} h > "
             f"{o.allowed.total_seconds() / 3600:.2f} h)" for o in items[:MAX_IDS]]
    more = f" and {len(items) - MAX_IDS} more" if len(items) > MAX_IDS else ""
    return "; ".join(shown) + more


@asset(
    name=ASSET,
    group_name="ledger",
    kinds={"aws", "pandas"},
    partitions_def=FLEET_PARTITIONS,
    freshness_policy=FreshnessPolicy.time_window(fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)),
    check_specs=[
        AssetCheckSpec(CHECK_LEAKS, asset=ASSET, description=(
            "No leaked piece older than its sweep's threshold plus one schedule interval: an orphaned instance 15 min "
            "past its pool's max runtime + 10 min, a parameter of a gone runner older than 60 + 60 min, a queue or "
            "tracking record of a gone runner older than 24 h + 6 h. Red names the ids: a sweep is off or failing.")),
        AssetCheckSpec(CHECK_STUCK, asset=ASSET, description=(
            "No job running on a gone runner that started more than grace_minutes (30) + 15 min ago: the stuck jobs "
            "sweep is off or failing.")),
        AssetCheckSpec(CHECK_SSM, asset=ASSET, description=(
            "SSM parameters under the prefix vs the account's limit (standard 10,000; advanced 100,000 if used), "
            "forecast from the ledger's history: WARN when it runs out within 7 days, ERROR within 1 day.")),
        AssetCheckSpec(CHECK_QUEUES, asset=ASSET, description=(
            "Queues in the account vs a configured limit, forecast from the ledger's history: WARN within 7 days, "
            "ERROR within 1 day.")),
    ],
)
def fleet_ledger(context: AssetExecutionContext, config: LedgerConfig, aws: AwsClients, settings: FleetSettings
                 ) -> Iterator[Output | AssetCheckResult]:
    """Every runner that left a trace, and what is left of it: live, finished_clean, leaked (which pieces, since
    when) or stuck (a job running on a gone runner).

    One survey, pages only: DescribeInstances (managed, every state), ECS ListTasks + DescribeTasks, SSM
    DescribeParameters under the prefix, SQS ListQueues, Scans of the tracking, jobs and pools tables; plus, bounded,
    GetQueueAttributes for queues of gone runners (messages held). Shows counts per class and pool, the oldest
    leaks and the leak cost (orphan-hours at the pool audit's prices) as tables, publishes LeakedResources
    (dimensions Kind, Pool), and judges the sweeps' invariant and the SSM / SQS quota headroom as asset checks.
    """
    now = datetime.now(timezone.utc).replace(microsecond=0)
    thresholds = config.thresholds()
    history = _history(context, config.history_points)
    seen = survey(aws, settings, count_account_queues=config.count_account_queues,
                  queue_attribute_reads=config.queue_attribute_reads)
    rows = classify(seen.fleet, now, thresholds)
    frame = report.ledger_frame(rows)
    cost = report.leak_cost(rows, seen.fleet, seen.pools, load_price_table(), now)
    counts = report.totals(rows)
    put_metrics(aws.cloudwatch, settings.metrics_namespace, report.leak_metrics(rows, sorted(seen.pools)))
    runner_queues = sum(len(qs) for qs in seen.fleet.queues.values())
    account_queues = seen.account_queues if seen.account_queues is not None else runner_queues
    leak_cost_usd = float(cost["cost_usd"].sum()) if len(cost) else 0.0
    if seen.queue_reads_skipped:
        context.log.warning(f"{seen.queue_reads_skipped} leaked queue(s) not read (queue_attribute_reads "
                            f"{config.queue_attribute_reads}): messages held unknown, dated by their tracking record")
    context.log.info(f"fleet ledger as of {iso(now)}: {counts['runners']} runners, {counts['leaked_pieces']} leaked "
                     f"piece(s), {counts['stuck_jobs']} stuck job(s); {sum(seen.calls.values())} AWS calls")
    yield Output(frame, metadata={
        "as_of": iso(now),
        **counts,
        "leak_cost_usd": leak_cost_usd,
        SSM_COUNT: int(seen.parameters_by_tier.get("Standard", 0)),
        "ssm_parameters_advanced": int(seen.parameters_by_tier.get("Advanced", 0)),
        QUEUE_COUNT: int(account_queues),
        "runner_queues": runner_queues,
        "api_calls": sum(seen.calls.values()),
        "api_calls_by_operation": MetadataValue.json(dict(sorted(seen.calls.items()))),
        "runners_by_class_and_pool": report.class_table(rows),
        "oldest_leaks": report.oldest_leaks_table(rows, now),
        "leak_cost": report.cost_table(cost),
        "dagster/row_count": len(frame),
    })

    overdue, unknown = overdue_leaks(rows, now, thresholds)
    yield AssetCheckResult(
        check_name=CHECK_LEAKS, passed=not overdue, severity=AssetCheckSeverity.ERROR,
        description=(f"{len(overdue)} leaked piece(s) past their sweep's threshold + interval: {_overdue_text(overdue)}"
                     if overdue else "no leaked piece is older than its sweep's threshold + one interval")
        + (f"; {len(unknown)} leaked piece(s) of unknown age not judged" if unknown else ""),
        metadata={"overdue": len(overdue), "unknown_age": len(unknown),
                  "overdue_ids": MetadataValue.json([o.resource for o in overdue[:500]]),
                  "unknown_age_ids": MetadataValue.json([p.resource for p in unknown[:500]])},
    )
    stuck, unjudged = overdue_stuck(rows, now, thresholds)
    yield AssetCheckResult(
        check_name=CHECK_STUCK, passed=not stuck, severity=AssetCheckSeverity.ERROR,
        description=(f"{len(stuck)} stuck job(s) past grace + interval: {_overdue_text(stuck)}" if stuck
                     else "no stuck job older than grace + one interval")
        + (f"; {len(unjudged)} running job(s) without instance_id or started_at, kept by the sweep: "
           f"{', '.join(unjudged[:MAX_IDS])}" if unjudged else ""),
        metadata={"overdue": len(stuck), "unjudged": len(unjudged),
                  "overdue_job_ids": MetadataValue.json([o.resource for o in stuck[:500]]),
                  "unjudged_job_ids": MetadataValue.json(unjudged[:500])},
    )

    standard = forecast(_series(history, SSM_COUNT), now, int(seen.parameters_by_tier.get("Standard", 0)),
                        config.ssm_standard_limit, config.warn_days, config.error_days)
    advanced = int(seen.parameters_by_tier.get("Advanced", 0))
    if advanced >= config.ssm_advanced_limit:
        standard = Forecast(standard.count, standard.limit, standard.headroom, standard.rate_per_day, 0.0, ERROR,
                            standard.points)
    yield _headroom_result(CHECK_SSM, "standard SSM parameters under the prefix", standard,
                           {"advanced": advanced, "advanced_limit": config.ssm_advanced_limit})
    queues = forecast(_series(history, QUEUE_COUNT), now, account_queues, config.account_queue_limit,
                      config.warn_days, config.error_days)
    yield _headroom_result(CHECK_QUEUES, "queues in the account" if seen.account_queues is not None
                           else "per-runner queues (account count off)", queues, {"runner_queues": runner_queues})
