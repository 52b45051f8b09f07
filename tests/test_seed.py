"""The seeding library produces the fleet it promises, checked through AWS's own APIs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

from sandbox.seed import FleetSpec, PoolSpec, demo_spec, seed_fleet


def instances_by_id(aws) -> dict[str, dict]:
    found = {}
    for page in aws.ec2.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                found[instance["InstanceId"]] = instance
    return found


def tags(instance) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def scan(aws, table):
    items = []
    for page in aws.dynamodb.get_paginator("scan").paginate(TableName=table):
        items += page["Items"]
    return items


def test_demo_fleet_has_the_promised_mix(aws, settings):
    now = datetime.now(timezone.utc)
    fleet = seed_fleet(aws, settings, demo_spec(), now=now)
    pools = {item["pool_name"]["S"]: item for item in scan(aws, settings.pools_table)}
    assert len(pools) == 3
    assert len({p["instance_type"]["S"] for p in pools.values()}) == 3

    instances = instances_by_id(aws)
    assert 140 <= len(instances) <= 160
    states = Counter(i["State"]["Name"] for i in instances.values())
    assert states["stopped"] == len(fleet.stopped) > 0
    for runner_id in fleet.orphaned + fleet.protected_orphans:
        instance = instances[runner_id]
        max_runtime = int(pools[tags(instance)["runs-fleet:pool"]]["max_runtime_minutes"]["N"])
        assert instance["LaunchTime"] < now - timedelta(minutes=max_runtime + 10)
        assert instance["State"]["Name"] == "running"
    assert len(fleet.orphaned) >= 5
    (protected,) = fleet.protected_orphans
    assert tags(instances[protected])["runs-fleet:protect"] == "true"
    for runner_id in fleet.busy:
        assert tags(instances[runner_id])["runs-fleet:job-id"] == fleet.job_of_runner[runner_id]

    jobs = scan(aws, settings.jobs_table)
    assert 4500 <= len(jobs) <= 5500
    statuses = Counter(j["status"]["S"] for j in jobs)
    assert set(statuses) == {"running", "completed", "failed", "cancelled", "interrupted"}
    completed_days = {j["completed_at"]["S"][:10] for j in jobs if "completed_at" in j}
    assert len(completed_days) >= 28  # spread over the last 30 days

    parameters = [p["Name"] for page in aws.ssm.get_paginator("describe_parameters").paginate() for p in page["Parameters"]]
    live = {settings.ssm_parameter_name(r) for r in fleet.live_parameters}
    dead = {settings.ssm_parameter_name(r) for r in fleet.dead_parameters}
    assert live and dead and live | dead <= set(parameters)

    queue_urls = [u for page in aws.sqs.get_paginator("list_queues").paginate(QueueNamePrefix=settings.runner_queue_prefix)
                  for u in page.get("QueueUrls", [])]
    assert len(queue_urls) == 3 * (len(fleet.live_queue_runners) + len(fleet.dead_queue_runners))
    assert fleet.live_queue_runners and fleet.dead_queue_runners and fleet.queues_with_messages
    tracking = scan(aws, settings.queue_tracking_table)
    assert len(tracking) == len(fleet.live_queue_runners) + len(fleet.dead_queue_runners)

    assert fleet.ecs_running and fleet.ecs_stopped
    tasks = aws.ecs.describe_tasks(cluster=settings.ecs_cluster, tasks=fleet.ecs_stopped)["tasks"]
    assert {t["lastStatus"] for t in tasks} == {"STOPPED"}

    url = aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]
    bodies = []
    for _ in range(5):
        received = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        bodies += [m["Body"] for m in received.get("Messages", [])]
        if len(bodies) >= len(fleet.termination_message_ids) + len(fleet.malformed_message_ids):
            break
    assert len(fleet.termination_message_ids) >= 3 and len(fleet.malformed_message_ids) == 1
    parsed = []
    for body in set(bodies):
        try:
            parsed.append(json.loads(body))
        except ValueError:
            parsed.append(None)
    assert None in parsed
    assert any(p and p.get("source") == "aws.ecs" for p in parsed)


def test_small_seed(aws, settings):
    spec = FleetSpec(pools=(PoolSpec("p", "t3.micro", 8, 30), PoolSpec("q", "m5.large", 20, 90)),
                     busy=2, idle=1, orphaned=2, finished_jobs=10, dead_runner_parameters=2)
    fleet = seed_fleet(aws, settings, spec)
    assert fleet.instances == 5
    assert len(instances_by_id(aws)) == 5
    assert len(scan(aws, settings.jobs_table)) == 10 + 2 + 1  # history + running + one orphan's finished job
    assert {fleet.pool_of_runner[r] for r in fleet.busy} == {"p", "q"}
