"""Least privilege, proven on moto with IAM enforced (see docs/least-privilege.md).

1. Every job, sensor and asset of the code location runs, for real (destructive where it is
   destructive), as an IAM user that holds only the stack's housekeeping policy, and succeeds.
   Every AWS call each piece makes is recorded: each needs an action of the policy, and each
   action of the policy is needed by some piece.
2. For each action of the policy, a user holding the policy without that one action runs a
   piece that needs it; moto denies that call, and the piece fails or reports the denial.

moto checks actions, and resources only for SQS and S3 (iam_support explains), so the
principal holds ``moto_enforceable(policy)``: the template's exact action set, one statement
per action, with the template's own resources where moto can check them.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError
from dagster import (
    AssetKey, DagsterInstance, RunRequest, SensorResult, build_schedule_context, build_sensor_context, materialize,
)

from definitions import defs
from moto import settings as moto_settings
from pipelines.audit.pool_audit import pool_cost_report, pool_inventory
from pipelines.audit.queue_health import queue_health
from pipelines.common.aws import queue_url
from pipelines.sweeps import orphaned_instances, orphaned_queues, stale_ssm, stuck_jobs
from resources.aws import AwsClients
from resources.settings import FleetSettings
from sandbox.backdate import backdate_parameters
from sandbox.deploy import TEMPLATE_PATH
from sandbox.seed import FleetSpec, PoolSpec, SeededFleet, seed_fleet
from definitions import housekeeping_queue_sensor
from sensors.housekeeping import RUN_KEY_TAG
from definitions import termination_queue_sensor
from tests.iam_support import (
    CallRecorder, iam_action, iam_enforced, make_principal, moto_enforceable, policy_actions, policy_document,
)

# Small, but every piece has something to do: terminations (agent, ECS stop, malformed), orphans,
# stale parameters, dead queue sets holding messages, finished jobs on past days.
SPEC = FleetSpec(
    pools=(PoolSpec("linux-small", "t3.medium", 30, 60),),
    busy=2, idle=1, orphaned=2, ecs_running=1, ecs_stopped=1, dead_runner_parameters=2,
    live_queue_sets=2, dead_queue_sets=2, queue_messages_every=1, finished_jobs=12, job_days=3,
    termination_messages=2, ecs_stop_events=1, malformed_messages=1,
)

# Text that says a call was refused by IAM, as botocore words moto's (and AWS's) answer: the
# error code, the message, or (where botocore cannot parse moto's XML error body inside a JSON
# protocol) the bare HTTP status it then uses as the code, "(403)".
DENIED = re.compile(r"AccessDenied|not authorized to perform|\(403\)")

# Actions of the policy that a piece needs on real AWS although moto cannot show it (action -> why).
EXEMPT: dict[str, str] = {
    # pool_cost_report calls it (the full run records the call), but moto has no Price List API: it
    # answers 500 before checking IAM, granted or not, and the report falls back to prices.csv
    # (tests/pipelines/audit/test_pricing.py proves the fallback, and the answering path on a Stubber).
    "pricing:GetProducts": "moto does not implement the AWS Price List API, so cannot deny it",
}


# ---- running a piece ----------------------------------------------------------------------

@dataclass
class Outcome:
    """How a piece ended: did it succeed, and everything it reported (events, metadata, logs, result)."""

    success: bool
    text: str
    value: Any = None

    def reports_denied(self) -> bool:
        """The precise meaning of "the piece fails or reports the AccessDenied"."""
        return not self.success or DENIED.search(self.text) is not None


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _events_text(events: list[Any]) -> str:
    parts = []
    for event in events:
        parts.append(event.message or "")
        parts.append(repr(event.event_specific_data))
    return "\n".join(parts)


def run_job(name: str, aws: AwsClients, settings: FleetSettings, instance: DagsterInstance,
            run_config: dict[str, Any] | None = None, **kwargs: Any) -> Outcome:
    result = defs.resolve_job_def(name).execute_in_process(
        run_config=run_config or {}, resources={"aws": aws, "settings": settings}, instance=instance,
        raise_on_error=False, **kwargs,
    )
    return Outcome(result.success, _events_text(result.all_events), result)


def run_assets(assets: list[Any], aws: AwsClients, settings: FleetSettings, instance: DagsterInstance) -> Outcome:
    result = materialize(assets, resources={"aws": aws, "settings": settings}, instance=instance, raise_on_error=False)
    return Outcome(result.success, _events_text(result.all_events), result)


def tick(sensor: Any, aws: AwsClients, settings: FleetSettings, instance: DagsterInstance,
         cursor: str | None = None) -> Outcome:
    """One sensor evaluation; a sensor that raises has failed, whatever it returns has succeeded."""
    capture = _Capture()
    loggers = [logging.getLogger(), logging.getLogger("dagster")]
    for logger in loggers:
        logger.addHandler(capture)
    try:
        context = build_sensor_context(instance=instance, cursor=cursor, resources={"aws": aws, "settings": settings})
        result = sensor(context)
        success = True
    except Exception as error:  # noqa: BLE001 - a crash is the outcome being observed
        result, success = error, False
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
    text = "\n".join(capture.lines + [repr(result)])
    return Outcome(success, text, result)


@dataclass
class World:
    """What the pieces run against: admin clients (setup, checks), the seeded fleet, the day to archive."""

    admin: AwsClients
    settings: FleetSettings
    fleet: SeededFleet
    day: str
    instance: DagsterInstance = field(default_factory=DagsterInstance.ephemeral)
    stuck_jobs: list[str] = field(default_factory=list)  # job ids put stuck by _setup_stuck_job
    archived_job: str = ""  # a job id of the archived day, for the lookup (_setup_locate)


# Each piece: setup(world) runs as admin before enforcement; run(world, principal) runs as the principal.
def _no_setup(world: World) -> None:
    return None


def _drain(world: World, aws: AwsClients) -> Outcome:
    return run_job("process_terminations", aws, world.settings, world.instance,
                   {"ops": {"drain_termination_queue": {"config": {"wait_seconds": 0}}}})


def _dlq_url(world: World) -> str:
    return world.admin.sqs.get_queue_url(QueueName="runs-fleet-termination-dlq.fifo")["QueueUrl"]


def _setup_redrive(world: World) -> None:
    """One message in the termination DLQ, in a group of its own (an earlier run may still hold another)."""
    body = {"instance_id": world.fleet.idle[0], "job_id": "no-such-job", "status": "completed"}
    token = uuid.uuid4().hex
    world.admin.sqs.send_message(QueueUrl=_dlq_url(world), MessageBody=json.dumps(body),
                                 MessageGroupId=f"redrive-{token}", MessageDeduplicationId=token)


def _setup_stale_parameter(world: World) -> None:
    """One more old parameter of a runner that never existed, so every stale SSM run has something to delete."""
    name = world.settings.ssm_parameter_name(f"i-{uuid.uuid4().hex[:17]}")
    world.admin.ssm.put_parameter(Name=name, Value="{}", Type="String")
    backdate_parameters([name], datetime.now(timezone.utc) - timedelta(hours=3), world.admin.ssm.meta.region_name)


def _setup_stuck_job(world: World) -> None:
    """One more job stuck at running on a runner that never existed, so every stuck jobs run has one to interrupt."""
    job_id = f"stuck-{uuid.uuid4().hex[:12]}"
    started = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.admin.dynamodb.put_item(TableName=world.settings.jobs_table, Item={
        "job_id": {"S": job_id}, "status": {"S": "running"}, "pool": {"S": "linux-small"},
        "instance_id": {"S": f"i-{uuid.uuid4().hex[:17]}"}, "started_at": {"S": started}})
    world.stuck_jobs.append(job_id)


def _redrive(world: World, aws: AwsClients) -> Outcome:
    """A dry run (counts, then hands every message back: ChangeMessageVisibility), then the replay."""
    dry = run_job("redrive_termination_dlq", aws, world.settings, world.instance,
                  {"ops": {"replay_termination_dlq": {"config": {"dry_run": True}}}})
    real = run_job("redrive_termination_dlq", aws, world.settings, world.instance,
                   {"ops": {"replay_termination_dlq": {"config": {"dry_run": False}}}})
    return Outcome(dry.success and real.success, dry.text + "\n" + real.text, real.value)


def _setup_request(world: World) -> None:
    world.admin.sqs.send_message(
        QueueUrl=queue_url(world.admin.sqs, world.settings.housekeeping_queue),
        MessageBody=json.dumps({"task_type": "stale_ssm", "timestamp": "2026-11-22T10:00:00Z",
                                "params": {"dry_run": True}}),
    )


def _housekeeping(world: World, aws: AwsClients) -> Outcome:
    """A request is received, its run launched (as the daemon would), and the request deleted next tick."""
    first = tick(housekeeping_queue_sensor, aws, world.settings, world.instance)
    if not first.success or not isinstance(first.value, SensorResult) or not first.value.run_requests:
        return Outcome(False, first.text, first.value)
    (request,) = first.value.run_requests
    job = {j.name: j for j in housekeeping_queue_sensor.jobs}[request.job_name]
    launched = job.execute_in_process(
        run_config=request.run_config, instance=world.instance, resources={"aws": aws, "settings": world.settings},
        tags={**request.tags, RUN_KEY_TAG: request.run_key}, raise_on_error=False,
    )
    second = tick(housekeeping_queue_sensor, aws, world.settings, world.instance, first.value.cursor)
    return Outcome(first.success and launched.success and second.success,
                   "\n".join([first.text, _events_text(launched.all_events), second.text]), second.value)


def _sweep(job_name: str, act_op: str) -> Callable[[World, AwsClients], Outcome]:
    def run(world: World, aws: AwsClients) -> Outcome:
        return run_job(job_name, aws, world.settings, world.instance, {"ops": {act_op: {"config": {"dry_run": False, "confirm_after_minutes": 0}}}})

    return run


def _archive(world: World, aws: AwsClients) -> Outcome:
    return run_job("archive_old_jobs", aws, world.settings, world.instance,
                   {"ops": {"archive_job_records_for_day": {"config": {"dry_run": False}}}}, partition_key=world.day)


def _setup_restore(world: World) -> None:
    assert _archive(world, world.admin).success, "setup: archiving the day as admin failed"


def _restore(world: World, aws: AwsClients) -> Outcome:
    return run_job("restore_archived_jobs", aws, world.settings, world.instance,
                   {"ops": {"restore_job_records_for_day": {"config": {"dry_run": False}}}}, partition_key=world.day)


def _setup_locate(world: World) -> None:
    """The day archived (as admin, if no earlier piece did), and one of its job ids to look up."""
    manifest_key = f"jobs/completed_date={world.day}/_manifest.json"
    try:
        manifest = json.loads(world.admin.s3.get_object(Bucket=world.settings.archive_bucket, Key=manifest_key)["Body"].read())
    except ClientError:
        assert _archive(world, world.admin).success, "setup: archiving the day as admin failed"
        manifest = json.loads(world.admin.s3.get_object(Bucket=world.settings.archive_bucket, Key=manifest_key)["Body"].read())
    body = world.admin.s3.get_object(Bucket=world.settings.archive_bucket, Key=manifest["parts"][0]["key"])["Body"].read()
    world.archived_job = json.loads(gzip.decompress(body).decode().splitlines()[0])["job_id"]


def _setup_spot_instance(world: World) -> None:
    """One managed spot instance, so the cost report asks the spot price history for its type."""
    world.admin.ec2.run_instances(
        ImageId="ami-12c6146b", InstanceType="t3.medium", MinCount=1, MaxCount=1,
        InstanceMarketOptions={"MarketType": "spot"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "runs-fleet:managed", "Value": "true"}, {"Key": "runs-fleet:pool", "Value": "linux-small"}]}])


def _locate(world: World, aws: AwsClients) -> Outcome:
    return run_job("locate_archived_job", aws, world.settings, world.instance,
                   {"ops": {"find_job_in_archive": {"config": {"job_id": world.archived_job}}}})


@dataclass(frozen=True)
class Piece:
    name: str
    covers: tuple[str, ...]  # the jobs, sensors and assets of the code location this run exercises
    run: Callable[[World, AwsClients], Outcome]
    setup: Callable[[World], None] = _no_setup


def _termination_tick(world: World, aws: AwsClients) -> Outcome:
    # A fresh code-location process: the sensor resolves its queue's URL once per process.
    from sensors import termination

    termination._urls.clear()
    return tick(termination_queue_sensor, aws, world.settings, world.instance)


PIECES: list[Piece] = [
    Piece("termination_queue_sensor", ("sensor:termination_queue_sensor",), _termination_tick),
    Piece("process_terminations", ("job:process_terminations",), _drain),
    Piece("redrive_termination_dlq", ("job:redrive_termination_dlq",), _redrive, _setup_redrive),
    Piece("housekeeping_queue_sensor", ("sensor:housekeeping_queue_sensor",), _housekeeping, _setup_request),
    Piece("orphaned_instances_sweep", ("job:orphaned_instances_sweep", "asset:orphaned_instances_sweep_plan",
          "asset:orphaned_instances_sweep_actions"),
          _sweep("orphaned_instances_sweep", orphaned_instances.ACT_OP)),
    Piece("stale_ssm_sweep", ("job:stale_ssm_sweep", "asset:stale_ssm_sweep_plan",
          "asset:stale_ssm_sweep_actions"),
          _sweep("stale_ssm_sweep", stale_ssm.ACT_OP),
          _setup_stale_parameter),
    Piece("orphaned_queues_sweep", ("job:orphaned_queues_sweep", "asset:orphaned_queues_sweep_plan",
          "asset:orphaned_queues_sweep_actions"),
          _sweep("orphaned_queues_sweep", orphaned_queues.ACT_OP)),
    Piece("stuck_jobs_sweep", ("job:stuck_jobs_sweep", "asset:stuck_jobs_sweep_plan",
          "asset:stuck_jobs_sweep_actions"), _sweep("stuck_jobs_sweep", stuck_jobs.ACT_OP),
          _setup_stuck_job),
    Piece("archive_old_jobs", ("job:archive_old_jobs", "asset:job_archive"), _archive),
    Piece("restore_archived_jobs", ("job:restore_archived_jobs",), _restore, _setup_restore),
    Piece("locate_archived_job", ("job:locate_archived_job",), _locate, _setup_locate),
    Piece("pool_audit_job", ("job:pool_audit_job",),
          lambda w, aws: run_job("pool_audit_job", aws, w.settings, w.instance)),
    Piece("queue_health_job", ("job:queue_health_job",),
          lambda w, aws: run_job("queue_health_job", aws, w.settings, w.instance)),
    Piece("pool_audit_assets", ("asset:pool_inventory", "asset:pool_cost_report"),
          lambda w, aws: run_assets([pool_inventory, pool_cost_report], aws, w.settings, w.instance),
          _setup_spot_instance),
    Piece("queue_health_asset", ("asset:queue_health",),
          lambda w, aws: run_assets([queue_health], aws, w.settings, w.instance)),
    Piece("fleet_ledger_job", ("job:fleet_ledger_job", "asset:fleet_ledger"),
          lambda w, aws: run_job("fleet_ledger_job", aws, w.settings, w.instance)),
]
PIECE = {p.name: p for p in PIECES}

# Each action's "without it" run, in the order they run on one shared seeded world: a cheap
# piece that needs the action (the full run checks that it does), and for each piece the
# actions it needs early come first, so that a denied run leaves the next one its work.
WITHOUT_RUNS: list[tuple[str, str]] = [
    ("sqs:GetQueueUrl", "termination_queue_sensor"),
    ("sqs:GetQueueAttributes", "termination_queue_sensor"),
    ("dynamodb:UpdateItem", "process_terminations"),
    ("sqs:ReceiveMessage", "redrive_termination_dlq"),
    ("sqs:ChangeMessageVisibility", "redrive_termination_dlq"),
    ("sqs:SendMessage", "redrive_termination_dlq"),
    ("sqs:DeleteMessage", "redrive_termination_dlq"),
    ("ec2:DescribeInstances", "orphaned_instances_sweep"),
    ("dynamodb:Scan", "orphaned_instances_sweep"),
    ("dynamodb:BatchGetItem", "orphaned_instances_sweep"),
    ("ec2:TerminateInstances", "orphaned_instances_sweep"),
    ("ssm:DescribeParameters", "stale_ssm_sweep"),
    ("ecs:DescribeTasks", "stale_ssm_sweep"),
    ("ecs:ListTasks", "fleet_ledger_job"),
    ("ssm:DeleteParameters", "stale_ssm_sweep"),
    ("sqs:ListQueues", "orphaned_queues_sweep"),
    ("sqs:DeleteQueue", "orphaned_queues_sweep"),
    ("dynamodb:Query", "archive_old_jobs"),
    ("s3:ListBucket", "archive_old_jobs"),
    ("s3:PutObject", "archive_old_jobs"),
    ("s3:GetObject", "archive_old_jobs"),
    ("dynamodb:DeleteItem", "archive_old_jobs"),
    ("dynamodb:BatchWriteItem", "restore_archived_jobs"),
    ("ec2:DescribeSpotPriceHistory", "pool_audit_assets"),
    ("cloudwatch:GetMetricData", "queue_health_asset"),
    ("cloudwatch:PutMetricData", "queue_health_asset"),
]
PIECE_FOR_ACTION = dict(WITHOUT_RUNS)


def template_actions() -> set[str]:
    template = yaml.safe_load(TEMPLATE_PATH.read_text())
    statements = template["Resources"]["HousekeepingPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    return {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}


def code_location_pieces() -> set[str]:
    repo = defs.get_repository_def()
    jobs = {f"job:{j.name}" for j in repo.get_all_jobs() if not j.name.startswith("__")}
    sensors = {f"sensor:{s.name}" for s in repo.sensor_defs}
    assets = {f"asset:{key.to_user_string()}" for key in repo.asset_graph.get_all_asset_keys()}
    return jobs | sensors | assets


def day_with_finished_jobs(admin: AwsClients, settings: FleetSettings) -> str:
    """A past completed_at day holding finished job records (the seed spreads them over three days)."""
    days: dict[str, int] = {}
    for page in admin.dynamodb.get_paginator("scan").paginate(TableName=settings.jobs_table):
        for item in page["Items"]:
            if "completed_at" in item:
                day = item["completed_at"]["S"][:10]
                days[day] = days.get(day, 0) + 1
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return max((d for d in days if d < today), key=lambda d: days[d])


@pytest.fixture()
def world(aws: AwsClients, settings: FleetSettings, stack: dict[str, str]) -> World:
    fleet = seed_fleet(aws, settings, SPEC)
    return World(aws, settings, fleet, day_with_finished_jobs(aws, settings))


@pytest.fixture()
def deployed_policy(aws: AwsClients, stack: dict[str, str]) -> dict[str, Any]:
    return policy_document(aws.client("iam"), stack["HousekeepingPolicyArn"])


@pytest.fixture()
def enforcement():
    """IAM enforcement for a block (``with enforcement():``); afterwards moto is open again, whatever happened."""
    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    yield iam_enforced
    assert moto_settings.INITIAL_NO_AUTH_ACTION_COUNT == before
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before


# ---- the tests ----------------------------------------------------------------------------

def test_every_piece_of_the_code_location_has_a_least_privilege_run():
    covered = {name for piece in PIECES for name in piece.covers}
    assert covered == code_location_pieces()
    assert set(PIECE_FOR_ACTION) | set(EXEMPT) == template_actions()
    assert set(PIECE_FOR_ACTION.values()) <= set(PIECE)


def test_every_piece_succeeds_with_only_the_policy_and_the_policy_holds_only_what_they_use(
    world: World, deployed_policy, enforcement,
):
    principal = make_principal(world.admin.client("iam"), moto_enforceable(deployed_policy))
    outcomes: dict[str, Outcome] = {}
    with CallRecorder() as recorder:
        for piece in PIECES:
            piece.setup(world)  # as admin, so enforcement is off
            recorder.piece = piece.name
            with enforcement():
                outcomes[piece.name] = piece.run(world, principal)

        # Schedules only compute run requests: evaluated as the principal, they call nothing.
        recorder.piece = "schedules"
        repository = defs.get_repository_def()
        with enforcement():
            for schedule in repository.schedule_defs:
                context = build_schedule_context(
                    scheduled_execution_time=datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc),
                    repository_def=repository, resources={"aws": principal, "settings": world.settings},
                )
                assert schedule.evaluate_tick(context).run_requests, schedule.name
        assert not recorder.calls["schedules"], dict(recorder.calls["schedules"])

    with enforcement(), pytest.raises(ClientError):  # the check is live: keys of no IAM user are refused
        world.admin.sqs.list_queues()

    failed = {name: o.text[-2000:] for name, o in outcomes.items() if not o.success}
    assert not failed, failed
    denied = {name: dict(recorder.denied[name]) for name in recorder.denied if recorder.denied[name]}
    assert not denied, denied
    assert isinstance(outcomes["termination_queue_sensor"].value, RunRequest)
    assert isinstance(outcomes["housekeeping_queue_sensor"].value, SensorResult)
    depth = world.admin.sqs.get_queue_attributes(
        QueueUrl=queue_url(world.admin.sqs, world.settings.housekeeping_queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert depth == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}  # launched, deleted

    # The destructive pieces really acted (checked as admin, with enforcement off again).
    fleet, admin, settings = world.fleet, world.admin, world.settings
    states = {i["InstanceId"]: i["State"]["Name"]
              for r in admin.ec2.describe_instances(InstanceIds=fleet.orphaned)["Reservations"] for i in r["Instances"]}
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    names = [settings.ssm_parameter_name(r) for r in fleet.dead_parameters]
    assert admin.ssm.get_parameters(Names=names)["Parameters"] == []
    queues = admin.sqs.list_queues(QueueNamePrefix=settings.runner_queue_prefix).get("QueueUrls", [])
    assert not [q for q in queues if any(q.endswith(r) for r in fleet.dead_queue_runners)]
    done = [world.fleet.job_of_runner[r] for r in fleet.busy[-SPEC.termination_messages:]]
    items = [admin.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": j}})["Item"] for j in done]
    assert {i["status"]["S"] for i in items} <= {"completed", "failed"}
    stuck = [admin.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": j}})["Item"]
             for j in world.stuck_jobs]
    assert stuck and {i["status"]["S"] for i in stuck} == {"interrupted"}
    assert world.instance.get_latest_materialization_event(AssetKey("job_archive")) is not None
    assert outcomes["restore_archived_jobs"].value.output_for_node("restore_job_records_for_day")["restored"] > 0
    assert outcomes["redrive_termination_dlq"].value.output_for_node("replay_termination_dlq")["sent"] == 1
    located = outcomes["locate_archived_job"].value.output_for_node("find_job_in_archive")["archived"]
    assert [entry["completed_date"] for entry in located] == [world.day]

    # Every call needs an action of the policy; every action of the policy is needed.
    granted = policy_actions(deployed_policy)
    used = {name: recorder.actions(name) for name in PIECE}
    unneeded_calls = {name: sorted(actions - granted) for name, actions in used.items() if actions - granted}
    assert not unneeded_calls, unneeded_calls  # (moto would have denied them; this names them)
    all_used = set().union(*used.values())
    assert granted - all_used - set(EXEMPT) == set(), "the policy grants actions no piece uses"
    for action, piece in PIECE_FOR_ACTION.items():
        assert action in used[piece], f"{piece} does not call {action}: pick another piece for it"
    print(json.dumps({name: sorted(actions) for name, actions in used.items()}, indent=1))


@pytest.fixture(scope="module")
def shared_world(moto_url: str) -> Iterator[tuple[World, dict[str, Any]]]:
    """One deployed, seeded stack for every "without one action" run (deploying and seeding take seconds each)."""
    from resources import load_aws_clients, load_settings
    from sandbox.deploy import deploy_stack
    from sandbox.server import reset_moto

    reset_moto(moto_url)
    admin, settings = load_aws_clients(), load_settings()
    outputs = deploy_stack(admin.client("cloudformation"), admin.dynamodb)
    fleet = seed_fleet(admin, settings, SPEC)
    world = World(admin, settings, fleet, day_with_finished_jobs(admin, settings))
    yield world, policy_document(admin.client("iam"), outputs["HousekeepingPolicyArn"])
    reset_moto(moto_url)


def test_the_moto_policy_grants_exactly_the_template_actions(shared_world):
    _, deployed_policy = shared_world
    enforceable = moto_enforceable(deployed_policy)
    granted = {iam_action(name.replace("monitoring:", "cloudwatch:"))
               for statement in enforceable["Statement"] for name in statement["Action"]}
    assert granted == policy_actions(deployed_policy) == template_actions()
    for statement in enforceable["Statement"]:
        assert all("*" not in name for name in statement["Action"])


@pytest.mark.parametrize("action,piece_name", WITHOUT_RUNS, ids=[action for action, _ in WITHOUT_RUNS])
def test_without_one_action_the_piece_needing_it_is_denied_and_says_so(
    action: str, piece_name: str, shared_world, enforcement,
):
    world, policy = shared_world
    piece = PIECE[piece_name]
    principal = make_principal(world.admin.client("iam"), moto_enforceable(policy, without=action))
    piece.setup(world)
    with CallRecorder() as recorder:
        recorder.piece = piece.name
        with enforcement():
            outcome = piece.run(world, principal)
    assert action in recorder.denied_actions(piece.name), (
        f"{piece.name} made no denied {action} call; calls: {dict(recorder.calls[piece.name])}")
    assert recorder.denied_actions(piece.name) == {action}  # nothing else was refused
    assert outcome.reports_denied(), f"{piece.name} neither failed nor reported the denied {action}"
    print(f"without {action}: {piece.name} {'reported the denial' if outcome.success else 'failed'}")


def test_where_moto_checks_resources_the_policy_scopes_them(shared_world, enforcement):
    """SQS and S3 calls are checked against the template's own ARNs: the fleet's queues and bucket, nothing else."""
    world, policy = shared_world
    admin, settings = world.admin, world.settings
    runner_queue = admin.sqs.create_queue(QueueName=f"{settings.runner_queue_prefix}input-i-0scope")["QueueUrl"]
    foreign_queue = admin.sqs.create_queue(QueueName="someone-elses-queue")["QueueUrl"]
    admin.s3.create_bucket(Bucket="someone-elses-bucket")
    principal = make_principal(admin.client("iam"), moto_enforceable(policy))

    def denied(call: Callable[[], Any]) -> bool:
        try:
            call()
        except ClientError as error:
            return error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        return False

    with enforcement():
        assert not denied(lambda: principal.sqs.receive_message(QueueUrl=runner_queue, WaitTimeSeconds=0))
        assert denied(lambda: principal.sqs.receive_message(QueueUrl=foreign_queue, WaitTimeSeconds=0))
        # SendMessage is granted on the fleet queues only (the DLQ replay), not on runner queues.
        assert denied(lambda: principal.sqs.send_message(QueueUrl=runner_queue, MessageBody="{}"))
        assert denied(lambda: principal.sqs.delete_queue(QueueUrl=foreign_queue))
        assert not denied(lambda: principal.s3.put_object(Bucket=settings.archive_bucket, Key="scope/x", Body=b"x"))
        assert denied(lambda: principal.s3.put_object(Bucket="someone-elses-bucket", Key="x", Body=b"x"))
        assert denied(lambda: principal.s3.get_object(Bucket="someone-elses-bucket", Key="x"))
    assert admin.sqs.get_queue_url(QueueName="someone-elses-queue")["QueueUrl"] == foreign_queue
