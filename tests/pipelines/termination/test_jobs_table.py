"""The jobs table side of termination: the conditional mark and the metrics-published record."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipelines.termination.jobs_table import (
    PUBLISHED,
    SWEEP,
    mark_job_done,
    mark_metrics_published,
    metrics_due_on_repeat,
    record_duration,
)
from pipelines.termination.messages import Termination

DONE = "2026-11-22T10:05:14Z"
SENT = datetime(2026, 11, 22, 10, 6, tzinfo=timezone.utc)


def agent(status="completed", completed_at=DONE, **extra):
    return Termination(runner_id="i-0a", source="agent", job_id="j1", status=status, exit_code=0,
                       duration_seconds=314.0, started_at="2026-11-22T10:00:00Z", completed_at=completed_at, **extra)


@pytest.mark.parametrize("record,message,due", [
    ({"status": "completed", "completed_at": DONE}, agent(), True),  # marked earlier, never published
    ({"status": "completed", "completed_at": DONE, PUBLISHED: DONE}, agent(), False),  # published
    ({"status": "completed", "completed_at": DONE, PUBLISHED: "2026-01-01T00:00:00Z"}, agent(), True),  # older one
    ({"status": "failed", "completed_at": DONE}, agent(), False),  # another completion: status differs
    ({"status": "completed", "completed_at": "2026-11-22T10:01:00Z"}, agent(), False),  # another time
    ({"status": "completed", "completed_at": "2026-11-22T10:01:00Z"}, agent(completed_at=None), True),  # no time named
    ({"status": "completed", "completed_at": None}, agent(completed_at=None), False),  # nothing to key the flag on
])
def test_metrics_are_due_on_a_repeat_only_for_the_same_unpublished_completion(record, message, due):
    completed_at = message.completed_at or "2026-11-22T10:06:00Z"
    assert metrics_due_on_repeat(record, message, completed_at) is due


def test_record_duration_from_the_field_or_the_times():
    assert record_duration({"duration_seconds": "314"}) == 314.0
    assert record_duration({"started_at": "2026-11-22T10:00:00Z", "completed_at": DONE}) == 314.0
    assert record_duration({"started_at": "nonsense", "completed_at": DONE}) is None
    assert record_duration({}) is None


def put(aws, settings, **attributes):
    item = {"job_id": {"S": "j1"}, "pool": {"S": "gpu"}, "instance_id": {"S": "i-0a"},
            "started_at": {"S": "2026-11-22T09:00:00Z"}}
    item.update({k: {"S": v} for k, v in attributes.items()})
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item=item)


def get(aws, settings):
    item = aws.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": "j1"}}, ConsistentRead=True)["Item"]
    return {k: v.get("S", v.get("N")) for k, v in item.items()}


def test_the_real_termination_overwrites_what_the_stuck_jobs_sweep_guessed(aws, settings):
    put(aws, settings, status="interrupted", interrupted_by=SWEEP, completed_at="2026-11-22T10:30:00Z")

    update = mark_job_done(aws.dynamodb, settings.jobs_table, agent(status="failed"), received_at=SENT)

    assert update.outcome == "marked_done" and update.previous_status == "interrupted" and update.metrics_due
    record = get(aws, settings)
    assert record["status"] == "failed" and record["completed_at"] == DONE and record["exit_code"] == "0"
    assert record["started_at"] == "2026-11-22T10:00:00Z" and record["duration_seconds"] == "314"
    assert "interrupted_by" not in record  # the record now says how the job really ended
    # The same message again finds it finished: a repeat, not a second overwrite.
    again = mark_job_done(aws.dynamodb, settings.jobs_table, agent(status="failed"), received_at=SENT)
    assert again.outcome == "already_done" and again.metrics_due  # still unpublished: the drain publishes once


@pytest.mark.parametrize("interrupted_by", [None, "operator"])
def test_an_interruption_the_sweep_did_not_set_is_not_overwritten(aws, settings, interrupted_by):
    fields = {"interrupted_by": interrupted_by} if interrupted_by else {}
    put(aws, settings, status="interrupted", completed_at="2026-11-22T10:30:00Z", **fields)

    update = mark_job_done(aws.dynamodb, settings.jobs_table, agent(), received_at=SENT)

    assert update.outcome == "already_done" and not update.metrics_due  # another completion
    assert get(aws, settings)["status"] == "interrupted"


def test_metrics_published_is_recorded_for_that_completion_only(aws, settings):
    put(aws, settings, status="running")
    update = mark_job_done(aws.dynamodb, settings.jobs_table, agent(), received_at=SENT)
    assert update.outcome == "marked_done" and update.completed_at == DONE

    assert mark_metrics_published(aws.dynamodb, settings.jobs_table, "j1", status="completed", completed_at=DONE)
    assert get(aws, settings)[PUBLISHED] == DONE
    repeat = mark_job_done(aws.dynamodb, settings.jobs_table, agent(), received_at=SENT)
    assert repeat.outcome == "already_done" and not repeat.metrics_due
    # A record that does not hold that completion is left alone.
    assert not mark_metrics_published(aws.dynamodb, settings.jobs_table, "j1", status="failed", completed_at=DONE)
    assert not mark_metrics_published(aws.dynamodb, settings.jobs_table, "nope", status="completed", completed_at=DONE)


def test_a_message_without_completed_at_keys_on_its_sent_time_on_every_delivery(aws, settings):
    put(aws, settings, status="running")
    first = mark_job_done(aws.dynamodb, settings.jobs_table, agent(completed_at=None), received_at=SENT)
    again = mark_job_done(aws.dynamodb, settings.jobs_table, agent(completed_at=None), received_at=SENT)
    assert first.completed_at == again.completed_at == "2026-11-22T10:06:00Z"
    assert again.outcome == "already_done" and again.metrics_due and again.duration_seconds == 314.0
