"""Pool audit: a hand-built fleet in moto whose inventory, costs and utilisation are worked out by hand here.

The fleet (pools table / instances):

| pool    | table entry                          | running (hours up; job)                          | stopped |
|---------|--------------------------------------|--------------------------------------------------|---------|
| small   | t3.medium, 30 GB (table $0.0416/h)   | 1 h running job, 2 h running job, 3 h finished job, 4 h no tag | 2 |
| large   | c6i.2xlarge, 100 GB, override $0.30  | 5 h running job, 1 h job id not in the table     | 1       |
| storage | i3.large, 50 GB (no price anywhere)  | 2 h running job                                  | 0       |
| empty   | t3.small, 20 GB                      | —                                                | —       |
| ghost   | (missing from the table)             | 3 h, t3.medium, no job                           | 1       |

plus an unmanaged instance and a terminated managed one, which the audit must not count.
"""

import base64
import csv
import io
import math
import os
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from dagster import DagsterInstance, FloatMetadataValue, materialize

from pipelines.audit import REQUESTS, pool_audit
from pipelines.audit.pool_audit import (
    build_inventory,
    cost_report,
    fleet_totals,
    list_managed_instances,
    load_price_table,
    pool_cost_report,
    pool_inventory,
    read_pools,
    running_job_ids,
)
from pipelines.common.requests import BadParams
from sandbox.backdate import backdate_instances
from tests.metadata import column, columns, row_for

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
GB_MONTH = 0.10 / 730  # $ per GB-hour of EBS

POOLS = [
    {"pool_name": "small", "instance_type": "t3.medium", "ebs_gb": 30},
    {"pool_name": "large", "instance_type": "c6i.2xlarge", "ebs_gb": 100, "hourly_price_usd": "0.30"},
    {"pool_name": "storage", "instance_type": "i3.large", "ebs_gb": 50},
    {"pool_name": "empty", "instance_type": "t3.small", "ebs_gb": 20},
]
# (pool, instance type, hours up or None for stopped, job id tag or None)
INSTANCES = [
    ("small", "t3.medium", 1, "j-run-1"),
    ("small", "t3.medium", 2, "j-run-2"),
    ("small", "t3.medium", 3, "j-done-1"),
    ("small", "t3.medium", 4, None),
    ("small", "t3.medium", None, None),
    ("small", "t3.medium", None, "j-run-9"),  # stopped with a stale tag: stopped, not assigned
    ("large", "c6i.2xlarge", 5, "j-run-3"),
    ("large", "c6i.2xlarge", 1, "j-missing"),
    ("large", "c6i.2xlarge", None, None),
    ("storage", "i3.large", 2, "j-run-4"),
    ("ghost", "t3.medium", 3, None),
    ("ghost", "t3.medium", None, None),
]
JOBS = {"j-run-1": "running", "j-run-2": "running", "j-run-3": "running", "j-run-4": "running",
        "j-run-9": "running", "j-done-1": "completed"}


def build_fleet(aws, settings, now):
    for pool in POOLS:
        item = {k: ({"N": str(v)} if k in ("ebs_gb", "hourly_price_usd") else {"S": v}) for k, v in pool.items()}
        aws.dynamodb.put_item(TableName=settings.pools_table, Item=item)
    for job_id, status in JOBS.items():
        aws.dynamodb.put_item(TableName=settings.jobs_table,
                              Item={"job_id": {"S": job_id}, "status": {"S": status}})
    region = aws.ec2.meta.region_name
    launched = {}
    for pool, itype, hours, job in INSTANCES:
        tags = [{"Key": "runs-fleet:managed", "Value": "true"}, {"Key": "runs-fleet:pool", "Value": pool}]
        if job:
            tags.append({"Key": "runs-fleet:job-id", "Value": job})
        iid = aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType=itype, MinCount=1, MaxCount=1,
                                    TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]["InstanceId"]
        if hours is None:
            aws.ec2.stop_instances(InstanceIds=[iid])
        else:
            backdate_instances([iid], now - timedelta(hours=hours), region)
            launched[iid] = now - timedelta(hours=hours)
    # Not ours, and gone: neither may be counted.
    aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.medium", MinCount=1, MaxCount=1,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "runs-fleet:pool", "Value": "small"}]}])
    gone = aws.ec2.run_instances(
        ImageId="ami-12c6146b", InstanceType="t3.medium", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "runs-fleet:managed", "Value": "true"},
                                                                  {"Key": "runs-fleet:pool", "Value": "small"}]}],
    )["Instances"][0]["InstanceId"]
    aws.ec2.terminate_instances(InstanceIds=[gone])
    return launched


def by_pool(frame):
    return {row["pool"]: row for row in frame.to_dict("records")}


def expected_costs(hours_up):
    """The report, by hand. ``hours_up`` maps (pool) -> list of running hours."""
    small_h, large_h, storage_h, ghost_h = (sum(hours_up[p]) for p in ("small", "large", "storage", "ghost"))
    return {
        "small": {"running": 4, "stopped": 2, "assigned": 2, "idle": 2, "rate": 0.0416, "source": "shipped-csv",
                  "compute": 0.0416 * small_h, "idle_cost": 2 * 30 * GB_MONTH, "util": 2 / 6},
        "large": {"running": 2, "stopped": 1, "assigned": 1, "idle": 1, "rate": 0.30, "source": "pools-table override",
                  "compute": 0.30 * large_h, "idle_cost": 1 * 100 * GB_MONTH, "util": 1 / 3},
        "storage": {"running": 1, "stopped": 0, "assigned": 1, "idle": 0, "rate": None, "source": "unknown",
                    "compute": None, "idle_cost": 0.0, "util": 1.0},
        "empty": {"running": 0, "stopped": 0, "assigned": 0, "idle": 0, "rate": 0.0208, "source": "shipped-csv",
                  "compute": 0.0, "idle_cost": 0.0, "util": None},
        # not in the table: its instances say t3.medium; no ebs_gb, so a stopped one's idle cost is unknown
        "ghost": {"running": 1, "stopped": 1, "assigned": 0, "idle": 1, "rate": 0.0416, "source": "shipped-csv",
                  "compute": 0.0416 * ghost_h, "idle_cost": None, "util": 0.0},
    }


def assert_matches(report, expected):
    rows = by_pool(report)
    assert set(rows) == set(expected)
    for pool, want in expected.items():
        row = rows[pool]
        assert (row["running"], row["stopped"], row["assigned"], row["idle"]) == (
            want["running"], want["stopped"], want["assigned"], want["idle"]), pool
        assert row["price_source"] == want["source"], pool
        for field, key in (("hourly_rate_usd", "rate"), ("compute_cost_usd", "compute"),
                            ("idle_cost_usd_per_hour", "idle_cost"), ("utilisation", "util")):
            if want[key] is None:
                assert math.isnan(row[field]), (pool, field, row[field])
            else:
                assert row[field] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (pool, field)


HOURS = {"small": [1, 2, 3, 4], "large": [5, 1], "storage": [2], "ghost": [3], "empty": []}


def test_inventory_and_costs_match_the_hand_computed_fleet(aws, settings):
    build_fleet(aws, settings, NOW)
    instances = list_managed_instances(aws.ec2)
    assert len(instances) == len(INSTANCES)  # unmanaged and terminated left out
    pools = read_pools(aws.dynamodb, settings.pools_table)
    assert pools["large"].hourly_price_usd == 0.30 and pools["small"].hourly_price_usd is None
    running = running_job_ids(aws.dynamodb, settings.jobs_table,
                              [i.job_id for i in instances if i.state == "running" and i.job_id])
    assert running == {"j-run-1", "j-run-2", "j-run-3", "j-run-4"}  # j-run-9 is on a stopped instance

    inventory = build_inventory(instances, pools, running, NOW)
    rows = by_pool(inventory)
    assert rows["ghost"]["in_pools_table"] is False and rows["empty"]["in_pools_table"] is True
    assert rows["ghost"]["instance_type"] == "t3.medium" and math.isnan(rows["ghost"]["ebs_gb"])
    assert rows["small"]["instance_hours"] == pytest.approx(10.0)
    assert rows["empty"]["running"] == rows["empty"]["stopped"] == 0

    report = cost_report(inventory, load_price_table())
    assert_matches(report, expected_costs(HOURS))
    # running × rate × uptime hours, uptime = mean of the running instances: 4 × 0.0416 × 2.5
    assert by_pool(report)["small"]["mean_uptime_hours"] == pytest.approx(2.5)
    assert by_pool(report)["small"]["compute_cost_usd"] == pytest.approx(4 * 0.0416 * 2.5)

    totals = fleet_totals(report)
    assert (totals["running"], totals["stopped"], totals["assigned"], totals["idle"]) == (8, 4, 4, 4)
    assert totals["utilisation"] == pytest.approx(4 / 12)
    assert totals["compute_cost_usd"] == pytest.approx(0.0416 * 10 + 0.30 * 6 + 0.0416 * 3)
    assert totals["idle_cost_usd_per_hour"] == pytest.approx((60 + 100) * GB_MONTH)
    assert totals["pools_with_unknown_compute_cost"] == ["storage"]
    assert totals["pools_with_unknown_idle_cost"] == ["ghost"]
    assert totals["pools_missing_from_table"] == ["ghost"]


def test_describe_instances_is_paged_to_the_end(aws, settings, monkeypatch):
    build_fleet(aws, settings, NOW)
    pages = []
    aws.ec2.meta.events.register("before-call.ec2.DescribeInstances", lambda **kw: pages.append(1))
    monkeypatch.setattr(pool_audit, "DESCRIBE_PAGE", 5)  # 12 reservations -> 3 pages
    assert len(list_managed_instances(aws.ec2)) == len(INSTANCES)
    assert len(pages) == 3


def test_price_table_has_source_date_and_positive_prices():
    text = pool_audit.PRICES_CSV.read_text()
    assert "Source:" in text and "https://aws.amazon.com/ec2/pricing/on-demand/" in text and "Date:" in text
    prices = load_price_table()
    assert prices["t3.medium"] == 0.0416 and prices["c6i.2xlarge"] == 0.34
    assert all(p > 0 for p in prices.values())
    assert "i3.large" not in prices  # the test fleet's unknown type must stay unknown


def test_assets_materialize_with_table_chart_csv_and_metrics(aws, settings):
    base = datetime.now(timezone.utc).replace(microsecond=0)
    launched = build_fleet(aws, settings, base)
    instance = DagsterInstance.ephemeral()
    result = materialize([pool_inventory, pool_cost_report], resources={"aws": aws, "settings": settings},
                         instance=instance)
    assert result.success

    inventory_md = result.asset_materializations_for_node("pool_inventory")[0].metadata
    as_of = datetime.strptime(inventory_md["as_of"].value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert inventory_md["pools_missing_from_table"].value == ["ghost"]
    inventory_table = inventory_md["inventory"].value
    shown = ["pool", "in pools table", "type", "ebs_gb", "price override ($/h)", "running", "stopped", "idle",
             "assigned"]
    # ghost: ebs_gb unknown (empty), no price override (empty: the shipped table applies)
    assert [row_for(inventory_table, "ghost")[c] for c in shown] == ["ghost", False, "t3.medium", None, None,
                                                                    1, 1, 1, 0]
    assert [row_for(inventory_table, "large")[c] for c in shown] == ["large", True, "c6i.2xlarge", 100, 0.30,
                                                                    2, 1, 1, 1]
    # Uptime is measured at the recorded as_of: recompute each pool's hours by hand from it.
    pool_of = {}
    for iid in launched:
        tags = aws.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["Tags"]
        pool_of[iid] = next(t["Value"] for t in tags if t["Key"] == "runs-fleet:pool")
    hours = {p: [] for p in HOURS}
    for iid, when in launched.items():
        hours[pool_of[iid]].append((as_of - when).total_seconds() / 3600)
    expected = expected_costs(hours)

    report = result.output_for_node("pool_cost_report")
    assert_matches(report, expected)

    md = result.asset_materializations_for_node("pool_cost_report")[0].metadata
    table = md["report"].value
    # The cost columns come first, then the pool's name (tests/test_ui_smoke.py: visible without scrolling).
    assert columns(table)[:4] == ["idle cost ($/h)", "compute cost ($)", "utilisation (%)", "pool"]
    storage = row_for(table, "storage", "pool")
    assert [storage[c] for c in ("type", "running", "stopped", "idle", "assigned", "rate ($/h)", "price source",
                                 "compute cost ($)")] == ["i3.large", 1, 0, 0, 1, None, "unknown", None]  # unknown
    assert row_for(table, "ghost", "pool")["in pools table"] is False
    assert row_for(table, "small", "pool")["in pools table"] is True
    assert column(table, "pool")[-1] == "(fleet)" and row_for(table, "empty", "pool")["utilisation (%)"] is None  # n/a
    # Money to the cent, ratios as percentages.
    assert row_for(table, "large", "pool")["compute cost ($)"] == round(expected["large"]["compute"], 2)
    assert row_for(table, "small", "pool")["idle cost ($/h)"] == round(60 * GB_MONTH, 2)
    assert row_for(table, "small", "pool")["utilisation (%)"] == round(100 * 2 / 6, 1)
    assert row_for(table, "(fleet)", "pool")["utilisation (%)"] == round(100 * 4 / 12, 1)
    chart = md["chart"].value
    assert chart.startswith("![") and "(data:image/png;base64," in chart
    png = base64.b64decode(chart.split("base64,", 1)[1].rstrip(")"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert md["fleet_utilisation"].value == pytest.approx(4 / 12)
    # Fleet totals are numbers (plotted by the asset page), not text.
    assert isinstance(md["fleet_compute_cost_usd"], FloatMetadataValue)
    assert isinstance(md["fleet_idle_cost_usd_per_hour"], FloatMetadataValue)
    assert isinstance(md["fleet_utilisation"], FloatMetadataValue)
    assert md["fleet_compute_cost_usd"].value == pytest.approx(sum(e["compute"] for e in expected.values()
                                                                    if e["compute"] is not None))
    assert md["pools_with_unknown_compute_cost"].value == ["storage"]

    key = f"reports/pool_cost/date={as_of:%Y-%m-%d}/pool_cost.csv"
    assert md["csv"].value == f"s3://{settings.archive_bucket}/{key}"
    # Against the local stand-in there is no console: the "link" is the command that prints the object.
    assert md["csv_link"].value == f"aws --endpoint-url {os.environ['AWS_ENDPOINT_URL']} s3 cp " \
        f"s3://{settings.archive_bucket}/{key} -"
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=key)["Body"].read().decode()
    rows = {r["pool"]: r for r in csv.DictReader(io.StringIO(body))}
    assert set(rows) == {"small", "large", "storage", "empty", "ghost", "(fleet)"}
    assert rows["storage"]["compute_cost_usd"] == "" and rows["storage"]["hourly_rate_usd"] == ""  # unknown, not 0
    assert float(rows["large"]["compute_cost_usd"]) == pytest.approx(expected["large"]["compute"])
    assert float(rows["(fleet)"]["running"]) == 8

    def metric(name, pool):
        points = aws.cloudwatch.get_metric_statistics(
            Namespace=settings.metrics_namespace, MetricName=name, Dimensions=[{"Name": "Pool", "Value": pool}],
            StartTime=base - timedelta(hours=1), EndTime=datetime.now(timezone.utc) + timedelta(hours=1),
            Period=7200, Statistics=["Maximum"],
        )["Datapoints"]
        return [p["Maximum"] for p in points]

    assert metric("PoolComputeCost", "large") == [pytest.approx(expected["large"]["compute"])]
    assert metric("PoolIdleCost", "small") == [pytest.approx(60 * GB_MONTH)]
    assert metric("PoolUtilization", "small") == [pytest.approx(100 * 2 / 6)]
    assert metric("PoolComputeCost", "storage") == []  # unknown is not published as a number
    assert metric("PoolUtilization", "empty") == []


def test_requests_accept_read_only_params_and_name_bad_ones():
    registry = {r.task_type: r for r in REQUESTS}
    assert {t: r.job_name for t, r in registry.items()} == {"pool_audit": "pool_audit_job",
                                                            "queue_health": "queue_health_job"}
    for request in registry.values():
        assert request.build_run_config({}) == {}
        assert request.build_run_config({"dry_run": True, "max_actions": 5}) == {}
        assert request.partition_key({}) is None
        with pytest.raises(BadParams, match=r"params\.pool is not a parameter"):
            request.build_run_config({"pool": "small"})
        with pytest.raises(BadParams, match=r"params\.dry_run: Input should be a valid boolean"):
            request.build_run_config({"dry_run": "yes"})
        with pytest.raises(BadParams, match=r"params\.max_actions: Input should be a valid integer"):
            request.build_run_config({"max_actions": True})


def test_jobs_and_schedules_are_in_the_code_location():
    from definitions import defs

    repo = defs.get_repository_def()
    audit = defs.resolve_job_def("pool_audit_job")
    assert {k.to_user_string() for k in audit.asset_layer.executable_asset_keys} == {"pool_inventory",
                                                                                     "pool_cost_report"}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["pool_audit_daily"].cron_schedule == "0 9 * * *"
    assert schedules["pool_audit_daily"].job_name == "pool_audit_job"
    assert schedules["pool_audit_daily"].execution_timezone == "UTC"
    assert schedules["queue_health_every_5_minutes"].cron_schedule == "*/5 * * * *"
    assert schedules["queue_health_every_5_minutes"].job_name == "queue_health_job"


def test_cost_report_checks_warn_naming_unpriced_and_unknown_pools(aws, settings):
    build_fleet(aws, settings, datetime.now(timezone.utc).replace(microsecond=0))
    result = materialize([pool_inventory, pool_cost_report], resources={"aws": aws, "settings": settings},
                         instance=DagsterInstance.ephemeral())
    assert result.success  # WARN checks never fail the run
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    pools = checks[pool_audit.CHECK_POOLS]
    assert not pools.passed and pools.severity.value == "WARN" and "ghost" in pools.description
    assert pools.metadata["pools"].value == ["ghost"]
    priced = checks[pool_audit.CHECK_PRICES]
    # i3.large is not in the shipped price table and the storage pool sets no hourly_price_usd.
    assert not priced.passed and priced.metadata["pools"].value == ["storage"] and "storage" in priced.description


def test_chart_shows_idle_cost_beside_compute_cost_and_fits_beside_the_metadata():
    import struct

    report = pd.DataFrame({"pool": ["small", "large", "storage"], "compute_cost_usd": [1.5, 12.0, math.nan],
                           "idle_cost_usd_per_hour": [0.01, 0.0, math.nan], "utilisation": [0.5, 1.0, math.nan]})
    png = pool_audit.render_chart(report)
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR
    assert (width, height) == (720, 176)  # 720 px wide, about 22 px a pool: no scrolling to read it
    # Idle cost is drawn: another idle cost gives another picture, the same one the same picture.
    assert pool_audit.render_chart(report) == png
    assert pool_audit.render_chart(report.assign(idle_cost_usd_per_hour=[0.5, 0.0, math.nan])) != png
    many = pd.concat([report] * 10, ignore_index=True).assign(pool=[f"p{n}" for n in range(30)])
    assert struct.unpack(">II", pool_audit.render_chart(many)[16:24])[1] <= 30 * 23 + 90
