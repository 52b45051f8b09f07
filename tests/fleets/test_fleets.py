"""Many fleets on one moto server: every piece acts on exactly its own fleet (issue #18).

Two accounts x two regions (fleets.yaml); each fleet seeded differently; runs launched for a
fleet partition through the code location's own ``defs`` (its locked, fleet-bound resources),
never with resources handed in. A fleet whose role cannot be assumed fails its own runs,
naming it, and no other fleet's.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError
from dagster import DagsterInstance, MultiPartitionKey, MultiPartitionsDefinition, build_schedule_context
from dagster import build_sensor_context

from tests.builders import get_job, launch, put_job, put_params, put_pool
from tests.fleets.conftest import DENIED, DENIED_ACCOUNT, REACHABLE

DAY = "2026-11-10"


@pytest.fixture(scope="module")
def defs():
    import definitions

    return definitions.defs


def deny_assume_role():
    """AccessDenied for sts:AssumeRole into the denied fleet's account, on every client made after this
    (the hub's policy does not list that role: this is what AWS answers)."""
    from resources import add_client_observer

    def handler(params, **_):
        if f":{DENIED_ACCOUNT}:" in params.get("RoleArn", ""):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized to perform "
                                         "sts:AssumeRole"}}, "AssumeRole")

    def observe(client):
        if client.meta.service_model.service_name == "sts":
            client.meta.events.register("before-parameter-build.sts.AssumeRole", handler)

    return add_client_observer(observe)


def run(defs, job_name, partition, run_config=None, instance=None):
    return defs.resolve_job_def(job_name).execute_in_process(
        partition_key=partition, run_config=run_config or {}, raise_on_error=False,
        instance=instance or DagsterInstance.ephemeral())


def states(aws, ids):
    reservations = aws.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def test_every_piece_is_partitioned_by_fleet_and_each_schedule_starts_one_run_per_fleet(defs):
    names = [*REACHABLE, DENIED]
    for job_name in ["orphaned_instances_sweep", "stale_ssm_sweep", "orphaned_queues_sweep", "stuck_jobs_sweep",
                     "pool_audit_job", "queue_health_job", "fleet_ledger_job", "process_terminations",
                     "redrive_termination_dlq", "locate_archived_job"]:
        job = defs.resolve_job_def(job_name)
        assert job.partitions_def is not None, job_name
        assert job.partitions_def.get_partition_keys() == names, job_name
    archive = defs.resolve_job_def("archive_old_jobs").partitions_def
    assert isinstance(archive, MultiPartitionsDefinition)
    assert [d.name for d in archive.partitions_defs] == ["date", "fleet"]

    moment = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    for schedule_name, job_name in [("orphaned_instances_every_15_minutes", "orphaned_instances_sweep"),
                                    ("pool_audit_daily", "pool_audit_job"), ("fleet_ledger_hourly", "fleet_ledger_job")]:
        schedule = defs.resolve_schedule_def(schedule_name)
        requests = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=moment, repository_def=defs.get_repository_def())).run_requests
        assert [r.partition_key for r in requests] == names
        # One run per (job, fleet) at a time (infra/dagster.yaml's limit per runs-fleet/exclusive value).
        assert [r.tags["runs-fleet/exclusive"] for r in requests] == [f"{job_name}@{n}" for n in names]
        assert len({r.run_key for r in requests}) == len(names)
    daily = defs.resolve_schedule_def("archive_old_jobs_daily")
    requests = daily.evaluate_tick(build_schedule_context(scheduled_execution_time=moment, repository_def=defs.get_repository_def())).run_requests
    assert [r.partition_key for r in requests] == [MultiPartitionKey({"date": "2026-11-23", "fleet": n}) for n in names]


def test_each_sweep_acts_on_exactly_its_own_fleet(defs, fleets):
    seeded = {}
    for n, name in enumerate(REACHABLE, start=1):
        aws, settings, account = fleets[name]
        put_pool(aws, settings, "p", 60)
        orphans = launch(aws, 200, pool="p", count=n + 1, account=account)  # 2..5 orphans per fleet
        live = launch(aws, 5, pool="p", account=account)
        params = put_params(aws, settings, [f"i-gone{name.replace('-', '')}{k}" for k in range(n)], 24 * 60,
                            account=account)
        put_job(aws, settings, f"stuck-{name}", status="running", started_minutes_ago=240, instance_id="i-0dead",
                pool="p")
        seeded[name] = (orphans, live, params)
    act = {"confirm_after_minutes": 0, "max_fraction": 1.0}

    # One fleet's run: that fleet's orphans, parameters and stuck job only.
    for job_name, act_op in [("orphaned_instances_sweep", "terminate_orphaned_instances"),
                             ("stale_ssm_sweep", "delete_stale_parameters"),
                             ("stuck_jobs_sweep", "interrupt_stuck_jobs")]:
        result = run(defs, job_name, "a-euw1", {"ops": {act_op: {"config": act}}})
        assert result.success, job_name
    for name in REACHABLE:
        aws, settings, _ = fleets[name]
        orphans, live, params = seeded[name]
        mine = name == "a-euw1"
        assert set(states(aws, orphans).values()) == {"terminated" if mine else "running"}, name
        assert states(aws, [live]) == {live: "running"}, name
        left = aws.ssm.get_parameters(Names=params)["Parameters"]
        assert len(left) == (0 if mine else len(params)), name
        assert get_job(aws, settings, f"stuck-{name}")["status"] == ("interrupted" if mine else "running"), name

    # Every fleet's run: each one's own, the numbers differ per fleet.
    for name in REACHABLE:
        result = run(defs, "orphaned_instances_sweep", name, {"ops": {"terminate_orphaned_instances": {"config": act}}})
        assert result.success, name
        aws, _, _ = fleets[name]
        orphans, live, _ = seeded[name]
        assert set(states(aws, orphans).values()) == {"terminated"}
        assert states(aws, [live]) == {live: "running"}
        planned = [e for e in result.get_step_success_events() if e.step_key == "plan_orphaned_instances"]
        assert planned, name


def test_plan_history_and_marks_are_kept_per_fleet(defs, fleets):
    """Two observations per fleet: a plan of fleet A does not confirm a target of fleet B."""
    instance = DagsterInstance.ephemeral()
    for name in ["a-use1", "b-use1"]:
        aws, settings, account = fleets[name]
        put_pool(aws, settings, "p", 60)
        launch(aws, 200, pool="p", account=account)
    run(defs, "orphaned_instances_sweep", "a-use1", instance=instance)
    run(defs, "orphaned_instances_sweep", "b-use1", instance=instance)
    from dagster import AssetKey, AssetRecordsFilter

    key = AssetKey("orphaned_instances_sweep_plan")
    for name in ["a-use1", "b-use1"]:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[name]),
                                                  limit=10).records
        assert len(records) == 1 and records[0].partition_key == name
        marks = records[0].asset_materialization.metadata["marks"].value
        aws, _, _ = fleets[name]
        own = {i["InstanceId"] for r in aws.ec2.describe_instances()["Reservations"] for i in r["Instances"]}
        assert set(marks) == own


def test_a_fleet_whose_role_cannot_be_assumed_fails_its_own_runs_only(defs, fleets):
    aws, settings, account = fleets["b-use1"]
    put_pool(aws, settings, "p", 60)
    orphan = launch(aws, 200, pool="p", account=account)
    remove = deny_assume_role()
    try:
        denied = run(defs, "orphaned_instances_sweep", DENIED)
        assert not denied.success
        failure = next(e for e in denied.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE")
        error = failure.event_specific_data.error
        text = error.message + "".join(c.message for c in [error.cause] if c is not None)
        assert f"fleet {DENIED}: cannot assume arn:aws:iam::{DENIED_ACCOUNT}:role/not-trusted: AccessDenied" in text
        ok = run(defs, "orphaned_instances_sweep", "b-use1",
                 {"ops": {"terminate_orphaned_instances": {"config": {"confirm_after_minutes": 0}}}})
        assert ok.success
        assert states(aws, [orphan]) == {orphan: "terminated"}
    finally:
        remove()


def test_pool_audit_and_queue_health_report_their_own_fleet(defs, fleets):
    for n, name in enumerate(REACHABLE, start=1):
        aws, settings, account = fleets[name]
        put_pool(aws, settings, f"pool-{name}", 60)
        launch(aws, 30, pool=f"pool-{name}", count=n, account=account)
    instance = DagsterInstance.ephemeral()
    for name in ["a-use1", "b-euw1"]:
        result = run(defs, "pool_audit_job", name, instance=instance)
        assert result.success, name
        inventory = result.output_for_node("pool_inventory")
        assert inventory["pool"].tolist() == [f"pool-{name}"]
        assert int(inventory["running"].sum()) == REACHABLE.index(name) + 1
        aws, settings, _ = fleets[name]
        keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=settings.archive_bucket).get("Contents", [])]
        assert any(k.startswith("reports/pool_cost/") for k in keys), name
    # The other fleets' buckets got no report.
    for name in ["a-euw1", "b-use1"]:
        aws, settings, _ = fleets[name]
        assert not aws.s3.list_objects_v2(Bucket=settings.archive_bucket).get("Contents")
    health = run(defs, "queue_health_job", "b-use1", instance=instance)
    assert health.success

    # The fleet-wide summary: per fleet and in total, fleets not yet audited named, not counted.
    summary = run(defs, "fleets_summary_job", None, instance=instance)
    assert summary.success
    (cost,) = [m for m in summary.asset_materializations_for_node("fleets_cost_summary")]
    assert cost.metadata["total_running"].value == 1 + 4  # a-use1 has 1 instance, b-euw1 has 4
    assert cost.metadata["fleets_covered"].value == 2
    assert cost.metadata["fleets_not_materialized"].value == ["a-euw1", "b-use1", DENIED]
    rows = {r.data["fleet"]: r.data for r in cost.metadata["fleets"].value.records}
    assert rows["b-euw1"]["running"] == 4 and rows["a-euw1"]["as_of"] == "not materialized yet"
    (queues,) = summary.asset_materializations_for_node("fleets_queue_health_summary")
    assert queues.metadata["fleets_covered"].value == 1


def test_archival_archives_one_fleet_day_into_that_fleets_bucket(defs, fleets):
    for name in ["a-use1", "b-euw1"]:
        aws, settings, _ = fleets[name]
        for k in range(3):
            put_job(aws, settings, f"{name}-{k}", status="completed", completed_at=f"{DAY}T10:0{k}:00Z",
                    started_minutes_ago=None)
    key = MultiPartitionKey({"date": DAY, "fleet": "b-euw1"})
    result = run(defs, "archive_old_jobs", key)
    assert result.success
    b_aws, b_settings, _ = fleets["b-euw1"]
    assert b_settings.jobs_table == "runs-fleet-jobs-b"  # the fleet's own name for its table
    assert all(not get_job(b_aws, b_settings, f"b-euw1-{k}") for k in range(3))
    manifest = b_aws.s3.get_object(Bucket=b_settings.archive_bucket, Key=f"jobs/completed_date={DAY}/_manifest.json")
    assert json.loads(manifest["Body"].read())["record_count"] == 3
    a_aws, a_settings, _ = fleets["a-use1"]
    assert all(get_job(a_aws, a_settings, f"a-use1-{k}")["status"] == "completed" for k in range(3))
    assert not a_aws.s3.list_objects_v2(Bucket=a_settings.archive_bucket).get("Contents")


def test_sensors_watch_each_fleets_queues_and_skip_an_unreachable_one(defs, fleets):
    from resources import load_aws_clients, load_settings

    a_aws, a_settings, _ = fleets["a-euw1"]
    url = a_aws.sqs.get_queue_url(QueueName=a_settings.termination_queue)["QueueUrl"]
    a_aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"instance_id": "i-0a1b2c3d4e5f67890", "job_id": "1",
                                                                 "status": "completed"}), MessageGroupId="g",
                           MessageDeduplicationId="d1")
    b_aws, b_settings, _ = fleets["b-use1"]
    hk = b_aws.sqs.get_queue_url(QueueName=b_settings.housekeeping_queue)["QueueUrl"]
    b_aws.sqs.send_message(QueueUrl=hk, MessageBody=json.dumps({"task_type": "old_jobs", "params": {"date": DAY}}))
    instance = DagsterInstance.ephemeral()
    resources = {"aws": load_aws_clients(), "settings": load_settings()}
    remove = deny_assume_role()
    try:
        termination = defs.resolve_sensor_def("termination_queue_sensor")
        with build_sensor_context(instance=instance, resources=resources, repository_def=defs.get_repository_def()) as context:
            result = termination.evaluate_tick(context)
        assert [(r.partition_key, r.tags["runs-fleet/exclusive"]) for r in result.run_requests] == [
            ("a-euw1", "process_terminations@a-euw1")]
        housekeeping = defs.resolve_sensor_def("housekeeping_queue_sensor")
        with build_sensor_context(instance=instance, resources=resources, repository_def=defs.get_repository_def()) as context:
            result = housekeeping.evaluate_tick(context)
        (request,) = result.run_requests
        assert request.partition_key == MultiPartitionKey({"date": DAY, "fleet": "b-use1"})
        assert request.job_name == "archive_old_jobs" and "b-use1" in request.run_key
        assert request.tags["runs-fleet/exclusive"] == "archive_old_jobs@b-use1"
        cursor = json.loads(result.cursor)
        assert set(cursor) >= {"b-use1"}
    finally:
        remove()
