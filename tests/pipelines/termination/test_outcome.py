"""A drain that left messages behind does not look like a clean one.

Every process_terminations run is tagged runs-fleet/outcome = ok | partial | dlq (with the
counts), which the Runs list shows. `partial` (messages left for SQS to deliver again) is
a success with a warning; `dlq` (a message failed on its last receive, so the redrive moves
it to the DLQ where nothing retries it) fails the run — after everything that succeeded
was deleted — naming the message ids and reasons, never their bodies.
"""

from __future__ import annotations

import json
import logging

import pytest
from dagster import DagsterInstance, RunRequest, build_sensor_context

from pipelines.termination.jobs import process_terminations
from pipelines.termination.outcome import drain_outcome, on_last_receive
from definitions import termination_queue_sensor
from tests.faults.conftest import expire_in_flight
from tests.pipelines.termination.test_termination import (
    OP,
    fail_when,
    make_runner,
    queue_counts,
    runner_gone,
    send,
    termination,
    termination_url,
)

SECRET = "do-not-log-this-body-9f3a"


@pytest.mark.parametrize("receive_count,max_receives,last", [
    (1, 3, False), (2, 3, False), (3, 3, True), (4, 3, True),
    (None, 3, True), (1, None, True),  # unknown: the louder answer
])
def test_on_last_receive(receive_count, max_receives, last):
    assert on_last_receive(receive_count, max_receives) is last


@pytest.mark.parametrize("failed_by_receive,max_receives,name,failed,to_dlq", [
    ({}, None, "ok", 0, 0),
    ({}, 3, "ok", 0, 0),
    ({1: 2, 2: 1}, 3, "partial", 3, 0),
    ({1: 2, 3: 1}, 3, "dlq", 3, 1),
    ({1: 1}, None, "dlq", 1, 1),
])
def test_drain_outcome(failed_by_receive, max_receives, name, failed, to_dlq):
    outcome = drain_outcome(failed_by_receive, max_receives=max_receives, deleted=5)
    assert (outcome.name, outcome.failed, outcome.to_dlq, outcome.deleted) == (name, failed, to_dlq, 5)
    assert outcome.tags() == {"runs-fleet/outcome": name, "runs-fleet/messages_failed": str(failed),
                              "runs-fleet/messages_to_dlq": str(to_dlq), "runs-fleet/messages_deleted": "5"}


def execute(aws, settings, instance):
    return process_terminations.execute_in_process(
        run_config={"ops": {OP: {"config": {"wait_seconds": 0}}}}, resources={"aws": aws, "settings": settings},
        instance=instance, raise_on_error=False)


def run_tags(instance, result):
    return instance.get_run_by_id(result.run_id).tags


def warnings_of(instance, result):
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]


def test_a_clean_drain_is_ok_and_never_retried_for_an_op_failure(aws, settings):
    make_runner(aws, settings, "i-0o01", job_id="o1")
    send(aws, settings, termination("i-0o01", "o1"), group="i-0o01")
    instance = DagsterInstance.ephemeral()

    result = execute(aws, settings, instance)

    assert result.success
    tags = run_tags(instance, result)
    assert tags["runs-fleet/outcome"] == "ok" and tags["runs-fleet/messages_failed"] == "0"
    assert tags["runs-fleet/messages_deleted"] == "1"
    # A failed drain is not re-run by Dagster (SQS already redelivers), whatever the instance default.
    assert tags["dagster/retry_on_asset_or_op_failure"] == "false"
    assert result.output_for_node(OP)["outcome"] == "ok"


def test_messages_left_for_a_retry_are_a_partial_success_with_a_warning(aws, settings):
    make_runner(aws, settings, "i-0o02", job_id="o2")
    send(aws, settings, termination("i-0o02", "o2"), group="i-0o02")
    bad = send(aws, settings, {"instance_id": "i-0o03", "status": "completed", "note": SECRET}, group="b")
    instance = DagsterInstance.ephemeral()

    result = execute(aws, settings, instance)

    assert result.success  # its first receive: SQS delivers it again
    tags = run_tags(instance, result)
    assert tags["runs-fleet/outcome"] == "partial"
    assert (tags["runs-fleet/messages_failed"], tags["runs-fleet/messages_to_dlq"],
            tags["runs-fleet/messages_deleted"]) == ("1", "0", "1")
    warnings = warnings_of(instance, result)
    assert any("drain partial: 1 message(s) left in the queue" in w for w in warnings)
    assert any(bad in w for w in warnings) and not any(SECRET in w for w in warnings)
    assert runner_gone(aws, settings, "i-0o02")


def test_a_message_on_its_last_receive_fails_the_run_after_the_rest_is_deleted(aws, settings):
    make_runner(aws, settings, "i-0o04", job_id="o4")
    url = termination_url(aws, settings)
    bad = send(aws, settings, {"instance_id": "i-0o05", "status": "completed", "note": SECRET}, group="b")
    for _ in range(2):  # two earlier attempts received it and failed (the redrive allows 3 receives)
        got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)["Messages"]
        assert got[0]["MessageId"] == bad
        expire_in_flight(aws.sqs.meta.region_name, settings.termination_queue)
    send(aws, settings, termination("i-0o04", "o4"), group="i-0o04")
    instance = DagsterInstance.ephemeral()

    result = execute(aws, settings, instance)

    assert not result.success
    # Everything that succeeded is done and deleted first.
    drained = result.output_for_node(OP)
    assert drained == {**drained, "outcome": "dlq", "processed": 1, "messages_deleted": 1, "failed": 1,
                       "messages_to_dlq": 1}
    assert runner_gone(aws, settings, "i-0o04") and queue_counts(aws, url) == (0, 1)
    tags = run_tags(instance, result)
    assert (tags["runs-fleet/outcome"], tags["runs-fleet/messages_to_dlq"], tags["runs-fleet/messages_deleted"]) \
        == ("dlq", "1", "1")
    # The run page: the drain step succeeded, the outcome step failed naming the message and why.
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.node_name for e in failures] == ["report_drain_outcome"]
    error = failures[0].event_specific_data.error
    assert "1 termination message(s) failed on their last receive and go to the DLQ" in error.message
    from tests.metadata import rows

    (listed,) = rows(failures[0].event_specific_data.user_failure_data.metadata["dlq_messages"].value)
    assert listed["message id"] == bad and "missing required field(s): job_id" in listed["reason"]
    assert listed["receive"] == 3
    assert SECRET not in json.dumps([str(e) for e in instance.all_logs(result.run_id)])

    # A failed drain does not hold the sensor back: once the message is visible, it asks again.
    expire_in_flight(aws.sqs.meta.region_name, settings.termination_queue)
    tick = termination_queue_sensor(build_sensor_context(instance=instance,
                                                         resources={"aws": aws, "settings": settings}))
    assert isinstance(tick, RunRequest)
    # ...and that receive is the 4th: SQS moves the message to the DLQ, the next drain finds nothing.
    again = execute(aws, settings, instance)
    assert again.success and run_tags(instance, again)["runs-fleet/outcome"] == "ok"
    dlq = aws.sqs.get_queue_url(QueueName=settings.termination_queue.replace(".fifo", "-dlq.fifo"))["QueueUrl"]
    assert queue_counts(aws, dlq) == (1, 0)


def test_an_unreadable_redrive_policy_makes_any_failure_loud(aws, settings):
    send(aws, settings, "not json", group="b")
    _, undo = fail_when(aws, "provide-client-params.sqs.GetQueueAttributes",
                        lambda p: "RedrivePolicy" in p.get("AttributeNames", []))
    instance = DagsterInstance.ephemeral()
    try:
        result = execute(aws, settings, instance)
    finally:
        undo()
    # It cannot tell whether the message goes to the DLQ now, so it says it may: an operator looks.
    assert not result.success and run_tags(instance, result)["runs-fleet/outcome"] == "dlq"
    assert any("redrive policy" in w for w in warnings_of(instance, result))


def test_failure_lists_are_tables_with_ids_reasons_and_a_count_of_the_rest():
    from collections import Counter

    from dagster import TableMetadataValue

    from pipelines.termination.drain import MessageFailure as DrainFailure
    from pipelines.termination.outcome import failed_messages_table, failed_reasons_table
    from tests.metadata import columns, rows

    listed = [DrainFailure(message_id="m-1", reason="invalid message: not valid JSON", receive_count=3),
              {"message_id": "m-2", "runner_id": "i-0abc", "job_id": "8812", "receive_count": None,
               "reason": "runner cleanup incomplete:\nAccessDenied"}]
    value = failed_messages_table(listed, total=5)
    assert isinstance(value, TableMetadataValue)
    assert columns(value) == ["message id", "runner id", "job id", "receive", "reason"]
    assert rows(value) == [
        {"message id": "m-1", "runner id": None, "job id": None, "receive": 3,
         "reason": "invalid message: not valid JSON"},
        {"message id": "m-2", "runner id": "i-0abc", "job id": "8812", "receive": None,
         "reason": "runner cleanup incomplete: AccessDenied"},  # one line
        {"message id": "… 3 more in the run logs", "runner id": None, "job id": None, "receive": None,
         "reason": None},
    ]
    reasons = failed_reasons_table(Counter({"invalid message": 2, "throttled": 5}))
    assert rows(reasons) == [{"reason": "throttled", "messages": 5}, {"reason": "invalid message", "messages": 2}]
    assert rows(failed_messages_table([], total=0)) == []


def test_table_counts_rows_known_but_not_kept_in_its_last_row():
    from pipelines.common.tables import column, table

    value = table([column("id"), column("n", "int")], [{"id": "a", "n": 1}], more=4, rest="in the run logs")
    assert [dict(r.data) for r in value.records] == [{"id": "a", "n": 1}, {"id": "… 4 more in the run logs", "n": None}]
    capped = table([column("id")], [{"id": str(n)} for n in range(5)], cap=3, more=2)
    assert dict(capped.records[-1].data) == {"id": "… 4 more in the run logs"}
