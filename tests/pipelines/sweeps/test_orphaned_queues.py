"""orphaned_queues_sweep against the moto server: 24 h boundary, live/gone runners, archive, tracking records."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

from pipelines.sweeps import orphaned_queues as oq
from sandbox import backdate
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet


def make_queue_set(aws, settings, runner_id, age_hours, *, messages=0, tracked=True, idle_hours=None):
    names = settings.runner_queue_names(runner_id)
    urls = {kind: aws.sqs.create_queue(QueueName=name)["QueueUrl"] for kind, name in names.items()}
    for n in range(messages):
        aws.sqs.send_message(QueueUrl=urls["input"], MessageBody=json.dumps({"n": n}))
    backdate.backdate_queues(names.values(), datetime.now(timezone.utc) - timedelta(hours=age_hours),
                             aws.sqs.meta.region_name)
    if tracked:
        track(aws, settings, runner_id, idle_hours if idle_hours is not None else age_hours)
    return set(names.values())


def track(aws, settings, runner_id, idle_hours):
    last = datetime.now(timezone.utc) - timedelta(hours=idle_hours)
    aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={
        "runner_id": {"S": runner_id}, "last_activity": {"N": str(int(last.timestamp() * 1000))},
        "created_at": {"N": str(int(last.timestamp() * 1000))},
    })


def queues(aws, settings):
    pages = aws.sqs.get_paginator("list_queues").paginate(QueueNamePrefix=settings.runner_queue_prefix)
    return {url.rsplit("/", 1)[-1] for page in pages for url in page.get("QueueUrls", [])}


def tracked(aws, settings):
    items = aws.dynamodb.scan(TableName=settings.queue_tracking_table)["Items"]
    return {i["runner_id"]["S"] for i in items}


def test_rule_boundaries_archive_and_tracking_records(aws, settings):
    fleet = seed_fleet(aws, settings, FleetSpec(
        pools=(PoolSpec("p", "t3.micro", 30, 60),), busy=2, ecs_stopped=1,
        live_queue_sets=2, dead_queue_sets=2, queue_messages_every=1,
    ))
    (stopped_task,) = fleet.ecs_stopped
    live_instance = fleet.busy[0]
    gone = "i-0gone0000000001"
    expect_deleted = (
        make_queue_set(aws, settings, gone, 25, messages=12)
        | make_queue_set(aws, settings, stopped_task, 30)
        | {n for r in fleet.dead_queue_runners for n in settings.runner_queue_names(r).values()}
    )
    expect_kept = (
        make_queue_set(aws, settings, "i-0young000000001", 23)
        | make_queue_set(aws, settings, f"x{live_instance}", 0.1, tracked=False)  # not a runner queue name shape
        | {n for r in fleet.live_queue_runners for n in settings.runner_queue_names(r).values()}
    )
    backdate.backdate_queues(settings.runner_queue_names(live_instance).values(),
                             datetime.now(timezone.utc) - timedelta(hours=48), aws.sqs.meta.region_name)
    track(aws, settings, "i-0idle0000000001", 25)  # tracking only, runner gone, idle > 24 h: deleted
    track(aws, settings, "i-0busy0000000001", 2)  # tracking only, active: kept
    track(aws, settings, fleet.busy[1], 30)  # tracking record of a live runner: kept

    result = oq.orphaned_queues_sweep.execute_in_process(
        run_config={"ops": {oq.ACT_OP: {"config": {"max_fraction": 1.0, "confirm_after_minutes": 0}}}},
        resources={"aws": aws, "settings": settings}, raise_on_error=False,
    )
    assert result.success
    plan = result.output_for_node(oq.PLAN_OP)
    planned = {a.resource: a.action for a in plan.actions}
    assert set(planned) == {gone, stopped_task, "i-0idle0000000001", *fleet.dead_queue_runners}
    assert planned["i-0idle0000000001"] == "delete tracking record"
    left = queues(aws, settings)
    assert not left & expect_deleted
    assert expect_kept <= left
    assert tracked(aws, settings) == {*fleet.live_queue_runners, "i-0young000000001", "i-0busy0000000001", fleet.busy[1]}

    listing = aws.s3.list_objects_v2(Bucket=settings.archive_bucket, Prefix=f"queues/runner_id={gone}/")["Contents"]
    (key,) = [o["Key"] for o in listing]
    assert key.startswith(f"queues/runner_id={gone}/queue=input/archived_at=") and key.endswith(".jsonl.gz")
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=key)["Body"].read()
    archived = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
    assert sorted(json.loads(r["body"])["n"] for r in archived) == list(range(12))

    metrics = aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace, MetricName="OrphanedQueuesDeleted")
    assert metrics["Metrics"]

    # Re-running: same end state, nothing to do, no error.
    assert oq.find_and_plan(aws, settings).actions == []
    assert queues(aws, settings) == left


def test_recheck_skips_a_tracking_record_that_saw_activity_since_the_plan(aws, settings):
    make_queue_set(aws, settings, "i-0gone0000000002", 30)
    track(aws, settings, "i-0idle0000000002", 30)
    plan = oq.find_and_plan(aws, settings)
    assert {a.resource for a in plan.actions} == {"i-0gone0000000002", "i-0idle0000000002"}
    track(aws, settings, "i-0idle0000000002", 0)  # activity since the plan
    result, deleted = oq.delete_orphaned(aws, settings, plan)
    assert [a.resource for a in result.done] == ["i-0gone0000000002"] and deleted == {"i-0gone0000000002": 3}
    ((action, why),) = result.skipped
    assert action.resource == "i-0idle0000000002" and "activity" in why
    assert "i-0idle0000000002" in tracked(aws, settings)
