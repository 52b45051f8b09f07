"""housekeeping_queue_sensor on the real housekeeping queue (moto) and a real Dagster instance."""

from __future__ import annotations

import json

import pytest
from dagster import build_sensor_context, instance_for_test, validate_run_config

from pipelines.common.aws import queue_url
from pipelines.sweeps import orphaned_instances, orphaned_queues, stale_ssm
from definitions import REQUESTS, housekeeping_queue_sensor
from sensors.housekeeping import RUN_KEY_TAG, run_key

JOBS = {job.name: job for job in housekeeping_queue_sensor.jobs}
REGISTRY = {request.task_type: request for request in REQUESTS}


@pytest.fixture()
def instance():
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def send(aws, settings, body) -> str:
    body = body if isinstance(body, str) else json.dumps(body)
    url = queue_url(aws.sqs, settings.housekeeping_queue)
    return aws.sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]


def depth(aws, settings) -> tuple[int, int]:
    url = queue_url(aws.sqs, settings.housekeeping_queue)
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def tick(instance, aws, settings, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"aws": aws, "settings": settings})
    return housekeeping_queue_sensor(context)


def launch(instance, aws, settings, request):
    """What the daemon does after the tick: create and run the run, tagged with its run key."""
    return JOBS[request.job_name].execute_in_process(
        run_config=request.run_config, instance=instance, resources={"aws": aws, "settings": settings},
        tags={**request.tags, RUN_KEY_TAG: request.run_key},
    )


def test_sensor_targets_every_registered_job():
    # Every task type of the contract's housekeeping request.
    assert set(REGISTRY) == {"orphaned_instances", "stale_ssm", "orphaned_queues", "stuck_jobs", "old_jobs",
                             "pool_audit", "queue_health"}
    assert {t.job_name for t in REGISTRY.values()} == set(JOBS)
    assert {j.name for j in housekeeping_queue_sensor.jobs} == set(JOBS)
    for task_type in ("orphaned_instances", "stale_ssm", "orphaned_queues", "stuck_jobs"):
        task = REGISTRY[task_type]
        config = task.build_run_config({"dry_run": True, "max_actions": 5, "max_fraction": 0.5})
        assert validate_run_config(JOBS[task.job_name], config)


def test_good_request_runs_once_and_is_deleted_only_after_launch(aws, settings, instance):
    message_id = send(aws, settings, {"task_type": "stale_ssm", "timestamp": "2026-11-22T10:00:00Z",
                                      "params": {"dry_run": True, "min_age_minutes": 30}})
    first = tick(instance, aws, settings)
    (request,) = first.run_requests
    assert request.job_name == "stale_ssm_sweep"
    assert request.run_key == run_key(message_id)
    assert request.run_config == {"ops": {
        stale_ssm.ACT_OP: {"config": {"dry_run": True}},
        stale_ssm.PLAN_OP: {"config": {"min_age_minutes": 30}},
    }}
    assert depth(aws, settings) == (0, 1)  # received, held, not deleted

    waiting = tick(instance, aws, settings, first.cursor)  # the daemon has not launched it yet
    assert not waiting.run_requests
    assert depth(aws, settings) == (0, 1)

    run = launch(instance, aws, settings, request)
    assert run.success
    settled = tick(instance, aws, settings, waiting.cursor)
    assert not settled.run_requests
    assert depth(aws, settings) == (0, 0)
    assert json.loads(settled.cursor) == {}


def test_redelivered_request_after_launch_is_deleted_not_rerun(aws, settings, instance):
    message_id = send(aws, settings, {"task_type": "orphaned_instances", "params": {"dry_run": True}})
    first = tick(instance, aws, settings)
    (request,) = first.run_requests
    assert launch(instance, aws, settings, request).success
    # The receipt expires before the next tick (cursor lost too): the message comes back.
    receipt = json.loads(first.cursor)[message_id]["receipt"]
    url = queue_url(aws.sqs, settings.housekeeping_queue)
    aws.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
    again = tick(instance, aws, settings, cursor=None)
    assert not again.run_requests
    assert depth(aws, settings) == (0, 0)
    runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].tags[RUN_KEY_TAG] == run_key(message_id)


def test_unknown_and_malformed_requests_are_logged_and_left_for_the_dlq(aws, settings, instance, capsys):
    bad = {
        "not json": "{\"task_type\": ",
        "not an object": json.dumps(["orphaned_instances"]),
        "unknown task": {"task_type": "defragment_disks", "params": {}},
        "string bool": {"task_type": "orphaned_instances", "params": {"dry_run": "false"}},
        "negative limit": {"task_type": "orphaned_queues", "params": {"max_actions": -1}},
        "unknown param": {"task_type": "stale_ssm", "params": {"min_age_minute": 5}},
        "params list": {"task_type": "stale_ssm", "params": [1]},
    }
    ids = {name: send(aws, settings, body) for name, body in bad.items()}
    good = send(aws, settings, {"task_type": "orphaned_queues", "params": {"max_actions": 3}})
    capsys.readouterr()
    result = tick(instance, aws, settings)
    (request,) = result.run_requests
    assert request.run_key == run_key(good)
    assert request.run_config == {"ops": {orphaned_queues.ACT_OP: {"config": {"max_actions": 3}}}}
    assert depth(aws, settings) == (0, len(bad) + 1)  # nothing deleted: the bad ones wait for the redrive
    text = capsys.readouterr().err  # Dagster's sensor log handler writes to stderr
    for name, message_id in ids.items():
        assert f"rejected message_id={message_id}" in text, name
    assert "unknown task_type 'defragment_disks'" in text
    assert "params.dry_run: Input should be a valid boolean (got 'false')" in text
    assert "params.max_actions: Input should be greater than or equal to 0 (got -1)" in text
    assert "params.min_age_minute is not a parameter" in text
    assert "not JSON" in text and "not an object" in text
    assert "step 1" not in text and "defragment_disks\", \"params" not in text  # ids, never whole bodies
    assert json.loads(result.cursor).keys() == {good}
    assert orphaned_instances.REQUEST.task_type in REGISTRY


def test_old_jobs_request_becomes_a_partitioned_run_and_a_bad_date_is_rejected(aws, settings, instance, capsys):
    good = send(aws, settings, {"task_type": "old_jobs", "params": {"date": "2026-11-01", "dry_run": True}})
    bad = send(aws, settings, {"task_type": "old_jobs", "params": {"date": "2026-13-45"}})
    capsys.readouterr()
    result = tick(instance, aws, settings)
    (request,) = result.run_requests
    assert request.run_key == run_key(good)
    assert request.job_name == "archive_old_jobs" and request.partition_key == "2026-11-01"
    assert validate_run_config(JOBS["archive_old_jobs"], request.run_config)
    assert f"rejected message_id={bad}" in capsys.readouterr().err
    assert depth(aws, settings) == (0, 2)


def test_the_factory_refuses_a_task_registered_twice_or_naming_a_job_not_handed_in():
    import pytest

    from sensors.housekeeping import build_housekeeping_sensor

    with pytest.raises(ValueError, match="registered twice"):
        build_housekeeping_sensor([REQUESTS[0], REQUESTS[0]], list(JOBS.values()))
    with pytest.raises(ValueError, match="not among the jobs"):
        build_housekeeping_sensor(REQUESTS, [])
