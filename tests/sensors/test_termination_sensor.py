"""termination_queue_sensor: a cheap, read-only tick that starts one drain run only when there is work."""

from __future__ import annotations

import json
import time

from dagster import DagsterRunStatus, RunRequest, SkipReason, build_sensor_context
from dagster._core.test_utils import create_run_for_test, instance_for_test

from resources import load_settings
from resources.aws import AwsClients
from definitions import termination_queue_sensor


def tick(instance, aws, settings):
    context = build_sensor_context(instance=instance, resources={"aws": aws, "settings": settings})
    started = time.monotonic()
    result = termination_queue_sensor(context)
    assert time.monotonic() - started < 5  # a tick stays cheap
    return result


def send(aws, settings, n):
    url = aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]
    for i in range(n):
        aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"instance_id": f"i-{i}", "job_id": str(i),
                                                                   "status": "completed"}), MessageGroupId=f"i-{i}")
    return url


def test_requests_a_run_only_when_there_is_work_and_never_two_at_once(aws, settings):
    with instance_for_test() as instance:
        empty = tick(instance, aws, settings)
        assert isinstance(empty, SkipReason) and "termination queue is empty" in empty.skip_message

        url = send(aws, settings, 3)
        request = tick(instance, aws, settings)
        assert isinstance(request, RunRequest)
        assert request.run_key is None  # a later redelivery must be able to start another run
        assert request.tags["runs-fleet/visible_messages"] == "3"

        # The tick never received a message: all three are still visible and never received.
        got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"])
        assert sorted(m["Attributes"]["ApproximateReceiveCount"] for m in got["Messages"]) == ["1", "1", "1"]

        # Messages only in flight are not work for a new run.
        held = tick(instance, aws, settings)
        assert isinstance(held, SkipReason) and "3 in flight" in held.skip_message

        for status in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED):
            run = create_run_for_test(instance, job_name="process_terminations", status=status)
            aws.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(got["Messages"])])
            busy = tick(instance, aws, settings)
            assert isinstance(busy, SkipReason) and "already" in busy.skip_message and run.run_id in busy.skip_message
            instance.report_run_canceled(run)
            got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        # Finished runs do not block: the next tick asks again (the earlier run failed, say).
        aws.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(got["Messages"])])
        assert isinstance(tick(instance, aws, settings), RunRequest)


def test_an_aws_error_is_a_skip_reason_not_a_crash(aws):
    missing = load_settings({"RUNS_FLEET_TERMINATION_QUEUE_URL": "no-such-queue.fifo"})
    nobody_listens = AwsClients(endpoint_url="http://127.0.0.1:9")  # connection refused, every attempt
    with instance_for_test() as instance:
        result = tick(instance, aws, missing)
        unreachable = tick(instance, nobody_listens, load_settings())
    assert isinstance(result, SkipReason)
    assert "could not read the termination queue" in result.skip_message
    assert "NonExistentQueue" in result.skip_message or "QueueDoesNotExist" in result.skip_message
    assert isinstance(unreachable, SkipReason) and "EndpointConnectionError" in unreachable.skip_message


def test_sensor_is_registered_every_30_seconds_for_the_drain_job():
    from definitions import defs

    sensor = defs.get_repository_def().get_sensor_def("termination_queue_sensor")
    assert sensor.minimum_interval_seconds == 30
    assert sensor.job_name == "process_terminations"
    # The instance's run queue (infra/dagster.yaml) allows one run per runs-fleet/exclusive value.
    assert defs.resolve_job_def("process_terminations").tags["runs-fleet/exclusive"] == "process_terminations"
    assert defs.resolve_job_def("redrive_termination_dlq").tags["runs-fleet/exclusive"] == "redrive_termination_dlq"


def test_the_queue_url_is_resolved_once_not_on_every_tick(aws, settings):
    from resources import add_client_observer
    from resources.aws import forget_sessions
    from sensors import termination as module

    module._urls.clear()
    forget_sessions()  # clients made before the observer below are made anew
    calls = {"GetQueueUrl": 0}

    def count(**_):
        calls["GetQueueUrl"] += 1

    remove = add_client_observer(
        lambda client: client.meta.events.register("before-call.sqs.GetQueueUrl", count)
        if client.meta.service_model.service_name == "sqs" else None)
    try:
        with instance_for_test() as instance:
            for _ in range(3):
                assert isinstance(tick(instance, aws, settings), SkipReason)  # empty queue
    finally:
        remove()
    assert calls["GetQueueUrl"] == 1
