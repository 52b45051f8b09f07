"""Every list call of the sweeps pages to the end, and every id lookup is batched at its limit.

Page sizes are lowered through the find functions' ``page_size`` arguments so that a small
moto fleet spans several pages; the calls are counted on the real clients (botocore events).
moto pages DescribeParameters at 10 whatever MaxResults says, so 25 parameters span 3 pages.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from pipelines.sweeps import orphaned_instances as oi, orphaned_queues as oq, runners, stale_ssm
from resources import add_client_observer, load_aws_clients


def counting():
    calls: Counter[str] = Counter()

    def observe(client):
        client.meta.events.register("before-call", lambda model, **_: calls.update([model.name]))

    return calls, add_client_observer(observe)


def test_every_list_call_pages_and_every_lookup_batches(aws, settings):
    reservations = [aws.ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "runs-fleet:managed", "Value": "true"}]}],
    )["Instances"][0]["InstanceId"] for _ in range(5)]
    for n in range(3):
        aws.dynamodb.put_item(TableName=settings.pools_table, Item={
            "pool_name": {"S": f"pool-{n}"}, "max_runtime_minutes": {"N": "60"}})
    for n in range(25):
        aws.ssm.put_parameter(Name=settings.ssm_parameter_name(f"i-{n:017x}"), Type="String", Value="{}")
    for n in range(3):
        for name in settings.runner_queue_names(f"i-{n:017x}").values():
            aws.sqs.create_queue(QueueName=name)
    millis = str(int(datetime.now(timezone.utc).timestamp() * 1000))
    for n in range(5):
        aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={
            "runner_id": {"S": f"i-{n:017x}"}, "last_activity": {"N": millis}})
    for n in range(150):
        aws.dynamodb.put_item(TableName=settings.jobs_table, Item={
            "job_id": {"S": f"job-{n}"}, "status": {"S": "completed"}})

    calls, remove = counting()
    try:
        clients = load_aws_clients()
        instances = oi.find_managed_running(clients.ec2, page_size=2)
        assert calls["DescribeInstances"] == 3 and {i.instance_id for i in instances} == set(reservations)
        pools = oi.load_pool_limits(clients.dynamodb, settings.pools_table, page_size=1)
        assert len(pools.max_runtimes) == 3 and calls["Scan"] >= 3

        parameters, _ = stale_ssm.find_runner_parameters(clients.ssm, settings.ssm_prefix)
        assert len(parameters) == 25 and calls["DescribeParameters"] == 3

        calls.clear()
        found = oq.find_runner_resources(clients, settings, page_size=2, scan_page_size=2)
        assert calls["ListQueues"] == 5  # 9 queues, 2 a page
        assert calls["Scan"] >= 3
        assert len(found) == 5 and all(len(found[f"i-{n:017x}"].queues) == 3 for n in range(3))

        calls.clear()
        statuses = oi.lookup_jobs(clients.dynamodb, settings.jobs_table, [f"job-{n}" for n in range(150)])
        assert len(statuses) == 150 and calls["BatchGetItem"] == 2  # 100 keys a call
        assert all(s.found and s.status == "completed" for s in statuses.values())

        calls.clear()
        unknown_instances = [f"i-{n:017x}" for n in range(250)]
        unknown_tasks = [f"{n:032x}" for n in range(150)]
        liveness = runners.runner_liveness(clients.ec2, clients.ecs, settings.ecs_cluster,
                                           unknown_instances + unknown_tasks + reservations)
        assert calls["DescribeInstances"] == 2  # 255 ids, 200 a call, unknown ids do not fail the batch
        assert calls["DescribeTasks"] == 2  # 150 task ids, 100 a call
        assert {liveness[i].state for i in unknown_instances + unknown_tasks} == {"gone"}
        assert {liveness[i].state for i in reservations} == {"live"}
    finally:
        remove()
