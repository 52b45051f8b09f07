"""No leaks: every job, sensor and asset runs on a fleet full of canaries, and none shows up anywhere.

The fleet is seeded in the moto server, then laced with distinctive strings: a fake secret in
termination-message fields, per-runner queue messages, housekeeping requests, SSM parameter
values and job records; the AWS credentials themselves are canaries too. Then every job runs
(``execute_in_process``), both sensors tick (``build_sensor_context``) and every asset is
materialized (``materialize``), all on one Dagster instance. Everything an operator could read
is then searched: every event-log entry of every run (log messages, step outputs and their
metadata, materializations, asset check evaluations), the runs' config and tags, the sensors'
skip reasons, run requests and cursors, Python logging (caplog) and what went to stdout/stderr.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from dagster import DagsterInstance, RunRequest, SensorResult, build_sensor_context, materialize
from dagster._serdes import serialize_value

from definitions import defs
from pipelines.audit.pool_audit import pool_cost_report, pool_inventory
from pipelines.audit.queue_health import queue_health
from pipelines.common.aws import queue_url
from resources.aws import AwsClients
from sandbox.backdate import backdate_parameters
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet
from definitions import housekeeping_queue_sensor
from sensors.housekeeping import RUN_KEY_TAG
from definitions import termination_queue_sensor

SECRET = "canary-secret-7f3a"
PARAM_SECRET = "canary-param-9b1e"
QUEUE_SECRET = "canary-queue-4c2d"
JOB_SECRET = "canary-jobrec-5e6f"
ACCESS_KEY_ID = "AKIACANARY0000007F3A"
SECRET_ACCESS_KEY = "canarySecretAccessKey/7f3aQWERTYUIOPasdfghjkl"
SESSION_TOKEN = "canarySessionToken7f3aFQoGZXIvYXdzEJr"
CANARIES = [SECRET, PARAM_SECRET, QUEUE_SECRET, JOB_SECRET, ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN]

STUCK_JOB = "stuck-leak"
ARCHIVE_DAY = (datetime.now(timezone.utc) - timedelta(days=40)).date()  # older than the seeded 30 days


@pytest.fixture()
def canary_aws(aws, monkeypatch):
    """AwsClients whose credentials are canaries, both in the environment and as resource fields."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    return AwsClients(aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                      aws_session_token=SESSION_TOKEN)


def lace_fleet(aws, settings) -> list[str]:
    """Seed a small fleet and put canaries in every place a body or secret could come from; returns the bodies sent."""
    fleet = seed_fleet(aws, settings, FleetSpec(
        pools=(PoolSpec("linux-small", "t3.medium", 30, 60, desired_running=3, desired_stopped=1),),
        busy=4, idle=1, stopped=1, orphaned=2, long_busy=1, ecs_running=1, ecs_stopped=2,
        dead_runner_parameters=3, live_queue_sets=2, dead_queue_sets=3, queue_messages_every=1,
        finished_jobs=20, job_days=10,
    ))
    region = aws.ssm.meta.region_name
    bodies: list[str] = []

    # SSM runner parameters: every value holds a secret (and stays old enough to be swept).
    names = [p["Name"] for page in aws.ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [settings.ssm_prefix.rstrip("/")]}])
        for p in page["Parameters"]]
    assert names
    for name in names:
        aws.ssm.put_parameter(Name=name, Type="String", Overwrite=True,
                              Value=json.dumps({"registration_token": PARAM_SECRET, "labels": ["linux"]}))
    backdate_parameters(names, datetime.now(timezone.utc) - timedelta(hours=3), region)

    # Per-runner queues: every message body holds a secret (archived to S3 by the queue cleanup).
    for runner_id in fleet.dead_queue_runners + fleet.live_queue_runners:
        url = queue_url(aws.sqs, settings.runner_queue_names(runner_id)["output"])
        body = json.dumps({"step": 1, "log": f"export GITHUB_TOKEN={QUEUE_SECRET}"})
        aws.sqs.send_message(QueueUrl=url, MessageBody=body)
        bodies.append(body)

    # Termination queue: good agent messages, an ECS stop, bad messages; all carry the secret.
    termination_url = queue_url(aws.sqs, settings.termination_queue)
    messages = [
        {"instance_id": runner_id, "job_id": fleet.job_of_runner[runner_id], "status": "completed", "exit_code": 0,
         "duration_seconds": 60, "env": {"GITHUB_TOKEN": SECRET}, "note": f"token={SECRET}"}
        for runner_id in fleet.busy[:3]
    ]
    messages += [
        {"source": "aws.ecs", "detail-type": "ECS Task State Change", "secret": SECRET,
         "detail": {"taskArn": f"arn:aws:ecs:{region}:123456789012:task/{settings.ecs_cluster}/{fleet.ecs_stopped[0]}",
                    "lastStatus": "STOPPED", "stoppedReason": "Essential container exited", "overrides": SECRET}},
        {"instance_id": "i-0bad", "job_id": {"token": SECRET}, "status": "completed"},  # invalid job_id type
        {"instance_id": "i-0bad", "job_id": "1", "status": "completed", "exit_code": SECRET},  # invalid exit_code
        {"instance_id": f"../{SECRET}", "job_id": "1", "status": "completed"},  # invalid runner id
        {"source": "aws.ecs", "detail-type": "ECS Task State Change",  # another cluster's task
         "detail": {"taskArn": f"arn:aws:ecs:{region}:1:task/other/{SECRET}", "lastStatus": "STOPPED"}},
    ]
    texts = [json.dumps(m) for m in messages] + [f'{{"token": "{SECRET}", "job_id": ']  # and one that is not JSON
    for text in texts:
        aws.sqs.send_message(QueueUrl=termination_url, MessageBody=text, MessageGroupId=uuid.uuid4().hex,
                             MessageDeduplicationId=uuid.uuid4().hex)
    bodies += texts

    # The termination DLQ holds an old message with a secret, for the replay job.
    dlq_url = queue_url(aws.sqs, settings.termination_queue.replace(".fifo", "-dlq.fifo"))
    dlq_body = json.dumps({"instance_id": "i-0dlq", "job_id": "dlq-1", "status": "failed", "env": SECRET})
    aws.sqs.send_message(QueueUrl=dlq_url, MessageBody=dlq_body, MessageGroupId="i-0dlq",
                         MessageDeduplicationId=uuid.uuid4().hex)
    bodies.append(dlq_body)

    # Finished job records of one old day carry a secret attribute: archived, verified, deleted, restored.
    for n in range(5):
        aws.dynamodb.put_item(TableName=settings.jobs_table, Item={
            "job_id": {"S": f"leak-{n}"}, "status": {"S": "completed"}, "pool": {"S": "linux-small"},
            "instance_id": {"S": f"i-0leak{n}"}, "completed_at": {"S": f"{ARCHIVE_DAY.isoformat()}T10:00:0{n}Z"},
            "created_at": {"S": f"{ARCHIVE_DAY.isoformat()}T09:00:00Z"}, "exit_code": {"N": "0"},
            "env": {"S": f"AWS_SECRET_ACCESS_KEY={JOB_SECRET}"},
        })
    # A job stuck at running on a runner that no longer exists, secret included: the stuck jobs sweep takes it.
    started = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item={
        "job_id": {"S": STUCK_JOB}, "status": {"S": "running"}, "pool": {"S": "linux-small"},
        "instance_id": {"S": "i-0stuck0000000001"}, "started_at": {"S": started},
        "env": {"S": f"AWS_SECRET_ACCESS_KEY={JOB_SECRET}"},
    })
    return bodies


def housekeeping_requests(aws, settings) -> list[str]:
    """A request for every task type with a secret in a field the contract does not know, and two bad ones."""
    url = queue_url(aws.sqs, settings.housekeeping_queue)
    requests = [{"task_type": t, "timestamp": "2026-11-22T10:00:00Z", "params": {"dry_run": True},
                 "requested_by": f"ops:{SECRET}"}
                for t in ("orphaned_instances", "stale_ssm", "orphaned_queues", "stuck_jobs", "pool_audit",
                          "queue_health")]
    requests.append({"task_type": "old_jobs", "params": {"date": ARCHIVE_DAY.isoformat(), "dry_run": True},
                     "auth": SECRET})
    requests.append({"task_type": "defragment", "params": {}, "auth": SECRET})  # unknown task type
    requests.append({"task_type": "stale_ssm", "params": {"max_actions": "lots"}, "auth": SECRET})  # bad params
    texts = [json.dumps(r) for r in requests] + [f"password={SECRET}"]
    for text in texts:
        aws.sqs.send_message(QueueUrl=url, MessageBody=text)
    return texts


def find_leaks(text: str, bodies: list[str]) -> list[str]:
    found = [c for c in CANARIES if c in text]
    found += [f"body {b[:40]}…" for b in bodies if b in text]
    return found


def test_no_pipeline_leaks_a_body_or_a_secret(canary_aws, settings, caplog, capsys):
    aws = canary_aws
    caplog.set_level(logging.DEBUG, logger="pipelines")
    caplog.set_level(logging.DEBUG, logger="sensors")
    caplog.set_level(logging.DEBUG, logger="resources")
    caplog.set_level(logging.INFO)  # everything else (dagster, botocore) at its production level
    bodies = lace_fleet(aws, settings)
    bodies += housekeeping_requests(aws, settings)
    resources = {"aws": aws, "settings": settings}
    instance = DagsterInstance.ephemeral()
    seen: list[str] = []  # every sensor result, as text

    # Sensors first: what they log, skip and request.
    termination_tick = termination_queue_sensor(
        build_sensor_context(instance=instance, resources=resources))
    assert isinstance(termination_tick, RunRequest)  # the queue holds work: a drain run is requested
    seen.append(serialize_value(termination_tick))
    housekeeping_tick = housekeeping_queue_sensor(build_sensor_context(instance=instance, resources=resources))
    assert isinstance(housekeeping_tick, SensorResult)
    requests = housekeeping_tick.run_requests
    assert len(requests) == 7, requests  # every valid request became a run request; the 3 bad ones did not
    seen += [serialize_value(r) for r in requests] + [housekeeping_tick.cursor or ""]

    # The runs the housekeeping sensor would launch, launched as the daemon does (run key tag and all).
    for request in requests:
        result = defs.resolve_job_def(request.job_name).execute_in_process(
            run_config=request.run_config, instance=instance, resources=resources,
            tags={**request.tags, RUN_KEY_TAG: request.run_key}, partition_key=request.partition_key,
        )
        assert result.success, request.job_name
    settled = housekeeping_queue_sensor(
        build_sensor_context(instance=instance, cursor=housekeeping_tick.cursor, resources=resources))
    seen.append(serialize_value(settled.skip_reason) + (settled.cursor or ""))

    # Every job, for real (not dry run), in an order where each has work.
    ACT_NOW = {"confirm_after_minutes": 0}
    day = ARCHIVE_DAY.isoformat()
    runs = [
        ("process_terminations", {"ops": {"drain_termination_queue": {"config": {"wait_seconds": 0}}}}, None),
        ("redrive_termination_dlq", {}, None),
        # One run each: the two-observation window is off for it (confirm_after_minutes 0).
        ("orphaned_instances_sweep", {"ops": {"terminate_orphaned_instances": {"config": ACT_NOW}}}, None),
        ("stale_ssm_sweep", {"ops": {"delete_stale_parameters": {"config": ACT_NOW}}}, None),
        ("orphaned_queues_sweep", {"ops": {"delete_orphaned_queues": {"config": ACT_NOW}}}, None),
        ("stuck_jobs_sweep", {"ops": {"interrupt_stuck_jobs": {"config": ACT_NOW}}}, None),
        ("archive_old_jobs", {}, day),
        ("restore_archived_jobs", {}, day),
        ("locate_archived_job", {"ops": {"find_job_in_archive": {"config": {"job_id": "leak-0"}}}}, None),
        ("pool_audit_job", {}, None),
        ("queue_health_job", {}, None),
        ("fleet_ledger_job", {}, None),
    ]
    ran = {name for name in defs.get_repository_def().job_names if not name.startswith("__")}
    assert ran == {name for name, _, _ in runs}, "a job of the code location is not exercised here"
    outputs: dict[str, dict] = {}
    for name, run_config, partition in runs:
        result = defs.resolve_job_def(name).execute_in_process(
            run_config=run_config, instance=instance, resources=resources, partition_key=partition,
        )
        assert result.success, name
        outputs[name] = {e.node_name: e for e in result.all_node_events if e.is_successful_output}
    # The pipelines really handled the canary-laden data (so the search below means something).
    drained = outputs["process_terminations"]["drain_termination_queue"].event_specific_data.metadata
    assert drained["processed"].value == 4 and drained["failed"].value == 5 and drained["messages_archived"].value >= 3
    assert outputs["redrive_termination_dlq"]["replay_termination_dlq"].event_specific_data.metadata["sent"].value == 1
    stuck = aws.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": STUCK_JOB}})["Item"]
    assert stuck["status"]["S"] == "interrupted"
    located = outputs["locate_archived_job"]["find_job_in_archive"].event_specific_data.metadata
    assert located["days"].value == 1 and day in located["answer"].value  # the secret-laden job, found by id
    archived = aws.s3.list_objects_v2(Bucket=settings.archive_bucket).get("Contents", [])
    assert any(f"completed_date={day}" in o["Key"] for o in archived) and any("queues/" in o["Key"] for o in archived)

    # Every asset, materialized directly.
    materialized = materialize([pool_inventory, pool_cost_report, queue_health], instance=instance,
                               resources=resources)
    assert materialized.success
    assert materialized.get_asset_check_evaluations()

    # Search everything recorded: every event of every run, and each run's config and tags.
    records = instance.get_runs()
    assert len(records) == len(runs) + len(requests) + 1
    checked = 0
    for dagster_run in records:
        entries = instance.all_logs(dagster_run.run_id)
        assert entries
        for entry in entries:
            text = serialize_value(entry)
            assert not find_leaks(text, bodies), (dagster_run.job_name, find_leaks(text, bodies), text[:500])
            checked += 1
        run_text = serialize_value(dagster_run.run_config) + json.dumps(dagster_run.tags)
        assert not find_leaks(run_text, bodies), (dagster_run.job_name, run_text)
    assert checked > 200
    # ...what the sensors returned...
    for text in seen:
        assert not find_leaks(text, bodies), text
    # ...and every log line that went through Python logging or to the console.
    assert caplog.records
    for record in caplog.records:
        line = record.getMessage()
        assert not find_leaks(line, bodies), (record.name, line)
    out, err = capsys.readouterr()
    assert "rejected message_id=" in err  # the console log was captured: the bad requests were logged
    assert not find_leaks(out + err, bodies), find_leaks(out + err, bodies)
