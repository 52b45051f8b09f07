"""orphaned_instances_sweep against the moto server: the rule's boundaries, the safety rules, convergence."""

from __future__ import annotations

from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from pipelines.sweeps import orphaned_instances as oi
from resources import add_client_observer, load_aws_clients
from tests.builders import launch, plan_rows, put_pool, redeployed
from tests.metadata import column


def put_job(aws, settings, job_id, status=None):
    item = {"job_id": {"S": job_id}, "pool": {"S": "p"}}
    if status:
        item["status"] = {"S": status}
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item=item)


def states(aws, ids):
    found = aws.ec2.describe_instances(InstanceIds=list(ids))
    return {i["InstanceId"]: i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]}


def run_sweep(aws, settings, **act_config):
    return oi.orphaned_instances_sweep.execute_in_process(
        run_config={"ops": {oi.ACT_OP: {"config": {"confirm_after_minutes": 0, **act_config}}}},
        resources={"aws": aws, "settings": settings}, raise_on_error=False,
    )


def step_metadata(result, step, kind="STEP_OUTPUT"):
    (event,) = [e for e in result.all_events if e.event_type_value == kind and e.step_key == step]
    return event


def failure_text(result, step):
    event = step_metadata(result, step, "STEP_FAILURE")
    data = event.event_specific_data
    return (data.user_failure_data.description if data.user_failure_data else "") + data.error.message


def inject(service, operation, fail_calls):
    """Make the first `fail_calls` calls of one API fail on every client created after this point."""
    calls = {"n": 0}

    def handler(**_):
        calls["n"] += 1
        if calls["n"] <= fail_calls:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)

    def observe(client):
        if client.meta.service_model.service_name == service:
            client.meta.events.register(f"before-call.{service}.{operation}", handler)

    return add_client_observer(observe), calls


def test_rule_boundaries_per_pool_default_and_uncertainty(aws, settings):
    put_pool(aws, settings, "small", 60)
    put_pool(aws, settings, "large", 180)
    for job, status in [("j-done", "completed"), ("j-run", "running"), ("j-nostatus", None)]:
        put_job(aws, settings, job, status)
    keep = {
        "small under": launch(aws, 60 + 10 - 1, pool="small"),
        "large under": launch(aws, 180 + 10 - 1, pool="large"),
        "small exactly": launch(aws, 60 + 10 - 0.5, pool="small"),
        "missing pool under default": launch(aws, 360 + 10 - 1, pool="gone-pool"),
        "protected": launch(aws, 1000, pool="small", protect=True),
        "running job": launch(aws, 1000, pool="small", job_id="j-run"),
        "record without status": launch(aws, 1000, pool="small", job_id="j-nostatus"),
        "empty job tag": launch(aws, 1000, pool="small", job_id=""),
        "unmanaged": launch(aws, 1000, pool="small", managed=False),
    }
    terminate = {
        "small over": launch(aws, 60 + 10 + 1, pool="small"),
        "large over": launch(aws, 180 + 10 + 1, pool="large"),
        "missing pool over default": launch(aws, 360 + 10 + 1, pool="gone-pool"),
        "untagged pool over default": launch(aws, 360 + 10 + 1),
        "finished job": launch(aws, 1000, pool="large", job_id="j-done"),
        "job not in table": launch(aws, 1000, pool="large", job_id="j-unknown"),
    }
    result = run_sweep(aws, settings, max_fraction=1.0)
    assert result.success
    plan = result.output_for_node("plan_orphaned_instances")
    assert {a.resource for a in plan.actions} == set(terminate.values())
    kept = {k.resource: k for k in plan.kept}
    assert "no status" in kept[keep["record without status"]].reason
    assert "empty" in kept[keep["empty job tag"]].reason
    # Every overdue candidate is in the plan, spared ones with their category.
    assert kept[keep["protected"]].outcome == "protected"
    assert kept[keep["running job"]].outcome == "job running"
    assert kept[keep["record without status"]].outcome == kept[keep["empty job tag"]].outcome == "uncertain"
    assert keep["small under"] not in kept  # not overdue: not a candidate
    assert plan.found == len(keep) + len(terminate) - 1  # the unmanaged instance is not found
    after = states(aws, [*keep.values(), *terminate.values()])
    assert {after[i] for i in terminate.values()} <= {"shutting-down", "terminated"}
    assert all(after[i] == "running" for i in keep.values()), {k: after[i] for k, i in keep.items()}
    reasons = {a.resource: a.reason for a in plan.actions}
    assert "pool gone-pool not in pools table" in reasons[terminate["missing pool over default"]]
    assert "job j-done is completed" in reasons[terminate["finished job"]]
    assert "not in the jobs table" in reasons[terminate["job not in table"]]
    pools = {a.resource: a.pool for a in plan.actions}
    assert pools[terminate["small over"]] == "small"
    metrics = aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace, MetricName="OrphanedInstancesTerminated")
    dimensions = {d["Value"] for m in metrics["Metrics"] for d in m.get("Dimensions", [])}
    assert {"small", "large", "gone-pool"} <= dimensions


def test_dry_run_changes_nothing_and_reports_the_same_plan(aws, settings):
    put_pool(aws, settings, "small", 60)
    orphans = [launch(aws, 200, pool="small") for _ in range(2)]
    launch(aws, 5, pool="small", count=8)
    dry = run_sweep(aws, settings, dry_run=True)
    assert dry.success
    assert set(states(aws, orphans).values()) == {"running"}
    real = run_sweep(aws, settings)
    assert real.success
    table = step_metadata(dry, "plan_orphaned_instances").event_specific_data.metadata["plan"].value
    assert plan_rows(table) == plan_rows(
        step_metadata(real, "plan_orphaned_instances").event_specific_data.metadata["plan"].value)
    assert set(orphans) <= set(column(table, "resource"))
    assert step_metadata(dry, oi.ACT_OP).event_specific_data.metadata["dry_run"].value is True
    assert set(states(aws, orphans).values()) <= {"shutting-down", "terminated"}


def test_blast_radius_blocks_and_a_raised_limit_acts(aws, settings):
    orphans = launch(aws, 400, count=12)
    launch(aws, 5, count=18)
    blocked = run_sweep(aws, settings)  # 12 of 30 = 40 % > 20 %
    assert not blocked.success
    text = failure_text(blocked, oi.ACT_OP)
    assert "12 of 30" in text and "max_fraction" in text
    assert set(states(aws, orphans).values()) == {"running"}
    # The blocked run still records its plan for the operator to review.
    table = step_metadata(blocked, "plan_orphaned_instances").event_specific_data.metadata["plan"].value
    assert set(orphans) <= set(column(table, "resource"))
    raised = run_sweep(aws, settings, max_fraction=0.5)
    assert raised.success
    assert set(states(aws, orphans).values()) <= {"shutting-down", "terminated"}


def test_recheck_skips_targets_that_changed_after_planning(aws, settings):
    ids = launch(aws, 400, count=5)
    plan = oi.find_and_plan(aws, settings)
    assert {a.resource for a in plan.actions} == set(ids)
    aws.ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "runs-fleet:protect", "Value": "true"}])
    aws.ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "runs-fleet:job-id", "Value": "j-new"}])
    aws.ec2.stop_instances(InstanceIds=[ids[2]])
    result = oi.terminate(aws, settings, plan)
    skipped = {a.resource: why for a, why in result.skipped}
    assert "protected" in skipped[ids[0]]
    assert "job-id tag changed" in skipped[ids[1]]
    assert "now stopp" in skipped[ids[2]]
    assert {a.resource for a in result.done} == set(ids[3:])
    after = states(aws, ids)
    assert after[ids[0]] == after[ids[1]] == "running"


def test_jobs_table_failure_keeps_every_candidate(aws, settings):
    put_job(aws, settings, "j-done", "completed")
    tagged = launch(aws, 400, job_id="j-done")
    untagged = launch(aws, 400)
    remove, _ = inject("dynamodb", "BatchGetItem", fail_calls=100)
    try:
        plan = oi.find_and_plan(load_aws_clients(), settings)
    finally:
        remove()
    assert plan.actions == []
    assert {k.resource for k in plan.kept} == {tagged, untagged}
    assert all("jobs table lookup failed" in k.reason and k.outcome == "uncertain" for k in plan.kept)


def test_rerun_after_partial_failure_converges(aws, settings):
    ids = launch(aws, 400, count=3)
    launch(aws, 5, count=12)
    remove, calls = inject("ec2", "TerminateInstances", fail_calls=1)
    try:
        failed = run_sweep(load_aws_clients(), settings)  # fresh clients carry the injected fault
    finally:
        remove()
    assert calls["n"] >= 1
    assert not failed.success and "3 action(s) failed" in failure_text(failed, oi.ACT_OP)
    assert set(states(aws, ids).values()) == {"running"}
    again = run_sweep(load_aws_clients(), settings)
    assert again.success
    assert set(states(aws, ids).values()) <= {"shutting-down", "terminated"}
    assert oi.find_and_plan(aws, settings).actions == []  # converged: nothing left to do



FLEET = st.lists(
    st.tuples(
        st.sampled_from(["idle", "busy", "protected", "finished"]),
        st.sampled_from([None, "small", "large", "missing"]),
        st.integers(min_value=0, max_value=600),
    ),
    min_size=1, max_size=8,
)


@hsettings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=FLEET)
def test_protected_and_busy_instances_are_never_touched(moto_url, fleet):
    aws, settings = redeployed(moto_url)
    put_pool(aws, settings, "small", 30)
    put_pool(aws, settings, "large", 120)
    put_job(aws, settings, "j-run", "running")
    put_job(aws, settings, "j-done", "failed")
    untouchable = []
    for n, (kind, pool, age) in enumerate(fleet):
        job = {"busy": "j-run", "finished": "j-done"}.get(kind)
        instance = launch(aws, age, pool=pool, job_id=job, protect=kind == "protected")
        if kind in ("busy", "protected"):
            untouchable.append(instance)
    plan = oi.find_and_plan(aws, settings)
    assert not {a.resource for a in plan.actions} & set(untouchable)
    outcome = oi.terminate(aws, settings, plan)
    assert not outcome.failed
    if untouchable:
        assert set(states(aws, untouchable).values()) == {"running"}
