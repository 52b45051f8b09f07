"""stuck_jobs_sweep against the moto server: the rule's boundaries, the safety rules, convergence."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from pipelines.common.aws import queue_url
from pipelines.sweeps import stuck_jobs as sj
from resources import add_client_observer, load_aws_clients
from sandbox.backdate import set_instance_states
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet
from definitions import REQUESTS
from sensors.housekeeping import parse_request

REGISTRY = {request.task_type: request for request in REQUESTS}
from tests.builders import get_job, launch, plan_rows, put_job
from tests.metadata import column

ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
UNKNOWN_EC2 = "i-0123456789abcdef0"
UNKNOWN_TASK = "0123456789abcdef0123456789abcdef"


def run_sweep(aws, settings, grace_minutes=None, **act_config):
    ops = {sj.ACT_OP: {"config": {"confirm_after_minutes": 0, **act_config}}}
    if grace_minutes is not None:
        ops[sj.PLAN_OP] = {"config": {"grace_minutes": grace_minutes}}
    return sj.stuck_jobs_sweep.execute_in_process(
        run_config={"ops": ops}, resources={"aws": aws, "settings": settings}, raise_on_error=False)


def step_metadata(result, step, kind="STEP_OUTPUT"):
    (event,) = [e for e in result.all_events if e.event_type_value == kind and e.step_key == step]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def failure_text(result, step):
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == step]
    data = event.event_specific_data
    return (data.user_failure_data.description if data.user_failure_data else "") + data.error.to_string()


def terminated(aws, age_minutes=200):
    instance = launch(aws, age_minutes, pool="p")
    aws.ec2.terminate_instances(InstanceIds=[instance])
    return instance


def transition_time(aws, instance_id) -> str:
    (reservation,) = aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    reason = reservation["Instances"][0]["StateTransitionReason"]
    stamp = re.search(r"\((\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) (?:UTC|GMT)\)", reason)
    return f"{stamp.group(1)}T{stamp.group(2)}Z"


def ecs_tasks(aws, settings):
    """One running and one stopped ECS task in the fleet's cluster: (running id, stopped id)."""
    fleet = seed_fleet(aws, settings, FleetSpec(pools=(PoolSpec("p", "t3.micro", 30, 60),), ecs_running=1,
                                                ecs_stopped=1))
    return fleet.ecs_running[0], fleet.ecs_stopped[0]


def near_now(text: str, seconds: int = 120) -> bool:
    when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return abs((datetime.now(timezone.utc) - when).total_seconds()) < seconds


def test_rule_boundaries_ec2_ecs_and_bad_records(aws, settings):
    ecs_running, ecs_stopped = ecs_tasks(aws, settings)
    shutting = launch(aws, 200, pool="p")
    set_instance_states([shutting], "shutting-down", aws.ec2.meta.region_name)
    stopped = launch(aws, 200, pool="p")
    aws.ec2.stop_instances(InstanceIds=[stopped])
    dead = terminated(aws)
    interrupt = {
        "just over the grace": put_job(aws, settings, "over", started_minutes_ago=31, instance_id=terminated(aws)),
        "EC2 terminated": put_job(aws, settings, "ec2-terminated", instance_id=dead, pool="large"),
        "EC2 shutting-down": put_job(aws, settings, "ec2-shutting", instance_id=shutting),
        "EC2 unknown": put_job(aws, settings, "ec2-unknown", instance_id=UNKNOWN_EC2),
        "ECS stopped": put_job(aws, settings, "ecs-stopped", instance_id=ecs_stopped, pool="ecs"),
        "ECS unknown": put_job(aws, settings, "ecs-unknown", instance_id=UNKNOWN_TASK),
    }
    kept = {  # candidates spared, with their category
        "EC2 running": (put_job(aws, settings, "ec2-running", instance_id=launch(aws, 200, pool="p")), "in use"),
        "EC2 stopped": (put_job(aws, settings, "ec2-stopped", instance_id=stopped), "uncertain"),
        "ECS running": (put_job(aws, settings, "ecs-running", instance_id=ecs_running), "in use"),
        "no instance_id": (put_job(aws, settings, "no-runner"), "uncertain"),
        "absurd started_at": (put_job(aws, settings, "absurd", started_at="1E+13", instance_id=dead), "uncertain"),
        "started_at before 2010": (put_job(aws, settings, "epoch", started_at="1970-01-01T00:00:00Z",
                                           instance_id=dead), "uncertain"),
        "no started_at": (put_job(aws, settings, "no-start", started_minutes_ago=None, instance_id=dead),
                          "uncertain"),
        "malformed runner id": (put_job(aws, settings, "odd-runner", instance_id="../x"), "uncertain"),
    }
    untouched = {  # not candidates
        "within the grace": put_job(aws, settings, "under", started_minutes_ago=29, instance_id=dead),
        "record without status": put_job(aws, settings, "no-status", status=None, instance_id=dead),
        "completed": put_job(aws, settings, "done", status="completed", instance_id=dead,
                             completed_at="2026-11-22T10:05:14Z"),
    }
    before = {item["job_id"]["S"]: get_job(aws, settings, item["job_id"]["S"])
              for item in [*untouched.values(), *(i for i, _ in kept.values())]}

    result = run_sweep(aws, settings, max_fraction=1.0)
    assert result.success
    plan = result.output_for_node(sj.PLAN_OP)
    wanted = {i["job_id"]["S"] for i in interrupt.values()}
    assert {a.resource for a in plan.actions} == wanted
    assert {k.resource: k.outcome for k in plan.kept} == {i["job_id"]["S"]: o for i, o in kept.values()}
    reasons = {k.resource: k.reason for k in plan.kept}
    assert "no instance_id" in reasons["no-runner"] and "not ISO 8601" in reasons["absurd"]
    assert "before 2010" in reasons["epoch"] and "hibernated" in reasons["ec2-stopped"]
    assert plan.found == len(interrupt) + len(kept) + 1 + 1  # + the grace one and the seeded ECS task's job
    for job_id in wanted:
        record = get_job(aws, settings, job_id)
        assert record["status"] == "interrupted" and record["interrupted_by"] == "stuck_jobs_sweep", record
        assert ISO.fullmatch(record["completed_at"]), record
    # completed_at: when AWS says the runner ended (EC2 StateTransitionReason), else now.
    assert get_job(aws, settings, "ec2-terminated")["completed_at"] == transition_time(aws, dead)
    assert near_now(get_job(aws, settings, "ec2-unknown")["completed_at"])
    for job_id, record in before.items():
        assert get_job(aws, settings, job_id) == record, job_id
    metadata = step_metadata(result, sj.ACT_OP)
    assert metadata["acted"] == len(wanted) and metadata["skipped_at_recheck"] == 0
    metrics = aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace, MetricName="StuckJobsInterrupted")
    assert {d["Value"] for m in metrics["Metrics"] for d in m.get("Dimensions", []) if d["Name"] == "Pool"} == {
        "p", "large", "ecs"}
    plan_md = step_metadata(result, sj.PLAN_OP)
    assert plan_md["planned"] == len(wanted) and plan_md["kept_in_use"] == 2


def test_grace_minutes_from_run_config(aws, settings):
    put_job(aws, settings, "j-45", started_minutes_ago=45, instance_id=UNKNOWN_EC2)
    put_job(aws, settings, "j-90", started_minutes_ago=90, instance_id=UNKNOWN_EC2)
    result = run_sweep(aws, settings, grace_minutes=60, max_fraction=1.0)
    assert result.success
    assert get_job(aws, settings, "j-45")["status"] == "running"
    assert get_job(aws, settings, "j-90")["status"] == "interrupted"


def test_dry_run_changes_nothing_and_reports_the_same_plan(aws, settings):
    for n in range(2):
        put_job(aws, settings, f"stuck-{n}", instance_id=UNKNOWN_EC2)
    for n in range(8):
        put_job(aws, settings, f"young-{n}", started_minutes_ago=5, instance_id=UNKNOWN_EC2)
    dry = run_sweep(aws, settings, dry_run=True)
    assert dry.success
    assert {get_job(aws, settings, f"stuck-{n}")["status"] for n in range(2)} == {"running"}
    assert step_metadata(dry, sj.ACT_OP)["dry_run"] is True
    real = run_sweep(aws, settings)
    assert real.success
    assert plan_rows(step_metadata(dry, sj.PLAN_OP)["plan"]) == plan_rows(step_metadata(real, sj.PLAN_OP)["plan"])
    assert {get_job(aws, settings, f"stuck-{n}")["status"] for n in range(2)} == {"interrupted"}


def test_deployment_dry_run_wins(aws, settings, monkeypatch):
    from resources import load_settings

    monkeypatch.setenv("RUNS_FLEET_DRY_RUN", "true")
    put_job(aws, settings, "stuck", instance_id=UNKNOWN_EC2)
    result = run_sweep(aws, load_settings(), dry_run=False)
    assert result.success and step_metadata(result, sj.ACT_OP)["dry_run"] is True
    assert get_job(aws, settings, "stuck")["status"] == "running"


def test_blast_radius_blocks_and_a_raised_limit_acts(aws, settings):
    live = launch(aws, 200, pool="p")
    for n in range(12):
        put_job(aws, settings, f"stuck-{n:02}", instance_id=UNKNOWN_EC2)
    for n in range(18):
        put_job(aws, settings, f"busy-{n:02}", instance_id=live)
    blocked = run_sweep(aws, settings)  # 12 of 30 running jobs = 40 % > 20 %
    assert not blocked.success
    text = failure_text(blocked, sj.ACT_OP)
    assert "12 of 30" in text and "max_fraction" in text
    assert {get_job(aws, settings, f"stuck-{n:02}")["status"] for n in range(12)} == {"running"}
    assert "stuck-00" in column(step_metadata(blocked, sj.PLAN_OP)["plan"], "resource")  # the plan is recorded for review
    too_many = run_sweep(aws, settings, max_fraction=0.5, max_actions=11)
    assert not too_many.success and "max_actions=11" in failure_text(too_many, sj.ACT_OP)
    raised = run_sweep(aws, settings, max_fraction=0.5)
    assert raised.success
    assert {get_job(aws, settings, f"stuck-{n:02}")["status"] for n in range(12)} == {"interrupted"}
    assert {get_job(aws, settings, f"busy-{n:02}")["status"] for n in range(18)} == {"running"}


def test_rerun_is_idempotent(aws, settings):
    put_job(aws, settings, "stuck", instance_id=UNKNOWN_EC2)
    first = run_sweep(aws, settings)
    assert first.success
    after_first = get_job(aws, settings, "stuck")
    second = run_sweep(aws, settings)
    assert second.success
    assert get_job(aws, settings, "stuck") == after_first
    assert result_plan_size(second) == 0 and step_metadata(second, sj.ACT_OP)["acted"] == 0


def result_plan_size(result) -> int:
    return len(result.output_for_node(sj.PLAN_OP).actions)


def test_the_scan_pages_to_the_end_and_reads_only_what_the_rule_needs(aws, settings):
    for n in range(7):
        put_job(aws, settings, f"r-{n}", instance_id=UNKNOWN_EC2, env="SECRET=x")
    for n in range(5):
        put_job(aws, settings, f"c-{n}", status="completed", instance_id=UNKNOWN_EC2)
    calls = []

    def observe(client):
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register("provide-client-params.dynamodb.Scan", lambda params, **_: calls.append(params))

    remove = add_client_observer(observe)
    try:
        jobs = sj.find_running_jobs(load_aws_clients().dynamodb, settings.jobs_table, page_size=2)
    finally:
        remove()
    assert sorted(j.job_id for j in jobs) == [f"r-{n}" for n in range(7)]
    assert len(calls) >= 6  # 12 items scanned, 2 a page: every page is read
    assert all("ProjectionExpression" in c and c["FilterExpression"] == "#status = :running" for c in calls)


def test_an_unreadable_jobs_table_acts_on_nothing(aws, settings):
    put_job(aws, settings, "stuck", instance_id=UNKNOWN_EC2)

    def deny(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "injected"}}, "Scan")

    def observe(client):
        if client.meta.service_model.service_name == "dynamodb":
            client.meta.events.register("before-call.dynamodb.Scan", deny)

    remove = add_client_observer(observe)
    try:
        result = run_sweep(load_aws_clients(), settings)
    finally:
        remove()
    assert not result.success
    assert "could not be scanned" in failure_text(result, sj.PLAN_OP)
    assert get_job(aws, settings, "stuck")["status"] == "running"


def test_housekeeping_request_becomes_the_run_config():
    task = REGISTRY["stuck_jobs"]
    assert task.job_name == "stuck_jobs_sweep"
    body = json.dumps({"task_type": "stuck_jobs", "timestamp": "2026-11-22T10:00:00Z",
                       "params": {"dry_run": True, "max_actions": 5, "max_fraction": 0.5, "grace_minutes": 45}})
    request = parse_request(body, REGISTRY)
    assert request.run_config == {"ops": {
        sj.ACT_OP: {"config": {"dry_run": True, "max_actions": 5, "max_fraction": 0.5}},
        sj.PLAN_OP: {"config": {"grace_minutes": 45}}}}
    assert sj.stuck_jobs_sweep.run_config_schema.config_type  # resolves
    from dagster import validate_run_config

    assert validate_run_config(sj.stuck_jobs_sweep, request.run_config)
    for bad in ({"grace_minutes": 0}, {"grace_minutes": "30"}, {"grace_minute": 30}, {"dry_run": "false"}):
        with pytest.raises(Exception, match="bad params"):
            parse_request(json.dumps({"task_type": "stuck_jobs", "params": bad}), REGISTRY)


def test_schedule_every_15_minutes_stopped_by_default():
    from dagster import DefaultScheduleStatus

    assert sj.stuck_jobs_schedule.cron_schedule == "*/15 * * * *"
    assert sj.stuck_jobs_schedule.default_status == DefaultScheduleStatus.STOPPED
    assert sj.stuck_jobs_schedule.job_name == "stuck_jobs_sweep"


def test_a_late_termination_message_records_the_real_status_over_the_sweeps(aws, settings):
    from pipelines.termination.jobs import process_terminations

    put_job(aws, settings, "late", started_minutes_ago=120, instance_id=UNKNOWN_EC2)
    assert run_sweep(aws, settings).success
    assert get_job(aws, settings, "late")["status"] == "interrupted"
    message = {"instance_id": UNKNOWN_EC2, "job_id": "late", "status": "completed", "exit_code": 0,
               "duration_seconds": 314, "started_at": get_job(aws, settings, "late")["started_at"],
               "completed_at": (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    aws.sqs.send_message(QueueUrl=queue_url(aws.sqs, settings.termination_queue), MessageBody=json.dumps(message),
                         MessageGroupId=UNKNOWN_EC2, MessageDeduplicationId=uuid.uuid4().hex)
    drained = process_terminations.execute_in_process(
        run_config={"ops": {"drain_termination_queue": {"config": {"wait_seconds": 0}}}},
        resources={"aws": aws, "settings": settings}, raise_on_error=False)
    assert drained.success
    record = get_job(aws, settings, "late")
    assert record["status"] == "completed", record
    assert record["exit_code"] == "0" and record["completed_at"] == message["completed_at"]


def test_completed_at_of_an_ecs_runner_is_its_stopped_at(aws, settings):
    """moto leaves stoppedAt out of DescribeTasks; AWS sets it. A hook adds it to the answer as AWS would."""
    _, stopped = ecs_tasks(aws, settings)
    put_job(aws, settings, "ecs-job", instance_id=stopped, pool="ecs")
    stopped_at = (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(microsecond=0)

    def add_stopped_at(parsed, **_):
        for task in parsed.get("tasks", []):
            if task.get("lastStatus") == "STOPPED":
                task["stoppedAt"] = stopped_at

    def observe(client):
        if client.meta.service_model.service_name == "ecs":
            client.meta.events.register("after-call.ecs.DescribeTasks", add_stopped_at)

    remove = add_client_observer(observe)
    try:
        result = run_sweep(load_aws_clients(), settings)
    finally:
        remove()
    assert result.success
    assert get_job(aws, settings, "ecs-job")["completed_at"] == stopped_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_record_text_cannot_forge_a_log_line(aws, settings, capsys):
    put_job(aws, settings, "j\nINJECTED fake line", instance_id=UNKNOWN_EC2)
    put_job(aws, settings, "odd-runner", instance_id="i-0\nINJECTED fake line")
    put_job(aws, settings, "odd-start", instance_id=UNKNOWN_EC2, started_at="2026-01-01\nINJECTED fake line")
    put_job(aws, settings, "stuck", instance_id=UNKNOWN_EC2)
    result = run_sweep(aws, settings)
    assert result.success
    plan = result.output_for_node(sj.PLAN_OP)
    assert [a.resource for a in plan.actions] == ["stuck"]
    assert {k.outcome for k in plan.kept} == {"uncertain"} and len(plan.kept) == 3
    assert get_job(aws, settings, "j\nINJECTED fake line")["status"] == "running"
    _, err = capsys.readouterr()
    assert "\nINJECTED" not in err and "INJECTED fake line" in err  # logged, quoted, on its own line
