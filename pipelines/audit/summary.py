"""Across fleets (RUNS_FLEET_FLEETS): the cost report and queue health per fleet and in total.

Each fleet's ``pool_cost_report`` and ``queue_health`` partition already records its totals as
numeric metadata; the summaries read the latest of each from Dagster's storage (no AWS call,
so an unreachable fleet shows as stale, not as a failure) and add them up. A fleet with no
materialization yet is listed as such, never counted as zero.
"""


from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dagster import (
    AssetExecutionContext, AssetKey, AssetRecordsFilter, AssetSelection, DefaultScheduleStatus, MaterializeResult,
    MetadataValue, ScheduleDefinition, asset, define_asset_job,
)

from pipelines.common.contract import iso
from pipelines.common.tables import column, table

NOT_YET = "not materialized yet"
TOTAL = "(all fleets)"

COST_FIELDS = {  # summary column -> the cost report's metadata key
    "compute_cost_usd": "fleet_compute_cost_usd",
    "idle_cost_usd_per_hour": "fleet_idle_cost_usd_per_hour",
    "running": "fleet_running",
    "stopped": "fleet_stopped",
    "idle": "fleet_idle",
    "assigned": "fleet_assigned",
}
HEALTH_FIELDS = {
    "queues": "queues",
    "unhealthy": "unhealthy",
    "degraded": "degraded",
    "dlq_depth_total": "dlq_depth_total",
    "dlq_depth_max": "dlq_depth_max",
}


@dataclass(frozen=True)
class FleetFigures:
    """One fleet's latest figures (None: not materialized yet) and when they were taken."""

    fleet: str
    values: Mapping[str, float] | None
    at: datetime | None = None


def summarize(figures: Sequence[FleetFigures], fields: Sequence[str], maxed: Sequence[str] = ()) -> dict[str, Any]:
    """Per-fleet rows plus the total (sums; ``maxed`` fields take the maximum). Fleets without figures are
    listed, not counted; the total says how many fleets it covers."""
    rows = []
    total: dict[str, float] = {f: 0.0 for f in fields}
    covered = 0
    for item in figures:
        if item.values is None:
            rows.append({"fleet": item.fleet, "as_of": NOT_YET, **{f: None for f in fields}})
            continue
        covered += 1
        rows.append({"fleet": item.fleet, "as_of": iso(item.at) if item.at else None,
                     **{f: item.values.get(f) for f in fields}})
        for f in fields:
            value = item.values.get(f)
            if isinstance(value, (int, float)):
                total[f] = max(total[f], value) if f in maxed else total[f] + value
    missing = [i.fleet for i in figures if i.values is None]
    return {"rows": rows, "total": total, "covered": covered, "missing": missing}


def utilisation(total: Mapping[str, float]) -> float | None:
    """Assigned over running + stopped across fleets (the cost report's own definition), None when empty."""
    pool = total.get("running", 0) + total.get("stopped", 0)
    return total.get("assigned", 0) / pool if pool else None


def latest_figures(instance: Any, key: AssetKey, fleets: Sequence[str], fields: Mapping[str, str]) -> list[FleetFigures]:
    """Each fleet partition's latest materialization of ``key``, as numbers."""
    out = []
    for fleet in fleets:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[fleet]),
                                                  limit=1).records
        if not records or records[0].asset_materialization is None:
            out.append(FleetFigures(fleet, None))
            continue
        metadata = records[0].asset_materialization.metadata
        values = {name: getattr(metadata.get(source), "value", None) for name, source in fields.items()}
        out.append(FleetFigures(fleet, {k: v for k, v in values.items() if isinstance(v, (int, float))},
                                datetime.fromtimestamp(records[0].timestamp, timezone.utc)))
    return out


def _metadata(summary: Mapping[str, Any], fields: Sequence[str], money: Sequence[str]) -> dict[str, Any]:
    rows = [*summary["rows"], {"fleet": TOTAL, "as_of": f"{summary['covered']} fleet(s)", **summary["total"]}]
    columns = [column("fleet"), column("as_of"),
               *(column(f, "float" if f in money else "int") for f in fields)]
    numbers = {f"total_{f}": (MetadataValue.float(float(round(v, 2))) if f in money else MetadataValue.int(int(v)))
               for f, v in summary["total"].items()}
    return {"fleets": table(columns, rows), **numbers, "fleets_covered": MetadataValue.int(summary["covered"]),
            "fleets_not_materialized": MetadataValue.json(summary["missing"])}


def build_summaries(fleets: Sequence[str]) -> tuple[list[Any], Any, Any]:
    """The two summary assets, their job and its hourly schedule (running: they only read Dagster's storage)."""

    @asset(group_name="fleets", kinds={"dagster"}, deps=[AssetKey("pool_cost_report")])
    def fleets_cost_summary(context: AssetExecutionContext) -> MaterializeResult:
        """Compute cost, idle cost and instances per fleet and in total, from each fleet's latest pool_cost_report."""
        summary = summarize(latest_figures(context.instance, AssetKey("pool_cost_report"), fleets, COST_FIELDS),
                            list(COST_FIELDS))
        ratio = utilisation(summary["total"])
        context.log.info(f"fleets: {summary['covered']} of {len(fleets)} reported; compute cost "
                         f"${summary['total']['compute_cost_usd']:.2f}, idle ${summary['total']['idle_cost_usd_per_hour']:.2f}/h")
        metadata = _metadata(summary, list(COST_FIELDS), money=["compute_cost_usd", "idle_cost_usd_per_hour"])
        if ratio is not None:
            metadata["total_utilisation"] = MetadataValue.float(round(ratio, 4))
        return MaterializeResult(metadata=metadata)

    @asset(group_name="fleets", kinds={"dagster"}, deps=[AssetKey("queue_health")])
    def fleets_queue_health_summary(context: AssetExecutionContext) -> MaterializeResult:
        """Queues, unhealthy and degraded counts and DLQ depth per fleet and in total, from each fleet's latest
        queue_health (the deepest DLQ is the maximum across fleets)."""
        summary = summarize(latest_figures(context.instance, AssetKey("queue_health"), fleets, HEALTH_FIELDS),
                            list(HEALTH_FIELDS), maxed=["dlq_depth_max"])
        context.log.info(f"fleets: {summary['covered']} of {len(fleets)} reported; "
                         f"{int(summary['total']['unhealthy'])} unhealthy queue(s)")
        return MaterializeResult(metadata=_metadata(summary, list(HEALTH_FIELDS), money=[]))

    summary_job = define_asset_job(
        "fleets_summary_job", selection=AssetSelection.assets(fleets_cost_summary, fleets_queue_health_summary),
        description="Add up every fleet's latest cost report and queue health (reads Dagster's storage only).",
        tags={"runs-fleet/exclusive": "fleets_summary_job", "runs-fleet/capability": "audit"},
    )
    schedule = ScheduleDefinition(
        name="fleets_summary_hourly", job=summary_job, cron_schedule="30 * * * *", execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Hourly at :30 UTC: the cross-fleet cost and queue health summaries. Read-only, shipped running.",
    )
    return [fleets_cost_summary, fleets_queue_health_summary], summary_job, schedule
