"""Benchmark the three housekeeping sweeps on a large fleet in an in-process moto server.

    .venv/bin/python bench/sweeps.py                            # 1,000 instances, 1,000 parameters, 200 queue sets
    .venv/bin/python bench/sweeps.py --scale 1 --ssm-scale 1    # the issue's full size (does not finish on moto)

The full size is 10,000 instances, 20,000 parameters, 2,000 queue sets; the default is a
tenth of the instances and queue sets and a twentieth of the parameters, the largest that
runs in about five minutes on moto (see docs/sweeps.md for why moto, not the sweeps, sets
that limit).

Seeds (in bulk: RunInstances of up to 250 same-tag instances a call, then backdated):
  * 10,000 running managed instances, about 5 % orphaned (past max runtime + 10 min, half
    with a finished job, half with none), plus protected orphans and long-running busy
    instances that must be kept;
  * 8,000 stopped warm-pool instances and 1,000 terminated ones, so that 18,000 of the
    20,000 runner parameters belong to a live runner and about 10 % are stale (1,000 of
    terminated instances, 1,000 of runner ids EC2 never knew);
  * 2,000 per-runner queue sets (6,000 queues) with tracking records, 10 % of gone runners
    (every third holding 3 messages), all older than 24 h.

Then runs each sweep through its real Dagster job (limits raised for the run, as an operator
would) and prints wall time, AWS calls by API (counted with botocore's before-call event on
every client, see resources.aws.add_client_observer), the minimum possible calls (pages at
each API's maximum page size + batches at each batch limit, derived from the seeded fleet
and the plan) and the ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.server import sandbox_env, start_moto  # noqa: E402

COUNTING: dict[str, Counter | None] = {"current": None}


def count_calls(client) -> None:
    def before_call(model, **_):
        counter = COUNTING["current"]
        if counter is not None:
            counter[model.name] += 1

    client.meta.events.register("before-call", before_call)


# moto takes tens of milliseconds per instance in RunInstances (and more per instance as the
# fleet grows); 250 a call stays well inside the client's 60 s read timeout.
BULK = 250


def bulk_run(aws, count, tags, *, instance_type="t3.micro"):
    """RunInstances up to BULK same-tag instances a call; returns (ids, reservations made)."""
    ids, reservations = [], 0
    while len(ids) < count:
        n = min(BULK, count - len(ids))
        response = aws.ec2.run_instances(
            ImageId="ami-12c6146b", InstanceType=instance_type, MinCount=n, MaxCount=n,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        ids += [i["InstanceId"] for i in response["Instances"]]
        reservations += 1
    return ids, reservations


def tags(pool=None, *, protect=False):
    result = [{"Key": "runs-fleet:managed", "Value": "true"}]
    if pool:
        result.append({"Key": "runs-fleet:pool", "Value": pool})
    if protect:
        result.append({"Key": "runs-fleet:protect", "Value": "true"})
    return result


def seed(aws, settings, scale: float, ssm_scale: float) -> dict:
    """Seed the fleet; returns what was made (counts the minimum-call arithmetic needs)."""
    from moto.sqs.models import sqs_backends
    from moto.ssm.models import ssm_backends

    from pipelines.common.aws import batch_write_with_retry
    from sandbox import backdate
    from sandbox.server import MOTO_ACCOUNT_ID

    now = datetime.now(timezone.utc)
    region = aws.ec2.meta.region_name
    pools = {"small": 60, "large": 180, "gpu": 360}
    batch_write_with_retry(aws.dynamodb, settings.pools_table, [
        {"PutRequest": {"Item": {"pool_name": {"S": p}, "max_runtime_minutes": {"N": str(m)},
                                 "instance_type": {"S": "t3.micro"}, "ebs_gb": {"N": "30"}}}}
        for p, m in pools.items()
    ])
    running_total = int(10_000 * scale)
    orphans = int(running_total * 0.05)
    protected, long_busy = max(1, orphans // 50), max(1, orphans // 25)
    young = running_total - orphans - protected - long_busy
    info: dict = {"reservations_running": 0}
    running: list[str] = []
    jobs: list[dict] = []
    t0 = time.perf_counter()

    # Young instances (busy or idle): not candidates, whatever their job; shared tags keep seeding fast.
    for n, pool in enumerate(pools):
        ids, r = bulk_run(aws, young // 3 + (young % 3 if n == 0 else 0), tags(pool))
        running += ids
        info["reservations_running"] += r
        backdate.backdate_instances(ids, now - timedelta(minutes=20), region)
    old_groups = [("orphan-job", orphans // 2, False), ("orphan", orphans - orphans // 2, False),
                  ("protected", protected, True), ("long-busy", long_busy, False)]
    orphan_ids: list[str] = []
    for kind, count, protect in old_groups:
        for n, pool in enumerate(pools):
            share = count // 3 + (count % 3 if n == 0 else 0)
            if not share:
                continue
            ids, r = bulk_run(aws, share, tags(pool, protect=protect))
            info["reservations_running"] += r
            running += ids
            backdate.backdate_instances(ids, now - timedelta(minutes=pools[pool] + 10 + 45), region)
            for instance_id in ids:
                if kind in ("orphan-job", "long-busy", "protected"):
                    job_id = f"job-{instance_id}"
                    status = "running" if kind == "long-busy" else "completed"
                    aws.ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "runs-fleet:job-id", "Value": job_id}])
                    jobs.append({"PutRequest": {"Item": {"job_id": {"S": job_id}, "status": {"S": status},
                                                         "pool": {"S": pool}, "instance_id": {"S": instance_id}}}})
                if kind in ("orphan-job", "orphan"):
                    orphan_ids.append(instance_id)
    batch_write_with_retry(aws.dynamodb, settings.jobs_table, jobs)
    info.update(running=len(running), orphans=len(orphan_ids), protected=protected, long_busy=long_busy)
    info["seconds_instances"] = round(time.perf_counter() - t0, 1)

    # Parameters: 18,000 of live runners (running, then stopped warm-pool instances), 2,000
    # stale (terminated instances, runner ids EC2 never knew). Written straight into the
    # in-process moto backend: 20,000 PutParameter calls over HTTP would dominate the run.
    t0 = time.perf_counter()
    live_wanted = int(18_000 * ssm_scale)
    live = running[:live_wanted]
    stopped, _ = bulk_run(aws, max(0, live_wanted - len(live)), tags("small"))
    for batch in range(0, len(stopped), 1000):
        aws.ec2.stop_instances(InstanceIds=stopped[batch : batch + 1000])
    terminated, _ = bulk_run(aws, int(1_000 * ssm_scale), tags("large"))
    for batch in range(0, len(terminated), 1000):
        aws.ec2.terminate_instances(InstanceIds=terminated[batch : batch + 1000])
    unknown = [f"i-0{n:016x}" for n in range(int(1_000 * ssm_scale))]
    params = live + stopped + terminated + unknown
    names = [settings.ssm_parameter_name(r) for r in params]
    ssm = ssm_backends[MOTO_ACCOUNT_ID][region]
    for name in names:
        ssm.put_parameter(name, "", '{"labels":["self-hosted"]}', "String", "", "", False, [], "text", None, None)
    backdate.backdate_parameters(names, now - timedelta(hours=3), region)
    stale_orphans = sum(1 for r in live if r in set(orphan_ids))
    info.update(parameters=len(names), stale_parameters=len(terminated) + len(unknown), stopped=len(stopped),
                terminated=len(terminated), orphan_parameters=stale_orphans)
    info["seconds_parameters"] = round(time.perf_counter() - t0, 1)

    # Queue sets: created in the backend too (6,000 CreateQueue calls), messages sent over HTTP.
    t0 = time.perf_counter()
    sets = int(2_000 * scale)
    dead_sets = sets // 10
    live_runners = running[: sets - dead_sets]
    dead_runners = [f"i-0dead{n:012x}" for n in range(dead_sets)]
    sqs = sqs_backends[MOTO_ACCOUNT_ID][region]
    base = aws.sqs.create_queue(QueueName=f"{settings.runner_queue_prefix}probe")["QueueUrl"].rsplit("/", 1)[0]
    aws.sqs.delete_queue(QueueUrl=f"{base}/{settings.runner_queue_prefix}probe")
    tracking = []
    with_messages = 0
    for n, runner in enumerate(live_runners + dead_runners):
        queue_names = settings.runner_queue_names(runner)
        for name in queue_names.values():
            sqs.create_queue(name)
        urls = {k: f"{base}/{q}" for k, q in queue_names.items()}
        if runner in dead_runners and n % 3 == 0:
            aws.sqs.send_message_batch(QueueUrl=urls["output"], Entries=[
                {"Id": str(k), "MessageBody": f'{{"step": {k}}}'} for k in range(3)])
            with_messages += 1
        backdate.backdate_queues(queue_names.values(), now - timedelta(days=2), region)
        last = str(int((now - timedelta(days=2)).timestamp() * 1000))
        tracking.append({"PutRequest": {"Item": {
            "runner_id": {"S": runner}, "input_queue_url": {"S": urls["input"]},
            "output_queue_url": {"S": urls["output"]}, "dlq_url": {"S": urls["dlq"]}, "last_activity": {"N": last}}}})
    batch_write_with_retry(aws.dynamodb, settings.queue_tracking_table, tracking)
    info.update(queue_sets=sets, orphaned_sets=dead_sets, sets_with_messages=with_messages)
    info["seconds_queues"] = round(time.perf_counter() - t0, 1)
    return info


def pages(n: int, size: int) -> int:
    return max(1, math.ceil(n / size))


def batches(n: int, size: int) -> int:
    return math.ceil(n / size)


def run(job, act_op, aws, settings):
    """Run one sweep job as an operator would (limits raised for the run); returns (result, calls, wall s)."""
    counter: Counter = Counter()
    COUNTING["current"] = counter
    started = time.perf_counter()
    result = job.execute_in_process(
        run_config={"ops": {act_op: {"config": {"max_actions": 1_000_000, "max_fraction": 0.5,
                                                 "confirm_after_minutes": 0}}}},
        resources={"aws": aws, "settings": settings}, raise_on_error=False,
    )
    wall = time.perf_counter() - started
    COUNTING["current"] = None
    return result, counter, wall


def report(name, wall, counter, minimum, interval, note=""):
    total, least = sum(counter.values()), sum(minimum.values())
    print(f"\n== {name}: {wall:.1f} s wall (schedule interval {interval}); {total} AWS calls, minimum {least}, "
          f"ratio {total / least:.3f}{note}")
    for api in sorted(set(counter) | set(minimum)):
        print(f"   {api:<28} {counter.get(api, 0):>7}   min {minimum.get(api, 0):>7}")
    return total / least


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1,
                        help="fraction of the full instance and queue counts (default 0.1: what fits in ~5 min on moto)")
    parser.add_argument("--ssm-scale", type=float, default=None,
                        help="fraction of the full parameter count (default: half of --scale); moto answers "
                             "DescribeParameters by filtering every parameter for every 10-item page")
    args = parser.parse_args()

    server, url = start_moto()
    os.environ.update(sandbox_env(url))
    import logging

    logging.getLogger("dagster").setLevel(logging.WARNING)
    from pipelines.sweeps import orphaned_instances as oi, orphaned_queues as oq, stale_ssm
    from resources import AwsClients, add_client_observer, load_settings
    from sandbox.deploy import deploy_stack

    add_client_observer(count_calls)
    # moto answers a DescribeInstances page of thousands of instances slowly: give it time
    # rather than letting botocore time out and retry (which would inflate the call count).
    aws, settings = AwsClients(read_timeout=600.0), load_settings()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    started = time.perf_counter()
    ssm_scale = args.scale / 2 if args.ssm_scale is None else args.ssm_scale
    info = seed(aws, settings, args.scale, ssm_scale)
    print(f"seeded in {time.perf_counter() - started:.1f} s: {info}")
    ratios = {}

    # --- orphaned instances
    result, counter, wall = run(oi.orphaned_instances_sweep, oi.ACT_OP, aws, settings)
    assert result.success, "orphaned_instances_sweep failed"
    plan = result.output_for_node(oi.PLAN_OP)
    planned = len(plan.actions)
    assert planned == info["orphans"], (planned, info["orphans"])
    tagged = sum(1 for job in plan.targets.values() if job) + info["long_busy"]
    tagged_targets = sum(1 for job in plan.targets.values() if job)
    # The re-check reads again what the plan relied on (contract): the pools table and the
    # jobs of the tagged targets, besides the targets themselves.
    minimum = Counter({
        "DescribeInstances": pages(info["reservations_running"], 1000) + batches(planned, 200),
        "Scan": 2, "BatchGetItem": batches(tagged, 100) + batches(tagged_targets, 100),
        "TerminateInstances": batches(planned, 1000), "PutMetricData": 1,
    })
    ratios["orphaned_instances"] = report(
        f"orphaned_instances_sweep ({info['running']} running, {planned} orphaned terminated)", wall, counter,
        minimum, "15 min",
        note="\n   (moto pages DescribeInstances by reservation: bulk seeding put up to 1,000 instances in one; "
             f"AWS would page by instance: {pages(info['running'], 1000)} pages)",
    )

    # --- stale SSM
    result, counter, wall = run(stale_ssm.stale_ssm_sweep, stale_ssm.ACT_OP, aws, settings)
    assert result.success, "stale_ssm_sweep failed"
    plan = result.output_for_node(stale_ssm.PLAN_OP)
    planned = len(plan.actions)
    # The orphaned-instances run just terminated its orphans: their parameters are stale now too.
    assert planned == info["stale_parameters"] + info["orphan_parameters"], (planned, info)
    moto_page = 10  # moto answers DescribeParameters 10 a page whatever MaxResults asks; AWS gives 50
    # Plus the re-check's re-read of the targets' LastModifiedDate (50 names a filter; moto pages 10).
    minimum = Counter({
        "DescribeParameters": pages(info["parameters"], moto_page) + pages(planned, moto_page),
        "DescribeInstances": batches(info["parameters"], 200) + batches(planned, 200),
        "DeleteParameters": batches(planned, 10), "PutMetricData": 1,
    })
    ratios["stale_ssm"] = report(
        f"stale_ssm_sweep ({info['parameters']} parameters, {planned} stale deleted)", wall, counter, minimum, "1 h",
        note=f"\n   (on AWS DescribeParameters pages 50 at a time: {pages(info['parameters'], 50)} pages)",
    )

    # --- orphaned queues
    result, counter, wall = run(oq.orphaned_queues_sweep, oq.ACT_OP, aws, settings)
    assert result.success, "orphaned_queues_sweep failed"
    plan = result.output_for_node(oq.PLAN_OP)
    planned = len(plan.actions)
    assert planned == info["orphaned_sets"], (planned, info)
    queues = 3 * info["queue_sets"]
    orphan_queues = 3 * planned
    # Runners of live queue sets include some of the terminated orphans: only runners whose
    # queues exist are looked up, 200 ids a call.
    minimum = Counter({
        "ListQueues": pages(queues, 1000), "Scan": 1,
        "DescribeInstances": batches(info["queue_sets"], 200) + batches(planned, 200),
        "GetQueueAttributes": orphan_queues * 2,  # age at plan time, message counts just before delete
        "ReceiveMessage": info["sets_with_messages"],  # 3 messages: one receive each
        "PutObject": info["sets_with_messages"], "GetObject": info["sets_with_messages"],  # archive + verify
        "DeleteQueue": orphan_queues, "BatchWriteItem": batches(planned, 25), "PutMetricData": 1,
    })
    ratios["orphaned_queues"] = report(
        f"orphaned_queues_sweep ({queues} queues, {orphan_queues} orphaned archived and deleted)", wall, counter,
        minimum, "6 h",
    )
    print("\nratios:", {k: round(v, 3) for k, v in ratios.items()})
    server.stop()


if __name__ == "__main__":
    main()
