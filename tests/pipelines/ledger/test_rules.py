"""The ledger's classes and invariants, table-driven, without AWS."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from pipelines.ledger.rules import (
    FINISHED_CLEAN, INSTANCE, LEAKED, LIVE, PARAMETER, QUEUE, STUCK, TRACKING, Fleet, InstanceSeen, JobSeen,
    ParameterSeen, QueueSeen, TaskSeen, TrackingSeen, classify, overdue_leaks, overdue_stuck,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
R = "i-0abc"
T = "4f1c0a"


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def instance(state="running", launched_min=30, pool="small", **tags) -> InstanceSeen:
    all_tags = {"runs-fleet:managed": "true", "runs-fleet:pool": pool,
                **{k.replace("_", "-"): v for k, v in tags.items()}}
    return InstanceSeen(R, state, ago(launched_min), pool, "t3.micro",
                        {("runs-fleet:" + k if not k.startswith("runs-fleet") else k): v for k, v in all_tags.items()})


def fleet(**parts) -> Fleet:
    f = Fleet(max_runtimes={"small": Decimal(60), "broken": None})
    for key, value in parts.items():
        if key == "queues":
            f.queues.update(value)
        else:
            setattr(f, key, value)
    return f


def param(runner=R, age=180) -> dict:
    return {runner: ParameterSeen(f"/runs-fleet/runners/{runner}/config", runner, ago(age))}


def queues(runner=R, created_min=None) -> dict:
    return {runner: [QueueSeen(runner, k, f"http://q/runs-fleet-runner-{k}-{runner}",
                               ago(created_min) if created_min is not None else None, 3 if k == "output" else 0)
                     for k in ("input", "output", "dlq")]}


def tracking(runner=R, created_min=2000, idle_min=2000) -> dict:
    return {runner: TrackingSeen(runner, ago(created_min), ago(idle_min))}


def job(status="running", runner=R, started_min=120, job_id="8812", pool="small") -> JobSeen:
    return JobSeen(job_id, status, runner, pool, ago(started_min), None if status == "running" else ago(5))


CASES = [
    # id, fleet, class, leaked kinds
    ("busy instance", fleet(instances={R: instance(job_id="8812")}, parameters=param(), queues=queues(),
                            tracking=tracking(), jobs=[job()]), LIVE, ()),
    ("young idle instance", fleet(instances={R: instance()}, parameters=param()), LIVE, ()),
    ("stopped warm instance, old", fleet(instances={R: instance("stopped", 900)}), LIVE, ()),
    ("overdue, job still running", fleet(instances={R: instance(launched_min=900, job_id="8812")}, jobs=[job()]),
     LIVE, ()),
    ("overdue but protected", fleet(instances={R: instance(launched_min=900, protect="")}), LIVE, ()),
    ("overdue, pool limit unusable", fleet(instances={R: instance(launched_min=900, pool="broken")}), LIVE, ()),
    ("orphaned: overdue, job finished", fleet(instances={R: instance(launched_min=71, job_id="8812")},
                                             parameters=param(), jobs=[job("completed")]), LEAKED, (INSTANCE,)),
    ("at the limit exactly is not overdue", fleet(instances={R: instance(launched_min=70)}), LIVE, ()),
    ("orphaned, pool not in table: default 360", fleet(instances={R: instance(launched_min=371, pool="x")}),
     LEAKED, (INSTANCE,)),
    ("pending instance", fleet(instances={R: instance("pending", 1)}), LIVE, ()),
    ("terminated, everything cleaned", fleet(instances={R: instance("terminated", 90)}, jobs=[job("completed")]),
     FINISHED_CLEAN, ()),
    ("unknown runner, finished job only", fleet(jobs=[job("failed")]), FINISHED_CLEAN, ()),
    ("terminated, parameter left", fleet(instances={R: instance("terminated")}, parameters=param()),
     LEAKED, (PARAMETER,)),
    ("unknown runner, queues and tracking left", fleet(queues=queues(created_min=3000), tracking=tracking()),
     LEAKED, (QUEUE, QUEUE, QUEUE, TRACKING)),
    ("unknown runner, tracking record only", fleet(tracking=tracking()), LEAKED, (TRACKING,)),
    ("starting: fresh parameter, runner not visible", fleet(parameters=param(age=10)), LIVE, ()),
    ("unknown runner, old parameter", fleet(parameters=param(age=61)), LEAKED, (PARAMETER,)),
    ("shutting-down with a running job: stuck", fleet(instances={R: instance("shutting-down")}, jobs=[job()]),
     STUCK, ()),
    ("unknown runner, running job, parameter: stuck with pieces", fleet(parameters=param(), jobs=[job()]),
     STUCK, (PARAMETER,)),
    ("running ECS task", fleet(tasks={T: TaskSeen(T, "RUNNING", ago(5))}, parameters=param(T),
                               jobs=[job(runner=T)]), LIVE, ()),
    ("stopped ECS task, parameter left", fleet(tasks={T: TaskSeen(T, "STOPPED", ago(90), ago(80))},
                                               parameters=param(T)), LEAKED, (PARAMETER,)),
    ("stopped ECS task, job still running", fleet(tasks={T: TaskSeen(T, "STOPPED")}, jobs=[job(runner=T)]),
     STUCK, ()),
]


@pytest.mark.parametrize("world,cls,kinds", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_runner_shape_gets_its_class(world, cls, kinds):
    (row,) = classify(world, NOW)
    assert row.cls == cls, row.why
    assert tuple(p.kind for p in row.leaked) == kinds


def test_a_running_job_without_instance_id_is_stuck_and_unjudged():
    rows = classify(fleet(jobs=[job(runner=None)]), NOW)
    assert [(r.cls, r.running_jobs) for r in rows] == [(STUCK, ("8812",))]
    assert overdue_stuck(rows, NOW) == ([], ["8812"])


def test_the_orphaned_instances_pieces_are_held_not_leaked():
    (row,) = classify(fleet(instances={R: instance(launched_min=900)}, parameters=param(), queues=queues()), NOW)
    assert row.cls == LEAKED and [p.kind for p in row.leaked] == [INSTANCE]
    assert row.held[:2] == (INSTANCE, PARAMETER)


# --- the invariants at their boundaries --------------------------------------------------------

LEAK_BOUNDARIES = [
    # (world, overdue?)  instance: overdue at launch + 60 + 10; fails 15 min later
    (fleet(instances={R: instance(launched_min=60 + 10 + 15)}), False),
    (fleet(instances={R: instance(launched_min=60 + 10 + 15.1)}), True),
    # parameter: 60 + 60 min since LastModifiedDate
    (fleet(parameters=param(age=120)), False),
    (fleet(parameters=param(age=120.1)), True),
    # queue: 24 h + 6 h since created; tracking: since last activity
    (fleet(queues=queues(created_min=30 * 60), tracking=tracking(idle_min=60)), False),
    (fleet(queues=queues(created_min=30 * 60 + 1), tracking=tracking(idle_min=60)), True),
    (fleet(tracking=tracking(idle_min=30 * 60 + 1)), True),
]


@pytest.mark.parametrize("world,fails", LEAK_BOUNDARIES)
def test_a_leak_is_overdue_past_its_sweeps_threshold_plus_one_interval(world, fails):
    overdue, unknown = overdue_leaks(classify(world, NOW), NOW)
    assert bool(overdue) == fails and not unknown


def test_a_queue_of_unknown_age_is_reported_not_judged():
    overdue, unknown = overdue_leaks(classify(fleet(queues=queues()), NOW), NOW)
    assert not overdue and [p.kind for p in unknown] == [QUEUE] * 3


@pytest.mark.parametrize("started,fails", [(45, False), (45.1, True)])
def test_a_stuck_job_is_overdue_past_grace_plus_one_interval(started, fails):
    rows = classify(fleet(jobs=[job(started_min=started)]), NOW)
    overdue, _ = overdue_stuck(rows, NOW)
    assert [o.resource for o in overdue] == (["8812"] if fails else [])
