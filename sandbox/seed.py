"""Seed a realistic runner fleet into the moto server.

One function, ``seed_fleet``, builds every kind of thing the housekeeping pieces look at,
in proportions set by a ``FleetSpec``: ``demo_spec()`` is the `make run` fleet, tests pass
small specs and the benchmarks large ones. It returns a ``SeededFleet`` naming what was
made, by category, so tests can assert on the mix and benchmarks know the expected work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pipelines.common.aws import SQS_BATCH, batch_write_with_retry, chunks, queue_url
from pipelines.common.contract import JOB_ID_TAG, MANAGED_TAG, POOL_TAG, PROTECT_TAG
from resources.aws import AwsClients
from resources.settings import FleetSettings
from sandbox import backdate

FINISHED_STATUSES = ("completed", "failed", "cancelled", "interrupted")
MANAGED = {"Key": MANAGED_TAG, "Value": "true"}


@dataclass(frozen=True)
class PoolSpec:
    name: str
    instance_type: str
    ebs_gb: int
    max_runtime_minutes: int
    desired_running: int = 10
    desired_stopped: int = 5
    hourly_price_usd: float | None = None


@dataclass(frozen=True)
class FleetSpec:
    """How many of each kind to create. Counts are totals, spread round-robin over pools."""

    pools: Sequence[PoolSpec]
    busy: int = 0  # running, tagged with a running job
    idle: int = 0  # running, no job, young
    stopped: int = 0  # warm pool
    orphaned: int = 0  # running past max runtime + 10 min, job finished or none
    protected_orphans: int = 0  # like orphaned, but runs-fleet:protect=true
    long_busy: int = 0  # past max runtime, but its job is still running: must be kept
    ecs_running: int = 0
    ecs_stopped: int = 0
    dead_runner_parameters: int = 0  # old SSM parameters of runners that no longer exist
    fresh_dead_parameters: int = 0  # parameters of unknown runners, younger than an hour
    live_queue_sets: int = 0  # per-runner queues + tracking for busy runners
    dead_queue_sets: int = 0  # per-runner queues + tracking for gone runners, older than 24 h
    queue_messages_every: int = 3  # every Nth queue set holds messages
    finished_jobs: int = 0  # spread over the last `job_days` days
    stuck_jobs: int = 0  # running job records, started 2 h ago, on runners that never existed
    job_days: int = 30
    termination_messages: int = 0  # valid agent messages for busy runners finishing now
    ecs_stop_events: int = 0
    malformed_messages: int = 0
    seed: int = 7


def demo_spec() -> FleetSpec:
    """The `make run` fleet: 3 pools, about 150 instances, 5,000 job records over 30 days."""
    return FleetSpec(
        pools=(
            PoolSpec("linux-small", "t3.medium", 30, 60, desired_running=30, desired_stopped=10),
            PoolSpec("linux-large", "c6i.2xlarge", 100, 180, desired_running=20, desired_stopped=10),
            PoolSpec("gpu", "g5.xlarge", 200, 360, desired_running=10, desired_stopped=10, hourly_price_usd=0.95),
        ),
        busy=60,
        idle=27,
        stopped=30,
        orphaned=24,
        protected_orphans=1,
        long_busy=3,
        ecs_running=6,
        ecs_stopped=4,
        dead_runner_parameters=25,
        fresh_dead_parameters=3,
        live_queue_sets=30,
        dead_queue_sets=20,
        finished_jobs=4900,
        termination_messages=4,
        ecs_stop_events=1,
        malformed_messages=1,
    )


@dataclass
class SeededFleet:
    """What ``seed_fleet`` created, by category (ids are runner ids)."""

    pools: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    idle: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    protected_orphans: list[str] = field(default_factory=list)
    long_busy: list[str] = field(default_factory=list)
    ecs_running: list[str] = field(default_factory=list)
    ecs_stopped: list[str] = field(default_factory=list)
    live_parameters: list[str] = field(default_factory=list)
    dead_parameters: list[str] = field(default_factory=list)
    fresh_dead_parameters: list[str] = field(default_factory=list)
    live_queue_runners: list[str] = field(default_factory=list)
    dead_queue_runners: list[str] = field(default_factory=list)
    queues_with_messages: list[str] = field(default_factory=list)
    running_jobs: list[str] = field(default_factory=list)
    finished_jobs: int = 0
    stuck_jobs: list[str] = field(default_factory=list)
    termination_message_ids: list[str] = field(default_factory=list)
    malformed_message_ids: list[str] = field(default_factory=list)
    job_of_runner: dict[str, str] = field(default_factory=dict)
    pool_of_runner: dict[str, str] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return sum(
            len(x) for x in (self.busy, self.idle, self.stopped, self.orphaned, self.protected_orphans, self.long_busy)
        )


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_fleet(
    aws: AwsClients, settings: FleetSettings, spec: FleetSpec, *, now: datetime | None = None
) -> SeededFleet:
    """Create ``spec``'s fleet in the moto server ``aws`` points at (which must run in-process)."""
    now = now or datetime.now(timezone.utc)
    rng = random.Random(spec.seed)
    region = aws.ec2.meta.region_name
    fleet = SeededFleet(pools=[p.name for p in spec.pools])
    job_counter = iter(range(100_000, 10_000_000))
    jobs: list[dict[str, Any]] = []

    _put_pools(aws, settings, spec.pools)

    def pool_at(i: int) -> PoolSpec:
        return spec.pools[i % len(spec.pools)]

    def running_job(runner_id: str, pool: str, started: datetime) -> str:
        job_id = str(next(job_counter))
        jobs.append(
            {"job_id": job_id, "status": "running", "pool": pool, "instance_id": runner_id,
             "created_at": iso(started - timedelta(minutes=1)), "started_at": iso(started)}
        )
        fleet.running_jobs.append(job_id)
        return job_id

    def finished_job(runner_id: str, pool: str, completed: datetime) -> str:
        job_id = str(next(job_counter))
        duration = rng.randint(30, 3600)
        status = rng.choices(FINISHED_STATUSES, weights=(80, 12, 5, 3))[0]
        jobs.append(
            {"job_id": job_id, "status": status, "pool": pool, "instance_id": runner_id,
             "created_at": iso(completed - timedelta(seconds=duration + 60)),
             "started_at": iso(completed - timedelta(seconds=duration)), "completed_at": iso(completed),
             "exit_code": 0 if status == "completed" else rng.choice([1, 2, 137]), "duration_seconds": duration}
        )
        return job_id

    def launch(kind: str, count: int, *, job: str | None, protect: bool = False, age_min: tuple[int, int] = (5, 50),
               past_max_runtime: bool = False, stop: bool = False) -> list[str]:
        ids: list[str] = []
        launches: dict[str, datetime] = {}
        for i in range(count):
            pool = pool_at(i)
            tags = [MANAGED, {"Key": POOL_TAG, "Value": pool.name}]
            if past_max_runtime:
                launched = now - timedelta(minutes=pool.max_runtime_minutes + 10 + rng.randint(5, 240))
            else:
                launched = now - timedelta(minutes=rng.randint(*age_min))
            runner_id = "pending"
            job_id = None
            if job == "running":
                job_id = running_job(runner_id, pool.name, launched + timedelta(minutes=1))
            elif job == "finished":
                job_id = finished_job(runner_id, pool.name, launched + timedelta(minutes=20))
            if job_id:
                tags.append({"Key": JOB_ID_TAG, "Value": job_id})
            if protect:
                tags.append({"Key": PROTECT_TAG, "Value": "true"})
            tags.append({"Key": "Name", "Value": f"runs-fleet-{pool.name}-{kind}"})
            reservation = aws.ec2.run_instances(
                ImageId="ami-12c6146b", InstanceType=pool.instance_type, MinCount=1, MaxCount=1,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
            runner_id = reservation["Instances"][0]["InstanceId"]
            if job_id:
                jobs[-1]["instance_id"] = runner_id
                fleet.job_of_runner[runner_id] = job_id
            fleet.pool_of_runner[runner_id] = pool.name
            launches[runner_id] = launched
            ids.append(runner_id)
        backdate.backdate_instance_launches(launches, region)
        if stop and ids:
            aws.ec2.stop_instances(InstanceIds=ids)
        return ids

    fleet.busy = launch("busy", spec.busy, job="running")
    fleet.idle = launch("idle", spec.idle, job=None)
    fleet.stopped = launch("warm", spec.stopped, job=None, stop=True)
    # Orphans: half still tagged with their finished job, half never assigned one.
    with_job = spec.orphaned - spec.orphaned // 2
    fleet.orphaned = launch("orphan", with_job, job="finished", past_max_runtime=True)
    fleet.orphaned += launch("orphan", spec.orphaned - with_job, job=None, past_max_runtime=True)
    fleet.protected_orphans = launch("protected", spec.protected_orphans, job="finished", protect=True,
                                     past_max_runtime=True)
    fleet.long_busy = launch("long", spec.long_busy, job="running", past_max_runtime=True)

    fleet.ecs_running, fleet.ecs_stopped = _run_ecs_tasks(aws, settings, spec, fleet, running_job)

    # SSM parameters: every live runner has one, old; dead runners' old ones are stale.
    live_runners = fleet.busy + fleet.idle + fleet.stopped + fleet.long_busy + fleet.ecs_running
    fleet.live_parameters = live_runners
    fleet.dead_parameters = [f"i-{rng.getrandbits(68):017x}"[:19] for _ in range(spec.dead_runner_parameters)]
    fleet.dead_parameters += fleet.ecs_stopped
    fleet.fresh_dead_parameters = [f"i-{rng.getrandbits(68):017x}"[:19] for _ in range(spec.fresh_dead_parameters)]
    _put_parameters(aws, settings, fleet.live_parameters + fleet.dead_parameters, now - timedelta(hours=3), region)
    _put_parameters(aws, settings, fleet.fresh_dead_parameters, now - timedelta(minutes=10), region)

    # Per-runner queues and tracking records.
    fleet.live_queue_runners = fleet.busy[: spec.live_queue_sets]
    fleet.dead_queue_runners = [f"i-{rng.getrandbits(68):017x}"[:19] for _ in range(spec.dead_queue_sets)]
    _create_queue_sets(aws, settings, spec, fleet, fleet.live_queue_runners, now - timedelta(minutes=30), now, region)
    _create_queue_sets(aws, settings, spec, fleet, fleet.dead_queue_runners, now - timedelta(days=2),
                       now - timedelta(days=2), region)

    # Finished job history, spread over the last job_days days.
    span = timedelta(days=spec.job_days).total_seconds()
    for _ in range(spec.finished_jobs):
        completed = now - timedelta(seconds=rng.uniform(600, span))
        finished_job(f"i-{rng.getrandbits(68):017x}"[:19], rng.choice(spec.pools).name, completed)
    fleet.finished_jobs = sum(1 for j in jobs if j["status"] != "running")
    for n in range(spec.stuck_jobs):
        gone = f"i-{rng.getrandbits(68):017x}"[:19]
        fleet.stuck_jobs.append(running_job(gone, pool_at(n).name, now - timedelta(hours=2)))
        fleet.job_of_runner[gone] = fleet.stuck_jobs[-1]
        fleet.running_jobs.remove(fleet.stuck_jobs[-1])
    _put_jobs(aws, settings, jobs)

    _send_termination_messages(aws, settings, spec, fleet, now, rng)
    return fleet


def _put_pools(aws: AwsClients, settings: FleetSettings, pools: Sequence[PoolSpec]) -> None:
    requests = []
    for pool in pools:
        item: dict[str, Any] = {
            "pool_name": {"S": pool.name}, "instance_type": {"S": pool.instance_type},
            "ebs_gb": {"N": str(pool.ebs_gb)}, "max_runtime_minutes": {"N": str(pool.max_runtime_minutes)},
            "desired_running": {"N": str(pool.desired_running)}, "desired_stopped": {"N": str(pool.desired_stopped)},
        }
        if pool.hourly_price_usd is not None:
            item["hourly_price_usd"] = {"N": str(pool.hourly_price_usd)}
        requests.append({"PutRequest": {"Item": item}})
    batch_write_with_retry(aws.dynamodb, settings.pools_table, requests)


def _put_jobs(aws: AwsClients, settings: FleetSettings, jobs: list[dict[str, Any]]) -> None:
    requests = []
    for job in jobs:
        item = {k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in job.items()}
        requests.append({"PutRequest": {"Item": item}})
    batch_write_with_retry(aws.dynamodb, settings.jobs_table, requests)


def _put_parameters(aws: AwsClients, settings: FleetSettings, runner_ids: Sequence[str], modified: datetime,
                    region: str) -> None:
    names = []
    for runner_id in runner_ids:
        name = settings.ssm_parameter_name(runner_id)
        aws.ssm.put_parameter(
            Name=name, Type="String", Overwrite=True,
            Value=json.dumps({"runner_id": runner_id, "labels": ["self-hosted", "linux"]}),
        )
        names.append(name)
    backdate.backdate_parameters(names, modified, region)


def _create_queue_sets(aws: AwsClients, settings: FleetSettings, spec: FleetSpec, fleet: SeededFleet,
                       runner_ids: Sequence[str], created: datetime, last_activity: datetime, region: str) -> None:
    requests = []
    for n, runner_id in enumerate(runner_ids):
        names = settings.runner_queue_names(runner_id)
        urls = {kind: aws.sqs.create_queue(QueueName=name)["QueueUrl"] for kind, name in names.items()}
        backdate.backdate_queues(names.values(), created, region)
        if spec.queue_messages_every and n % spec.queue_messages_every == 0:
            aws.sqs.send_message_batch(
                QueueUrl=urls["output"],
                Entries=[{"Id": str(k), "MessageBody": json.dumps({"step": k, "log": f"runner {runner_id} step {k}"})}
                         for k in range(3)],
            )
            fleet.queues_with_messages.append(names["output"])
        millis = int(last_activity.timestamp() * 1000)
        requests.append({"PutRequest": {"Item": {
            "runner_id": {"S": runner_id}, "input_queue_url": {"S": urls["input"]},
            "output_queue_url": {"S": urls["output"]}, "dlq_url": {"S": urls["dlq"]},
            "created_at": {"N": str(int(created.timestamp() * 1000))}, "last_activity": {"N": str(millis)},
            "ttl": {"N": str(int(last_activity.timestamp()) + 7 * 86400)},
        }}})
    batch_write_with_retry(aws.dynamodb, settings.queue_tracking_table, requests)


def _run_ecs_tasks(aws: AwsClients, settings: FleetSettings, spec: FleetSpec, fleet: SeededFleet,
                   running_job: Any) -> tuple[list[str], list[str]]:
    total = spec.ecs_running + spec.ecs_stopped
    if not total:
        return [], []
    aws.ecs.register_task_definition(
        family="runs-fleet-runner", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024",
        memory="2048", containerDefinitions=[{"name": "runner", "image": "runs-fleet/runner:latest", "essential": True,
                               "cpu": 1024, "memory": 2048}],
    )
    # Fargate tasks get an ENI in a real subnet: use the default VPC's first subnet and group.
    subnet = aws.ec2.describe_subnets(MaxResults=5)["Subnets"][0]
    group = aws.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [subnet["VpcId"]]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]
    network = {"awsvpcConfiguration": {"subnets": [subnet["SubnetId"]], "securityGroups": [group["GroupId"]]}}
    task_ids: list[str] = []
    while len(task_ids) < total:
        response = aws.ecs.run_task(
            cluster=settings.ecs_cluster, taskDefinition="runs-fleet-runner", launchType="FARGATE",
            count=min(10, total - len(task_ids)),
            networkConfiguration=network,
        )
        task_ids += [t["taskArn"].rsplit("/", 1)[-1] for t in response["tasks"]]
    running, stopped = task_ids[: spec.ecs_running], task_ids[spec.ecs_running :]
    for n, task_id in enumerate(running):
        pool = spec.pools[n % len(spec.pools)].name
        fleet.job_of_runner[task_id] = running_job(task_id, pool, datetime.now(timezone.utc))
        fleet.pool_of_runner[task_id] = pool
    for task_id in stopped:
        aws.ecs.stop_task(cluster=settings.ecs_cluster, task=task_id, reason="Essential container exited")
    return running, stopped


def _send_termination_messages(aws: AwsClients, settings: FleetSettings, spec: FleetSpec, fleet: SeededFleet,
                               now: datetime, rng: random.Random) -> None:
    if not (spec.termination_messages or spec.ecs_stop_events or spec.malformed_messages):
        return
    termination_url = queue_url(aws.sqs, settings.termination_queue)
    entries: list[tuple[str, str]] = []  # (group, body)
    for runner_id in fleet.busy[-spec.termination_messages:] if spec.termination_messages else []:
        duration = rng.randint(60, 1800)
        ok = rng.random() < 0.75
        body = {
            "instance_id": runner_id, "job_id": fleet.job_of_runner[runner_id],
            "status": "completed" if ok else "failed", "exit_code": 0 if ok else 1, "duration_seconds": duration,
            "started_at": iso(now - timedelta(seconds=duration)), "completed_at": iso(now),
        }
        entries.append((runner_id, json.dumps(body)))
    region = aws.ecs.meta.region_name
    for task_id in fleet.ecs_stopped[: spec.ecs_stop_events]:
        body = {
            "source": "aws.ecs", "detail-type": "ECS Task State Change",
            "detail": {"taskArn": f"arn:aws:ecs:{region}:123456789012:task/{settings.ecs_cluster}/{task_id}",
                       "lastStatus": "STOPPED", "stoppedReason": "Essential container exited"},
        }
        entries.append((task_id, json.dumps(body)))
    malformed = ['{"instance_id": "i-0bad", "job_id": ', "not json at all"]
    for n in range(spec.malformed_messages):
        entries.append((f"malformed-{n}", malformed[n % len(malformed)]))
    for chunk in chunks(entries, SQS_BATCH):
        response = aws.sqs.send_message_batch(
            QueueUrl=termination_url,
            Entries=[{"Id": str(i), "MessageBody": body, "MessageGroupId": group} for i, (group, body) in enumerate(chunk)],
        )
        for ok in response.get("Successful", []):
            group = chunk[int(ok["Id"])][0]
            target = fleet.malformed_message_ids if group.startswith("malformed-") else fleet.termination_message_ids
            target.append(ok["MessageId"])
