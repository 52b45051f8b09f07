"""Queue health's alert thresholds, DLQ rate > 5 % and retry rate > 10 % of the messages received, over a
stated window: the rule table-driven without AWS, then each check passing and failing on moto, whose
CloudWatch holds the AWS/SQS datapoints SQS would publish itself (moto's SQS publishes none).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from pipelines.audit.queue_alerts import QueueActivity, rate_outcome, read_activity, window
from pipelines.audit.queue_health import queue_health

START, END = datetime(2026, 11, 25, 9, tzinfo=timezone.utc), datetime(2026, 11, 25, 10, tzinfo=timezone.utc)
TERM, TERM_DLQ = "runs-fleet-termination.fifo", "runs-fleet-termination-dlq.fifo"
HK, HK_DLQ = "runs-fleet-housekeeping", "runs-fleet-housekeeping-dlq"

# (kind, [(queue, received, deleted, dlq arrivals)], threshold) -> (passed, worst queue or None)
CASES = [
    ("dlq", [(TERM, 100, 100, 5)], 5, (True, TERM)),  # at the threshold: not above it
    ("dlq", [(TERM, 100, 100, 6)], 5, (False, TERM)),
    ("dlq", [(TERM, 100, 100, 0), (HK, 10, 10, 1)], 5, (False, HK)),  # the worst queue is named
    ("dlq", [(TERM, 0, 0, 3)], 5, (True, None)),  # nothing received: no rate to judge
    ("retry", [(TERM, 100, 90, 0)], 10, (True, TERM)),
    ("retry", [(TERM, 100, 89, 0)], 10, (False, TERM)),
    ("retry", [(TERM, 10, 12, 0)], 10, (True, TERM)),  # more deletes than receives (a window edge): 0 retries
    ("retry", [], 10, (True, None)),
]


@pytest.mark.parametrize("kind,rows,threshold,want", CASES)
def test_rate_outcome(kind, rows, threshold, want):
    activity = [QueueActivity(q, q + "-dlq", r, d, a) for q, r, d, a in rows]
    outcome = rate_outcome(kind, activity, threshold, 60, START, END)
    assert (outcome.passed, outcome.metadata.get("worst_queue")) == want
    assert "over the last 60 min (09:00–10:00 UTC" in outcome.description  # the window, stated
    assert outcome.metadata["window_minutes"] == 60 and outcome.metadata["window_end"] == "2026-11-25T10:00:00Z"


def test_the_window_ends_on_a_whole_period():
    start, end = window(datetime(2026, 11, 25, 10, 7, 31, tzinfo=timezone.utc), 60)
    assert (start, end) == (datetime(2026, 11, 25, 9, 5, tzinfo=timezone.utc),
                            datetime(2026, 11, 25, 10, 5, tzinfo=timezone.utc))


def publish(aws, queue, metric, value, minutes_ago):
    """What SQS does on its own in AWS: a datapoint of one of its queue metrics."""
    aws.cloudwatch.put_metric_data(Namespace="AWS/SQS", MetricData=[{
        "MetricName": metric, "Value": float(value), "Unit": "Count",
        "Dimensions": [{"Name": "QueueName", "Value": queue}],
        "Timestamp": datetime.now(timezone.utc) - timedelta(minutes=minutes_ago),
    }])


def traffic(aws, received, deleted, dlq_before, dlq_after):
    publish(aws, TERM, "NumberOfMessagesReceived", received // 2, 40)
    publish(aws, TERM, "NumberOfMessagesReceived", received - received // 2, 25)
    publish(aws, TERM, "NumberOfMessagesDeleted", deleted, 25)
    publish(aws, TERM_DLQ, "ApproximateNumberOfMessagesVisible", dlq_before, 45)
    publish(aws, TERM_DLQ, "ApproximateNumberOfMessagesVisible", dlq_after, 20)
    publish(aws, TERM, "NumberOfMessagesReceived", 1000, 180)  # before the window: not counted


def checks_of(aws, settings, **config):
    result = materialize([queue_health], resources={"aws": aws, "settings": settings},
                         instance=DagsterInstance.ephemeral(), run_config={"ops": {"queue_health": {"config": config}}})
    assert result.success
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_read_activity_sums_the_window_from_moto_cloudwatch(aws):
    traffic(aws, received=100, deleted=95, dlq_before=2, dlq_after=8)
    start, end = window(datetime.now(timezone.utc) + timedelta(minutes=5), 60)
    (activity,) = read_activity(aws.cloudwatch, [(TERM, TERM_DLQ)], start, end)
    assert (activity.received, activity.deleted, activity.dlq_arrivals, activity.retries) == (100, 95, 6, 5)


def test_both_checks_pass_on_a_quiet_fleet_and_fail_past_their_thresholds(aws, settings):
    traffic(aws, received=100, deleted=95, dlq_before=0, dlq_after=2)  # 2 % to the DLQ, 5 % retried
    checks = checks_of(aws, settings)
    dlq, retry = checks["dlq_rate"], checks["retry_rate"]
    assert dlq.passed and retry.passed
    assert dlq.metadata["rate_percent"].value == 2.0 and retry.metadata["rate_percent"].value == 5.0
    assert dlq.metadata["window_minutes"].value == 60 and "over the last 60 min" in dlq.description

    # Same periods: each period keeps its largest DLQ depth (2, then 14): 12 arrivals; 200 received, 35 retried.
    traffic(aws, received=100, deleted=70, dlq_before=2, dlq_after=14)
    checks = checks_of(aws, settings)
    dlq, retry = checks["dlq_rate"], checks["retry_rate"]
    assert not dlq.passed and dlq.severity == AssetCheckSeverity.ERROR
    assert dlq.metadata["rate_percent"].value == 6.0 and TERM in dlq.description and "above 5 %" in dlq.description
    assert not retry.passed and retry.severity == AssetCheckSeverity.ERROR
    assert retry.metadata["rate_percent"].value == 17.5 and "above 10 %" in retry.description
    assert retry.metadata["queues"].value[TERM]["retries"] == 35

    # Thresholds and window are run config: the same traffic within raised limits passes.
    checks = checks_of(aws, settings, dlq_rate_percent=10, retry_rate_percent=20, alert_window_minutes=120)
    assert checks["dlq_rate"].passed and checks["retry_rate"].passed
    assert checks["retry_rate"].metadata["window_minutes"].value == 120
