"""Uncertainty keeps things alive: the orphaned-instance sweep terminates nothing it cannot prove idle, and says why.

tests/pipelines/sweeps/test_orphaned_instances.py already proves, at the function level, that a
record without a ``status`` attribute, an empty ``runs-fleet:job-id`` tag and an InternalError
on BatchGetItem keep instances. What is added here, through the Dagster job and its run
record (plan metadata and run logs, what an operator sees):

- the jobs table unreachable: AccessDenied answered by "AWS" (an HTTP 400, not retried by
  botocore), the table missing (settings point at a table that does not exist), and the
  lookup timing out;
- malformed records and tags the existing tests do not cover: a status of the wrong type,
  an empty status string, a job-id tag of blanks.
"""

from __future__ import annotations

import json

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from dagster import DagsterInstance

from pipelines.sweeps import orphaned_instances as oi
from resources.aws import add_client_observer
from tests.faults import world as w
from tests.faults.conftest import _Raw
from tests.metadata import rows


def _run(aws, settings):
    instance = DagsterInstance.ephemeral()
    result = oi.orphaned_instances_sweep.execute_in_process(
        run_config={"ops": {oi.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}},
        resources={"aws": aws, "settings": settings}, instance=instance, raise_on_error=False,
    )
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    (plan_event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == oi.PLAN_OP]
    metadata = {k: v.value for k, v in plan_event.event_specific_data.metadata.items()}
    return result, metadata, logs


def _instance_states(aws, settings):
    return w.world(aws, settings)["instances"]


def _access_denied(aws):
    """Every BatchGetItem is answered with AccessDeniedException, as IAM would (HTTP 400, not retried)."""
    body = json.dumps({"__type": "com.amazon.coral.service#AccessDeniedException",
                       "message": "User is not authorized to perform: dynamodb:BatchGetItem (injected)"}).encode()

    def handler(request, **_):
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body))

    def observe(client):
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register("before-send.dynamodb.BatchGetItem", handler)

    remove_observer = add_client_observer(observe)
    observe(aws.dynamodb)  # the fixture's client exists already; the run's clients are new ones

    def remove():
        remove_observer()
        aws.dynamodb.meta.events.unregister("before-send.dynamodb.BatchGetItem", handler)

    return remove


def _timing_out(aws):
    """Every BatchGetItem times out, as it would after botocore's retries ran out (raised before sending)."""
    def handler(**_):
        raise ReadTimeoutError(endpoint_url="http://dynamodb (injected)")

    def observe(client):
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register("before-call.dynamodb.BatchGetItem", handler)

    remove_observer = add_client_observer(observe)
    observe(aws.dynamodb)

    def remove():
        remove_observer()
        aws.dynamodb.meta.events.unregister("before-call.dynamodb.BatchGetItem", handler)

    return remove


@pytest.mark.parametrize("how", ["access denied", "table missing", "timeout"])
def test_jobs_table_unreachable_terminates_nothing_and_says_why(aws, settings, how):
    w.put_pool(aws, settings, "small", 60)
    w.put_job(aws, settings, "j-done", "completed", completed_at="2026-11-22T10:00:00Z")
    w.launch(aws, "finished-job", 200, job_id="j-done")  # would be terminated if the table could be read
    w.launch(aws, "unknown-job", 200, job_id="j-unknown")  # "not in the table" must not be concluded from an error
    w.launch(aws, "untagged", 200)
    w.launch(aws, "young", 5)
    remove, run_settings = None, settings
    if how == "access denied":
        remove = _access_denied(aws)
        expected_code = "AccessDeniedException"
    elif how == "timeout":
        remove = _timing_out(aws)
        expected_code = "Read timeout on endpoint URL"
    else:
        run_settings = type(settings)(**{**settings.model_dump(), "jobs_table": "runs-fleet-jobs-gone"})
        expected_code = "ResourceNotFoundException"
    try:
        result, metadata, logs = _run(aws, run_settings)
    finally:
        if remove:
            remove()

    assert result.success  # keeping things is not an error
    assert set(_instance_states(aws, settings).values()) == {"running"}
    assert metadata["planned"] == 0 and metadata["kept_because_uncertain"] == 3
    kept = rows(metadata["kept"])
    assert sum(f"jobs table lookup failed ({expected_code}" in r["reason"] for r in kept) == 3, kept
    kept_logs = [m for m in logs if "kept" in m and expected_code in m]
    assert len(kept_logs) == 3, logs
    act = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == oi.ACT_OP]
    (output,) = act
    outcome = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert outcome["acted"] == 0 and outcome["failed"] == 0


@pytest.mark.parametrize(
    "record,tag,why",
    [
        ({"status": {"N": "1"}}, "j-x", "record has no status"),  # status of the wrong type
        ({"status": {"S": "   "}}, "j-x", "not a known status"),  # a blank status (DynamoDB refuses "" in the index)
        ({"status": {"S": "RUNNING"}}, "j-x", "not a known status"),  # a status outside the contract's set
        (None, "   ", "tag is empty"),  # a job-id tag of blanks
    ],
    ids=["status-wrong-type", "status-blank", "status-unknown", "tag-blank"],
)
def test_malformed_record_or_tag_keeps_the_instance(aws, settings, record, tag, why):
    w.put_pool(aws, settings, "small", 60)
    if record is not None:
        aws.dynamodb.put_item(TableName=settings.jobs_table, Item={"job_id": {"S": tag}, **record})
    w.put_job(aws, settings, "j-done", "completed", completed_at="2026-11-22T10:00:00Z")
    w.launch(aws, "suspect", 200, job_id=tag)
    w.launch(aws, "finished-job", 200, job_id="j-done")  # one bad record never wedges the sweep

    result, metadata, logs = _run(aws, settings)

    assert result.success
    states = _instance_states(aws, settings)
    assert states == {"suspect": "running", "finished-job": "terminated"}
    assert metadata["planned"] == 1 and metadata["kept_because_uncertain"] == 1
    assert any(why in r["reason"] for r in rows(metadata["kept"]))
    assert any(why in m and "kept" in m for m in logs), logs
