"""The fleet ledger on moto: every leak and live shape classed exactly; each invariant red until its sweep runs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from definitions import defs
from pipelines.ledger.assets import CHECK_LEAKS, CHECK_QUEUES, CHECK_SSM, CHECK_STUCK, fleet_ledger
from pipelines.sweeps import orphaned_instances, orphaned_queues, stale_ssm, stuck_jobs
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet

SPEC = FleetSpec(
    pools=(PoolSpec("linux-small", "t3.medium", 30, 60), PoolSpec("gpu", "g5.xlarge", 200, 120, hourly_price_usd=0.95)),
    busy=3, idle=2, stopped=2, orphaned=4, protected_orphans=1, long_busy=2, ecs_running=2, ecs_stopped=2,
    dead_runner_parameters=3, fresh_dead_parameters=2, live_queue_sets=2, dead_queue_sets=2,
    queue_messages_every=1, finished_jobs=6, job_days=3, stuck_jobs=2,
)


@pytest.fixture()
def seeded(aws, settings):
    return seed_fleet(aws, settings, SPEC)


def run_ledger(aws, settings, instance, config=None):
    result = materialize([fleet_ledger], resources={"aws": aws, "settings": settings}, instance=instance,
                         run_config={"ops": {"fleet_ledger": {"config": config or {}}}})
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return result.asset_value("fleet_ledger"), checks, result


def sweep(aws, settings, instance, job, act_op):
    result = defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": {act_op: {"config": {"dry_run": False, "confirm_after_minutes": 0}}}},
        resources={"aws": aws, "settings": settings}, instance=instance)
    assert result.success, job


def test_every_shape_is_classed_exactly(aws, settings, seeded):
    frame, checks, result = run_ledger(aws, settings, DagsterInstance.ephemeral())
    cls = dict(zip(frame["runner_id"], frame["class"]))
    pieces = dict(zip(frame["runner_id"], frame["leaked_pieces"]))
    live = (seeded.busy + seeded.idle + seeded.stopped + seeded.protected_orphans + seeded.long_busy
            + seeded.ecs_running + seeded.fresh_dead_parameters)
    assert {r: cls[r] for r in live} == {r: "live" for r in live}
    assert {r: (cls[r], pieces[r]) for r in seeded.orphaned} == {r: ("leaked", "instance") for r in seeded.orphaned}
    gone_params = seeded.dead_parameters  # unknown runners and stopped ECS tasks
    assert {r: (cls[r], pieces[r]) for r in gone_params} == {r: ("leaked", "parameter") for r in gone_params}
    queue_sets = {r: ("leaked", "queue,queue,queue,tracking_record") for r in seeded.dead_queue_runners}
    assert {r: (cls[r], pieces[r]) for r in seeded.dead_queue_runners} == queue_sets
    stuck_runners = [r for r, j in seeded.job_of_runner.items() if j in seeded.stuck_jobs]
    assert {r: cls[r] for r in stuck_runners} == {r: "stuck" for r in stuck_runners}
    named = set(live) | set(seeded.orphaned) | set(gone_params) | set(seeded.dead_queue_runners) | set(stuck_runners)
    others = frame[~frame["runner_id"].isin(named)]
    assert set(others["class"]) == {"finished_clean"}  # the finished history's runners
    assert len(others) == SPEC.finished_jobs

    metadata = result.asset_materializations_for_node("fleet_ledger")[0].metadata
    assert metadata["leaked_instances"].value == len(seeded.orphaned)
    assert metadata["leaked_parameters"].value == len(gone_params)
    assert metadata["leaked_queues"].value == 3 * len(seeded.dead_queue_runners)
    assert metadata["stuck_jobs"].value == len(stuck_runners)
    assert metadata["leak_cost_usd"].value > 0
    assert {c.name for c in metadata["leak_cost"].schema.columns} >= {"pool", "orphan_hours", "cost_usd"}
    oldest = metadata["oldest_leaks"].records
    assert oldest and all(r.data["messages_held"] == "3" for r in oldest if r.data["resource"].startswith(
        f"{settings.runner_queue_prefix}output-"))
    # Pages only, plus one GetQueueAttributes per leaked queue.
    calls = metadata["api_calls_by_operation"].value
    assert calls["sqs:GetQueueAttributes"] == 3 * len(seeded.dead_queue_runners)
    assert calls["ecs:DescribeTasks"] == 1 and calls["ec2:DescribeInstances"] == 1

    published = aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace, MetricName="LeakedResources")
    dims = {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in published["Metrics"]}
    assert (("Kind", "instance"), ("Pool", "linux-small")) in dims


def test_each_invariant_is_red_until_its_sweep_runs(aws, settings):
    # No running ECS task: moto advances a Fargate task's lifecycle on every DescribeTasks (RUNNING → … →
    # STOPPED over a few reads), so after a few ledgers and sweeps a "running" task would be stopped by moto.
    seeded = seed_fleet(aws, settings, replace(SPEC, ecs_running=0))
    instance = DagsterInstance.ephemeral()

    def overdue_kinds():
        _, checks, _ = run_ledger(aws, settings, instance)
        ids = checks[CHECK_LEAKS].metadata["overdue_ids"].value
        return checks, ids

    checks, ids = overdue_kinds()
    assert not checks[CHECK_LEAKS].passed and checks[CHECK_LEAKS].severity == AssetCheckSeverity.ERROR
    assert set(seeded.dead_parameters) <= {i.split("/")[-2] for i in ids if i.startswith(settings.ssm_prefix)}
    assert not checks[CHECK_STUCK].passed
    assert set(checks[CHECK_STUCK].metadata["overdue_job_ids"].value) == set(seeded.stuck_jobs)
    overdue_orphans = [r for r in seeded.orphaned if r in ids]
    assert overdue_orphans  # launched 5 to 240 min past the limit: most are past the interval too

    sweep(aws, settings, instance, "orphaned_instances_sweep", orphaned_instances.ACT_OP)
    checks, ids = overdue_kinds()
    assert not [r for r in seeded.orphaned if r in ids] and not checks[CHECK_LEAKS].passed

    sweep(aws, settings, instance, "stale_ssm_sweep", stale_ssm.ACT_OP)
    checks, ids = overdue_kinds()
    assert not [i for i in ids if i.startswith(settings.ssm_prefix)] and not checks[CHECK_LEAKS].passed

    sweep(aws, settings, instance, "orphaned_queues_sweep", orphaned_queues.ACT_OP)
    checks, ids = overdue_kinds()
    assert checks[CHECK_LEAKS].passed, checks[CHECK_LEAKS].description

    assert not checks[CHECK_STUCK].passed
    sweep(aws, settings, instance, "stuck_jobs_sweep", stuck_jobs.ACT_OP)
    frame, checks, _ = run_ledger(aws, settings, instance)
    assert checks[CHECK_STUCK].passed, checks[CHECK_STUCK].description
    assert set(frame["class"]) == {"live", "finished_clean"}  # every sweep ran: nothing leaked or stuck is left


def test_quota_headroom_reads_the_limits_from_config(aws, settings, seeded):
    instance = DagsterInstance.ephemeral()
    _, checks, result = run_ledger(aws, settings, instance)
    assert checks[CHECK_SSM].passed and checks[CHECK_QUEUES].passed
    metadata = result.asset_materializations_for_node("fleet_ledger")[0].metadata
    params, queues = metadata["ssm_parameters_standard"].value, metadata["account_queues"].value
    assert params >= len(seeded.dead_parameters) and queues >= 3 * (SPEC.live_queue_sets + SPEC.dead_queue_sets)
    _, checks, _ = run_ledger(aws, settings, instance, {"ssm_standard_limit": params, "account_queue_limit": queues})
    for name in (CHECK_SSM, CHECK_QUEUES):
        assert not checks[name].passed and checks[name].severity == AssetCheckSeverity.ERROR
        assert checks[name].metadata["points"].value == 2  # the earlier materialization is the history
