"""parse_message: every shape of termination-queue message becomes a typed result or a clear reason."""

from __future__ import annotations

import json

import pytest

from pipelines.termination.messages import Ignored, Invalid, Termination, parse_message

GOOD = {"instance_id": "i-0a1b2c3d4e5f67890", "job_id": "8812", "status": "completed", "exit_code": 0,
        "duration_seconds": 314, "started_at": "2026-11-22T10:00:00Z", "completed_at": "2026-11-22T10:05:14Z"}


def ecs(last_status="STOPPED", cluster="runs-fleet", task="4f1c0aa1b2c3"):
    return json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change",
                       "detail": {"taskArn": f"arn:aws:ecs:us-west-2:123456789012:task/{cluster}/{task}",
                                  "lastStatus": last_status, "stoppedReason": "Essential container exited"}})


def parse(body):
    return parse_message(body if isinstance(body, str) else json.dumps(body), ecs_cluster="runs-fleet")


def test_agent_message_parses_with_every_field():
    result = parse({**GOOD, "unknown_field": [1, 2], "correlation_id": "req-42"})
    assert result == Termination(runner_id="i-0a1b2c3d4e5f67890", source="agent", job_id="8812", status="completed",
                                 exit_code=0, duration_seconds=314.0, started_at="2026-11-22T10:00:00Z",
                                 completed_at="2026-11-22T10:05:14Z", correlation_id="req-42")
    assert result.succeeded


def test_only_required_fields_and_duration_from_times():
    minimal = parse({"instance_id": "i-1", "job_id": 77, "status": "failed"})
    assert isinstance(minimal, Termination) and minimal.job_id == "77" and minimal.exit_code is None
    assert not minimal.succeeded
    derived = parse({**GOOD, "duration_seconds": None})
    assert derived.duration_seconds == 314.0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json at all", "not valid JSON"),
        ('{"instance_id": "i-0bad", "job_id": ', "not valid JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ({"job_id": "1", "status": "completed"}, "missing required field(s): instance_id"),
        ({"instance_id": "i-1", "status": ""}, "missing required field(s): job_id, status"),
        ({**GOOD, "status": "exploded"}, "status 'exploded' is not one of"),
        ({**GOOD, "status": 3}, "status '<int>' is not one of"),
        ({**GOOD, "instance_id": "../../etc"}, "instance_id is not a runner id"),
        ({**GOOD, "job_id": {"x": 1}}, "job_id is a dict"),
        ({**GOOD, "exit_code": "0"}, "exit_code is a str"),
        ({**GOOD, "duration_seconds": -5}, "duration_seconds is negative"),
        ({**GOOD, "completed_at": "yesterday"}, "completed_at is not an ISO 8601"),
        ({**GOOD, "duration_seconds": None, "started_at": "2026-11-22T11:00:00Z"}, "completed_at is before started_at"),
    ],
)
def test_invalid_messages_name_the_problem(body, reason):
    result = parse(body)
    assert isinstance(result, Invalid)
    assert reason in result.reason


def test_reasons_never_quote_the_body():
    secret = "ghp_supersecrettoken1234567890"
    for body in (f'{{"token": "{secret}"', json.dumps({"token": secret, "status": secret}),
                 json.dumps({**GOOD, "status": secret * 3})):
        result = parse(body)
        assert isinstance(result, Invalid) and secret not in result.reason


def test_ecs_stop_event_names_the_task():
    result = parse(ecs())
    assert result == Termination(runner_id="4f1c0aa1b2c3", source="ecs", stopped_reason="Essential container exited")
    assert result.job_id is None


def test_ecs_events_other_than_stopped_are_ignored():
    result = parse(ecs(last_status="RUNNING"))
    assert isinstance(result, Ignored) and result.runner_id == "4f1c0aa1b2c3" and "RUNNING" in result.reason


def test_ecs_event_for_another_cluster_or_malformed_is_invalid():
    other = parse(ecs(cluster="someone-else"))
    assert isinstance(other, Invalid) and "someone-else" in other.reason
    short_arn = parse(json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change",
                                  "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/abc", "lastStatus": "STOPPED"}}))
    assert isinstance(short_arn, Invalid) and "names no cluster" in short_arn.reason
    no_detail = parse(json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change"}))
    assert isinstance(no_detail, Invalid) and "detail" in no_detail.reason
    no_status = parse(json.dumps({"source": "aws.ecs", "detail-type": "ECS Task State Change",
                                  "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/runs-fleet/abc"}}))
    assert isinstance(no_status, Invalid) and "lastStatus" in no_status.reason
