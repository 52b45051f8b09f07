"""Two observations and the anomaly gate: pure rules, then the real sweep jobs on moto with a persistent instance.

Observation times come from the plan's clock (``pipelines.sweeps.plans.utcnow``), which the
tests move, so "15 minutes later" is exact without waiting.
"""

from __future__ import annotations

import importlib
from datetime import datetime, timedelta, timezone

import pytest
from dagster import AssetKey, DagsterInstance
from hypothesis import given, settings as hsettings, strategies as st

from pipelines.common.contract import iso
from pipelines.sweeps import orphaned_instances as oi
from pipelines.sweeps.observations import ANOMALY_FLOOR, PlanRecord, anomaly, carry_marks, confirmed, slack
from tests.builders import launch
from tests.metadata import column

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def record(minutes_ago, planned, pools=None, marks=None):
    return PlanRecord(T0 - timedelta(minutes=minutes_ago), planned, pools or {}, marks or {})


# --- pure rules -------------------------------------------------------------------------------

def test_marks_carry_only_through_an_unbroken_run_of_plans():
    previous = record(15, 2, marks={"a": T0 - timedelta(minutes=30), "b": T0 - timedelta(minutes=15)})
    marks = carry_marks(["a", "c"], previous, T0)
    assert marks == {"a": T0 - timedelta(minutes=30), "c": T0}  # b dropped out; c is new
    assert carry_marks(["a"], None, T0) == {"a": T0}  # no history: a first sighting


@pytest.mark.parametrize(("seen_minutes_ago", "window", "ready"), [
    (15, 15, True), (14, 15, True), (13.99, 15, False),  # a schedule's runs start seconds off their ticks
    (0, 0, True), (0, 15, False), (360, 360, True), (359, 360, True), (358.9, 360, False),
    (5, 5, True), (4.5, 5, True), (4.49, 5, False), (1, 1, True), (0.89, 1, False),
])
def test_confirmation_window_boundary(seen_minutes_ago, window, ready):
    ok, waiting = confirmed({"t": T0 - timedelta(minutes=seen_minutes_ago)}, T0, window)
    assert (ok == {"t"}) is ready and (waiting == {"t"}) is (not ready)


def test_anomaly_gate():
    usual = [record(15 * n, 2, {"p": 2}) for n in range(1, 6)]
    assert anomaly("k", 20, {"p": 20}, usual, 3.0).startswith("k: plan has 20 targets")  # 10x the median
    assert "2, 2, 2, 2, 2" in anomaly("k", 20, {"p": 20}, usual, 3.0)  # names the history
    assert anomaly("k", 20, {"p": 20}, usual, 10.0) is None  # raised for one run: approved
    quiet = [record(15 * n, 0) for n in range(1, 6)]
    assert anomaly("k", 4, {"p": 4}, quiet, 3.0) is None  # 0 -> 4 is not an anomaly
    assert anomaly("k", ANOMALY_FLOOR, {"p": ANOMALY_FLOOR}, quiet, 3.0) is None
    assert anomaly("k", ANOMALY_FLOOR + 1, {"p": ANOMALY_FLOOR + 1}, quiet, 3.0) is not None
    assert anomaly("k", 50, {"p": 50}, quiet[:2], 3.0) is None  # too little history to judge
    busy = [record(15 * n, 30, {"big": 30}) for n in range(1, 6)]
    crowded = anomaly("k", 30, {"big": 15, "gpu": 15}, busy, 3.0)
    assert crowded and "pool gpu" in crowded and "usually quiet" in crowded  # same size, a quiet pool
    assert anomaly("k", 30, {"big": 15, "gpu": 15}, busy, 10.0) is None


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=40), st.sets(st.sampled_from("abcdef"))),
                min_size=1, max_size=12),
       st.integers(min_value=0, max_value=60))
def test_no_target_is_confirmed_without_two_observations_the_window_apart(steps, window):
    """Across random sequences of plans, a confirmed target was in every plan for at least the window."""
    now, previous, seen = T0, None, []
    for gap, targets in steps:
        now += timedelta(minutes=gap)
        marks = carry_marks(targets, previous, now)
        ready, _ = confirmed(marks, now, window)
        seen.append((now, set(targets)))
        for target in ready:
            # walk back through the unbroken run of plans holding it
            held_since = now
            for when, held in reversed(seen):
                if target not in held:
                    break
                held_since = when
            assert now - held_since >= timedelta(minutes=window) - slack(window)
            assert window == 0 or held_since < now  # two observations: an earlier plan held it too
        previous = PlanRecord(now, len(targets), {}, marks)


# --- the real jobs on moto -------------------------------------------------------------------

@pytest.fixture()
def instance():
    with DagsterInstance.ephemeral() as shared:  # one storage across runs, like a deployment's
        yield shared


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """The plans' clock, set by each sweep() call to the moment it observes."""
    from pipelines.sweeps import plans

    now = {"at": T0}
    monkeypatch.setattr(plans, "utcnow", lambda: now["at"])
    return now



def sweep(instance, aws, settings, at, tags=None, **config):
    from pipelines.sweeps import plans

    plans.utcnow = lambda: at  # restored by the clock fixture's monkeypatch
    return oi.orphaned_instances_sweep.execute_in_process(
        run_config={"ops": {oi.ACT_OP: {"config": {"max_fraction": 1.0, **config}}}},
        resources={"aws": aws, "settings": settings}, instance=instance, raise_on_error=False, tags=tags,
    )


def act_metadata(result):
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == oi.ACT_OP]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def running(aws, ids):
    found = aws.ec2.describe_instances(InstanceIds=list(ids))
    return {i["InstanceId"] for r in found["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "running"}


def test_seen_once_is_marked_seen_again_after_the_window_is_acted_on(aws, settings, instance):
    orphan = launch(aws, 500)
    first = sweep(instance, aws, settings, T0)
    assert first.success and running(aws, [orphan]) == {orphan}
    assert act_metadata(first)["marked"] == 1 and orphan in column(act_metadata(first)["marked_targets"], "resource")
    early = sweep(instance, aws, settings, T0 + timedelta(minutes=13, seconds=59))
    assert early.success and running(aws, [orphan]) == {orphan}  # still in its window
    second = sweep(instance, aws, settings, T0 + timedelta(minutes=15))
    assert second.success and act_metadata(second)["acted"] == 1
    assert running(aws, [orphan]) == set()
    history = instance.fetch_materializations(AssetKey("orphaned_instances_sweep_plan"), limit=10).records
    assert len(history) == 3  # every plan is in the plan asset's history


def test_a_target_that_stops_qualifying_between_plans_is_never_touched_and_starts_over(aws, settings, instance):
    orphan = launch(aws, 500)
    sweep(instance, aws, settings, T0)
    aws.ec2.create_tags(Resources=[orphan], Tags=[{"Key": "runs-fleet:protect", "Value": "true"}])
    sweep(instance, aws, settings, T0 + timedelta(minutes=15))  # spared: out of the plan, mark dropped
    aws.ec2.delete_tags(Resources=[orphan], Tags=[{"Key": "runs-fleet:protect"}])
    again = sweep(instance, aws, settings, T0 + timedelta(minutes=30))
    assert act_metadata(again)["marked"] == 1 and running(aws, [orphan]) == {orphan}  # a first sighting again
    sweep(instance, aws, settings, T0 + timedelta(minutes=45))
    assert running(aws, [orphan]) == set()


def test_marks_survive_a_code_location_restart_and_lost_marks_only_delay(aws, settings, instance):
    orphan = launch(aws, 500)
    sweep(instance, aws, settings, T0)
    importlib.reload(importlib.import_module("definitions"))  # the code location loads anew
    with DagsterInstance.ephemeral() as wiped:  # marks lost
        lost = sweep(wiped, aws, settings, T0 + timedelta(minutes=15))
        assert lost.success and act_metadata(lost)["marked"] == 1 and running(aws, [orphan]) == {orphan}
    kept = sweep(instance, aws, settings, T0 + timedelta(minutes=15))
    assert kept.success and running(aws, [orphan]) == set()


def test_the_anomaly_gate_blocks_a_sudden_plan_and_a_raised_factor_approves_it(aws, settings, instance):
    for minutes in (0, 15, 30):  # the usual: 2 orphans a sweep
        launch(aws, 500, count=2)
        sweep(instance, aws, settings, T0 + timedelta(minutes=minutes), confirm_after_minutes=0)
    surge = launch(aws, 500, count=20)
    blocked = sweep(instance, aws, settings, T0 + timedelta(minutes=45), confirm_after_minutes=0)
    assert not blocked.success and running(aws, surge) == set(surge)
    (failure,) = [e for e in blocked.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.event_specific_data.user_failure_data.description
    assert "anomaly_factor=3" in text and "2, 2, 2" in text
    approved = sweep(instance, aws, settings, T0 + timedelta(minutes=46), confirm_after_minutes=0, anomaly_factor=20)
    assert approved.success and running(aws, surge) == set()


def test_the_housekeeping_request_path_keeps_both_protections(aws, settings, instance):
    from definitions import REQUESTS

    request = {r.task_type: r for r in REQUESTS}["orphaned_instances"]
    orphan = launch(aws, 500)
    config = request.build_run_config({"max_fraction": 1.0})
    result = oi.orphaned_instances_sweep.execute_in_process(
        run_config=config, resources={"aws": aws, "settings": settings}, instance=instance)
    assert act_metadata(result)["marked"] == 1 and running(aws, [orphan]) == {orphan}
    assert request.build_run_config({"confirm_after_minutes": 0, "anomaly_factor": 10})["ops"][oi.ACT_OP]["config"] \
        == {"confirm_after_minutes": 0, "anomaly_factor": 10.0}


def test_a_run_tagged_with_an_old_schedule_time_cannot_confirm_a_first_sighting(aws, settings, instance):
    orphan = launch(aws, 500)
    old_tick = {"dagster/scheduled_execution_time": iso(T0 - timedelta(days=1)), "dagster/schedule_name": "x"}
    first = sweep(instance, aws, settings, T0, tags=old_tick)  # a forged "scheduled" time a day back
    second = sweep(instance, aws, settings, T0 + timedelta(minutes=1))  # the next, ordinary run
    assert first.success and second.success
    assert act_metadata(second)["marked"] == 1 and running(aws, [orphan]) == {orphan}


def test_plan_and_actions_assets_show_each_run_with_lineage(aws, settings, instance):
    from definitions import defs

    graph = defs.get_repository_def().asset_graph
    actions = AssetKey("orphaned_instances_sweep_actions")
    assert AssetKey("orphaned_instances_sweep_plan") in graph.get(actions).parent_keys  # plan -> action
    orphan = launch(aws, 500)
    sweep(instance, aws, settings, T0, dry_run=True)  # a dry run plans but does nothing
    assert not instance.fetch_materializations(actions, limit=5).records
    sweep(instance, aws, settings, T0 + timedelta(minutes=15))
    (did,) = instance.fetch_materializations(actions, limit=5).records
    metadata = did.asset_materialization.metadata
    assert metadata["acted"].value == 1 and running(aws, [orphan]) == set()
