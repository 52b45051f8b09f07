"""The stuck jobs rule without AWS: table-driven boundaries, strict started_at, every runner state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from pipelines.sweeps import rules
from pipelines.sweeps.rules import JobRecord
from pipelines.sweeps.runners import Liveness

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
GRACE = 30


def ago(**delta) -> str:
    when = NOW - timedelta(**delta)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{when.microsecond:06d}" if when.microsecond else "") + "Z"


def job(started_at=ago(hours=2), instance_id="i-0abc", status="running"):
    return JobRecord("j1", status, started_at, instance_id, "p")


EC2_TERMINATED = Liveness("gone", "instance terminated", aws_state="terminated")
EC2_UNKNOWN = Liveness("gone", "instance unknown to EC2")
EC2_SHUTTING_DOWN = Liveness("live", "instance shutting-down", aws_state="shutting-down")
EC2_RUNNING = Liveness("live", "instance running", aws_state="running")
EC2_PENDING = Liveness("live", "instance pending", aws_state="pending")
EC2_STOPPED = Liveness("live", "instance stopped", aws_state="stopped")
EC2_STOPPING = Liveness("live", "instance stopping", aws_state="stopping")
EC2_FAILED = Liveness("uncertain", "DescribeInstances failed (Throttling): runner kept")
ECS_STOPPED = Liveness("gone", "ECS task stopped", aws_state="STOPPED")
ECS_UNKNOWN = Liveness("gone", "ECS task unknown in the cluster")
ECS_RUNNING = Liveness("live", "ECS task RUNNING", aws_state="RUNNING")
ECS_STOPPING = Liveness("live", "ECS task STOPPING", aws_state="STOPPING")
ECS_FAILED = Liveness("uncertain", "ECS DescribeTasks failure 'ACCESS': runner kept")
TASK = "4f1c0a9b8e7d6c5b4a39281706f5e4d3"


@pytest.mark.parametrize(("record", "runner", "outcome", "why"), [
    # the grace, exactly
    (job(started_at=ago(minutes=30)), EC2_TERMINATED, "not stuck", "within 30"),
    (job(started_at=ago(minutes=30, microseconds=-1)), EC2_TERMINATED, "not stuck", "within 30"),
    (job(started_at=ago(minutes=30, microseconds=1)), EC2_TERMINATED, "interrupt", "terminated"),
    (job(started_at=ago(minutes=31)), EC2_TERMINATED, "interrupt", "terminated"),
    # EC2 runner states
    (job(), EC2_UNKNOWN, "interrupt", "unknown to EC2"),
    (job(), EC2_SHUTTING_DOWN, "interrupt", "shutting-down"),
    (job(), EC2_RUNNING, "in use", "is live"),
    (job(), EC2_PENDING, "in use", "is live"),
    (job(), EC2_STOPPED, "uncertain", "stopped (may be hibernated"),
    (job(), EC2_STOPPING, "uncertain", "stopping"),
    (job(), EC2_FAILED, "uncertain", "DescribeInstances failed"),
    (job(), None, "uncertain", "not looked up"),
    # ECS runner states
    (job(instance_id=TASK), ECS_STOPPED, "interrupt", "ECS task stopped"),
    (job(instance_id=TASK), ECS_UNKNOWN, "interrupt", "unknown in the cluster"),
    (job(instance_id=TASK), ECS_RUNNING, "in use", "is live"),
    (job(instance_id=TASK), ECS_STOPPING, "in use", "is live"),
    (job(instance_id=TASK), ECS_FAILED, "uncertain", "DescribeTasks failure"),
    # an ECS lastStatus that looks like an EC2 state is not one
    (job(instance_id=TASK), Liveness("live", "ECS task shutting-down", aws_state="shutting-down"), "in use", "live"),
    # the record
    (job(instance_id=None), EC2_TERMINATED, "uncertain", "no instance_id"),
    (job(instance_id="  "), EC2_TERMINATED, "uncertain", "no instance_id"),
    (job(status=None), EC2_TERMINATED, "uncertain", "no status"),
    (job(status="completed"), EC2_TERMINATED, "not running", "job is completed"),
    (job(status="interrupted"), EC2_TERMINATED, "not running", "job is interrupted"),
    (job(status="RUNNING"), EC2_TERMINATED, "not running", "job is RUNNING"),
    (job(status="running\nINJECTED"), EC2_TERMINATED, "not running", "'running\\nINJECTED'"),
    # a record's text never reaches a log line raw
    (job(instance_id="i-\nINJECTED"), Liveness("uncertain", "not an id"), "uncertain", "'i-\\nINJECTED'"),
    (job(started_at=None), EC2_TERMINATED, "uncertain", "no started_at"),
])
def test_stuck_job_rule(record, runner, outcome, why):
    decision = rules.decide_stuck_job(record, runner, GRACE, NOW)
    assert decision.outcome == outcome, decision
    assert why in decision.reason, decision
    assert decision.acts is (outcome == "interrupt")
    assert "\n" not in decision.reason


@pytest.mark.parametrize(("raw", "problem"), [
    ("2026-11-29T10:00:00Z", None),
    ("2026-11-29T10:00:00.123Z", None),
    ("2026-11-29T10:00:00+00:00", None),
    ("2026-11-30T11:59:59Z", None),  # within a day of clock skew: usable (and not stuck)
    ("2026-11-30T12:00:01Z", "in the future"),
    ("9999-12-31T23:59:59Z", "in the future"),
    ("2009-12-31T23:59:59Z", "before 2010"),
    ("1970-01-01T00:00:00Z", "before 2010"),
    ("0001-01-01T00:00:00Z", "before 2010"),
    ("2026-02-30T10:00:00Z", "not a real date"),
    ("2026-11-29T25:00:00Z", "not a real date"),
    ("2026-11-29T10:00:00", "not ISO 8601 UTC"),  # no zone: local time of whom?
    ("2026-11-29T10:00:00+02:00", "not ISO 8601 UTC"),
    ("2026-11-29 10:00:00Z", "not ISO 8601 UTC"),
    ("2026-11-29", "not ISO 8601 UTC"),
    ("1764410400", "not ISO 8601 UTC"),  # epoch seconds
    ("yesterday", "not ISO 8601 UTC"),
    ("", "not ISO 8601 UTC"),
    ("2026-11-29T10:00:00Z\n", "not ISO 8601 UTC"),
    (None, "no started_at"),
])
def test_started_at_is_parsed_strictly(raw, problem):
    started, why = rules.parse_started_at(raw, NOW)
    if problem is None:
        assert why is None and started is not None and started.tzinfo is not None
    else:
        assert started is None and problem in why
        decision = rules.decide_stuck_job(job(started_at=raw), EC2_TERMINATED, GRACE, NOW)
        assert decision.outcome == "uncertain"


@pytest.mark.parametrize(("ended", "expected", "source"), [
    (NOW - timedelta(minutes=5, microseconds=500), "2026-11-29T11:54:59Z", "when AWS says"),
    (None, "2026-11-29T12:00:00Z", "now"),
    (NOW + timedelta(minutes=5), "2026-11-29T12:00:00Z", "now"),  # after now: not believed
    (NOW - timedelta(hours=3), "2026-11-29T12:00:00Z", "now"),  # before the job started (2 h ago)
    (datetime(2026, 11, 29, 11, 0), "2026-11-29T11:00:00Z", "when AWS says"),  # naive means UTC
])
def test_completed_at_is_when_the_runner_ended_else_now(ended, expected, source):
    runner = Liveness("gone", "instance terminated", aws_state="terminated", ended_at=ended)
    started, _ = rules.parse_started_at(ago(hours=2), NOW)
    completed_at, why = rules.interrupted_at(runner, started, NOW)
    assert completed_at == expected and why.startswith(source)


def test_precheck_settles_exactly_the_records_that_need_no_lookup():
    assert rules.stuck_job_precheck(job(), GRACE, NOW) is None
    assert rules.stuck_job_precheck(job(started_at=ago(minutes=5)), GRACE, NOW).outcome == "not stuck"
    assert rules.stuck_job_precheck(job(instance_id=None), GRACE, NOW).outcome == "uncertain"


RUNNERS = st.sampled_from([EC2_TERMINATED, EC2_UNKNOWN, EC2_SHUTTING_DOWN, EC2_RUNNING, EC2_STOPPED, EC2_FAILED,
                           ECS_STOPPED, ECS_RUNNING, ECS_FAILED, None])
TEXT = st.none() | st.text(max_size=30) | st.sampled_from([ago(hours=2), ago(minutes=29), "2026-11-29T10:00:00Z"])


@given(status=st.none() | st.sampled_from(sorted(rules.JOB_STATUSES)) | st.text(max_size=10),
       started_at=TEXT, instance_id=st.none() | st.sampled_from(["i-0abc", TASK, "", " "]), runner=RUNNERS,
       grace=st.integers(min_value=1, max_value=10_000))
def test_interrupt_only_a_running_overdue_job_whose_runner_is_gone(status, started_at, instance_id, runner, grace):
    record = JobRecord("j", status, started_at, instance_id)
    decision = rules.decide_stuck_job(record, runner, grace, NOW)  # never raises
    if decision.acts:
        started, _ = rules.parse_started_at(started_at, NOW)
        assert status == "running" and started is not None and NOW - started > timedelta(minutes=grace)
        assert instance_id and instance_id.strip() and runner is not None
        assert runner.state == "gone" or (instance_id.startswith("i-") and runner.aws_state == "shutting-down")
