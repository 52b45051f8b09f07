"""parse_message: every shape of termination-queue message becomes a typed result or a clear reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

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


# ---- the strict models: absurd values refused naming the field, nothing coerced ----------------

def agent(**fields):
    return {"instance_id": "i-0victim", "job_id": "8812", "status": "completed", **fields}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # wrong types, never coerced
        (agent(job_id=8812.5), "job_id is a float, not a string"),
        (agent(job_id=["8812"]), "job_id is a list, not a string"),
        (agent(job_id=True), "job_id is a bool, not a string"),
        (agent(exit_code=True), "exit_code is a bool, not an integer"),
        (agent(exit_code=0.0), "exit_code is a float, not an integer"),
        (agent(exit_code="false"), "exit_code is a str, not an integer"),
        (agent(exit_code={"code": 0}), "exit_code is a dict, not an integer"),
        (agent(duration_seconds="314"), "duration_seconds is not a number"),
        (agent(duration_seconds=True), "duration_seconds is not a number"),
        (agent(duration_seconds=[314]), "duration_seconds is not a number"),
        (agent(status=False), "status '<bool>' is not one of"),
        (agent(status=["completed"]), "status '<list>' is not one of"),
        (agent(status="Completed"), "status 'Completed' is not one of"),
        (agent(instance_id=123), "instance_id is not a runner id"),
        (agent(instance_id={"id": "i-1"}), "instance_id is not a runner id"),
        (agent(started_at=1764410400), "started_at is not an ISO 8601 UTC time"),
        (agent(completed_at={"at": "2026-11-22T10:05:14Z"}), "completed_at is not an ISO 8601 UTC time"),
        # NaN, infinities and numbers too large for a float
        ('{"instance_id": "i-1", "job_id": "1", "status": "failed", "duration_seconds": NaN}',
         "duration_seconds is not a number"),
        ('{"instance_id": "i-1", "job_id": "1", "status": "failed", "duration_seconds": Infinity}',
         "duration_seconds is not a number"),
        (agent(duration_seconds=10**400), "duration_seconds is not a number"),  # the old parser raised here
        (agent(job_id=10**300), "job_id is blank or longer than 256 characters"),
        (agent(job_id="   "), "job_id is blank"),
        # control, format, bidi and surrogate characters in ids
        (agent(job_id="88\u202e12"), "job_id holds a space, control, format or surrogate character"),
        (agent(job_id="88\u00a012"), "job_id holds a space"),
        ('{"instance_id": "i-1", "job_id": "88\\udfff12", "status": "failed"}', "job_id holds a space"),
        (agent(instance_id="i-0\u200bvictim"), "instance_id is not a runner id"),
        (agent(instance_id="i-0victim\n"), "instance_id is not a runner id"),  # '$' once let a final newline by
        (agent(instance_id="i-0" + "a" * 62), "instance_id is not a runner id"),
        (agent(completed_at="2026-11-22T10:05:14Z\n"), "completed_at is not an ISO 8601 UTC time"),
        (agent(completed_at="\u0662\u0660\u0662\u0666-11-22T10:05:14Z"), "completed_at is not an ISO 8601"),  # Arabic digits
        (agent(completed_at="2026-11-22T10:05:14+02:00"), "completed_at is not an ISO 8601 UTC time"),
        (agent(completed_at="2026-02-30T10:05:14Z"), "completed_at is not an ISO 8601 UTC time"),  # no such day
        (agent(started_at="2026-02-30T10:00:00Z", completed_at="2026-11-22T10:05:14Z"),
         "started_at is not an ISO 8601 UTC time"),  # the old parser raised here
        # extra nesting
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
        (agent(job_id=[[["8812"]]]), "job_id is a list"),
        ({"message": agent()}, "missing required field(s): instance_id, job_id, status"),
        ({"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": [{"lastStatus": "STOPPED"}]},
         "ECS event has no 'detail' object"),
        ({"source": "aws.ecs", "detail-type": "ECS Task State Change",
          "detail": {"taskArn": {"arn": "arn:aws:ecs:us-west-2:1:task/runs-fleet/abc"}, "lastStatus": "STOPPED"}},
         "ECS event has no taskArn"),
        ({"source": "aws.ecs", "detail-type": "ECS Task State Change",
          "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/runs-fleet/abc", "lastStatus": ["STOPPED"]}},
         "ECS event has no lastStatus"),
        ({"source": "aws.ecs", "detail-type": "ECS Task State Change",
          "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/runs-fleet/ab\u202ec", "lastStatus": "STOPPED"}},
         "taskArn does not end in a task id"),
        ({"source": "aws.ecs", "detail-type": "ECS Task State Change",
          "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/runs-fleet/abc\n", "lastStatus": "STOPPED"}},
         "taskArn does not end in a task id"),
        ({"source": "aws.ecs", "detail-type": "Task State Change", "detail": {}}, "event is not an 'ECS Task State Change'"),
        ({"detail-type": "ECS Task State Change", "detail": {}}, "event is not an 'ECS Task State Change' from aws.ecs"),
        ({"source": ["aws.ecs"], "detail-type": "ECS Task State Change"}, "event is not an"),
    ],
)
def test_absurd_values_are_refused_naming_the_field(body, reason):
    result = parse(body)
    assert isinstance(result, Invalid), result
    assert reason in result.reason
    assert len(result.reason) < 200


def test_a_field_of_another_cluster_is_checked_before_the_task_state():
    # One reason, the first problem in the event's order: the cluster, then lastStatus.
    event = {"source": "aws.ecs", "detail-type": "ECS Task State Change",
             "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/someone-else/abc", "lastStatus": 3}}
    assert "for cluster 'someone-else'" in parse(event).reason
    event["detail"]["clusterArn"] = "arn:aws:ecs:us-west-2:1:cluster/runs-fleet"  # clusterArn wins over the ARN
    assert parse(event).reason == "ECS event has no lastStatus"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"job_id": 0}, {"job_id": "0"}),  # an integer job id is its digits
        ({"exit_code": -1}, {"exit_code": -1}),
        ({"exit_code": 10**40}, {"exit_code": 10**40}),  # the parser takes any integer (DynamoDB refuses it later)
        ({"duration_seconds": 0}, {"duration_seconds": 0.0}),
        ({"duration_seconds": 1.5}, {"duration_seconds": 1.5}),
        ({"started_at": "2026-11-22T10:00:00.25+00:00", "completed_at": "2026-11-22T10:00:01-00:00"},
         {"duration_seconds": 0.75, "started_at": "2026-11-22T10:00:00.25+00:00"}),  # times kept as written
        ({"started_at": "2026-11-22T10:00:00Z"}, {"duration_seconds": None}),
        ({"correlation_id": ""}, {"correlation_id": "from-attribute"}),  # an empty one falls back to the attribute
        ({"correlation_id": 42}, {"correlation_id": "from-attribute"}),  # so does one that is not text
        ({"correlation_id": "r\n" + "x" * 300}, {"correlation_id": "r?" + "x" * 126}),  # log-safe, at most 128
        ({"status": "interrupted", "zzz": {"deep": [1, {"x": None}]}}, {"status": "interrupted"}),  # unknown: ignored
    ],
)
def test_accepted_values(fields, expected):
    result = parse_message(json.dumps(agent(**fields)), ecs_cluster="runs-fleet", correlation_id="from-attribute")
    assert isinstance(result, Termination), result
    assert {name: getattr(result, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"stoppedReason": "exit\n1", "stoppedAt": "2026-11-22T10:05:14.123Z"},
         {"stopped_reason": "exit?1", "completed_at": "2026-11-22T10:05:14Z"}),
        ({"stoppedReason": 3, "stoppedAt": "yesterday"}, {"stopped_reason": None, "completed_at": None}),
        ({"stoppedAt": "0001-01-01T00:00:00+01:00"}, {"completed_at": None}),  # the old parser raised here
        ({"stoppedReason": ""}, {"stopped_reason": ""}),
        ({"clusterArn": "arn:aws:ecs:us-west-2:1:cluster/runs-fleet", "taskArn": "arn:aws:ecs:us-west-2:1:task/abc"},
         {"runner_id": "abc"}),
    ],
)
def test_ecs_free_text_is_cleaned_never_refused(detail, expected):
    event = {"source": "aws.ecs", "detail-type": "ECS Task State Change",
             "detail": {"taskArn": "arn:aws:ecs:us-west-2:1:task/runs-fleet/4f1c", "lastStatus": "STOPPED", **detail}}
    result = parse(event)
    assert isinstance(result, Termination), result
    assert {name: getattr(result, name) for name in expected} == expected


def test_one_adapter_chooses_the_model_by_shape():
    from pipelines.termination.models import AgentMessage, EcsTaskStateChange, validate_message

    assert isinstance(validate_message(GOOD, ecs_cluster="runs-fleet"), AgentMessage)
    assert isinstance(validate_message(json.loads(ecs()), ecs_cluster="runs-fleet"), EcsTaskStateChange)
    # A detail-type alone makes it an ECS event (then refused as one), never an agent message.
    with pytest.raises(ValidationError):
        validate_message({**GOOD, "detail-type": "x"}, ecs_cluster="runs-fleet")


# ---- properties --------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = ["instance_id", "job_id", "status", "exit_code", "duration_seconds", "started_at", "completed_at",
          "correlation_id", "source", "detail-type", "detail"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), JSON.map(json.dumps),
                 st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8).map(json.dumps)))
def test_parse_message_never_raises_and_never_quotes_long_values(body):
    result = parse_message(body, ecs_cluster="runs-fleet")
    assert isinstance(result, (Termination, Ignored, Invalid))
    if isinstance(result, Invalid):
        assert "\n" not in result.reason and len(result.reason) < 200


@settings(max_examples=200, deadline=None)
@given(runner_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True),
       job_id=st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=256) | st.integers(0, 10**20),
       status=st.sampled_from(["completed", "failed", "cancelled", "interrupted"]),
       exit_code=st.none() | st.integers(-(2**31), 2**32),
       duration=st.none() | st.floats(0, 1e9, allow_nan=False))
def test_every_valid_agent_message_round_trips(runner_id, job_id, status, exit_code, duration):
    message = {"instance_id": runner_id, "job_id": job_id, "status": status, "exit_code": exit_code,
               "duration_seconds": duration}
    result = parse(message)
    assert result == Termination(runner_id=runner_id, source="agent", job_id=str(job_id), status=status,
                                 exit_code=exit_code, duration_seconds=duration)
