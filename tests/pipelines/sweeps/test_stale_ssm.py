"""stale_ssm_sweep against the moto server: age boundary, EC2 and ECS runners, dry run, re-check, convergence."""

from __future__ import annotations

from botocore.exceptions import ClientError

from pipelines.common.safety import PlannedAction
from pipelines.sweeps import stale_ssm
from pipelines.sweeps.plans import SweepPlan
from resources import add_client_observer, load_aws_clients
from resources.settings import FleetSettings
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet
from tests.builders import plan_rows, put_params


def remaining(aws, settings):
    names, _ = stale_ssm.find_runner_parameters(aws.ssm, settings.ssm_prefix)
    return {p.name for p in names}


def run_sweep(aws, settings, plan_config=None, **act_config):
    run_config = {"ops": {stale_ssm.ACT_OP: {"config": {"confirm_after_minutes": 0, **act_config}}}}
    if plan_config:
        run_config["ops"][stale_ssm.PLAN_OP] = {"config": plan_config}
    return stale_ssm.stale_ssm_sweep.execute_in_process(
        run_config=run_config, resources={"aws": aws, "settings": settings}, raise_on_error=False
    )


def plan_table(result):
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == stale_ssm.PLAN_OP]
    return event.event_specific_data.metadata["plan"].value


def test_age_boundary_ec2_and_ecs_runners(aws, settings):
    fleet = seed_fleet(aws, settings, FleetSpec(
        pools=(PoolSpec("p", "t3.micro", 30, 60),), busy=1, stopped=1, ecs_running=1, ecs_stopped=1,
        dead_runner_parameters=2, fresh_dead_parameters=1,
    ))
    terminated = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    aws.ec2.terminate_instances(InstanceIds=[terminated])
    (young,) = put_params(aws, settings, ["i-0young0000000001"], 59)
    (old,) = put_params(aws, settings, ["i-0old000000000001"], 61)
    (gone_ec2,) = put_params(aws, settings, [terminated], 120)
    (unknown_task,) = put_params(aws, settings, ["4f1c0000000000000000000000000001"], 120)
    aws.ssm.put_parameter(Name=f"{settings.ssm_prefix}shared/defaults", Type="String", Value="x")
    before = remaining(aws, settings)
    live = {settings.ssm_parameter_name(r) for r in fleet.busy + fleet.stopped + fleet.ecs_running}
    stale = {settings.ssm_parameter_name(r) for r in fleet.dead_parameters} | {old, gone_ec2, unknown_task}
    assert {settings.ssm_parameter_name(r) for r in fleet.ecs_stopped} <= stale

    dry = run_sweep(aws, FleetSettings(dry_run=True), max_fraction=1.0)  # RUNS_FLEET_DRY_RUN=true
    assert dry.success and remaining(aws, settings) == before

    result = run_sweep(aws, settings, max_fraction=1.0)
    assert result.success
    assert plan_rows(plan_table(result)) == plan_rows(plan_table(dry))
    plan = result.output_for_node(stale_ssm.PLAN_OP)
    assert {a.resource for a in plan.actions} == stale
    after = remaining(aws, settings)
    assert after == before - stale
    assert live <= after and young in after
    assert {settings.ssm_parameter_name(r) for r in fleet.fresh_dead_parameters} <= after

    # min_age_minutes is run config: at 30 min the 59-minute parameter of an unknown runner goes too.
    lowered = run_sweep(aws, settings, plan_config={"min_age_minutes": 30}, max_fraction=1.0)
    assert lowered.success and young not in remaining(aws, settings)


def test_recheck_skips_a_runner_that_is_live_now(aws, settings):
    live = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    names = put_params(aws, settings, [live, "i-0dead00000000001"], 120)
    # A plan made when the first runner looked gone (e.g. not yet visible to DescribeInstances).
    found, _ = stale_ssm.find_runner_parameters(aws.ssm, settings.ssm_prefix)
    plan = SweepPlan(kind="stale_ssm", found=2,
                     actions=[PlannedAction(n, "planned", "delete parameter") for n in names],
                     targets={p.name: p for p in found})
    result = stale_ssm.delete_stale(aws, settings, plan)
    assert [a.resource for a in result.done] == [names[1]]
    ((skipped, why),) = result.skipped
    assert skipped.resource == names[0] and "instance running" in why
    assert remaining(aws, settings) == {names[0]}


def test_rerun_after_partial_failure_converges(aws, settings):
    names = set(put_params(aws, settings, [f"i-0dead{n:012d}" for n in range(15)], 120))
    calls = {"n": 0}

    def fail_first(**_):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, "DeleteParameters")

    def observe(client):
        if client.meta.service_model.service_name == "ssm":
            client.meta.events.register("before-call.ssm.DeleteParameters", fail_first)

    remove = add_client_observer(observe)
    try:
        faulty = load_aws_clients()
        plan = stale_ssm.find_and_plan(faulty, settings)
        first = stale_ssm.delete_stale(faulty, settings, plan)
    finally:
        remove()
    assert len(first.failed) == 10 and len(first.done) == 5  # 10 a call: one call failed, one succeeded
    assert len(remaining(aws, settings)) == 10
    second = stale_ssm.delete_stale(aws, settings, stale_ssm.find_and_plan(aws, settings))
    assert len(second.done) == 10 and not second.failed
    assert remaining(aws, settings) == set()
    assert {a.resource for a in first.done + second.done} == names
    assert stale_ssm.find_and_plan(aws, settings).actions == []


def test_the_recheck_reads_each_batch_of_names_in_one_call_when_all_answer(aws, settings):
    """SSM returns a NextToken with a full page even when nothing is left: the re-check stops once every
    name of a batch has answered (found by the bench: one empty DescribeParameters per 50 names)."""
    from tests.builders import hooked_clients

    names = put_params(aws, settings, [f"i-0{n:016x}" for n in range(60)], 120)
    calls = []
    counted = hooked_clients("before-call.ssm.DescribeParameters", lambda **_: calls.append(1), services=("ssm",))
    found = stale_ssm.read_last_modified(counted.ssm, names)
    assert set(found) == set(names)
    # moto pages DescribeParameters by 10 whatever MaxResults asks (AWS: up to 50), so the 50 + 10 names take
    # 5 + 1 full pages; following each batch's last NextToken would add an empty call per batch (8 in all).
    assert len(calls) == 6
    # A name with no parameter keeps paging until SSM has nothing more: absence is read, never assumed.
    calls.clear()
    found = stale_ssm.read_last_modified(counted.ssm, names[:49] + [settings.ssm_parameter_name("i-0gone")])
    assert set(found) == set(names[:49]) and len(calls) >= 1
