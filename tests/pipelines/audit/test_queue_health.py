"""Queue health: classes at each threshold on real moto queues, and each asset check passing and failing.

Ages come from CloudWatch's `AWS/SQS ApproximateAgeOfOldestMessage`, which real SQS publishes
itself; moto does not, so a test that needs a known age publishes that datapoint into moto
first, as SQS would.
"""

import json
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from pipelines.audit.queue_health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    Thresholds,
    grade,
    health_frame,
    oldest_message_ages,
    queue_health,
    survey_queues,
)
from resources import add_client_observer
from tests.metadata import row_for


def url_of(aws, name):
    return aws.sqs.get_queue_url(QueueName=name)["QueueUrl"]


def send(aws, name, count, **extra):
    url = url_of(aws, name)
    for n in range(count):
        kwargs = dict(extra)
        if name.endswith(".fifo"):
            kwargs.setdefault("MessageGroupId", "g")
            kwargs.setdefault("MessageDeduplicationId", f"{name}-{n}-{datetime.now().timestamp()}")
        aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}), **kwargs)


def runner_set(aws, settings, runner_id, *, redrive=False):
    names = settings.runner_queue_names(runner_id)
    dlq_url = aws.sqs.create_queue(QueueName=names["dlq"])["QueueUrl"]
    attributes = {}
    if redrive:
        arn = aws.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
    aws.sqs.create_queue(QueueName=names["input"], Attributes=attributes)
    aws.sqs.create_queue(QueueName=names["output"])
    return names


def publish_age(aws, queue, seconds):
    """What SQS does on its own in AWS: publish the queue's oldest-message age to CloudWatch."""
    aws.cloudwatch.put_metric_data(Namespace="AWS/SQS", MetricData=[{
        "MetricName": "ApproximateAgeOfOldestMessage", "Value": float(seconds), "Unit": "Seconds",
        "Dimensions": [{"Name": "QueueName", "Value": queue}],
        "Timestamp": datetime.now(timezone.utc) - timedelta(minutes=1),
    }])


THRESHOLDS = Thresholds(depth_degraded=3, depth_unhealthy=5, dlq_degraded=2, dlq_unhealthy=4,
                        age_degraded_seconds=300, age_unhealthy_seconds=1800,
                        runner_age_degraded_seconds=1000, runner_age_unhealthy_seconds=2000,
                        growth_degraded=5, growth_unhealthy=10)


def test_grade_boundaries_belong_to_the_worse_class():
    assert [grade(v, 3, 5) for v in (0, 2, 3, 4, 5, 6)] == [HEALTHY, HEALTHY, DEGRADED, DEGRADED, UNHEALTHY, UNHEALTHY]
    assert grade(None, 3, 5) == HEALTHY  # unknown is not judged
    with pytest.raises(ValueError, match="dlq_degraded=5 and dlq_unhealthy=4"):
        Thresholds(dlq_degraded=5, dlq_unhealthy=4)


def test_classes_at_each_threshold(aws, settings):
    term, hk = settings.termination_queue, settings.housekeeping_queue
    depth = {"r-d2": 2, "r-d3": 3, "r-d4": 4, "r-d5": 5}
    for runner, n in depth.items():
        send(aws, runner_set(aws, settings, runner)["input"], n)
    dead = {"r-q1": 1, "r-q2": 2, "r-q4": 4}
    for runner, n in dead.items():
        send(aws, runner_set(aws, settings, runner, redrive=True)["dlq"], n)
    ages = runner_set(aws, settings, "r-age")
    send(aws, ages["output"], 1)
    send(aws, ages["input"], 1)
    unknown = runner_set(aws, settings, "r-unknown")
    send(aws, unknown["output"], 1)  # holds a message, but CloudWatch has no datapoint for it
    flight = runner_set(aws, settings, "r-flight")
    send(aws, flight["input"], 1)
    send(aws, flight["input"], 1, DelaySeconds=60)
    aws.sqs.receive_message(QueueUrl=url_of(aws, flight["input"]), VisibilityTimeout=60)
    send(aws, term, 1)
    send(aws, hk, 1)
    send(aws, "runs-fleet-housekeeping-dlq", 2)
    publish_age(aws, term, 300)  # fleet queue: degraded at 300
    publish_age(aws, hk, 299)
    publish_age(aws, ages["output"], 2000)  # runner queue: unhealthy at 2000
    publish_age(aws, ages["input"], 999)

    survey = survey_queues(aws.sqs, settings, workers=4)
    with_messages = [s.ref.name for s in survey.stats if s.holds_messages]
    known = oldest_message_ages(aws.cloudwatch, with_messages, datetime.now(timezone.utc))
    assert known == {term: 300, hk: 299, ages["output"]: 2000, ages["input"]: 999}
    frame = health_frame(survey, known, THRESHOLDS).set_index("queue")
    status = frame["status"].to_dict()

    for runner, want in zip(depth, [HEALTHY, DEGRADED, DEGRADED, UNHEALTHY]):
        assert status[settings.runner_queue_names(runner)["input"]] == want, runner
    for runner, want in zip(dead, [HEALTHY, DEGRADED, UNHEALTHY]):
        names = settings.runner_queue_names(runner)
        assert status[names["dlq"]] == want, runner
        assert frame.loc[names["input"], "dlq"] == names["dlq"]  # found from its RedrivePolicy
        assert frame.loc[names["input"], "dlq_depth"] == dead[runner]
        assert status[names["input"]] == want  # a source is as sick as its DLQ
    assert status[term] == DEGRADED and "oldest message 300 s old" in frame.loc[term, "reasons"]
    assert frame.loc[term, "dlq"] == "runs-fleet-termination-dlq.fifo" and frame.loc[term, "dlq_depth"] == 0
    assert frame.loc["runs-fleet-termination-dlq.fifo", "kind"] == "termination_dlq"
    # housekeeping: age 299 is healthy, but its DLQ holds 2 (degraded) and so does the DLQ's own row
    assert status[hk] == DEGRADED and frame.loc[hk, "reasons"] == "DLQ runs-fleet-housekeeping-dlq holds 2"
    assert status["runs-fleet-housekeeping-dlq"] == DEGRADED
    assert status[ages["output"]] == UNHEALTHY and status[ages["input"]] == HEALTHY
    assert frame.loc[unknown["output"], "age_source"] == "unknown" and status[unknown["output"]] == HEALTHY
    assert frame.loc[unknown["input"], "age_source"] == "empty"
    row = frame.loc[flight["input"]]
    assert (row["visible"], row["in_flight"], row["delayed"]) == (0, 1, 1)
    assert frame.loc[ages["output"], "kind"] == "runner_output" and frame.loc[ages["output"], "runner_id"] == "r-age"


def test_a_missing_termination_queue_is_unhealthy_and_a_missing_housekeeping_queue_is_optional(aws, settings):
    aws.sqs.delete_queue(QueueUrl=url_of(aws, settings.termination_queue))
    aws.sqs.delete_queue(QueueUrl=url_of(aws, settings.housekeeping_queue))
    survey = survey_queues(aws.sqs, settings, workers=1)
    assert survey.not_deployed == [settings.housekeeping_queue]
    frame = health_frame(survey, {}, Thresholds()).set_index("queue")
    assert frame.loc[settings.termination_queue, "status"] == UNHEALTHY
    assert frame.loc[settings.termination_queue, "kind"] == "missing"
    assert settings.housekeeping_queue not in frame.index
    assert "runs-fleet-termination-dlq.fifo" not in frame.index  # DLQs are found through their source


def run_health(aws, settings, instance, **config):
    result = materialize([queue_health], resources={"aws": aws, "settings": settings}, instance=instance,
                         run_config={"ops": {"queue_health": {"config": config}}})
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"dlq_depth", "oldest_message_age", "depth_growth", "dlq_rate", "retry_rate"}
    return result, checks


def verdict(check):
    return ("pass" if check.passed else check.severity.value)


GROWTH = {"growth_degraded": 5, "growth_unhealthy": 10}


def test_depth_growth_check_compares_with_the_previous_materialization(aws, settings):
    instance = DagsterInstance.ephemeral()
    _, checks = run_health(aws, settings, instance, **GROWTH)
    assert [verdict(c) for c in checks.values()] == ["pass"] * 5
    assert "first materialization" in checks["depth_growth"].description

    send(aws, settings.housekeeping_queue, 4)
    _, checks = run_health(aws, settings, instance, **GROWTH)
    assert verdict(checks["depth_growth"]) == "pass"  # +4 < 5

    send(aws, settings.housekeeping_queue, 5)
    _, checks = run_health(aws, settings, instance, **GROWTH)
    assert verdict(checks["depth_growth"]) == AssetCheckSeverity.WARN.value
    assert checks["depth_growth"].metadata["max_growth"].value == 5

    runner_set(aws, settings, "r-grow")
    send(aws, settings.runner_queue_names("r-grow")["output"], 10)
    result, checks = run_health(aws, settings, instance, **GROWTH)
    assert verdict(checks["depth_growth"]) == AssetCheckSeverity.ERROR.value
    assert checks["depth_growth"].metadata["queue"].value == "runs-fleet-runner-* (per-runner queues)"
    depths = result.asset_materializations_for_node("queue_health")[0].metadata["depths"].value
    assert depths[settings.housekeeping_queue] == 9 and depths["runs-fleet-runner-* (per-runner queues)"] == 10

    _, checks = run_health(aws, settings, instance, **GROWTH)
    assert verdict(checks["depth_growth"]) == "pass"  # no change since the last run


def test_dlq_depth_check_warns_then_errors(aws, settings):
    instance = DagsterInstance.ephemeral()
    send(aws, "runs-fleet-termination-dlq.fifo", 1)
    result, checks = run_health(aws, settings, instance)  # defaults: degraded at 1, unhealthy at 10
    assert verdict(checks["dlq_depth"]) == AssetCheckSeverity.WARN.value
    assert checks["dlq_depth"].metadata["deepest"].value == "runs-fleet-termination-dlq.fifo"
    metadata = result.asset_materializations_for_node("queue_health")[0].metadata
    assert metadata["degraded"].value == 2  # the DLQ and the termination queue it serves
    dlq = row_for(metadata["queues_table"].value, "runs-fleet-termination-dlq.fifo")
    assert (dlq["kind"], dlq["status"], dlq["visible"]) == ("termination_dlq", "degraded", 1)
    assert metadata["dlq_depth_total"].value == 1 and metadata["dlq_depth_max"].value == 1  # numbers the UI plots

    send(aws, "runs-fleet-termination-dlq.fifo", 9)
    _, checks = run_health(aws, settings, instance)
    assert verdict(checks["dlq_depth"]) == AssetCheckSeverity.ERROR.value
    assert checks["dlq_depth"].metadata["max_depth"].value == 10

    _, checks = run_health(aws, settings, instance, dlq_degraded=11, dlq_unhealthy=20)
    assert verdict(checks["dlq_depth"]) == "pass"


def test_oldest_message_age_check_and_metrics(aws, settings):
    instance = DagsterInstance.ephemeral()
    term = settings.termination_queue
    send(aws, term, 2)
    _, checks = run_health(aws, settings, instance)
    assert verdict(checks["oldest_message_age"]) == "pass"  # no datapoint: unknown, not judged
    assert checks["oldest_message_age"].metadata["unknown"].value == 1

    publish_age(aws, term, 299)
    _, checks = run_health(aws, settings, instance)
    assert verdict(checks["oldest_message_age"]) == "pass"
    assert checks["oldest_message_age"].metadata["known"].value == 1

    publish_age(aws, term, 300)  # same or later minute as 299: the latest minute's Maximum is 300
    _, checks = run_health(aws, settings, instance)
    assert verdict(checks["oldest_message_age"]) == AssetCheckSeverity.WARN.value

    publish_age(aws, term, 1800)
    result, checks = run_health(aws, settings, instance)
    assert verdict(checks["oldest_message_age"]) == AssetCheckSeverity.ERROR.value
    assert checks["oldest_message_age"].metadata["worst_queue"].value == term

    _, checks = run_health(aws, settings, instance, oldest_age_from_cloudwatch=False)
    assert verdict(checks["oldest_message_age"]) == "pass"

    def latest(name, queue):
        points = aws.cloudwatch.get_metric_statistics(
            Namespace=settings.metrics_namespace, MetricName=name, Dimensions=[{"Name": "Queue", "Value": queue}],
            StartTime=datetime.now(timezone.utc) - timedelta(hours=1), EndTime=datetime.now(timezone.utc) + timedelta(minutes=5),
            Period=3600, Statistics=["Maximum"],
        )["Datapoints"]
        return [p["Maximum"] for p in points]

    assert latest("QueueDepth", term) == [2.0]
    assert latest("DLQDepth", "runs-fleet-termination-dlq.fifo") == [0.0]
    assert latest("QueueDepth", f"{settings.runner_queue_prefix}*") == [0.0]
    assert latest("DLQDepth", f"{settings.runner_queue_prefix}dlq-*") == [0.0]


def test_denied_age_lookup_leaves_ages_unknown_and_still_materializes(aws, settings):
    """A role without cloudwatch:GetMetricData: the real client gets AccessDenied, the asset reports why."""
    send(aws, settings.termination_queue, 1)
    publish_age(aws, settings.termination_queue, 5000)  # would be unhealthy, if it could be read

    def deny(**_):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "GetMetricData")

    # The run builds its own clients from the resource: deny on every client made meanwhile.
    remove = add_client_observer(lambda client: client.meta.events.register(
        "before-call.cloudwatch.GetMetricData", deny))
    try:
        result, checks = run_health(aws, settings, DagsterInstance.ephemeral())
    finally:
        remove()
    metadata = result.asset_materializations_for_node("queue_health")[0].metadata
    assert "GetMetricData failed (AccessDenied)" in metadata["oldest_age_source"].value
    frame = result.output_for_node("queue_health").set_index("queue")
    assert frame.loc[settings.termination_queue, "age_source"] == "unknown"
    assert verdict(checks["oldest_message_age"]) == "pass" and checks["oldest_message_age"].metadata["unknown"].value == 1
