"""The audit's pure rules without AWS: queue health grades and checks, the pool inventory and its totals.

Table-driven, one row a case. (The price selection inside ``cost_report`` is not here: it is
being changed elsewhere; these tests build report frames by hand instead.)
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import given, strategies as st

from pipelines.audit.pool_audit import (
    FLEET_ROW,
    REPORT_COLUMNS,
    ManagedInstance,
    PoolRecord,
    _number,
    build_inventory,
    cost_metrics,
    fleet_totals,
    report_checks,
    report_key,
    with_fleet_row,
)
from pipelines.audit.queue_health import (
    DEGRADED,
    HEALTHY,
    RANK,
    UNHEALTHY,
    QueueRef,
    QueueStats,
    Survey,
    Thresholds,
    age_check,
    dead_letters,
    depth_snapshot,
    dlq_check,
    grade,
    growth_check,
    health_frame,
    queue_metric_data,
    runner_queue_kind,
    worst,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
PREFIX = "runs-fleet-runner-"
T = Thresholds(depth_degraded=3, depth_unhealthy=5, dlq_degraded=2, dlq_unhealthy=4,
               age_degraded_seconds=300, age_unhealthy_seconds=1800,
               runner_age_degraded_seconds=1000, runner_age_unhealthy_seconds=2000,
               growth_degraded=5, growth_unhealthy=10)


# ---- queue health: grade, worst, thresholds ---------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (0, HEALTHY), (2, HEALTHY), (2.999, HEALTHY),
    (3, DEGRADED), (4, DEGRADED), (4.999, DEGRADED),  # at the degraded threshold: degraded
    (5, UNHEALTHY), (6, UNHEALTHY), (10**12, UNHEALTHY), (math.inf, UNHEALTHY),  # at unhealthy: unhealthy
    (-1, HEALTHY),
    (None, HEALTHY), (math.nan, HEALTHY),  # an unknown value is never judged
])
def test_grade(value, expected):
    assert grade(value, 3, 5) == expected


def test_grade_with_equal_thresholds_skips_degraded():
    assert [grade(v, 4, 4) for v in (3, 4)] == [HEALTHY, UNHEALTHY]


@given(st.floats(allow_nan=False, min_value=-1e12, max_value=1e12), st.floats(min_value=0, max_value=1e6),
       st.floats(min_value=1e-6, max_value=1e6), st.floats(min_value=0, max_value=1e6))
def test_grade_never_improves_as_the_value_grows(value, rise, degraded, gap):
    unhealthy = degraded + gap
    assert RANK[grade(value + rise, degraded, unhealthy)] >= RANK[grade(value, degraded, unhealthy)]


@pytest.mark.parametrize(("statuses", "expected"), [
    ([], HEALTHY),
    ([HEALTHY], HEALTHY),
    ([HEALTHY, DEGRADED, HEALTHY], DEGRADED),
    ([DEGRADED, UNHEALTHY, HEALTHY], UNHEALTHY),
    ([UNHEALTHY, UNHEALTHY], UNHEALTHY),
])
def test_worst(statuses, expected):
    assert worst(statuses) == expected
    assert worst(reversed(statuses)) == expected  # order does not matter


@pytest.mark.parametrize(("fields", "named"), [
    ({"depth_degraded": 0}, "depth_degraded=0"),
    ({"depth_degraded": -1}, "depth_degraded=-1"),
    ({"dlq_degraded": 5, "dlq_unhealthy": 4}, "dlq_degraded=5 and dlq_unhealthy=4"),
    ({"age_degraded_seconds": 2000, "age_unhealthy_seconds": 1000}, "age_degraded_seconds=2000"),
    ({"runner_age_degraded_seconds": 0}, "runner_age_degraded_seconds=0"),
    ({"growth_degraded": 11, "growth_unhealthy": 10}, "growth_degraded=11 and growth_unhealthy=10"),
])
def test_thresholds_refuse_inverted_or_non_positive_pairs(fields, named):
    with pytest.raises(ValueError, match="must satisfy 0 < degraded <= unhealthy") as refused:
        Thresholds(**fields)
    assert named in str(refused.value)


def test_equal_thresholds_are_allowed():
    assert Thresholds(depth_degraded=7, depth_unhealthy=7).depth_unhealthy == 7


@pytest.mark.parametrize(("name", "expected"), [
    (f"{PREFIX}input-i-0abc", ("runner_input", "i-0abc")),
    (f"{PREFIX}output-4f1c", ("runner_output", "4f1c")),
    (f"{PREFIX}dlq-i-0abc", ("runner_dlq", "i-0abc")),
    (f"{PREFIX}dlq-", ("runner_other", None)),  # no runner id
    (f"{PREFIX}input", ("runner_other", None)),
    (f"{PREFIX}cache-i-0abc", ("runner_other", None)),
    (f"{PREFIX}inputs-i-0abc", ("runner_other", None)),
])
def test_runner_queue_kind(name, expected):
    assert runner_queue_kind(name, PREFIX) == expected


# ---- queue health: the frame, the checks, the metrics ----------------------------------------

def stats(name, kind, visible=0, in_flight=0, delayed=0, dlq=None, runner_id=None):
    return QueueStats(QueueRef(name, f"https://sqs/{name}", kind, runner_id), visible, in_flight, delayed, dlq, "1")


def one_row(*queue_stats, ages=None, missing=()):
    frame = health_frame(Survey(stats=list(queue_stats), missing=list(missing)), ages or {}, T)
    return frame.set_index("queue")


@pytest.mark.parametrize(("queues", "ages", "queue", "status", "age_source", "reasons"), [
    # a source queue by its depth
    ([stats("term", "termination", visible=2)], {}, "term", HEALTHY, "unknown", ""),
    ([stats("term", "termination", visible=3)], {}, "term", DEGRADED, "unknown", "3 visible"),
    ([stats("term", "termination", visible=5)], {}, "term", UNHEALTHY, "unknown", "5 visible"),
    # by its DLQ's depth, read from the DLQ's own row
    ([stats("term", "termination", dlq="term-dlq"), stats("term-dlq", "termination_dlq", visible=2)], {},
     "term", DEGRADED, "empty", "DLQ term-dlq holds 2"),
    # a DLQ by what it holds
    ([stats("term-dlq", "termination_dlq", visible=1)], {}, "term-dlq", HEALTHY, "unknown", ""),
    ([stats("term-dlq", "termination_dlq", visible=4)], {}, "term-dlq", UNHEALTHY, "unknown", "holds 4 dead letter(s)"),
    # by its oldest message's age, where known; a fleet queue's thresholds...
    ([stats("term", "termination", visible=1)], {"term": 300.0}, "term", DEGRADED, "cloudwatch",
     "oldest message 300 s old"),
    ([stats("term", "termination", in_flight=1)], {"term": 1800.0}, "term", UNHEALTHY, "cloudwatch",
     "oldest message 1800 s old"),
    # ...and a runner queue's longer ones
    ([stats(f"{PREFIX}input-i-1", "runner_input", visible=1, runner_id="i-1")], {f"{PREFIX}input-i-1": 1800.0},
     f"{PREFIX}input-i-1", DEGRADED, "cloudwatch", "oldest message 1800 s old"),
    # an empty queue has no oldest message, whatever CloudWatch still says
    ([stats("term", "termination")], {"term": 5000.0}, "term", HEALTHY, "empty", ""),
    # a delayed message counts as held; an unknown age is not judged
    ([stats("term", "termination", delayed=1)], {}, "term", HEALTHY, "unknown", ""),
    # every reason past a threshold is named, worst decides
    ([stats("term", "termination", visible=3, dlq="d"), stats("d", "termination_dlq", visible=4)],
     {"term": 10.0}, "term", UNHEALTHY, "cloudwatch", "3 visible; DLQ d holds 4"),
])
def test_health_frame(queues, ages, queue, status, age_source, reasons):
    row = one_row(*queues, ages=ages).loc[queue]
    assert (row["status"], row["age_source"], row["reasons"]) == (status, age_source, reasons)


def test_a_missing_queue_is_unhealthy_and_fleet_queues_come_first():
    frame = health_frame(Survey(stats=[stats(f"{PREFIX}input-i-1", "runner_input", runner_id="i-1"),
                                       stats("term", "termination")],
                                missing=[("hk", "does not exist")]), {}, T)
    assert frame["queue"].tolist() == ["term", f"{PREFIX}input-i-1", "hk"]
    missing = frame.set_index("queue").loc["hk"]
    assert (missing["kind"], missing["status"], missing["reasons"]) == ("missing", UNHEALTHY, "does not exist")


FRAME = health_frame(Survey(stats=[
    stats("term", "termination", visible=2, dlq="term-dlq"), stats("term-dlq", "termination_dlq", visible=3),
    stats("hk", "housekeeping", visible=7), stats("hk-dlq", "housekeeping_dlq", visible=0),
    stats(f"{PREFIX}input-i-1", "runner_input", visible=4, runner_id="i-1"),
    stats(f"{PREFIX}output-i-1", "runner_output", visible=1, runner_id="i-1"),
    stats(f"{PREFIX}dlq-i-1", "runner_dlq", visible=5, runner_id="i-1"),
], missing=[("gone", "does not exist")]), {"term": 100.0, "hk": 2000.0, f"{PREFIX}input-i-1": 1500.0}, T)


def test_depth_snapshot_tracks_fleet_queues_and_runner_totals():
    assert depth_snapshot(FRAME, PREFIX) == {
        "term": 2, "term-dlq": 3, "hk": 7, "hk-dlq": 0,
        f"{PREFIX}* (per-runner queues)": 5, f"{PREFIX}dlq-* (per-runner DLQs)": 5,
    }


def test_dlq_check_judges_the_deepest_dlq():
    outcome = dlq_check(FRAME, T)
    assert outcome.status == UNHEALTHY and not outcome.passed
    assert outcome.metadata == {"dlqs": 3, "nonempty_dlqs": 2, "max_depth": 5, "deepest": f"{PREFIX}dlq-i-1",
                                "total_dead_letters": 8}
    assert "degraded at 2, unhealthy at 4" in outcome.description
    assert dlq_check(FRAME[FRAME["kind"] == "housekeeping"], T).description == "no DLQs found"


def test_age_check_judges_known_ages_with_each_kind_of_queue_thresholds():
    outcome = age_check(FRAME, T)
    # hk: 2000 s > 1800 (fleet: unhealthy); the runner input's 1500 s is only degraded (runner: 1000/2000)
    assert outcome.status == UNHEALTHY
    assert outcome.metadata["worst_queue"] == "hk" and outcome.metadata["degraded"] == 1
    assert outcome.metadata["unknown"] == 1  # the runner output holds a message of unknown age
    unknown_only = age_check(FRAME[FRAME["queue"] == f"{PREFIX}output-i-1"], T)
    assert unknown_only.passed and "no known ages to judge (1 queue(s)" in unknown_only.description


@pytest.mark.parametrize(("previous", "current", "status", "compared"), [
    (None, {"a": 100}, HEALTHY, 0),  # first materialization
    ({"b": 1}, {"a": 100}, HEALTHY, 0),  # nothing in common
    ({"a": 10}, {"a": 14}, HEALTHY, 1),
    ({"a": 10}, {"a": 15}, DEGRADED, 1),  # +5: at degraded
    ({"a": 10, "b": 0}, {"a": 5, "b": 10}, UNHEALTHY, 2),  # the largest rise decides
    ({"a": 100}, {"a": 0}, HEALTHY, 1),  # a fall is fine
])
def test_growth_check(previous, current, status, compared):
    outcome = growth_check(previous, current, T)
    assert (outcome.status, outcome.metadata["compared"]) == (status, compared)


def test_queue_metric_data_publishes_fleet_queues_and_runner_totals():
    data = {(d["MetricName"], d["Dimensions"][0]["Value"]): d["Value"] for d in queue_metric_data(FRAME, PREFIX)}
    assert data == {("QueueDepth", "term"): 2.0, ("DLQDepth", "term-dlq"): 3.0, ("QueueDepth", "hk"): 7.0,
                    ("DLQDepth", "hk-dlq"): 0.0, ("QueueDepth", f"{PREFIX}*"): 5.0,
                    ("DLQDepth", f"{PREFIX}dlq-*"): 5.0}  # the missing queue publishes nothing


def test_dead_letters():
    assert dead_letters(FRAME) == (8, 5)
    assert dead_letters(FRAME[FRAME["kind"] == "termination"]) == (0, 0)


# ---- pool audit: inventory, totals, metrics, checks -------------------------------------------

def instance(pool, state="running", hours=1.0, job=None, instance_type="m5.large"):
    return ManagedInstance(f"i-{pool}-{hours}-{state}", pool, state, instance_type, NOW - timedelta(hours=hours), job)


POOLS = {"small": PoolRecord("small", "m5.large", 30.0, None), "empty": PoolRecord("empty", "c5.xlarge", None, 0.5)}


@pytest.mark.parametrize(("instances", "running_jobs", "pool", "expected"), [
    ([], set(), "empty", {"running": 0, "stopped": 0, "idle": 0, "assigned": 0, "instance_hours": 0.0,
                         "in_pools_table": True, "instance_type": "c5.xlarge"}),
    ([instance("small", hours=2), instance("small", hours=1.5)], set(), "small",
     {"running": 2, "idle": 2, "assigned": 0, "instance_hours": 3.5}),
    # assigned only when the job-id tag names a job that is running in the jobs table
    ([instance("small", job="j1"), instance("small", job="j2"), instance("small", job=None)], {"j1"}, "small",
     {"running": 3, "assigned": 1, "idle": 2}),
    # a stopped instance counts as stopped, never as assigned or as uptime
    ([instance("small", state="stopped", hours=9, job="j1")], {"j1"}, "small",
     {"running": 0, "stopped": 1, "assigned": 0, "instance_hours": 0.0}),
    # launched in the future (a skewed clock): no negative uptime
    ([instance("small", hours=-1)], set(), "small", {"instance_hours": 0.0}),
    # a pool tag the pools table does not know: its types, sorted, from the instances
    ([instance("rogue", instance_type="t3.micro"), instance("rogue", hours=2, instance_type="a1.large")], set(),
     "rogue", {"in_pools_table": False, "instance_type": "a1.large,t3.micro"}),
])
def test_build_inventory(instances, running_jobs, pool, expected):
    frame = build_inventory(instances, POOLS, running_jobs, NOW).set_index("pool")
    assert set(frame.index) >= set(POOLS)  # every pool of the table, even with no instances
    row = frame.loc[pool]
    for name, value in expected.items():
        assert row[name] == (pytest.approx(value) if isinstance(value, float) else value), name
    assert row["as_of"] == "2026-11-22T12:00:00Z"


def report(*rows):
    defaults = {"in_pools_table": True, "instance_type": "m5.large", "running": 0, "stopped": 0, "idle": 0,
                "assigned": 0, "hourly_rate_usd": 0.1, "price_source": "price table", "ebs_gb": 30.0,
                "instance_hours": 0.0, "mean_uptime_hours": 0.0, "idle_cost_usd_per_hour": 0.0,
                "compute_cost_usd": 0.0, "utilisation": math.nan}
    return pd.DataFrame([{**defaults, **row} for row in rows], columns=REPORT_COLUMNS)


REPORT = report(
    {"pool": "a", "running": 3, "stopped": 1, "idle": 1, "assigned": 2, "instance_hours": 6.0,
     "idle_cost_usd_per_hour": 0.004, "compute_cost_usd": 0.6, "utilisation": 0.5},
    {"pool": "b", "running": 1, "idle": 1, "instance_hours": 2.0, "compute_cost_usd": math.nan,
     "hourly_rate_usd": math.nan, "price_source": "unknown", "utilisation": 0.0},
    {"pool": "c", "in_pools_table": False, "stopped": 2, "idle_cost_usd_per_hour": math.nan, "utilisation": 0.0},
)


def test_fleet_totals_sum_what_is_known_and_name_the_rest():
    totals = fleet_totals(REPORT)
    assert totals == {
        "pools": 3, "running": 4, "stopped": 3, "idle": 2, "assigned": 2, "instance_hours": 8.0,
        "idle_cost_usd_per_hour": 0.004, "compute_cost_usd": 0.6, "utilisation": 2 / 7,
        "pools_with_unknown_compute_cost": ["b"], "pools_with_unknown_idle_cost": ["c"],
        "pools_missing_from_table": ["c"],
    }


def test_fleet_totals_of_an_empty_fleet():
    totals = fleet_totals(report())
    assert totals["pools"] == 0 and totals["compute_cost_usd"] == 0.0 and math.isnan(totals["utilisation"])


def test_with_fleet_row_appends_one_totals_row():
    frame = with_fleet_row(REPORT, fleet_totals(REPORT))
    fleet = frame.iloc[-1]
    assert len(frame) == 4 and fleet["pool"] == FLEET_ROW
    assert (fleet["running"], fleet["mean_uptime_hours"], fleet["price_source"]) == (4, 2.0, "partial")
    priced = report({"pool": "a", "running": 0})
    assert with_fleet_row(priced, fleet_totals(priced)).iloc[-1]["mean_uptime_hours"] == 0.0


def test_cost_metrics_publish_only_known_values():
    metrics = {(m.name, m.pool): (m.value, m.unit) for m in cost_metrics(REPORT)}
    assert metrics == {
        ("PoolIdleCost", "a"): (0.004, "None"), ("PoolComputeCost", "a"): (0.6, "None"),
        ("PoolUtilization", "a"): (50.0, "Percent"),
        ("PoolIdleCost", "b"): (0.0, "None"), ("PoolUtilization", "b"): (0.0, "Percent"),
        ("PoolComputeCost", "c"): (0.0, "None"), ("PoolUtilization", "c"): (0.0, "Percent"),
    }


@pytest.mark.parametrize(("unpriced", "missing", "passed"), [
    ([], [], [True, True]),
    (["b"], [], [False, True]),
    ([], ["c"], [True, False]),
    (["b", "d"], ["c"], [False, False]),
])
def test_report_checks_warn_naming_the_pools(unpriced, missing, passed):
    results = report_checks({"pools_with_unknown_compute_cost": unpriced, "pools_missing_from_table": missing})
    assert [r.passed for r in results] == passed
    for result, pools in zip(results, (unpriced, missing)):
        assert result.severity.value == "WARN"
        assert all(pool in result.description for pool in pools)


@pytest.mark.parametrize(("as_of", "key"), [
    (datetime(2026, 11, 22, 23, 59, tzinfo=timezone.utc), "reports/pool_cost/date=2026-11-22/pool_cost.csv"),
    (datetime(2026, 11, 22, 23, 59, tzinfo=timezone(timedelta(hours=-2))),
     "reports/pool_cost/date=2026-11-23/pool_cost.csv"),  # the UTC day
    (datetime(2026, 11, 22, 0, 30), "reports/pool_cost/date=2026-11-22/pool_cost.csv"),  # naive: UTC
])
def test_report_key(as_of, key):
    assert report_key(as_of) == key


@pytest.mark.parametrize(("attribute", "expected"), [
    ({"N": "30"}, 30.0), ({"N": "0.5"}, 0.5), ({"N": "0"}, 0.0),
    ({"N": "-1"}, None), ({"N": "NaN"}, None), ({"N": "Infinity"}, None), ({"N": "1E+400"}, None),
    ({"N": "lots"}, None), ({"S": "30"}, None), ({}, None), (None, None),
])
def test_pool_numbers(attribute, expected):
    assert _number(attribute) == expected
