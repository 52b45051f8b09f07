"""Races between the stuck jobs plan and its act, against the moto server through the real job.

The world is changed by a botocore event hook on the project's own clients, once, right after
the plan's last read: at the act's first call, the re-check's BatchGetItem (the plan op reads
with Scan, DescribeInstances and DescribeTasks only). A second hook changes it between the
re-check and the conditional UpdateItem, where only the condition can catch it.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from pipelines.sweeps import rules, stuck_jobs as sj
from resources import add_client_observer, load_aws_clients
from sandbox.backdate import set_instance_states
from tests.builders import get_job, iso_minutes_ago, launch, put_job, redeployed
from tests.metadata import column

UNKNOWN = "i-0123456789abcdef0"


@contextmanager
def race(after_plan=None, before_update=None, hide_from_plan=()):
    """Clients created inside run ``after_plan()`` at the re-check's first read and ``before_update()`` at the
    first UpdateItem; instances in ``hide_from_plan`` are left out of the plan's DescribeInstances answers
    (EC2's eventual consistency: a runner AWS did not list yet)."""
    seen = {"after_plan": False, "before_update": False}

    def on_batch_get(**_):
        if after_plan and not seen["after_plan"]:
            seen["after_plan"] = True
            after_plan()

    def on_update(**_):
        if before_update and not seen["before_update"]:
            seen["before_update"] = True
            before_update()

    def on_describe(parsed, **_):
        if hide_from_plan and not seen["after_plan"]:
            for reservation in parsed.get("Reservations", []):
                listed = reservation["Instances"]
                reservation["Instances"] = [i for i in listed if i["InstanceId"] not in hide_from_plan]

    def observe(client):
        name = client.meta.service_model.service_name
        if name == "dynamodb":
            client.meta.events.register("before-call.dynamodb.BatchGetItem", on_batch_get)
            client.meta.events.register("before-call.dynamodb.UpdateItem", on_update)
        elif name == "ec2":
            client.meta.events.register("after-call.ec2.DescribeInstances", on_describe)

    remove = add_client_observer(observe)
    try:
        yield seen
    finally:
        remove()


def sweep(settings, **config):
    return sj.stuck_jobs_sweep.execute_in_process(
        run_config={"ops": {sj.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0, **config}}}},
        resources={"aws": load_aws_clients(), "settings": settings}, raise_on_error=False)


def act_metadata(result):
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == sj.ACT_OP]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def complete(aws, settings, job_id):
    record = get_job(aws, settings, job_id)
    put_job(aws, settings, job_id, status="completed", started_at=record["started_at"],
            instance_id=record["instance_id"], completed_at=iso_minutes_ago(1), exit_code=0)


def restart(aws, settings, job_id, instance_id):
    put_job(aws, settings, job_id, started_minutes_ago=1, instance_id=instance_id)


@pytest.mark.parametrize("when", ["after the plan", "between re-check and update"])
@pytest.mark.parametrize("name", ["job completes", "job restarts on a live runner", "job loses its status",
                                  "record deleted"])
def test_a_job_that_changed_is_untouched(aws, settings, name, when):
    live = launch(aws, 10, pool="p")
    put_job(aws, settings, "victim", instance_id=UNKNOWN)
    put_job(aws, settings, "bystander", instance_id=UNKNOWN)
    change = {
        "job completes": lambda: complete(aws, settings, "victim"),
        "job restarts on a live runner": lambda: restart(aws, settings, "victim", live),
        "job loses its status": lambda: put_job(aws, settings, "victim", status=None, instance_id=UNKNOWN),
        "record deleted": lambda: aws.dynamodb.delete_item(TableName=settings.jobs_table,
                                                           Key={"job_id": {"S": "victim"}}),
    }[name]
    hooks = {"after_plan": change} if when == "after the plan" else {"before_update": change}
    with race(**hooks) as seen:
        result = sweep(settings)
    assert all(seen[h] for h in hooks) and result.success  # a failed condition is a skip, not a failure
    assert {a.resource for a in result.output_for_node(sj.PLAN_OP).actions} == {"victim", "bystander"}
    after = get_job(aws, settings, "victim")
    assert after.get("status") != "interrupted" and "interrupted_by" not in after
    if name == "job completes":
        assert after["status"] == "completed" and after["exit_code"] == "0"
    assert get_job(aws, settings, "bystander")["status"] == "interrupted"
    metadata = act_metadata(result)
    assert metadata["acted"] == 1 and metadata["skipped_at_recheck"] == 1 and metadata["failed"] == 0
    assert "victim" in column(metadata["skipped"], "resource")


def test_a_runner_found_live_at_the_recheck_keeps_its_job(aws, settings):
    """The plan's DescribeInstances did not list the runner yet (unknown → gone); the re-check finds it running."""
    runner = launch(aws, 100, pool="p")
    put_job(aws, settings, "victim", instance_id=runner)
    put_job(aws, settings, "bystander", instance_id=UNKNOWN)
    with race(after_plan=lambda: None, hide_from_plan={runner}):
        result = sweep(settings)
    assert result.success
    reasons = {a.resource: a.reason for a in result.output_for_node(sj.PLAN_OP).actions}
    assert "unknown to EC2" in reasons["victim"]
    assert get_job(aws, settings, "victim")["status"] == "running"
    assert get_job(aws, settings, "bystander")["status"] == "interrupted"
    assert any("in use" in why for why in column(act_metadata(result)["skipped"], "why"))


def test_a_runner_stopped_after_the_plan_keeps_its_job_as_uncertain(aws, settings):
    runner = launch(aws, 100, pool="p")
    set_instance_states([runner], "shutting-down", aws.ec2.meta.region_name)
    put_job(aws, settings, "victim", instance_id=runner)
    with race(after_plan=lambda: set_instance_states([runner], "stopped", aws.ec2.meta.region_name)):
        result = sweep(settings)
    assert result.success
    assert [a.resource for a in result.output_for_node(sj.PLAN_OP).actions] == ["victim"]
    assert get_job(aws, settings, "victim")["status"] == "running"
    assert any("uncertain" in why for why in column(act_metadata(result)["skipped"], "why"))


# --- property: randomized job records and races ------------------------------------------------

RUNNER = st.sampled_from(["running", "terminated", "shutting-down", "stopped", "unknown", "none", "malformed"])
STATUS = st.sampled_from(["running", "running", "running", "completed", "interrupted", None, "RUNNING"])
STARTED = st.sampled_from(["old", "old", "young", "absurd", "missing"])
RACE = st.sampled_from([None, None, "complete", "restart", "runner back", "lose status", "complete late"])
JOB = st.tuples(STATUS, STARTED, RUNNER, RACE)


def _runner_gone(aws, instance_id) -> bool:
    """The contract's "gone", read from the world as it is now."""
    if not instance_id or not instance_id.startswith("i-") or instance_id == "i-../x":
        return False
    found = aws.ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    states = [i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]]
    return not states or states[0] in ("terminated", "shutting-down")


@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=st.lists(JOB, min_size=1, max_size=8))
def test_a_job_is_interrupted_only_if_at_act_time_it_was_running_and_its_runner_gone(moto_url, jobs):
    aws, settings = redeployed(moto_url)
    region = aws.ec2.meta.region_name
    live = launch(aws, 10, pool="p")
    after_plan, before_update = [], []
    for n, (status, started, runner, race_kind) in enumerate(jobs):
        job_id = f"j{n}"
        instance_id = {"unknown": f"i-0{n:016x}", "none": None, "malformed": "i-../x"}.get(runner)
        if instance_id is None and runner not in ("none",):
            instance_id = launch(aws, 100, pool="p")
            if runner == "terminated":
                aws.ec2.terminate_instances(InstanceIds=[instance_id])
            elif runner == "stopped":
                aws.ec2.stop_instances(InstanceIds=[instance_id])
            elif runner == "shutting-down":
                set_instance_states([instance_id], "shutting-down", region)
        started_at = {"old": iso_minutes_ago(120), "young": iso_minutes_ago(5), "absurd": "1E+13",
                      "missing": None}[started]
        put_job(aws, settings, job_id, status=status, started_at=started_at, started_minutes_ago=None,
                instance_id=instance_id)

        def act(race_kind=race_kind, job_id=job_id, instance_id=instance_id):
            if race_kind in ("complete", "complete late"):
                put_job(aws, settings, job_id, status="completed", started_at=started_at, started_minutes_ago=None,
                        instance_id=instance_id, completed_at=iso_minutes_ago(1))
            elif race_kind == "restart":
                restart(aws, settings, job_id, live)
            elif race_kind == "runner back" and instance_id:
                put_job(aws, settings, job_id, status=status, started_at=started_at, started_minutes_ago=None,
                        instance_id=live)  # the record now names a live runner (same start)
            elif race_kind == "lose status":
                put_job(aws, settings, job_id, status=None, started_at=started_at, started_minutes_ago=None,
                        instance_id=instance_id)

        (before_update if race_kind == "complete late" else after_plan).append(act)

    snapshot: dict[str, dict] = {}

    def at_act_time():
        for change in after_plan:
            change()
        snapshot.update({f"j{n}": get_job(aws, settings, f"j{n}") for n in range(len(jobs))})

    def late():
        for change in before_update:
            change()
        snapshot.update({f"j{n}": get_job(aws, settings, f"j{n}") for n in range(len(jobs))})

    with race(after_plan=at_act_time, before_update=late):
        result = sj.stuck_jobs_sweep.execute_in_process(
            run_config={"ops": {sj.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}},
            resources={"aws": load_aws_clients(), "settings": settings}, raise_on_error=False)
    assert result.success
    for n, (status, started, runner, race_kind) in enumerate(jobs):
        after = get_job(aws, settings, f"j{n}")
        if race_kind is None and status == "running" and started == "old" and runner in (
                "terminated", "shutting-down", "unknown"):
            assert after["status"] == "interrupted", (n, jobs[n], after)  # and the sweep does act
        if after.get("interrupted_by") != "stuck_jobs_sweep":
            continue
        before = snapshot.get(f"j{n}") or {}
        started, _ = rules.parse_started_at(before.get("started_at"), datetime.now(timezone.utc))
        assert before.get("status") == "running", (n, jobs[n], before)
        assert started is not None, (n, jobs[n], before)
        assert _runner_gone(aws, before.get("instance_id")), (n, jobs[n], before)
        assert after["status"] == "interrupted" and after["started_at"] == before["started_at"]
