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
  cost so far. The rate is the pool's `hourly_price_usd` if set, else the shipped on-demand
  table (`prices.csv`); a type in neither is **unknown** (NaN), never 0. A pool with no
  running instance costs exactly 0 whatever its rate.
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
from typing import Any

import pandas as pd
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
    "assigned", "instance_hours", "as_of",
]
REPORT_COLUMNS = [
    "pool", "in_pools_table", "instance_type", "running", "stopped", "idle", "assigned", "hourly_rate_usd",
    "price_source", "ebs_gb", "instance_hours", "mean_uptime_hours", "idle_cost_usd_per_hour", "compute_cost_usd",
    "utilisation",
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
) -> pd.DataFrame:
    """One row per pool: every pool of the table (zeros when empty) and every pool tag seen on an instance."""
    now = utc(now)
    counts: dict[str, dict[str, float]] = defaultdict(
        lambda: {"running": 0, "stopped": 0, "assigned": 0, "instance_hours": 0.0}
    )
    seen_types: dict[str, set[str]] = defaultdict(set)
    for instance in instances:
        row = counts[instance.pool]
        seen_types[instance.pool].add(instance.instance_type)
        if instance.state == "running":
            row["running"] += 1
            row["instance_hours"] += max(0.0, (now - instance.launch_time).total_seconds()) / 3600
            if instance.job_id is not None and instance.job_id in running_jobs:
                row["assigned"] += 1
        elif instance.state == "stopped":
            row["stopped"] += 1
    rows = []
    for name in sorted(set(pools) | set(counts)):
        pool = pools.get(name)
        c = counts.get(name) or {"running": 0, "stopped": 0, "assigned": 0, "instance_hours": 0.0}
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
            "as_of": iso(now),
        })
    frame = pd.DataFrame(rows, columns=INVENTORY_COLUMNS)
    return frame.astype({"running": "int64", "stopped": "int64", "idle": "int64", "assigned": "int64"})


def cost_report(inventory: pd.DataFrame, prices: Mapping[str, float]) -> pd.DataFrame:
    """Price the inventory per pool (see the module docstring for every formula)."""
    rows = []
    for rec in inventory.to_dict("records"):
        override = rec["hourly_price_usd"]
        instance_type = rec["instance_type"]
        if _known(override):
            rate, source = float(override), "pool override"
        elif instance_type in prices:
            rate, source = prices[instance_type], "price table"
        else:
            rate, source = math.nan, "unknown"
        running, stopped, assigned = int(rec["running"]), int(rec["stopped"]), int(rec["assigned"])
        hours = float(rec["instance_hours"])
        ebs = rec["ebs_gb"]
        if stopped == 0:
            idle_cost = 0.0
        elif _known(ebs):
            idle_cost = stopped * float(ebs) * EBS_USD_PER_GB_MONTH / HOURS_PER_MONTH
        else:
            idle_cost = math.nan
        mean_uptime = hours / running if running else 0.0
        # running × rate × mean uptime == rate × Σ instance-hours
        compute_cost = 0.0 if running == 0 else (rate * running * mean_uptime if _known(rate) else math.nan)
        total = running + stopped
        rows.append({
            "pool": rec["pool"], "in_pools_table": bool(rec["in_pools_table"]), "instance_type": instance_type,
            "running": running, "stopped": stopped, "idle": int(rec["idle"]), "assigned": assigned,
            "hourly_rate_usd": rate, "price_source": source, "ebs_gb": ebs, "instance_hours": hours,
            "mean_uptime_hours": mean_uptime, "idle_cost_usd_per_hour": idle_cost, "compute_cost_usd": compute_cost,
            "utilisation": assigned / total if total else math.nan,
        })
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def fleet_totals(report: pd.DataFrame) -> dict[str, Any]:
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


def with_fleet_row(report: pd.DataFrame, totals: Mapping[str, Any]) -> pd.DataFrame:
    """The report plus one `(fleet)` row of totals (for the CSV and the table metadata)."""
    fleet = {
        "pool": FLEET_ROW, "in_pools_table": None, "instance_type": None, "running": totals["running"],
        "stopped": totals["stopped"], "idle": totals["idle"], "assigned": totals["assigned"],
        "hourly_rate_usd": math.nan, "price_source": "partial" if totals["pools_with_unknown_compute_cost"] else None,
        "ebs_gb": math.nan, "instance_hours": totals["instance_hours"],
        "mean_uptime_hours": totals["instance_hours"] / totals["running"] if totals["running"] else 0.0,
        "idle_cost_usd_per_hour": totals["idle_cost_usd_per_hour"], "compute_cost_usd": totals["compute_cost_usd"],
        "utilisation": totals["utilisation"],
    }
    return pd.concat([report, pd.DataFrame([fleet], columns=REPORT_COLUMNS)], ignore_index=True)


def report_csv(report: pd.DataFrame, totals: Mapping[str, Any]) -> bytes:
    """CSV of the per-pool report and its fleet row; unknown values are empty cells, not 0."""
    return with_fleet_row(report, totals).to_csv(index=False, na_rep="").encode()


def report_key(as_of: datetime) -> str:
    return f"reports/pool_cost/date={utc(as_of):%Y-%m-%d}/pool_cost.csv"


# Cost columns first after the pool's name: they are what the operator opens the report for.
REPORT_TABLE_COLUMNS = [
    column("pool"),
    column("idle cost ($/h)", "float", "stopped × ebs_gb × $0.10 per GB-month ÷ 730, to the cent; empty: unknown"),
    column("compute cost ($)", "float", "running × hourly rate × mean uptime hours, to the cent; empty: unknown"),
    column("utilisation (%)", "float", "assigned ÷ (running + stopped); empty: the pool has no instances"),
    column("running", "int"), column("stopped", "int"), column("idle", "int"), column("assigned", "int"),
    column("type"),
    column("rate ($/h)", "float", "on-demand hourly rate; empty: no price for the type"),
    column("price source", description="pool override, price table, or unknown"),
    column("mean uptime (h)", "float"),
    column("in pools table", "bool", "false: instances carry this pool tag, the pools table has no such pool"),
]
INVENTORY_TABLE_COLUMNS = [
    column("pool"), column("in pools table", "bool"), column("type"), column("ebs_gb", "float"),
    column("price override ($/h)", "float", "the pool's hourly_price_usd; empty: the shipped price table applies"),
    column("running", "int"), column("stopped", "int"), column("idle", "int"), column("assigned", "int"),
    column("instance hours", "float"),
]


def report_table(report: pd.DataFrame, totals: Mapping[str, Any]) -> TableMetadataValue:
    """The report as table metadata, with its `(fleet)` row last; unknown values are empty cells, never 0."""
    rows = []
    for rec in with_fleet_row(report, totals).to_dict("records"):
        fleet = rec["pool"] == FLEET_ROW
        rows.append({
            "pool": rec["pool"],
            "idle cost ($/h)": _cents(rec["idle_cost_usd_per_hour"]),
            "compute cost ($)": _cents(rec["compute_cost_usd"]),
            "utilisation (%)": _percent(rec["utilisation"]),
            "running": rec["running"], "stopped": rec["stopped"], "idle": rec["idle"], "assigned": rec["assigned"],
            "type": rec["instance_type"],
            # A unit price, not an amount: AWS quotes it to the hundredth of a cent, and cents would be 4 % off.
            "rate ($/h)": None if fleet else _rounded(rec["hourly_rate_usd"], 4),
            "price source": rec["price_source"],
            "mean uptime (h)": _rounded(rec["mean_uptime_hours"], 2),
            "in pools table": None if fleet else bool(rec["in_pools_table"]),
        })
    return table(REPORT_TABLE_COLUMNS, rows)


def inventory_table(inventory: pd.DataFrame) -> TableMetadataValue:
    return table(INVENTORY_TABLE_COLUMNS, ({
        "pool": rec["pool"], "in pools table": bool(rec["in_pools_table"]), "type": rec["instance_type"],
        "ebs_gb": rec["ebs_gb"], "price override ($/h)": rec["hourly_price_usd"], "running": rec["running"],
        "stopped": rec["stopped"], "idle": rec["idle"], "assigned": rec["assigned"],
        "instance hours": _rounded(rec["instance_hours"], 2),
    } for rec in inventory.to_dict("records")))


def render_chart(report: pd.DataFrame) -> bytes:
    """A PNG bar chart: compute cost (unknown hatched at 0) and utilisation, by pool."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a Dagster worker
    from matplotlib import pyplot as plt

    pools = report["pool"].tolist()
    cost = report["compute_cost_usd"].tolist()
    util = report["utilisation"].tolist()
    height = max(2.5, 0.3 * len(pools) + 1.2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, height), sharey=True, dpi=80)
    try:
        positions = list(range(len(pools)))
        known_cost = [c if _known(c) else 0.0 for c in cost]
        bars = left.barh(positions, known_cost, color="#4f6fa8")
        for bar, value in zip(bars, cost):
            if not _known(value):
                bar.set_hatch("//")
                left.annotate("unknown", (0, bar.get_y() + bar.get_height() / 2), va="center", fontsize=8)
        left.set_yticks(positions, pools)
        left.invert_yaxis()
        left.set_xlabel("compute cost so far (USD)")
        ubars = right.barh(positions, [u * 100 if _known(u) else 0.0 for u in util], color="#5a9e6f")
        for bar, value in zip(ubars, util):
            if not _known(value):
                right.annotate("n/a", (0, bar.get_y() + bar.get_height() / 2), va="center", fontsize=8)
        right.set_xlim(0, 100)
        right.set_xlabel("utilisation (%)")
        fig.suptitle("Cost and utilisation by pool")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def cost_metrics(report: pd.DataFrame) -> list[Metric]:
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
def pool_inventory(context: AssetExecutionContext, aws: AwsClients, settings: FleetSettings) -> Output[pd.DataFrame]:
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
    context: AssetExecutionContext, pool_inventory: pd.DataFrame, aws: AwsClients, settings: FleetSettings
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    """Per pool: idle cost ($/h), compute cost so far ($), utilisation, plus fleet totals.

    Prices from the shipped on-demand table (pipelines/audit/prices.csv) unless the pool sets
    hourly_price_usd; an unpriced type is reported as unknown. Writes the CSV to
    s3://{archive_bucket}/reports/pool_cost/date=YYYY-MM-DD/pool_cost.csv and publishes
    PoolIdleCost, PoolComputeCost and PoolUtilization (dimension Pool).
    """
    report = cost_report(pool_inventory, load_price_table())
    totals = fleet_totals(report)
    as_of = parse_iso(pool_inventory["as_of"].iloc[0]) if len(pool_inventory) else datetime.now(timezone.utc)
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
        "chart": MetadataValue.md(f"![cost and utilisation by pool](data:image/png;base64,{chart})"),
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
