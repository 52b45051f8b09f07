"""process_terminations end to end against the moto server, through the real resources and Dagster."""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from tests.metadata import rows as _rows
from dagster import DagsterInstance

from pipelines.termination.drain import DrainOptions, VisibilityKeeper, drain_terminations
from pipelines.termination.jobs import process_terminations, redrive_termination_dlq
from resources import load_aws_clients
from resources.aws import add_client_observer

OP = "drain_termination_queue"


# ---- fleet helpers -------------------------------------------------------------------------

def make_runner(aws, settings, runner_id, *, job_id=None, status="running", pool="linux-small", queue_messages=0,
                parameter=True, queues=True):
    """A runner as the fleet leaves it: job record, SSM parameter, three queues and a tracking record."""
    if job_id:
        aws.dynamodb.put_item(TableName=settings.jobs_table, Item={
            "job_id": {"S": job_id}, "status": {"S": status}, "pool": {"S": pool}, "instance_id": {"S": runner_id},
            "created_at": {"S": "2026-11-22T09:59:00Z"}, "started_at": {"S": "2026-11-22T10:00:00Z"},
            **({"exit_code": {"N": "7"}, "completed_at": {"S": "2026-11-22T10:01:00Z"}} if status != "running" else {}),
        })
    if parameter:
        aws.ssm.put_parameter(Name=settings.ssm_parameter_name(runner_id), Value="{}", Type="String", Overwrite=True)
    if queues:
        urls = {k: aws.sqs.create_queue(QueueName=n)["QueueUrl"] for k, n in settings.runner_queue_names(runner_id).items()}
        for n in range(queue_messages):
            aws.sqs.send_message(QueueUrl=urls["output"], MessageBody=json.dumps({"line": n}))
        aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={
            "runner_id": {"S": runner_id}, "input_queue_url": {"S": urls["input"]},
            "output_queue_url": {"S": urls["output"]}, "dlq_url": {"S": urls["dlq"]},
            "created_at": {"N": "1"}, "last_activity": {"N": "1"},
        })


def termination(runner_id, job_id, status="completed", **extra):
    return {"instance_id": runner_id, "job_id": job_id, "status": status, "exit_code": 0 if status == "completed" else 1,
            "duration_seconds": 314, "started_at": "2026-11-22T10:00:00Z", "completed_at": "2026-11-22T10:05:14Z",
            **extra}


def ecs_stop(runner_id, cluster="runs-fleet", last_status="STOPPED"):
    return {"source": "aws.ecs", "detail-type": "ECS Task State Change",
            "detail": {"taskArn": f"arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{runner_id}",
                       "lastStatus": last_status, "stoppedReason": "Essential container exited"}}


def termination_url(aws, settings):
    return aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]


def send(aws, settings, body, group="g"):
    """Send one message; a unique deduplication id so that sending the same body twice delivers twice."""
    text = body if isinstance(body, str) else json.dumps(body)
    return aws.sqs.send_message(QueueUrl=termination_url(aws, settings), MessageBody=text, MessageGroupId=group,
                                MessageDeduplicationId=uuid.uuid4().hex)["MessageId"]


def queue_counts(aws, url):
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def run(aws, settings, *, job=process_terminations, op=OP, **config):
    """Execute a job for real, in process, on the given resources; returns (output, output metadata)."""
    # Short polls keep the tests quick; the job's default is a 5 s long poll.
    config = {"wait_seconds": 0, **config} if job is process_terminations else config
    result = job.execute_in_process(
        run_config={"ops": {op: {"config": config}}}, resources={"aws": aws, "settings": settings},
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    metadata = {}
    for event in result.all_node_events:
        if event.is_successful_output and event.node_name == op:
            metadata = {k: v.value for k, v in event.event_specific_data.metadata.items()}
    return result.output_for_node(op), metadata


def job_item(aws, settings, job_id):
    return aws.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get("Item")


def runner_gone(aws, settings, runner_id):
    """True when the runner's parameter, queues and tracking record are all gone."""
    params = aws.ssm.get_parameters(Names=[settings.ssm_parameter_name(runner_id)])["Parameters"]
    queues = aws.sqs.list_queues(QueueNamePrefix=settings.runner_queue_prefix).get("QueueUrls", [])
    tracking = aws.dynamodb.get_item(TableName=settings.queue_tracking_table, Key={"runner_id": {"S": runner_id}})
    return not params and not [q for q in queues if q.endswith(runner_id)] and "Item" not in tracking


class _Raw:
    def __init__(self, body):
        self._body = body

    def stream(self, **_):
        yield self._body


def throttle(aws, operation, times):
    """DynamoDB answers ``operation`` with HTTP 400 ProvisionedThroughputExceededException ``times`` times.

    Injected at 'before-send' on the real clients, so botocore's own retry logic sees the
    error exactly as it would from AWS (a 'before-call' answer would bypass the retries)."""
    body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                       "message": "Rate of requests exceeds the allowed throughput (injected)"}).encode()
    calls = {"n": 0, "failed": 0}
    event = f"before-send.dynamodb.{operation}"

    def handler(request, **_):
        calls["n"] += 1
        if times is None or calls["failed"] < times:
            calls["failed"] += 1
            return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body))
        return None

    def observe(client):
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register(event, handler)

    undo_observer = add_client_observer(observe)
    aws.dynamodb.meta.events.register(event, handler)

    def undo():
        undo_observer()
        aws.dynamodb.meta.events.unregister(event, handler)

    return calls, undo


def fail_when(aws, event, predicate, error_code="AccessDenied", times=None):
    """Make matching AWS calls fail, through botocore's event system on the real clients.

    Registers on every client created from now on (add_client_observer) and on the
    fixture's own clients; returns (calls counter, undo)."""
    calls = {"n": 0, "failed": 0}

    def handler(params, **_):
        if predicate(params):
            calls["n"] += 1
            if times is None or calls["failed"] < times:
                calls["failed"] += 1
                raise ClientError({"Error": {"Code": error_code, "Message": "injected by the test"}}, event)

    service = event.split(".")[1]

    def observe(client):
        if client.meta.service_model.service_name == service:
            client.meta.events.register(event, handler)

    undo_observer = add_client_observer(observe)
    existing = aws.client(service)
    existing.meta.events.register(event, handler)

    def undo():
        undo_observer()
        existing.meta.events.unregister(event, handler)

    return calls, undo


# ---- the tests -------------------------------------------------------------------------------

def test_valid_message_marks_job_done_cleans_up_and_deletes(aws, settings):
    make_runner(aws, settings, "i-0aaa", job_id="8812", pool="gpu", queue_messages=12)
    make_runner(aws, settings, "i-0bbb", job_id="8813", pool="linux-small")
    send(aws, settings, termination("i-0aaa", "8812", correlation_id="req-1"), group="i-0aaa")
    send(aws, settings, termination("i-0bbb", "8813", status="failed"), group="i-0bbb")

    summary, metadata = run(aws, settings)

    assert summary["processed"] == 2 and summary["failed"] == 0 and summary["messages_deleted"] == 2
    assert metadata["messages_archived"] == 12 and metadata["queues_deleted"] == 6
    item = job_item(aws, settings, "8812")
    assert item["status"] == {"S": "completed"} and item["exit_code"] == {"N": "0"}
    assert item["duration_seconds"] == {"N": "314"}
    assert item["completed_at"] == {"S": "2026-11-22T10:05:14Z"} and item["started_at"] == {"S": "2026-11-22T10:00:00Z"}
    assert job_item(aws, settings, "8813")["status"] == {"S": "failed"}
    assert runner_gone(aws, settings, "i-0aaa") and runner_gone(aws, settings, "i-0bbb")
    assert queue_counts(aws, termination_url(aws, settings)) == (0, 0)

    # Archive: contract layout, every message there.
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=settings.archive_bucket)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("queues/runner_id=i-0aaa/queue=output/archived_at=")
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=keys[0])["Body"].read()
    assert sorted(json.loads(json.loads(line)["body"])["line"] for line in gzip.decompress(body).splitlines()) == list(range(12))

    # Metrics: JobDuration and JobSuccess / JobFailure, each with its pool.
    metrics = aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace)["Metrics"]
    seen = {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in metrics}
    assert ("JobSuccess", (("Pool", "gpu"),)) in seen and ("JobFailure", (("Pool", "linux-small"),)) in seen
    assert ("JobDuration", (("Pool", "gpu"),)) in seen and ("JobDuration", (("Pool", "linux-small"),)) in seen


def test_ecs_stop_event_cleans_up_the_task(aws, settings):
    make_runner(aws, settings, "4f1c0aa1b2c3d4e5", queue_messages=2)
    make_runner(aws, settings, "5a5a5a5a5a5a")
    send(aws, settings, ecs_stop("4f1c0aa1b2c3d4e5"), group="4f1c0aa1b2c3d4e5")
    send(aws, settings, ecs_stop("5a5a5a5a5a5a", last_status="RUNNING"), group="5a5a5a5a5a5a")
    send(aws, settings, ecs_stop("6b6b6b6b6b6b", cluster="another-cluster"), group="6b6b6b6b6b6b")

    summary, metadata = run(aws, settings)

    assert summary["processed"] == 1 and summary["ignored"] == 1 and summary["failed"] == 1
    assert summary["messages_archived"] == 2 and summary["messages_deleted"] == 2
    assert runner_gone(aws, settings, "4f1c0aa1b2c3d4e5")
    # A task that is only RUNNING keeps everything; the event is read and dropped.
    assert aws.ssm.get_parameters(Names=[settings.ssm_parameter_name("5a5a5a5a5a5a")])["Parameters"]
    assert "another-cluster" in text_of(metadata["failed_messages"])
    assert queue_counts(aws, termination_url(aws, settings)) == (0, 1)  # the other cluster's event stays


def test_max_messages_bounds_a_run(aws, settings):
    for n in range(5):
        send(aws, settings, ecs_stop(f"7e7e7e7e{n}"), group=f"g{n}")
    summary, _ = run(aws, settings, max_messages=3)
    assert summary["received"] == 3 and summary["processed"] == 3
    assert queue_counts(aws, termination_url(aws, settings)) == (2, 0)


def test_bad_messages_stay_in_the_queue_with_their_reasons(aws, settings):
    make_runner(aws, settings, "i-0ccc", job_id="9001")
    ids = [
        send(aws, settings, "not json at all", group="a"),
        send(aws, settings, {"instance_id": "i-0ccc", "status": "completed"}, group="b"),
        send(aws, settings, termination("i-0ccc", "9001", status="exploded"), group="c"),
    ]

    summary, metadata = run(aws, settings)

    assert summary["failed"] == 3 and summary["messages_deleted"] == 0 and summary["processed"] == 0
    table = text_of(metadata["failed_reasons"])
    assert "invalid message" in table
    listing = text_of(metadata["failed_messages"])
    assert all(i in listing for i in ids)
    assert "not valid JSON" in listing and "missing required field(s): job_id" in listing
    assert "status 'exploded' is not one of" in listing
    assert queue_counts(aws, termination_url(aws, settings)) == (0, 3)
    # Nothing was touched for them.
    assert job_item(aws, settings, "9001")["status"] == {"S": "running"}
    assert aws.ssm.get_parameters(Names=[settings.ssm_parameter_name("i-0ccc")])["Parameters"]


def test_same_message_twice_is_idempotent(aws, settings):
    make_runner(aws, settings, "i-0ddd", job_id="7001", queue_messages=3)
    body = termination("i-0ddd", "7001")
    send(aws, settings, body, group="i-0ddd")
    send(aws, settings, body, group="i-0ddd")

    summary, _ = run(aws, settings)
    again, _ = run(aws, settings)

    assert summary["processed"] == 1 and summary["already_done"] == 1 and summary["failed"] == 0
    assert summary["messages_deleted"] == 2 and summary["messages_archived"] == 3
    assert again["received"] == 0
    assert job_item(aws, settings, "7001")["status"] == {"S": "completed"} and runner_gone(aws, settings, "i-0ddd")


def test_job_already_completed_unknown_job_and_parameter_already_gone(aws, settings):
    make_runner(aws, settings, "i-0eee", job_id="6001", status="completed")  # finished by someone else
    make_runner(aws, settings, "i-0fff")  # its job is not in the table
    make_runner(aws, settings, "i-0abc", job_id="6003", parameter=False)  # parameter already deleted
    make_runner(aws, settings, "i-0def", job_id="6004", status="queued")  # never started
    send(aws, settings, termination("i-0eee", "6001", status="failed"), group="1")
    send(aws, settings, termination("i-0fff", "6002"), group="2")
    send(aws, settings, termination("i-0abc", "6003"), group="3")
    send(aws, settings, termination("i-0def", "6004"), group="4")

    summary, _ = run(aws, settings)

    assert summary == {**summary, "already_done": 1, "unknown_job": 1, "processed": 1, "not_running": 1, "failed": 0,
                       "messages_deleted": 4}
    done = job_item(aws, settings, "6001")  # not overwritten by the late message
    assert done["status"] == {"S": "completed"} and done["exit_code"] == {"N": "7"}
    assert job_item(aws, settings, "6002") is None  # the update did not create a record
    assert job_item(aws, settings, "6003")["status"] == {"S": "completed"}
    assert job_item(aws, settings, "6004")["status"] == {"S": "queued"}
    for runner in ("i-0eee", "i-0fff", "i-0abc", "i-0def"):
        assert runner_gone(aws, settings, runner)
    names = {m["MetricName"] for m in aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace)["Metrics"]}
    assert names == {"JobSuccess", "JobDuration"}  # only the job this run actually finished


def test_dynamodb_throttling_is_retried_then_recovers(aws, settings):
    make_runner(aws, settings, "i-0a01", job_id="5001")
    make_runner(aws, settings, "i-0a02", job_id="5002")
    send(aws, settings, termination("i-0a01", "5001"), group="1")

    # Two throttled attempts: botocore's standard retry (backoff with jitter) absorbs them.
    calls, undo = throttle(aws, "UpdateItem", times=2)
    try:
        summary, _ = run(aws, settings)
    finally:
        undo()
    # Two throttled marks, the mark that went through, then the update recording the job's metrics.
    assert calls["failed"] == 2 and calls["n"] == 4
    assert summary["processed"] == 1 and summary["failed"] == 0

    # A longer outage: the message fails, stays, and the next run (after its visibility) succeeds.
    send(aws, settings, termination("i-0a02", "5002"), group="2")
    calls, undo = throttle(aws, "UpdateItem", times=None)
    impatient = load_aws_clients({**os.environ, "AWS_MAX_ATTEMPTS": "2"})  # one retry, so the test is quick
    try:
        down, metadata = run(impatient, settings, visibility_timeout_seconds=1)
    finally:
        undo()
    assert down["failed"] >= 1 and down["messages_deleted"] == 0
    assert "ProvisionedThroughputExceededException" in text_of(metadata["failed_messages"])
    assert job_item(aws, settings, "5002")["status"] == {"S": "running"}
    assert aws.ssm.get_parameters(Names=[settings.ssm_parameter_name("i-0a02")])["Parameters"]  # not cleaned yet
    time.sleep(1.2)
    up, _ = run(aws, settings)
    assert up["processed"] == 1 and job_item(aws, settings, "5002")["status"] == {"S": "completed"}
    assert runner_gone(aws, settings, "i-0a02")


def test_failing_message_reaches_the_dlq_then_replays(aws, settings):
    for n in range(3):
        make_runner(aws, settings, f"i-0b0{n}", job_id=f"400{n}")
    for n in range(3):
        send(aws, settings, termination(f"i-0b0{n}", f"400{n}"), group=f"i-0b0{n}")
    # i-0b01's queues cannot be read (say, a permissions mistake): only its message fails.
    broken = settings.runner_queue_names("i-0b01")["input"]
    _, undo = fail_when(aws, "provide-client-params.sqs.GetQueueAttributes", lambda p: p["QueueUrl"].endswith(broken))
    url = termination_url(aws, settings)
    dlq_url = aws.sqs.get_queue_url(QueueName="runs-fleet-termination-dlq.fifo")["QueueUrl"]
    try:
        first, metadata = run(aws, settings, visibility_timeout_seconds=1)
        assert first["processed"] == 2 and first["failed"] >= 1
        assert "runner cleanup incomplete" in text_of(metadata["failed_messages"]) and "AccessDenied" in text_of(metadata["failed_messages"])
        assert runner_gone(aws, settings, "i-0b00") and runner_gone(aws, settings, "i-0b02")
        receives = first["received"]
        for _ in range(6):  # the queue's redrive moves it after its 3rd receive
            if queue_counts(aws, dlq_url)[0]:
                break
            time.sleep(1.1)
            # The same drain the job runs, without a Dagster run's overhead for each retry.
            later = drain_terminations(aws, settings, DrainOptions(wait_seconds=0, visibility_timeout=1))
            receives += later.received
    finally:
        undo()
    assert receives == 2 + 3  # two good messages once, the failing one three times
    assert queue_counts(aws, dlq_url) == (1, 0) and queue_counts(aws, url) == (0, 0)
    assert job_item(aws, settings, "4001")["status"] == {"S": "completed"}  # its job update was done
    assert not runner_gone(aws, settings, "i-0b01")

    # The cause is fixed: a dry run only counts, the replay moves it back, the drain finishes it.
    dry, dry_meta = run(aws, settings, job=redrive_termination_dlq, op="replay_termination_dlq", dry_run=True)
    assert dry == {**dry, "dlq_depth": 1, "found": 1, "sent": 0, "deleted": 0} and dry_meta["dry_run"] is True
    assert queue_counts(aws, dlq_url) == (1, 0)
    replay, _ = run(aws, settings, job=redrive_termination_dlq, op="replay_termination_dlq")
    assert replay == {**replay, "sent": 1, "deleted": 1, "failed": 0}
    assert queue_counts(aws, dlq_url) == (0, 0)
    final, _ = run(aws, settings)
    assert final["already_done"] == 1 and final["failed"] == 0 and runner_gone(aws, settings, "i-0b01")


def test_replay_keeps_groups_and_respects_max_messages(aws, settings):
    dlq_url = aws.sqs.get_queue_url(QueueName="runs-fleet-termination-dlq.fifo")["QueueUrl"]
    for n in range(12):
        aws.sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"n": n}), MessageGroupId=f"runner-{n % 4}",
                             MessageDeduplicationId=f"d{n}",
                             MessageAttributes={"correlation_id": {"DataType": "String", "StringValue": f"c{n}"}})
    first, _ = run(aws, settings, job=redrive_termination_dlq, op="replay_termination_dlq", max_messages=5)
    rest, _ = run(aws, settings, job=redrive_termination_dlq, op="replay_termination_dlq")
    assert first["sent"] == 5 and rest["sent"] == 7 and queue_counts(aws, dlq_url) == (0, 0)

    url = termination_url(aws, settings)
    got = []
    while True:
        batch = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                        MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        for m in batch:
            got.append((m["Attributes"]["MessageGroupId"], json.loads(m["Body"])["n"],
                        m["MessageAttributes"]["correlation_id"]["StringValue"]))
            assert m["Attributes"]["MessageDeduplicationId"] != f"d{json.loads(m['Body'])['n']}"
        aws.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    assert sorted(n for _, n, _ in got) == list(range(12))
    for group, n, correlation in got:
        assert group == f"runner-{n % 4}" and correlation == f"c{n}"
    for group in {g for g, _, _ in got}:  # FIFO order kept within each group
        order = [n for g, n, _ in got if g == group]
        assert order == sorted(order)


class Interrupted(BaseException):
    """Stands in for the process dying: not an Exception, so no handler in the job catches it."""


def test_run_interrupted_mid_batch_leaves_the_rest_in_the_queue(aws, settings):
    for n in range(15):
        make_runner(aws, settings, f"i-0c{n:02d}", job_id=f"30{n:02d}")
        send(aws, settings, termination(f"i-0c{n:02d}", f"30{n:02d}"), group=f"i-0c{n:02d}")
    url = termination_url(aws, settings)
    count = {"n": 0}

    def die_on_the_13th_update(params, **_):
        # Only the marks count (not the updates that record a job's published metrics): the
        # 13th is the third job of the second batch.
        if ":running" not in params.get("ConditionExpression", ""):
            return
        count["n"] += 1
        if count["n"] == 13:
            raise Interrupted()

    undo_observer = add_client_observer(
        lambda c: c.meta.events.register("provide-client-params.dynamodb.UpdateItem", die_on_the_13th_update)
        if c.meta.service_model.service_name == "dynamodb" else None
    )
    try:
        result = process_terminations.execute_in_process(
            run_config={"ops": {OP: {"config": {"wait_seconds": 0, "visibility_timeout_seconds": 1,
                                                "batch_size": 10}}}},
            resources={"aws": aws, "settings": settings}, instance=DagsterInstance.ephemeral(), raise_on_error=False,
        )
    except Interrupted:
        result = None
    finally:
        undo_observer()
    assert result is None or not result.success
    visible, in_flight = queue_counts(aws, url)
    assert visible + in_flight == 5  # the first batch of 10 was finished and deleted; none of the rest
    left = [n for n in range(15)
            if aws.ssm.get_parameters(Names=[settings.ssm_parameter_name(f"i-0c{n:02d}")])["Parameters"]]
    assert len(left) == 5  # the interrupted batch never reached its cleanup
    time.sleep(1.2)
    summary, _ = run(aws, settings)
    assert summary["received"] == 5 and summary["failed"] == 0
    assert summary["processed"] + summary["already_done"] == 5
    assert all(job_item(aws, settings, f"30{n:02d}")["status"] == {"S": "completed"} for n in range(15))
    assert queue_counts(aws, url) == (0, 0)



def test_visibility_of_messages_being_worked_on_is_extended(aws, settings):
    url = termination_url(aws, settings)
    send(aws, settings, termination("i-0d01", "2001"), group="a")
    (message,) = aws.sqs.receive_message(QueueUrl=url, VisibilityTimeout=2)["Messages"]
    with VisibilityKeeper(aws.sqs, url, visibility_timeout=2) as keeper:
        keeper.hold([message["ReceiptHandle"]])
        time.sleep(2.8)  # well past the 2 s it was received with
        assert queue_counts(aws, url) == (0, 1)  # still hidden: nobody else gets it
        keeper.release([message["ReceiptHandle"]])
    assert keeper.extensions >= 2 and keeper.errors == []
    time.sleep(2.1)
    assert queue_counts(aws, url) == (1, 0)  # released: it returns after its timeout


def test_a_run_ends_a_second_after_its_work_not_on_a_full_long_poll(aws, settings):
    from pipelines.termination.drain import DrainReport, receive_wait

    options = DrainOptions(wait_seconds=5)
    assert receive_wait(options, 3, DrainReport(received=2)) == 5  # messages seen at the start still coming
    assert receive_wait(options, 3, DrainReport(received=3)) == 1  # its work is in: a 1 s long poll ends it
    assert receive_wait(options, None, DrainReport(received=9)) == 5  # depth unknown: the full wait
    assert receive_wait(DrainOptions(wait_seconds=0), 0, DrainReport()) == 0
    started = time.monotonic()
    empty = drain_terminations(aws, settings, options)  # an empty queue: was 5.0 s
    assert empty.received == 0 and time.monotonic() - started < 3


def text_of(value):
    """A table metadata value's cells as one line of text, for "does the run page name X" assertions."""
    return " | ".join(str(cell) for row in _rows(value) for cell in row.values() if cell is not None)


def test_replay_failures_are_a_table_of_message_ids_and_why(aws, settings):
    """A DLQ replay whose send fails for one message keeps it in the DLQ and lists it as a table row."""
    dlq_url = aws.sqs.get_queue_url(QueueName="runs-fleet-termination-dlq.fifo")["QueueUrl"]
    for n in range(2):
        aws.sqs.send_message(QueueUrl=dlq_url, MessageBody=json.dumps({"n": n}), MessageGroupId="g",
                             MessageDeduplicationId=f"f{n}")

    def one_entry_fails(parsed, **_):  # SQS's partial failure: the call succeeds, one entry does not
        if parsed.get("Successful"):
            bad = parsed["Successful"].pop(0)
            parsed.setdefault("Failed", []).append({"Id": bad["Id"], "Code": "InternalError", "SenderFault": False})

    def observe(client):  # the run builds its own clients from the resource: hook every new SQS client
        if client.meta.service_model.service_name == "sqs":
            client.meta.events.register("after-call.sqs.SendMessageBatch", one_entry_fails)

    undo = add_client_observer(observe)
    try:
        out, metadata = run(aws, settings, job=redrive_termination_dlq, op="replay_termination_dlq")
    finally:
        undo()
    assert out["failed"] == 1 and out["sent"] == 1, out
    (row,) = _rows(metadata["failures"])
    assert row["why"] == "InternalError" and row["message id"]
    assert queue_counts(aws, dlq_url)[0] + queue_counts(aws, dlq_url)[1] == 1  # the failed one stays in the DLQ
