"""Races between plan and act, and bad records, against the moto server through the real sweep jobs.

A race is driven by a botocore event hook on the project's own clients: the world is
changed once, right after the plan's last read (at the re-check's first DescribeInstances,
the first call after the plan op). The re-check must read again everything the plan relied
on and spare what changed.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from pipelines.sweeps import orphaned_instances as oi, orphaned_queues as oq, rules, stale_ssm
from resources import add_client_observer, load_aws_clients
from tests.builders import launch, put_params, put_pool, redeployed
from tests.metadata import column, rows
from tests.pipelines.sweeps.test_orphaned_queues import make_queue_set, queues, tracked


def put_job(aws, settings, job_id, status):
    item = {"job_id": {"S": job_id}, "pool": {"S": "p"}}
    if status is not None:
        item["status"] = {"S": status}
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item=item)


def states(aws, ids):
    found = aws.ec2.describe_instances(InstanceIds=list(ids))
    return {i["InstanceId"]: i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]}


def alive(aws, ids):
    return {i for i, s in states(aws, ids).items() if s == "running"}


@contextmanager
def race(mutate, *, deny_jobs_after=False):
    """Clients created inside run ``mutate()`` once, right after the orphaned-instance plan's last read.

    With ``deny_jobs_after``, every jobs-table read after that point is denied (the table
    became unreadable between plan and act).
    """
    seen = {"describe": 0, "mutated": False}

    def on_describe(**_):
        seen["describe"] += 1
        if seen["describe"] == 2 and not seen["mutated"]:  # 1: find; 2: the re-check's first read
            seen["mutated"] = True
            mutate()

    def on_batch_get(**_):
        if deny_jobs_after and seen["mutated"]:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "injected"}}, "BatchGetItem")

    def observe(client):
        name = client.meta.service_model.service_name
        if name == "ec2":
            client.meta.events.register("before-call.ec2.DescribeInstances", on_describe)
        elif name == "dynamodb":
            client.meta.events.register("before-call.dynamodb.BatchGetItem", on_batch_get)

    remove = add_client_observer(observe)
    try:
        yield seen
    finally:
        remove()


def sweep(job, act_op, settings, **config):
    """Run a sweep job with fresh clients (they carry the race hooks), blast radius opened."""
    return job.execute_in_process(
        run_config={"ops": {act_op: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0, **config}}}},
        resources={"aws": load_aws_clients(), "settings": settings}, raise_on_error=False,
    )


def act_metadata(result, step):
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == step]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def plan_of(result, step):
    return result.output_for_node(step)


RACES = {
    "job turns running": lambda aws, s, i: put_job(aws, s, "j-1", "running"),
    "job appears running": lambda aws, s, i: put_job(aws, s, "j-missing", "running"),
    "job record loses its status": lambda aws, s, i: put_job(aws, s, "j-1", None),
    "job status malformed": lambda aws, s, i: put_job(aws, s, "j-1", "RUNNING"),
    "protect tag added, empty": lambda aws, s, i: aws.ec2.create_tags(
        Resources=[i], Tags=[{"Key": "runs-fleet:protect", "Value": ""}]),
    "job-id tag assigned": lambda aws, s, i: aws.ec2.create_tags(
        Resources=[i], Tags=[{"Key": "runs-fleet:job-id", "Value": "j-new"}]),
    "pool limit raised": lambda aws, s, i: put_pool(aws, s, "p", 100_000),
}


@pytest.mark.parametrize("name", sorted(RACES))
def test_orphaned_instance_race_is_caught_by_the_recheck(aws, settings, name):
    put_pool(aws, settings, "p", 60)
    put_job(aws, settings, "j-1", "completed")
    job = "j-missing" if name == "job appears running" else ("j-1" if "job" in name and "tag" not in name else None)
    victim = launch(aws, 500, pool="p", job_id=job)
    bystander = launch(aws, 500, pool="other")  # default limit 360: overdue, untouched by the race
    with race(lambda: RACES[name](aws, settings, victim)) as seen:
        result = sweep(oi.orphaned_instances_sweep, oi.ACT_OP, settings)
    assert seen["mutated"] and result.success
    assert {a.resource for a in plan_of(result, "plan_orphaned_instances").actions} == {victim, bystander}
    assert alive(aws, [victim, bystander]) == {victim}
    metadata = act_metadata(result, oi.ACT_OP)
    assert metadata["acted"] == 1 and metadata["skipped_at_recheck"] == 1
    assert victim in column(metadata["skipped"], "resource")


def test_jobs_table_unreadable_at_recheck_keeps_tagged_targets(aws, settings):
    put_job(aws, settings, "j-1", "completed")
    tagged = launch(aws, 500, job_id="j-1")
    untagged = launch(aws, 500)
    with race(lambda: None, deny_jobs_after=True) as seen:
        result = sweep(oi.orphaned_instances_sweep, oi.ACT_OP, settings)
    assert seen["mutated"] and result.success
    assert alive(aws, [tagged, untagged]) == {tagged, untagged}  # a missing dependency acts on nothing
    assert any("jobs table lookup failed" in why for why in column(act_metadata(result, oi.ACT_OP)["skipped"], "why"))


def test_absurd_pool_limits_keep_their_instances_and_the_sweep_goes_on(aws, settings):
    values = {"huge": "1E+13", "negative": "-5", "zero": "0", "ten-years-and-a-minute": "5270401"}
    victims = {}
    for pool, raw in values.items():
        aws.dynamodb.put_item(TableName=settings.pools_table, Item={
            "pool_name": {"S": pool}, "instance_type": {"S": "t3.micro"}, "max_runtime_minutes": {"N": raw}})
        victims[pool] = launch(aws, 100_000, pool=pool)
    put_pool(aws, settings, "fractional", 0)  # placeholder row, replaced below with 90.9
    aws.dynamodb.put_item(TableName=settings.pools_table, Item={
        "pool_name": {"S": "fractional"}, "instance_type": {"S": "t3.micro"}, "max_runtime_minutes": {"N": "90.9"}})
    early = launch(aws, 100.5, pool="fractional")  # 100.5 min < 90.9 + 10: truncating to 90 would terminate it
    late = launch(aws, 101.5, pool="fractional")
    normal = launch(aws, 500)
    result = sweep(oi.orphaned_instances_sweep, oi.ACT_OP, settings)
    assert result.success
    plan = plan_of(result, "plan_orphaned_instances")
    assert {a.resource for a in plan.actions} == {late, normal}
    kept = {k.resource: k for k in plan.kept}
    for pool, instance in victims.items():
        assert kept[instance].outcome == "uncertain" and "no usable max_runtime_minutes" in kept[instance].reason
    assert early not in kept  # not overdue: not a candidate
    assert alive(aws, [*victims.values(), early, late, normal]) == {*victims.values(), early}


def test_absurd_tracking_activity_is_kept_and_the_sweep_goes_on(aws, settings):
    now_ms = int(__import__("time").time() * 1000)
    absurd = {"i-0micro": now_ms * 1000, "i-0seconds": now_ms // 1000, "i-0negative": -now_ms, "i-0huge": 10**30}
    for runner_id, value in absurd.items():
        aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={
            "runner_id": {"S": runner_id}, "last_activity": {"N": str(value)}})
    make_queue_set(aws, settings, "i-0orphan", 30, messages=2)
    result = sweep(oq.orphaned_queues_sweep, oq.ACT_OP, settings)
    assert result.success
    plan = plan_of(result, "plan_orphaned_queues")
    assert {a.resource for a in plan.actions} == {"i-0orphan"}
    kept = {k.resource: k for k in plan.kept}
    assert set(kept) == set(absurd) and {k.outcome for k in kept.values()} == {"uncertain"}
    assert "microseconds" in kept["i-0micro"].reason and "seconds" in kept["i-0seconds"].reason
    assert not queues(aws, settings)
    assert set(tracked(aws, settings)) == set(absurd)


def test_a_malformed_runner_id_is_kept_and_the_ssm_sweep_goes_on(aws, settings):
    odd = put_params(aws, settings, ["task.v2", "_leading-underscore"], 120)
    dead = put_params(aws, settings, ["i-0dead000000000001", "0123456789abcdef0123456789abcdef"], 120)
    result = sweep(stale_ssm.stale_ssm_sweep, stale_ssm.ACT_OP, settings)
    assert result.success
    plan = plan_of(result, "plan_stale_ssm")
    assert {a.resource for a in plan.actions} == set(dead)
    assert {k.resource: k.outcome for k in plan.kept} == dict.fromkeys(odd, "uncertain")
    left = {p["Name"] for p in aws.ssm.describe_parameters()["Parameters"]}
    assert left == set(odd)


# --- property: randomized fleets, malformed records and races ----------------------------------

KINDS = ["idle", "busy", "finished", "missing job", "no status", "bad status", "empty tag"]
PROTECT = st.sampled_from([None, None, "", "true", "false", " FALSE ", "no"])
POOLS = st.sampled_from([None, "p30", "p90.9", "absurd"])
RACE = st.sampled_from([None, None, "job running", "protect", "assign", "status gone", "raise limit"])
INSTANCE = st.tuples(st.sampled_from(KINDS), PROTECT, POOLS, st.integers(min_value=0, max_value=600), RACE)


def _untouchable(tags, jobs, pools) -> bool:
    """At act time: protected, busy, or anything the rule cannot be sure of."""
    if rules.protected(tags):
        return True
    pool = tags.get("runs-fleet:pool")
    if pool in pools and rules.parse_max_runtime(pools[pool]) is None:
        return True
    job_id = tags.get("runs-fleet:job-id")
    if job_id is None:
        return False
    status = jobs.get(job_id, "absent")
    return not job_id.strip() or status not in rules.JOB_STATUSES - {"running"} | {"absent"}


@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=st.lists(INSTANCE, min_size=1, max_size=7))
def test_no_protected_busy_or_uncertain_instance_is_ever_terminated(moto_url, fleet):
    aws, settings = redeployed(moto_url)
    pools = {"p30": "30", "p90.9": "90.9", "absurd": "1E+13"}
    for name, raw in pools.items():
        aws.dynamodb.put_item(TableName=settings.pools_table, Item={
            "pool_name": {"S": name}, "instance_type": {"S": "t3.micro"}, "max_runtime_minutes": {"N": raw}})
    races = []
    ids = []
    for n, (kind, protect, pool, age, race_kind) in enumerate(fleet):
        job = None if kind == "idle" else ("" if kind == "empty tag" else f"j{n}")
        status = {"busy": "running", "finished": "completed", "bad status": "Running", "no status": None}.get(kind)
        if kind not in ("idle", "empty tag", "missing job"):
            put_job(aws, settings, f"j{n}", status)
        instance = launch(aws, age, pool=pool, job_id=job)
        if protect is not None:
            aws.ec2.create_tags(Resources=[instance], Tags=[{"Key": "runs-fleet:protect", "Value": protect}])
        ids.append(instance)
        races.append((race_kind, instance, job, pool))

    def mutate():
        for race_kind, instance, job, pool in races:
            if race_kind == "job running" and job:
                put_job(aws, settings, job, "running")
            elif race_kind == "protect":
                aws.ec2.create_tags(Resources=[instance], Tags=[{"Key": "runs-fleet:protect", "Value": ""}])
            elif race_kind == "assign":
                aws.ec2.create_tags(Resources=[instance], Tags=[{"Key": "runs-fleet:job-id", "Value": "late"}])
                put_job(aws, settings, "late", "running")
            elif race_kind == "status gone" and job:
                put_job(aws, settings, job, None)
            elif race_kind == "raise limit" and pool:
                aws.dynamodb.put_item(TableName=settings.pools_table, Item={
                    "pool_name": {"S": pool}, "max_runtime_minutes": {"N": "100000"}})

    with race(mutate):
        result = oi.orphaned_instances_sweep.execute_in_process(
            run_config={"ops": {oi.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}},
            resources={"aws": load_aws_clients(), "settings": settings}, raise_on_error=False)
    assert result.success
    # The world now is the world at act time (terminating changes no tag or record).
    described = aws.ec2.describe_instances(InstanceIds=ids)
    jobs = {i["job_id"]["S"]: i.get("status", {}).get("S") for i in aws.dynamodb.scan(
        TableName=settings.jobs_table)["Items"]}
    current_pools = {i["pool_name"]["S"]: i["max_runtime_minutes"]["N"] for i in aws.dynamodb.scan(
        TableName=settings.pools_table)["Items"]}
    for reservation in described["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}
            if _untouchable(tags, jobs, current_pools):
                assert instance["State"]["Name"] == "running", (instance["InstanceId"], tags)


def test_a_parameter_written_again_between_plan_and_delete_is_kept(aws, settings):
    (rewritten,) = put_params(aws, settings, ["i-0rewritten0000001"], 120)
    (stale,) = put_params(aws, settings, ["i-0stale00000000001"], 120)
    # Both runners are unknown to EC2; the first one's parameter is written again right after the plan.
    with race(lambda: aws.ssm.put_parameter(Name=rewritten, Type="String", Value="{}", Overwrite=True)) as seen:
        result = sweep(stale_ssm.stale_ssm_sweep, stale_ssm.ACT_OP, settings)
    assert seen["mutated"] and result.success
    metadata = act_metadata(result, stale_ssm.ACT_OP)
    assert metadata["acted"] == 1
    assert any(r["resource"] == rewritten and "written again" in r["why"] for r in rows(metadata["skipped"]))
    left = {p["Name"] for p in aws.ssm.describe_parameters()["Parameters"]}
    assert left == {rewritten}
