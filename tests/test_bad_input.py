"""Bad input end to end: malformed messages reach their DLQ through the real redrive; bad run config is refused.

tests/pipelines/termination/test_messages.py checks ``parse_message``'s reasons one shape at a
time, and tests/pipelines/termination/test_termination.py follows one bad message to the DLQ. Here every
shape goes through the real path at once: sent to the moto queue, received by the real job or
sensor 3 times, never deleted, and moved to the DLQ by the queue's own redrive policy
(maxReceiveCount 3 in infra/fleet.yaml) on the 4th receive, while the sensors keep ticking.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from dagster import (
    DagsterInstance,
    DagsterInvalidConfigError,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from dagster._config import validate_config

from definitions import defs
from pipelines.common.aws import queue_url
from sandbox.server import MOTO_ACCOUNT_ID
from definitions import housekeeping_queue_sensor
from definitions import termination_queue_sensor

SQS_MAX_BYTES = 262_144  # 256 KiB: SQS's largest message body
REGION = "us-east-1"


def agent(instance_id="i-0victim", job_id="8812", status="completed", **extra):
    return {"instance_id": instance_id, "job_id": job_id, "status": status, **extra}


def ecs(cluster="runs-fleet", last_status="STOPPED", task="4f1c0aa1b2c3"):
    return {"source": "aws.ecs", "detail-type": "ECS Task State Change",
            "detail": {"taskArn": f"arn:aws:ecs:{REGION}:123456789012:task/{cluster}/{task}",
                       "lastStatus": last_status, "stoppedReason": "Essential container exited"}}


def near_limit(**fields) -> str:
    """A JSON object padded (in its job_id) to a few bytes under SQS's 256 KiB."""
    skeleton = json.dumps({**fields, "job_id": ""})
    body = json.dumps({**fields, "job_id": "9" * (SQS_MAX_BYTES - len(skeleton.encode()) - 16)})
    assert SQS_MAX_BYTES - 64 < len(body.encode()) <= SQS_MAX_BYTES
    return body


# Every shape that must be rejected: name -> body text (exactly what SQS delivers).
BAD_TERMINATIONS: dict[str, str] = {
    "job_id a float": json.dumps(agent(job_id=8812.5)),
    "job_id a list": json.dumps(agent(job_id=["8812"])),
    "job_id a bool": json.dumps(agent(job_id=True)),
    "status an int": json.dumps(agent(status=0)),
    "status null": json.dumps(agent(status=None)),
    "exit_code a string": json.dumps(agent(exit_code="0")),
    "duration a string": json.dumps(agent(duration_seconds="314")),
    "body near 256 KiB": near_limit(instance_id="i-0victim", status="completed"),
    "lone surrogate in instance_id": '{"instance_id": "i-0vic\\ud800tim", "job_id": "8812", "status": "completed"}',
    "lone surrogate in job_id": '{"instance_id": "i-0victim", "job_id": "88\\udfff12", "status": "completed"}',
    "control character in job_id": '{"instance_id": "i-0victim", "job_id": "88\\u0007\\n12", "status": "completed"}',
    "right-to-left mark in job_id": json.dumps(agent(job_id="\u200f8812"), ensure_ascii=False),
    "right-to-left override in instance_id": json.dumps(agent(instance_id="i-0\u202emitciv"), ensure_ascii=False),
    "zero-width space in status": json.dumps(agent(status="completed\u200b"), ensure_ascii=False),
    "space in instance_id": json.dumps(agent(instance_id="i-0 victim")),
    "slash in instance_id": json.dumps(agent(instance_id="i-0/victim")),
    "../ in instance_id": json.dumps(agent(instance_id="../i-0victim")),
    "very long instance_id": json.dumps(agent(instance_id="i-" + "a" * 300)),
    "space in job_id": json.dumps(agent(job_id="88 12")),
    "very long job_id": json.dumps(agent(job_id="8" * 1000)),
    "missing status": json.dumps({"instance_id": "i-0victim", "job_id": "8812"}),
    "ECS event for another cluster": json.dumps(ecs(cluster="someone-else")),
    "ECS event without detail": json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change"}),
    "ECS task id with a slash": json.dumps(ecs(task="../4f1c")),
    "empty body": "",  # real SQS refuses an empty body; moto accepts it, so the drain sees it
    "whitespace body": " \t\n",
    "JSON list": json.dumps([agent()]),
    "JSON string": json.dumps(json.dumps(agent())),
    "JSON number": "42",
    "JSON null": "null",
    "truncated JSON": json.dumps(agent())[:-5],
    "odd unicode, not JSON": "\u202e\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \U0001f4a5 \ufffd",
}


def send_termination(aws, settings, body: str) -> str:
    # One group per message: in a FIFO queue an in-flight message holds back the rest of its group.
    return aws.sqs.send_message(QueueUrl=queue_url(aws.sqs, settings.termination_queue), MessageBody=body,
                                MessageGroupId=uuid.uuid4().hex, MessageDeduplicationId=uuid.uuid4().hex)["MessageId"]


def depth(aws, url) -> tuple[int, int]:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def drain_all(aws, url) -> dict[str, str]:
    """Every message in ``url`` (message id -> body), received and deleted."""
    found: dict[str, str] = {}
    for _ in range(50):
        got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        if not got:
            break
        found.update({m["MessageId"]: m["Body"] for m in got})
        aws.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
    return found


def make_victim(aws, settings, runner_id="i-0victim", job_id="8812"):
    """A live runner with a running job: what a bad message names, and must not be touched."""
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item={
        "job_id": {"S": job_id}, "status": {"S": "running"}, "pool": {"S": "linux-small"},
        "instance_id": {"S": runner_id}, "started_at": {"S": "2026-11-22T10:00:00Z"}})
    aws.ssm.put_parameter(Name=settings.ssm_parameter_name(runner_id), Value="{}", Type="String", Overwrite=True)


def job_status(aws, settings, job_id):
    item = aws.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
    return item.get("Item", {}).get("status", {}).get("S")


def test_malformed_terminations_reach_the_dlq_through_the_redrive(aws, settings, capsys):
    make_victim(aws, settings)
    make_victim(aws, settings, runner_id="i-0extra", job_id="u-1")
    url = queue_url(aws.sqs, settings.termination_queue)
    dlq_url = queue_url(aws.sqs, settings.termination_queue.replace(".fifo", "-dlq.fifo"))
    aws.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})
    bad_ids = {send_termination(aws, settings, body): name for name, body in BAD_TERMINATIONS.items()}
    # Valid apart from fields the contract does not know: processed, the unknown fields ignored.
    extra_id = send_termination(aws, settings, json.dumps(agent(
        instance_id="i-0extra", job_id="u-1", exit_code=0, build={"matrix": [1, 2]}, zzz=None, runner_version="2.0")))
    # An ECS task that is only RUNNING asks for nothing: acknowledged (deleted), never cleaned up.
    running_id = send_termination(aws, settings, json.dumps(ecs(last_status="RUNNING", task="4f1c0running")))

    instance = DagsterInstance.ephemeral()
    resources = {"aws": aws, "settings": settings}
    job = defs.resolve_job_def("process_terminations")
    run_config = {"ops": {"drain_termination_queue": {"config": {
        "wait_seconds": 0, "visibility_timeout_seconds": 1, "batch_size": 100}}}}
    summaries = []
    for round_ in range(6):
        tick = termination_queue_sensor(build_sensor_context(instance=instance, resources=resources))
        assert isinstance(tick, (RunRequest, SkipReason))  # never raises, whatever the queue holds
        result = job.execute_in_process(run_config=run_config, instance=instance, resources=resources,
                                        raise_on_error=False)
        summary = result.output_for_node("drain_termination_queue")
        # A run fails exactly when a message fails on its last receive (the redrive takes it to the DLQ).
        assert result.success == (summary["outcome"] != "dlq"), summary
        summaries.append(summary)
        if depth(aws, dlq_url)[0] == len(bad_ids) and depth(aws, url) == (0, 0):
            break
        time.sleep(1.2)  # past the 1 s visibility timeout: the bad messages come back
    else:
        pytest.fail(f"bad messages did not all reach the DLQ: {summaries}, {depth(aws, url)}, {depth(aws, dlq_url)}")

    first = summaries[0]
    assert first["received"] == len(bad_ids) + 2
    assert first["failed"] == len(bad_ids)  # every bad shape rejected...
    assert first["processed"] == 1 and first["ignored"] == 1 and first["messages_deleted"] == 2  # ...the rest not
    # Three receives each (the runs that saw them), never deleted by the job; the 4th receive redrives.
    assert [s["failed"] for s in summaries[:3]] == [len(bad_ids)] * 3
    # Left for a retry twice (partial, the run succeeds), then on their last receive (the run fails).
    assert [s["outcome"] for s in summaries[:3]] == ["partial", "partial", "dlq"]
    assert summaries[2]["messages_to_dlq"] == len(bad_ids)
    assert all(s["messages_deleted"] == 0 for s in summaries[1:])
    in_dlq = drain_all(aws, dlq_url)
    assert set(in_dlq) == set(bad_ids), {bad_ids.get(m, m) for m in set(in_dlq) ^ set(bad_ids)}
    assert {in_dlq[m] for m in in_dlq} == set(BAD_TERMINATIONS.values())  # bodies intact, byte for byte
    assert extra_id not in in_dlq and running_id not in in_dlq

    # Nothing the bad messages named was touched; the unknown-fields one was fully processed.
    assert job_status(aws, settings, "8812") == "running"
    assert aws.ssm.get_parameters(Names=[settings.ssm_parameter_name("i-0victim")])["Parameters"]
    assert job_status(aws, settings, "u-1") == "completed"
    assert not aws.ssm.get_parameters(Names=[settings.ssm_parameter_name("i-0extra")])["Parameters"]
    err = capsys.readouterr().err
    for message_id in bad_ids:
        assert f"message_id={message_id}" in err  # each rejection logged by id...
    assert max(len(line) for line in err.splitlines()) < 2000  # ...and never with its (256 KiB) body
    assert "9" * 300 not in err


def expire_visibility(queue_name: str) -> None:
    """Make every received message of an in-process moto queue visible again now.

    The housekeeping sensor holds what it receives for 300 s (time for the daemon to launch
    its run), so waiting out 3 receives would take 15 minutes; this moves moto's clock for
    those messages instead, the way sandbox/backdate.py moves creation times.
    """
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[MOTO_ACCOUNT_ID][REGION].queues[queue_name]
    for message in queue._messages:
        message.change_visibility(0)


def test_bad_housekeeping_requests_reach_the_dlq_and_the_sensor_never_crashes(aws, settings, capsys):
    bad = {
        "not JSON": '{"task_type": ',
        "empty body": "",
        "JSON list": json.dumps([{"task_type": "stale_ssm"}]),
        "JSON string": json.dumps("stale_ssm"),
        "task_type a number": json.dumps({"task_type": 3}),
        "task_type missing": json.dumps({"params": {}}),
        "unknown task_type": json.dumps({"task_type": "../stale_ssm"}),
        "params a list": json.dumps({"task_type": "stale_ssm", "params": ["dry_run"]}),
        "dry_run a string": json.dumps({"task_type": "orphaned_instances", "params": {"dry_run": "maybe"}}),
        "max_actions a string": json.dumps({"task_type": "orphaned_queues", "params": {"max_actions": "lots"}}),
        "max_actions huge string": json.dumps({"task_type": "stale_ssm", "params": {"max_actions": "7" * 200_000}}),
        "unknown param": json.dumps({"task_type": "pool_audit", "params": {"force": True}}),
        "bad date": json.dumps({"task_type": "old_jobs", "params": {"date": "2026-02-30"}}),
        "lone surrogate task_type": '{"task_type": "stale\\ud800ssm"}',
        "odd unicode": "\u202e\u200b\U0001f4a5",
        "newline in task_type": json.dumps({"task_type": "x\nINJECTED fake line"}),
        "newline in a sweep param name": json.dumps({"task_type": "stale_ssm", "params": {"a\nINJECTED": 1}}),
        "newline in an old_jobs param name": json.dumps({"task_type": "old_jobs", "params": {"b\r\nINJECTED": 1}}),
        "newline in a param value": json.dumps({"task_type": "old_jobs", "params": {"date": "\nINJECTED"}}),
    }
    url = queue_url(aws.sqs, settings.housekeeping_queue)
    dlq_url = queue_url(aws.sqs, settings.housekeeping_queue + "-dlq")
    ids = {aws.sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]: name for name, body in bad.items()}
    instance = DagsterInstance.ephemeral()
    cursor = None
    for _ in range(4):  # 3 receives, then the 4th moves them
        context = build_sensor_context(instance=instance, cursor=cursor, resources={"aws": aws, "settings": settings})
        result = housekeeping_queue_sensor(context)
        assert isinstance(result, SensorResult) and not result.run_requests
        assert "rejected" in result.skip_reason.skip_message
        cursor = result.cursor
        assert json.loads(cursor) == {}  # nothing pending: nothing will ever be deleted
        expire_visibility(settings.housekeeping_queue)
    assert depth(aws, url) == (0, 0)
    in_dlq = drain_all(aws, dlq_url)
    assert set(in_dlq) == set(ids), {ids.get(m, m) for m in set(in_dlq) ^ set(ids)}
    assert set(in_dlq.values()) == set(bad.values())
    err = capsys.readouterr().err
    for message_id in ids:
        assert err.count(f"rejected message_id={message_id}") == 3
    assert "max_actions" in err and "dry_run" in err and "force" in err
    assert max(len(line) for line in err.splitlines()) < 2000  # a reason never carries a whole value or body
    assert "7" * 300 not in err
    assert "INJECTED" in err and not any(line.lstrip().startswith("INJECTED") for line in err.splitlines())


# ---- run config ------------------------------------------------------------------------

def _bad_value(field_type) -> object:
    """A value of the wrong type for a Dagster config field type."""
    name = field_type.given_name or field_type.key
    if "Bool" in name:
        return "maybe"
    if "Int" in name or "Float" in name:
        return "lots"
    if "String" in name:
        return 12
    return {"not": "expected"}


def _config_fields(job):
    """(op name, field name, field) for every config field of every op of ``job``."""
    ops_type = job.run_config_schema.config_type.fields["ops"].config_type
    for op_name, op_field in ops_type.fields.items():
        config_field = op_field.config_type.fields.get("config")
        if config_field is None or not hasattr(config_field.config_type, "fields"):
            continue
        for field_name, field in config_field.config_type.fields.items():
            yield op_name, field_name, field


JOB_NAMES = sorted(n for n in defs.get_repository_def().job_names if not n.startswith("__"))


@pytest.mark.parametrize("job_name", JOB_NAMES)
def test_bad_run_config_is_refused_naming_the_field(job_name):
    job = defs.resolve_job_def(job_name)
    schema = job.run_config_schema.config_type
    cases: list[tuple[dict, str]] = []
    fields = list(_config_fields(job))
    for op_name, field_name, field in fields:
        inner = field.config_type.inner_type if field.config_type.kind.name == "NONEABLE" else field.config_type
        cases.append(({"ops": {op_name: {"config": {field_name: _bad_value(inner)}}}}, field_name))
    for op_name in {op for op, _, _ in fields}:
        cases.append(({"ops": {op_name: {"config": {"no_such_field": 1}}}}, "no_such_field"))
    op_names = list(schema.fields["ops"].config_type.fields)
    cases.append(({"ops": {op_names[0]: {"confgi": {}}}}, "confgi"))
    cases.append(({"ops": {"no_such_op": {}}}, "no_such_op"))
    cases.append(({"resources": {"aws": {"config": {"retry_mode": "sometimes"}}}}, "retry_mode"))
    if job_name in ("orphaned_instances_sweep", "stale_ssm_sweep", "orphaned_queues_sweep", "stuck_jobs_sweep",
                    "archive_old_jobs"):
        # The contract's two operator knobs exist on every destructive job.
        assert {"dry_run", "max_actions"} <= {f for _, f, _ in fields}, job_name

    for run_config, field_name in cases:
        # The schema refuses it, naming the field...
        validation = validate_config(schema, run_config)
        assert not validation.success, (job_name, run_config)
        assert any(field_name in error.message for error in validation.errors), (job_name, run_config)
        # ...and so does an attempt to run it, before anything runs.
        with pytest.raises(DagsterInvalidConfigError) as refused:
            job.execute_in_process(run_config=run_config, instance=DagsterInstance.ephemeral(), raise_on_error=True,
                                   partition_key="2026-01-01" if job.partitions_def else None)
        assert field_name in str(refused.value), (job_name, run_config, str(refused.value)[:300])


def test_out_of_range_limits_fail_the_run_naming_the_field(aws, settings):
    """ge/le bounds are checked by the typed Config when the op starts, before it touches AWS."""
    for job_name, op_name, field_name, value in [
        ("orphaned_queues_sweep", "delete_orphaned_queues", "max_actions", -1),
        ("process_terminations", "drain_termination_queue", "visibility_timeout_seconds", 0),
        ("process_terminations", "drain_termination_queue", "wait_seconds", 21),
        ("locate_archived_job", "find_job_in_archive", "job_id", "two words"),
        ("locate_archived_job", "find_job_in_archive", "job_id", "x" * 257),
        ("locate_archived_job", "find_job_in_archive", "job_id", "line\nINJECTED"),
    ]:
        result = defs.resolve_job_def(job_name).execute_in_process(
            run_config={"ops": {op_name: {"config": {field_name: value}}}}, instance=DagsterInstance.ephemeral(),
            resources={"aws": aws, "settings": settings}, raise_on_error=False)
        assert not result.success
        failure = " ".join(str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure)
        assert field_name in failure, (job_name, failure[:500])


def test_free_text_fields_cannot_forge_log_lines(aws, settings, capsys):
    """Fields that are logged (correlation id, ECS lastStatus and stoppedReason) cannot start a new log line."""
    make_victim(aws, settings, runner_id="i-0corr", job_id="c-1")
    url = queue_url(aws.sqs, settings.termination_queue)
    forged = "\nINJECTED 2026-11-22 - dagster - INFO - all clear\r\u2028INJECTED"
    send_termination(aws, settings, json.dumps(agent(instance_id="i-0corr", job_id="c-1", correlation_id=f"r{forged}")))
    stopped = ecs(task="4f1cstopped")
    stopped["detail"]["stoppedReason"] = f"exited{forged}"
    send_termination(aws, settings, json.dumps(stopped))
    send_termination(aws, settings, json.dumps(ecs(task="4f1crunning", last_status=f"RUNNING{forged}")))
    aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(ecs(task="4f1cattr")), MessageGroupId="attr",
                         MessageDeduplicationId=uuid.uuid4().hex,
                         MessageAttributes={"correlation_id": {"DataType": "String", "StringValue": f"a{forged}"}})
    capsys.readouterr()
    result = defs.resolve_job_def("process_terminations").execute_in_process(
        run_config={"ops": {"drain_termination_queue": {"config": {"wait_seconds": 0}}}},
        instance=DagsterInstance.ephemeral(), resources={"aws": aws, "settings": settings})
    summary = result.output_for_node("drain_termination_queue")
    # Still processed: a free-text field is cleaned for the log, not a reason to reject the message.
    assert summary["processed"] == 3 and summary["ignored"] == 1 and summary["messages_deleted"] == 4
    assert job_status(aws, settings, "c-1") == "completed"
    err = capsys.readouterr().err
    assert "INJECTED" in err  # the text is there, on the line of the message it came with...
    assert not any(line.lstrip().startswith("INJECTED") for line in err.splitlines())  # ...never a line of its own
    assert "\u2028" not in err
