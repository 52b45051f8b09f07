"""Job metrics after a retried termination: published at least once, and once per completion.

A first attempt can mark the job done and then stop short — the process dies, an S3 error
while archiving the runner's queues, PutMetricData refused. Its message returns; the retry
finds the job "already done" and must still publish JobDuration and JobSuccess / JobFailure
once, and a later delivery of the same message must not publish them again. Faults go
through botocore's event system on the project's own clients; the metrics are read back
from moto's CloudWatch.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.metadata import rows as _rows
from dagster import DagsterInstance

from pipelines.termination.jobs import process_terminations
from pipelines.termination.jobs_table import PUBLISHED, SWEEP
from resources.aws import add_client_observer
from tests.faults.conftest import expire_in_flight
from tests.pipelines.termination.test_termination import (
    OP,
    Interrupted,
    fail_when,
    job_item,
    make_runner,
    queue_counts,
    run,
    runner_gone,
    send,
    termination,
    termination_url,
)


def published(aws, settings, name, pool):
    """How many of ``name`` moto's CloudWatch holds for ``pool`` (the sum of every datum: Count metrics are 1 each)."""
    now = datetime.now(timezone.utc)
    points = aws.cloudwatch.get_metric_statistics(
        Namespace=settings.metrics_namespace, MetricName=name, Dimensions=[{"Name": "Pool", "Value": pool}],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(hours=1), Period=60,
        Statistics=["Sum", "SampleCount"],
    )["Datapoints"]
    return sum(p["SampleCount"] for p in points), sum(p["Sum"] for p in points)


def count_put_metric_data(aws):
    """Count PutMetricData calls that succeeded (after-call), on the project's clients; returns (calls, undo)."""
    calls = {"n": 0}

    def counted(**_):
        calls["n"] += 1

    def observe(client):
        if client.meta.service_model.service_name == "cloudwatch":
            client.meta.events.register("after-call.cloudwatch.PutMetricData", counted)

    undo_observer = add_client_observer(observe)
    aws.cloudwatch.meta.events.register("after-call.cloudwatch.PutMetricData", counted)

    def undo():
        undo_observer()
        aws.cloudwatch.meta.events.unregister("after-call.cloudwatch.PutMetricData", counted)

    return calls, undo


def returned(aws, settings):
    """The visibility timeouts of what the last attempt left in flight (its message, and the runner's queue
    messages a crashed archiver had received) have passed."""
    expire_in_flight(aws.sqs.meta.region_name)


def test_a_retry_after_a_crash_past_the_mark_publishes_the_metrics_once(aws, settings):
    make_runner(aws, settings, "i-0m01", job_id="m1", pool="gpu", queue_messages=2)
    body = termination("i-0m01", "m1")
    send(aws, settings, body, group="i-0m01")
    puts, undo_count = count_put_metric_data(aws)

    # The process dies while archiving the runner's queues: after the mark, before any metric.
    def die_archiving(**_):
        raise Interrupted()

    undo_crash = add_client_observer(
        lambda c: c.meta.events.register("provide-client-params.s3.PutObject", die_archiving)
        if c.meta.service_model.service_name == "s3" else None)
    try:
        try:
            result = process_terminations.execute_in_process(
                run_config={"ops": {OP: {"config": {"wait_seconds": 0}}}},
                resources={"aws": aws, "settings": settings}, instance=DagsterInstance.ephemeral(),
                raise_on_error=False)
        except Interrupted:
            result = None
        finally:
            undo_crash()
        assert result is None or not result.success
        first = job_item(aws, settings, "m1")
        assert first["status"] == {"S": "completed"} and PUBLISHED not in first  # marked, nothing published
        assert puts["n"] == 0 and published(aws, settings, "JobSuccess", "gpu") == (0, 0)
        assert sum(queue_counts(aws, termination_url(aws, settings))) == 1  # the message was not deleted

        returned(aws, settings)
        retry, metadata = run(aws, settings)
        assert retry == {**retry, "already_done": 1, "metrics_caught_up": 1, "jobs_metrics_published": 1,
                         "metrics_published": 2, "messages_deleted": 1, "failed": 0}
        assert puts["n"] == 1
        assert published(aws, settings, "JobSuccess", "gpu") == (1, 1.0)
        assert published(aws, settings, "JobDuration", "gpu") == (1, 314.0)
        assert job_item(aws, settings, "m1")[PUBLISHED] == {"S": "2026-11-22T10:05:14Z"}
        assert runner_gone(aws, settings, "i-0m01")

        # The same message delivered a third time (say, the agent sent it twice): a repeat, no metrics.
        send(aws, settings, body, group="i-0m01")
        third, _ = run(aws, settings)
        assert third == {**third, "already_done": 1, "metrics_published": 0, "messages_deleted": 1}
        assert puts["n"] == 1 and published(aws, settings, "JobSuccess", "gpu") == (1, 1.0)
    finally:
        undo_count()


def test_an_s3_error_in_the_cleanup_keeps_the_message_but_not_the_metrics_waiting(aws, settings):
    make_runner(aws, settings, "i-0m02", job_id="m2", pool="gpu", queue_messages=3)
    body = termination("i-0m02", "m2", status="failed")
    send(aws, settings, body, group="i-0m02")
    puts, undo_count = count_put_metric_data(aws)
    try:
        _, undo_s3 = fail_when(aws, "provide-client-params.s3.PutObject", lambda p: True)
        try:
            first, metadata = run(aws, settings)
        finally:
            undo_s3()
        # The job ended whatever its queues hold: its metrics go now, its message stays for the cleanup.
        assert first == {**first, "failed": 1, "messages_deleted": 0, "jobs_metrics_published": 1}
        assert "runner cleanup incomplete" in text_of(metadata["failed_messages"]) and "AccessDenied" in text_of(metadata["failed_messages"])
        assert puts["n"] == 1 and published(aws, settings, "JobFailure", "gpu") == (1, 1.0)
        assert job_item(aws, settings, "m2")[PUBLISHED] == {"S": "2026-11-22T10:05:14Z"}

        returned(aws, settings)
        retry, _ = run(aws, settings)
        assert retry == {**retry, "already_done": 1, "failed": 0, "messages_deleted": 1, "metrics_published": 0,
                         "messages_archived": 3}
        assert runner_gone(aws, settings, "i-0m02")

        send(aws, settings, body, group="i-0m02")
        third, _ = run(aws, settings)
        assert third == {**third, "already_done": 1, "metrics_published": 0}
        assert puts["n"] == 1 and published(aws, settings, "JobFailure", "gpu") == (1, 1.0)
        assert published(aws, settings, "JobDuration", "gpu") == (1, 314.0)
    finally:
        undo_count()


def test_a_refused_put_metric_data_keeps_the_message_and_the_retry_publishes(aws, settings):
    make_runner(aws, settings, "i-0m03", job_id="m3", pool="linux-small")
    send(aws, settings, termination("i-0m03", "m3"), group="i-0m03")
    calls, undo = fail_when(aws, "provide-client-params.cloudwatch.PutMetricData", lambda p: True)
    try:
        first, metadata = run(aws, settings)
    finally:
        undo()
    assert calls["failed"] == 1
    assert first == {**first, "failed": 1, "messages_deleted": 0, "metrics_published": 0}
    assert "metrics not published" in text_of(metadata["failed_messages"]) and metadata["metric_failures"] == 2
    assert runner_gone(aws, settings, "i-0m03") and PUBLISHED not in job_item(aws, settings, "m3")

    returned(aws, settings)
    retry, _ = run(aws, settings)
    assert retry == {**retry, "already_done": 1, "metrics_caught_up": 1, "failed": 0, "messages_deleted": 1}
    assert published(aws, settings, "JobSuccess", "linux-small") == (1, 1.0)


def test_metrics_out_but_not_recorded_is_at_least_once(aws, settings):
    make_runner(aws, settings, "i-0m04", job_id="m4", pool="gpu")
    body = termination("i-0m04", "m4")
    send(aws, settings, body, group="i-0m04")
    calls, undo = fail_when(aws, "provide-client-params.dynamodb.UpdateItem",
                            lambda p: p.get("UpdateExpression", "").startswith("SET #published"))
    try:
        first, metadata = run(aws, settings)
    finally:
        undo()
    # Published: the message is done and deleted; only the record does not know.
    assert calls["failed"] == 1 and metadata["metric_flag_failures"] == 1
    assert first == {**first, "processed": 1, "failed": 0, "messages_deleted": 1}
    assert published(aws, settings, "JobSuccess", "gpu") == (1, 1.0)
    # So a later delivery of the same completion publishes once more (at least once, never lost) and records it.
    send(aws, settings, body, group="i-0m04")
    again, _ = run(aws, settings)
    assert again == {**again, "already_done": 1, "metrics_caught_up": 1}
    assert published(aws, settings, "JobSuccess", "gpu") == (2, 2.0)
    assert PUBLISHED in job_item(aws, settings, "m4")


def test_one_completion_in_one_batch_twice_publishes_once_and_unknown_jobs_publish_nothing(aws, settings):
    make_runner(aws, settings, "i-0m05", job_id="m5", pool="gpu")
    make_runner(aws, settings, "i-0m06")  # its job is not in the table
    body = termination("i-0m05", "m5")
    send(aws, settings, body, group="i-0m05")
    send(aws, settings, body, group="i-0m05")
    send(aws, settings, termination("i-0m06", "m6"), group="i-0m06")

    summary, _ = run(aws, settings)

    assert summary == {**summary, "processed": 1, "already_done": 1, "unknown_job": 1, "jobs_metrics_published": 1,
                       "messages_deleted": 3, "failed": 0}
    assert published(aws, settings, "JobSuccess", "gpu") == (1, 1.0)
    names = {m["MetricName"] for m in aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace)["Metrics"]}
    assert names == {"JobSuccess", "JobDuration"}  # and nothing with another pool (or none) for the unknown job
    assert all(d["Value"] == "gpu" for m in aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace)["Metrics"]
               for d in m["Dimensions"])
    assert runner_gone(aws, settings, "i-0m06")


def test_a_sweep_interruption_is_overwritten_and_its_metrics_published(aws, settings):
    make_runner(aws, settings, "i-0m07", job_id="m7", pool="gpu")
    aws.dynamodb.update_item(
        TableName=settings.jobs_table, Key={"job_id": {"S": "m7"}},
        UpdateExpression="SET #s = :i, interrupted_by = :by, completed_at = :t",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":i": {"S": "interrupted"}, ":by": {"S": SWEEP}, ":t": {"S": "2026-11-22T10:30:00Z"}})
    send(aws, settings, termination("i-0m07", "m7", status="failed"), group="i-0m07")

    summary, _ = run(aws, settings)

    assert summary == {**summary, "processed": 1, "jobs_metrics_published": 1, "failed": 0}
    item = job_item(aws, settings, "m7")
    assert item["status"] == {"S": "failed"} and item["completed_at"] == {"S": "2026-11-22T10:05:14Z"}
    assert "interrupted_by" not in item and item["exit_code"] == {"N": "1"}
    assert published(aws, settings, "JobFailure", "gpu") == (1, 1.0)


def text_of(value):
    """A table metadata value's cells as one line of text, for "does the run page name X" assertions."""
    return " | ".join(str(cell) for row in _rows(value) for cell in row.values() if cell is not None)
