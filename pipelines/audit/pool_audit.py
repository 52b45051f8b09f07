"""Pool audit: what each pool holds and what it costs, as the assets `pool_inventory` and `pool_cost_report`.

The rules are plain functions (find the managed instances, look up their jobs, read the pools
table, build the inventory, price it) so they can be tested with a fixed clock; the two
assets wire them to the `aws` and `settings` resources and record what the UI shows.

Definitions (shared/fleet-contract.md, "pool audit"):

- **running** / **stopped**: managed instances (tag `runs-fleet:managed=true`) in EC2 state
  `running` / `stopped`, grouped by their `runs-fleet:pool` tag. Transitional states
  (pending, stopping, shutting-down) are not counted: they are neither serving nor parked.
- **assigned**: running instances whose `runs-fleet:job-id` tag names a job with status
  `running` in the jobs table. **idle** = running − assigned (no tag, an empty tag, or a
  job that is not running / not in the table).
- **idle cost** (USD per hour) = stopped × `ebs_gb` × $0.10 per GB-month ÷ 730: the EBS a
  parked instance keeps paying for.
- **compute cost** (USD) = running × hourly rate × uptime hours, where uptime hours is the
  mean time since `LaunchTime` of the pool's running instances at the audit's `as_of` —
  i.e. hourly rate × the sum of their instance-hours: what the instances running now have
  cost so far. On-demand and spot instances (`InstanceLifecycle` = `spot`) each have their
  rate: which source gives it (the pool's `hourly_price_usd`, the AWS Price List, the spot
  price history, the shipped `prices.csv`) is `pricing.select_rates`; a rate nobody gives
  is **unknown** (NaN), never 0. A pool with no running instance costs exactly 0.
- **utilisation** = assigned ÷ (running + stopped); a pool with no instances has none (NaN).
"""


import base64
import csv
import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
else:
    from pipelines.common.lazy import pandas as pd  # imported by the first DataFrame built
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    FreshnessPolicy,
    MetadataValue,
    Output,
    TableMetadataValue,
    asset,
)

from pipelines.audit.price_sources import fetch_on_demand, fetch_spot
from pipelines.audit.pricing import SHIPPED_CSV, select_rates
from pipelines.common.fleets import FLEET_PARTITIONS
from pipelines.common.aws import Metric, batch_get_with_retry, put_metrics
from pipelines.common.contract import JOB_ID_TAG, MANAGED_TAG, POOL_TAG, iso, object_link, parse_iso, utc
from pipelines.common.tables import column, table
from resources.aws import AwsClients
from resources.settings import FleetSettings

EBS_USD_PER_GB_MONTH = 0.10
HOURS_PER_MONTH = 730
NO_POOL_TAG = "(no pool tag)"
FLEET_ROW = "(fleet)"
PRICES_CSV = Path(__file__).with_name("prices.csv")
DESCRIBE_PAGE = 1000  # DescribeInstances' largest page
REPORT_GROUP = "pool_audit"

INVENTORY_COLUMNS = [
    "pool", "in_pools_table", "instance_type", "ebs_gb", "hourly_price_usd", "running", "stopped", "idle",
    "assigned", "instance_hours", "spot_running", "spot_instance_hours", "as_of",
]
REPORT_COLUMNS = [
    "pool", "in_pools_table", "instance_type", "running", "stopped", "idle", "assigned", "hourly_rate_usd",
    "price_source", "ebs_gb", "instance_hours", "mean_uptime_hours", "idle_cost_usd_per_hour", "compute_cost_usd",
    "utilisation", "spot_running", "spot_rate_usd",
]


# --- find -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedInstance:
    instance_id: str
    pool: str
    state: str  # "running" | "stopped"
    instance_type: str
    launch_time: datetime
    job_id: str | None  # the job-id tag, None when absent or empty
    lifecycle: str = "on-demand"  # EC2's InstanceLifecycle: "spot" for spot instances (AWS omits it on-demand)


@dataclass(frozen=True)
class PoolRecord:
    name: str
    instance_type: str | None
    ebs_gb: float | None
    hourly_price_usd: float | None


def list_managed_instances(ec2: Any) -> list[ManagedInstance]:
    """Every managed instance that is running or stopped, paging DescribeInstances to the end."""
    found: list[ManagedInstance] = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ["running", "stopped"]},
        ],
        PaginationConfig={"PageSize": DESCRIBE_PAGE},
    )
    for page in pages:
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}
                job_id = tags.get(JOB_ID_TAG, "").strip() or None
                found.append(ManagedInstance(
                    instance_id=instance["InstanceId"],
                    pool=tags.get(POOL_TAG, "").strip() or NO_POOL_TAG,
                    state=instance["State"]["Name"],
                    instance_type=instance.get("InstanceType", ""),
                    launch_time=utc(instance["LaunchTime"]),
                    job_id=job_id,
                    lifecycle=instance.get("InstanceLifecycle") or "on-demand",
                ))
    return found


def running_job_ids(dynamodb: Any, jobs_table: str, job_ids: Iterable[str]) -> set[str]:
    """The subset of ``job_ids`` whose record has status `running` (BatchGetItem, 100 keys a call)."""
    keys = [{"job_id": {"S": job_id}} for job_id in sorted(set(job_ids))]
    if not keys:
        return set()
    items = batch_get_with_retry(
        dynamodb, jobs_table, keys, projection="job_id, #s", names={"#s": "status"}
    )
    return {item["job_id"]["S"] for item in items if item.get("status", {}).get("S") == "running"}


def read_pools(dynamodb: Any, pools_table: str) -> dict[str, PoolRecord]:
    """Every pool of the pools table (Scan, paged to the end); a malformed number reads as unknown."""
    pools: dict[str, PoolRecord] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=pools_table):
        for item in page.get("Items", []):
            name = item.get("pool_name", {}).get("S")
            if not name:
                continue
            pools[name] = PoolRecord(
                name=name,
                instance_type=item.get("instance_type", {}).get("S") or None,
                ebs_gb=_number(item.get("ebs_gb")),
                hourly_price_usd=_number(item.get("hourly_price_usd")),
            )
    return pools


def load_price_table(path: Path = PRICES_CSV) -> dict[str, float]:
    """The shipped on-demand price table: instance type -> USD per hour (comment lines start with #)."""
    with path.open(newline="") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {row["instance_type"].strip(): float(row["hourly_usd"]) for row in rows}


# --- compute --------------------------------------------------------------------------------


def build_inventory(
    instances: Sequence[ManagedInstance], pools: Mapping[str, PoolRecord], running_jobs: set[str], now: datetime
) -> "pd.DataFrame":
    """One row per pool: every pool of the table (zeros when empty) and every pool tag seen on an instance."""
    now = utc(now)
    empty = {"running": 0, "stopped": 0, "assigned": 0, "instance_hours": 0.0, "spot_running": 0,
             "spot_instance_hours": 0.0}
    counts: dict[str, dict[str, float]] = defaultdict(lambda: dict(empty))
    seen_types: dict[str, set[str]] = defaultdict(set)
    for instance in instances:
        row = counts[instance.pool]
        seen_types[instance.pool].add(instance.instance_type)
        if instance.state == "running":
            hours = max(0.0, (now - instance.launch_time).total_seconds()) / 3600
            row["running"] += 1
            row["instance_hours"] += hours
            if instance.lifecycle == "spot":
                row["spot_running"] += 1
                row["spot_instance_hours"] += hours
            if instance.job_id is not None and instance.job_id in running_jobs:
                row["assigned"] += 1
        elif instance.state == "stopped":
            row["stopped"] += 1
    rows = []
    for name in sorted(set(pools) | set(counts)):
        pool = pools.get(name)
        c = counts.get(name) or empty
        if pool is not None:
            instance_type = pool.instance_type
        else:
            # Not in the table: the instances themselves say what they are (several types: none priced).
            instance_type = ",".join(sorted(seen_types[name])) or None
        rows.append({
            "pool": name,
            "in_pools_table": pool is not None,
            "instance_type": instance_type,
            "ebs_gb": pool.ebs_gb if pool and pool.ebs_gb is not None else math.nan,
            "hourly_price_usd": pool.hourly_price_usd if pool and pool.hourly_price_usd is not None else math.nan,
            "running": int(c["running"]),
            "stopped": int(c["stopped"]),
            "idle": int(c["running"] - c["assigned"]),
            "assigned": int(c["assigned"]),
            "instance_hours": float(c["instance_hours"]),
            "spot_running": int(c["spot_running"]),
            "spot_instance_hours": float(c["spot_instance_hours"]),
            "as_of": iso(now),
        })
    frame = pd.DataFrame(rows, columns=INVENTORY_COLUMNS)
    return frame.astype({"running": "int64", "stopped": "int64", "idle": "int64", "assigned": "int64",
                         "spot_running": "int64"})


def cost_report(
    inventory: "pd.DataFrame", prices: Mapping[str, float], *, price_list: Mapping[str, float] | None = None,
    spot_history: Mapping[str, float] | None = None,
) -> "pd.DataFrame":
    """Price the inventory per pool (see the module docstring for every formula).

    ``prices`` is the shipped table; ``price_list`` (AWS Price List, on-demand) and
    ``spot_history`` (current spot rates) are what AWS answered, by instance type.
    """
    rows = []
    for rec in inventory.to_dict("records"):
        override = rec["hourly_price_usd"]
        instance_type = rec["instance_type"]
        running, stopped, assigned = int(rec["running"]), int(rec["stopped"]), int(rec["assigned"])
        spot_running = int(rec.get("spot_running", 0))
        hours = float(rec["instance_hours"])
        spot_hours = float(rec.get("spot_instance_hours", 0.0))
        rates = select_rates(
            instance_type, float(override) if _known(override) else None,
            on_demand_running=running - spot_running, spot_running=spot_running,
            price_list=price_list or {}, spot_history=spot_history or {}, shipped=prices,
        )
        rate, source = rates.on_demand, rates.source
        ebs = rec["ebs_gb"]
        if stopped == 0:
            idle_cost = 0.0
        elif _known(ebs):
            idle_cost = stopped * float(ebs) * EBS_USD_PER_GB_MONTH / HOURS_PER_MONTH
        else:
            idle_cost = math.nan
        mean_uptime = hours / running if running else 0.0
        # running × rate × mean uptime == rate × Σ instance-hours, for on-demand and spot hours apiece
        compute_cost = rates.compute_cost(max(0.0, hours - spot_hours), spot_hours)
        total = running + stopped
        rows.append({
            "pool": rec["pool"], "in_pools_table": bool(rec["in_pools_table"]), "instance_type": instance_type,
            "running": running, "stopped": stopped, "idle": int(rec["idle"]), "assigned": assigned,
            "hourly_rate_usd": rate, "price_source": source, "ebs_gb": ebs, "instance_hours": hours,
            "mean_uptime_hours": mean_uptime, "idle_cost_usd_per_hour": idle_cost, "compute_cost_usd": compute_cost,
            "utilisation": assigned / total if total else math.nan,
            "spot_running": spot_running, "spot_rate_usd": rates.spot,
        })
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def fleet_totals(report: "pd.DataFrame") -> dict[str, Any]:
    """Fleet-wide sums; a cost total covers the pools whose cost is known and names the others."""
    running, stopped = int(report["running"].sum()), int(report["stopped"].sum())
    assigned = int(report["assigned"].sum())
    unknown_compute = report.loc[report["compute_cost_usd"].isna(), "pool"].tolist()
    unknown_idle = report.loc[report["idle_cost_usd_per_hour"].isna(), "pool"].tolist()
    return {
        "pools": len(report),
        "running": running,
        "stopped": stopped,
        "idle": int(report["idle"].sum()),
        "assigned": assigned,
        "instance_hours": float(report["instance_hours"].sum()),
        "idle_cost_usd_per_hour": float(report["idle_cost_usd_per_hour"].sum(skipna=True)),
        "compute_cost_usd": float(report["compute_cost_usd"].sum(skipna=True)),
        "utilisation": assigned / (running + stopped) if running + stopped else math.nan,
        "pools_with_unknown_compute_cost": unknown_compute,
        "pools_with_unknown_idle_cost": unknown_idle,
        "pools_missing_from_table": report.loc[~report["in_pools_table"], "pool"].tolist(),
    }


def with_fleet_row(report: "pd.DataFrame", totals: Mapping[str, Any]) -> "pd.DataFrame":
    """The report plus one `(fleet)` row of totals (for the CSV and the table metadata)."""
    fleet = {
        "pool": FLEET_ROW, "in_pools_table": None, "instance_type": None, "running": totals["running"],
        "stopped": totals["stopped"], "idle": totals["idle"], "assigned": totals["assigned"],
        "hourly_rate_usd": math.nan, "price_source": "partial" if totals["pools_with_unknown_compute_cost"] else None,
        "ebs_gb": math.nan, "instance_hours": totals["instance_hours"],
        "mean_uptime_hours": totals["instance_hours"] / totals["running"] if totals["running"] else 0.0,
        "idle_cost_usd_per_hour": totals["idle_cost_usd_per_hour"], "compute_cost_usd": totals["compute_cost_usd"],
        "utilisation": totals["utilisation"], "spot_running": int(report["spot_running"].sum()),
        "spot_rate_usd": math.nan,
    }
    return pd.concat([report, pd.DataFrame([fleet], columns=REPORT_COLUMNS)], ignore_index=True)


def report_csv(report: "pd.DataFrame", totals: Mapping[str, Any]) -> bytes:
    """CSV of the per-pool report and its fleet row; unknown values are empty cells, not 0."""
    return with_fleet_row(report, totals).to_csv(index=False, na_rep="").encode()


def report_key(as_of: datetime) -> str:
    return f"reports/pool_cost/date={utc(as_of):%Y-%m-%d}/pool_cost.csv"


# Cost columns first, then the pool's name: they are what the operator opens the report for,
# and the asset page shows the metadata table from x 716 px and clips it at 1160 px in a
# 1600-px-wide window, so with `pool` (as wide as "(fleet)") before them the utilisation
# header was cut off (tests/test_ui_smoke.py measures it). A report has a row per pool, far
# below the 500-row cap, so its first column never carries the "… more" row's text.
REPORT_TABLE_COLUMNS = [
    column("idle cost ($/h)", "float", "stopped × ebs_gb × $0.10 per GB-month ÷ 730, to the cent; empty: unknown"),
    column("compute cost ($)", "float", "running × hourly rate × mean uptime hours, to the cent; empty: unknown"),
    column("utilisation (%)", "float", "assigned ÷ (running + stopped); empty: the pool has no instances"),
    column("pool"),
    column("running", "int"), column("stopped", "int"), column("idle", "int"), column("assigned", "int"),
    column("type"),
    column("rate ($/h)", "float", "on-demand hourly rate; empty: no price for the type"),
    column("price source", description="what priced the running instances: pools-table override, price-list "
           "(AWS Price List, on-demand), spot-history (current spot price), shipped-csv (prices.csv), or unknown"),
    column("spot", "int", "running spot instances (InstanceLifecycle spot), included in running"),
    column("spot rate ($/h)", "float", "the rate of its spot instances; empty: none running"),
    column("mean uptime (h)", "float"),
    column("in pools table", "bool", "false: instances carry this pool tag, the pools table has no such pool"),
]
INVENTORY_TABLE_COLUMNS = [
    column("pool"), column("in pools table", "bool"), column("type"), column("ebs_gb", "float"),
    column("price override ($/h)", "float", "the pool's hourly_price_usd; empty: the shipped price table applies"),
    column("running", "int"), column("stopped", "int"), column("idle", "int"), column("assigned", "int"),
    column("instance hours", "float"),
]


def report_table(report: "pd.DataFrame", totals: Mapping[str, Any]) -> TableMetadataValue:
    """The report as table metadata, with its `(fleet)` row last; unknown values are empty cells, never 0."""
    rows = []
    for rec in with_fleet_row(report, totals).to_dict("records"):
        fleet = rec["pool"] == FLEET_ROW
        rows.append({
            "idle cost ($/h)": _cents(rec["idle_cost_usd_per_hour"]),
            "compute cost ($)": _cents(rec["compute_cost_usd"]),
            "utilisation (%)": _percent(rec["utilisation"]),
            "pool": rec["pool"],
            "running": rec["running"], "stopped": rec["stopped"], "idle": rec["idle"], "assigned": rec["assigned"],
            "type": rec["instance_type"],
            # A unit price, not an amount: AWS quotes it to the hundredth of a cent, and cents would be 4 % off.
            "rate ($/h)": None if fleet else _rounded(rec["hourly_rate_usd"], 4),
            "price source": rec["price_source"],
            "spot": rec["spot_running"],
            "spot rate ($/h)": None if fleet else _rounded(rec["spot_rate_usd"], 4),
            "mean uptime (h)": _rounded(rec["mean_uptime_hours"], 2),
            "in pools table": None if fleet else bool(rec["in_pools_table"]),
        })
    return table(REPORT_TABLE_COLUMNS, rows)


def inventory_table(inventory: "pd.DataFrame") -> TableMetadataValue:
    return table(INVENTORY_TABLE_COLUMNS, ({
        "pool": rec["pool"], "in pools table": bool(rec["in_pools_table"]), "type": rec["instance_type"],
        "ebs_gb": rec["ebs_gb"], "price override ($/h)": rec["hourly_price_usd"], "running": rec["running"],
        "stopped": rec["stopped"], "idle": rec["idle"], "assigned": rec["assigned"],
        "instance hours": _rounded(rec["instance_hours"], 2),
    } for rec in inventory.to_dict("records")))


CHART_WIDTH_INCHES, CHART_DPI = 9.0, 80  # 720 px wide: beside the metadata list without scrolling


def render_chart(report: "pd.DataFrame") -> bytes:
    """A PNG of three bar panels by pool, side by side: compute cost so far, idle cost per hour, utilisation.

    Each bar is labelled with its value; an unknown cost is a hatched empty bar labelled
    "unknown" (never 0). 720 px wide, about 22 px a pool: readable at the size the UI shows it.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a Dagster worker
    from matplotlib import pyplot as plt

    pools = report["pool"].tolist()
    height = max(2.2, 0.28 * len(pools) + 1.1)
    panels = (
        ("compute cost so far ($)", report["compute_cost_usd"].tolist(), "#4f6fa8", lambda v: f"${v:,.2f}"),
        ("idle cost ($/h)", report["idle_cost_usd_per_hour"].tolist(), "#c07a3a", lambda v: f"${v:,.3f}"),
        ("utilisation (%)", [u * 100 if _known(u) else math.nan for u in report["utilisation"]], "#5a9e6f",
         lambda v: f"{v:.0f} %"),
    )
    with plt.rc_context({"font.size": 8}):
        fig, axes = plt.subplots(1, 3, figsize=(CHART_WIDTH_INCHES, height), sharey=True, dpi=CHART_DPI)
        try:
            positions = list(range(len(pools)))
            for axis, (label, values, color, fmt) in zip(axes, panels):
                known = [v if _known(v) else 0.0 for v in values]
                bars = axis.barh(positions, known, color=color, height=0.7)
                top = max(known, default=0.0) or 1.0
                for bar, value in zip(bars, values):
                    y = bar.get_y() + bar.get_height() / 2
                    if _known(value):
                        axis.annotate(fmt(value), (bar.get_width() + top * 0.02, y), va="center", fontsize=7)
                    else:
                        bar.set_hatch("//")
                        axis.annotate("unknown" if "cost" in label else "n/a", (top * 0.02, y), va="center",
                                      fontsize=7)
                axis.set_xlim(0, 100 if "%" in label else top * 1.35)
                axis.set_xlabel(label)
                axis.tick_params(axis="x", labelsize=7)
            axes[0].set_yticks(positions, pools)
            axes[0].invert_yaxis()
            fig.suptitle("Cost and utilisation by pool", fontsize=9)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            return buffer.getvalue()
        finally:
            plt.close(fig)


def cost_metrics(report: "pd.DataFrame") -> list[Metric]:
    """PoolIdleCost, PoolComputeCost, PoolUtilization per pool; unknown values are not published (CloudWatch takes no NaN)."""
    metrics: list[Metric] = []
    for rec in report.to_dict("records"):
        for name, value, unit in (
            ("PoolIdleCost", rec["idle_cost_usd_per_hour"], "None"),
            ("PoolComputeCost", rec["compute_cost_usd"], "None"),
            ("PoolUtilization", rec["utilisation"] * 100 if _known(rec["utilisation"]) else math.nan, "Percent"),
        ):
            if _known(value):
                metrics.append(Metric(name, float(value), unit=unit, pool=rec["pool"]))
    return metrics


# --- Dagster layer --------------------------------------------------------------------------


CHECK_PRICES = "every_pool_priced"
CHECK_POOLS = "every_pool_in_pools_table"
# Run daily at 09:00: a day late is worth a look, two days late means the audit is not running.
DAILY_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=50), warn_window=timedelta(hours=26))


@asset(group_name=REPORT_GROUP, kinds={"aws", "pandas"}, freshness_policy=DAILY_FRESHNESS, partitions_def=FLEET_PARTITIONS)
def pool_inventory(context: AssetExecutionContext, aws: AwsClients, settings: FleetSettings) -> Output:
    """Per pool: running, stopped, idle (running, no running job) and assigned instances, and their instance-hours.

    From paged DescribeInstances (tag runs-fleet:managed=true), one batched jobs-table lookup per
    100 job ids, and a Scan of the pools table. Pools of the table with no instances appear with
    zeros; instances of a pool missing from the table appear under that pool, flagged.
    """
    now = datetime.now(timezone.utc).replace(microsecond=0)
    instances = list_managed_instances(aws.ec2)
    pools = read_pools(aws.dynamodb, settings.pools_table)
    running = running_job_ids(
        aws.dynamodb, settings.jobs_table, (i.job_id for i in instances if i.state == "running" and i.job_id)
    )
    inventory = build_inventory(instances, pools, running, now)
    missing = inventory.loc[~inventory["in_pools_table"], "pool"].tolist()
    if missing:
        context.log.warning(f"instances of pools missing from {settings.pools_table}: {', '.join(missing)}")
    context.log.info(f"pool inventory as of {iso(now)}: {len(instances)} instances in {len(inventory)} pools")
    return Output(inventory, metadata={
        "as_of": iso(now),
        "instances": len(instances),
        "pools": len(inventory),
        "pools_missing_from_table": MetadataValue.json(missing),
        "inventory": inventory_table(inventory),
        "dagster/row_count": len(inventory),
    })


def aws_prices(
    context: AssetExecutionContext, aws: AwsClients, settings: FleetSettings, inventory: "pd.DataFrame",
    as_of: datetime,
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """What AWS says the pools' types cost: (Price List on-demand rates, current spot rates, a note per source).

    Only types a pools-table override does not already price are asked. A source that cannot
    answer is logged once, as one warning, and the report falls back to the shipped table
    (on-demand) or the on-demand rate (spot); it never fails the report.
    """
    unpriced = inventory[~inventory["hourly_price_usd"].map(_known)]
    # A pool missing from the table may show several types ("a,b"): it has no single price to ask.
    types = {t for t in unpriced["instance_type"].dropna() if "," not in t}
    spot = unpriced["spot_running"] if "spot_running" in unpriced else pd.Series(0, index=unpriced.index)
    spot_types = {t for t in unpriced.loc[spot > 0, "instance_type"].dropna() if "," not in t}
    region = aws.ec2.meta.region_name
    notes: dict[str, str] = {}
    listed = fetch_on_demand(aws, region, types, as_of, cache_bucket=settings.archive_bucket)
    if listed.failure:
        notes["price-list"] = f"unavailable ({listed.failure}); on-demand rates from {SHIPPED_CSV}"
        context.log.warning(f"AWS Price List (pricing:GetProducts) unavailable for {region}: {listed.failure}; "
                            f"on-demand rates come from the shipped prices.csv for this report")
    else:
        notes["price-list"] = (f"{len(listed.rates)} of {len(types)} type(s) priced for {region} "
                               f"({listed.cached} from today's cache, {listed.asked} asked)")
    context.log.info(f"price list: {notes['price-list']}")
    spot_rates = fetch_spot(aws.ec2, spot_types, as_of)
    if spot_rates.failure:
        notes["spot-history"] = f"unavailable ({spot_rates.failure}); spot instances priced at the on-demand rate"
        context.log.warning(f"EC2 spot price history (DescribeSpotPriceHistory) unavailable: {spot_rates.failure}; "
                            "spot instances are priced at their on-demand rate (an upper bound)")
    elif spot_types:
        notes["spot-history"] = f"{len(spot_rates.rates)} of {len(spot_types)} spot type(s) priced"
        context.log.info(f"spot price history: {notes['spot-history']}")
    return listed.rates, spot_rates.rates, notes


def report_checks(totals: Mapping[str, Any]) -> list[AssetCheckResult]:
    """The cost report's own checks: an unpriced instance type, a pool the pools table does not know (WARN)."""
    unpriced, missing = totals["pools_with_unknown_compute_cost"], totals["pools_missing_from_table"]
    return [
        AssetCheckResult(
            check_name=CHECK_PRICES, passed=not unpriced, severity=AssetCheckSeverity.WARN,
            description=("every pool's instance type has an hourly price" if not unpriced else
                         f"no hourly price for the instance type of pool(s) {', '.join(map(str, unpriced))}: their "
                         "compute cost is unknown; add hourly_price_usd to the pool or the type to prices.csv"),
            metadata={"pools": MetadataValue.json(list(unpriced))},
        ),
        AssetCheckResult(
            check_name=CHECK_POOLS, passed=not missing, severity=AssetCheckSeverity.WARN,
            description=("every pool tagged on an instance is in the pools table" if not missing else
                         f"pool(s) {', '.join(map(str, missing))} tagged on instances but missing from the pools "
                         "table: their limits and disk size fall back to defaults"),
            metadata={"pools": MetadataValue.json(list(missing))},
        ),
    ]


@asset(
    group_name=REPORT_GROUP, kinds={"aws", "pandas"}, freshness_policy=DAILY_FRESHNESS,
    partitions_def=FLEET_PARTITIONS,
    check_specs=[
        AssetCheckSpec(CHECK_PRICES, asset="pool_cost_report",
                       description="WARN when an instance type has no hourly price (its compute cost is unknown)."),
        AssetCheckSpec(CHECK_POOLS, asset="pool_cost_report",
                       description="WARN when instances carry a pool the pools table does not know."),
    ],
)
def pool_cost_report(
    context: AssetExecutionContext, pool_inventory: Any, aws: AwsClients, settings: FleetSettings
) -> Iterator[Output | AssetCheckResult]:
    """Per pool: idle cost ($/h), compute cost so far ($), utilisation, plus fleet totals.

    Rates: the pool's hourly_price_usd, else the AWS Price List (on-demand, the fleet's region,
    cached daily) or, for spot instances, the current spot price history; the shipped table
    (pipelines/audit/prices.csv) when AWS cannot answer. Column price_source says which priced
    each pool; an unpriced type is reported as unknown. Writes the CSV to
    s3://{archive_bucket}/reports/pool_cost/date=YYYY-MM-DD/pool_cost.csv and publishes
    PoolIdleCost, PoolComputeCost and PoolUtilization (dimension Pool).
    """
    as_of = parse_iso(pool_inventory["as_of"].iloc[0]) if len(pool_inventory) else datetime.now(timezone.utc)
    shipped = load_price_table()
    price_list, spot_history, price_notes = aws_prices(context, aws, settings, pool_inventory, as_of)
    report = cost_report(pool_inventory, shipped, price_list=price_list, spot_history=spot_history)
    totals = fleet_totals(report)
    key = report_key(as_of)
    aws.s3.put_object(Bucket=settings.archive_bucket, Key=key, Body=report_csv(report, totals),
                      ContentType="text/csv")
    put_metrics(aws.cloudwatch, settings.metrics_namespace, cost_metrics(report))
    for pool in totals["pools_with_unknown_compute_cost"]:
        context.log.warning(f"pool {pool}: no hourly price for its instance type; compute cost reported as unknown")
    chart = base64.b64encode(render_chart(report)).decode()
    context.log.info(
        f"fleet: compute cost ${totals['compute_cost_usd']:.2f}, idle ${totals['idle_cost_usd_per_hour']:.4f}/h, "
        f"utilisation {_ratio(totals['utilisation'])}; report at s3://{settings.archive_bucket}/{key}"
    )
    yield Output(report, metadata={
        "as_of": iso(as_of),
        "report": report_table(report, totals),
        "chart": MetadataValue.md(f"![compute cost, idle cost and utilisation by pool](data:image/png;base64,{chart})"),
        # The s3:// form for the CLI, and a link that opens in a browser.
        "csv": MetadataValue.text(f"s3://{settings.archive_bucket}/{key}"),
        "csv_link": _link(object_link(settings.archive_bucket, key, aws.s3.meta.region_name,
                                      os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))),
        # Numbers, so the asset page plots the fleet's cost and utilisation over its materializations.
        "fleet_compute_cost_usd": MetadataValue.float(totals["compute_cost_usd"]),
        "fleet_idle_cost_usd_per_hour": MetadataValue.float(totals["idle_cost_usd_per_hour"]),
        "fleet_utilisation": None if not _known(totals["utilisation"]) else MetadataValue.float(totals["utilisation"]),
        "fleet_running": MetadataValue.int(totals["running"]),
        "fleet_stopped": MetadataValue.int(totals["stopped"]),
        "fleet_idle": MetadataValue.int(totals["idle"]),
        "fleet_assigned": MetadataValue.int(totals["assigned"]),
        "price_sources": MetadataValue.json(report["price_source"].value_counts().to_dict()),
        "price_notes": MetadataValue.json(price_notes),
        "pools_with_unknown_compute_cost": MetadataValue.json(totals["pools_with_unknown_compute_cost"]),
        "pools_missing_from_table": MetadataValue.json(totals["pools_missing_from_table"]),
        "dagster/row_count": len(report),
    })
    yield from report_checks(totals)


# --- small helpers --------------------------------------------------------------------------


def _number(attribute: Mapping[str, str] | None) -> float | None:
    if not attribute or "N" not in attribute:
        return None
    try:
        value = float(Decimal(attribute["N"]))
    except (InvalidOperation, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _link(target: str) -> MetadataValue:
    """A URL the UI opens, or (against a local stand-in) the command line, as text."""
    return MetadataValue.url(target) if target.startswith("https://") else MetadataValue.text(target)


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _rounded(value: Any, places: int) -> float | None:
    return round(float(value), places) if _known(value) else None


def _cents(value: Any) -> float | None:
    return _rounded(value, 2)


def _percent(value: Any) -> float | None:
    return round(float(value) * 100, 1) if _known(value) else None


def _ratio(value: Any) -> str:
    return f"{float(value):.1%}" if _known(value) else "n/a"
