"""The fleet ledger at scale: AWS calls against the minimum (pages only), peak memory, wall time.

The issue's size is 10,000 runners with all their pieces. Each runner here has an EC2
instance (running, tagged with a running job), an SSM parameter, three per-runner queues, a
tracking record and a job record; ``--leak-percent`` more runner ids are gone and left a
parameter, queues, a tracking record and a finished job (leaked), and as many finished jobs
again belong to runners gone clean. moto creates each queue and parameter in its own call, so
the default is 1,000 runners (a few minutes of seeding); the ledger's reads are all pages, so
its calls grow with the pages. Run from the repo root:

    .venv/bin/python bench/ledger.py [--runners 1000] [--leak-percent 2]

Minimum per API (pages only): DescribeInstances pages (moto pages by reservation of 100
instances, AWS by 1000 instances), ListTasks one call per desired status (2), DescribeTasks
100 tasks a call, DescribeParameters 50 a page on AWS (moto pages 10 whatever is asked, so the
minimum here is moto's pages), ListQueues 1000 a page, one Scan page per MB
of each table (the pools table once), PutMetricData 1000 data a call. The optional per-queue
GetQueueAttributes (leaked queues only) is shown apart: the run is made with the default bound
(100) and with 0 (pages only).

Peak memory is tracemalloc's peak over the materialization; the moto server runs in this
process, so it includes moto's own allocations while answering: an upper bound.
"""

import argparse
import json
import math
import random
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagster import DagsterInstance, materialize  # noqa: E402

from bench.audit import RESERVATION, CallLog, speed_up_moto_tag_lookup  # noqa: E402
from pipelines.ledger.assets import fleet_ledger  # noqa: E402
from resources import add_client_observer, load_aws_clients, load_settings  # noqa: E402
from sandbox import backdate  # noqa: E402
from sandbox.deploy import deploy_stack  # noqa: E402
from sandbox.server import MOTO_ACCOUNT_ID, sandbox_env, start_moto  # noqa: E402

POOLS = ["linux-small", "linux-large", "arm", "gpu"]
TYPES = ["t3.medium", "c6i.2xlarge", "m6g.xlarge", "g5.xlarge"]


def batch_write(aws, table, items):
    for start in range(0, len(items), 25):
        aws.dynamodb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": i}} for i in items[start:start + 25]]})


def seed(aws, settings, runners: int, leaked: int, now: datetime) -> dict:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[MOTO_ACCOUNT_ID][aws.ec2.meta.region_name]
    batch_write(aws, settings.pools_table, [
        {"pool_name": {"S": p}, "instance_type": {"S": t}, "ebs_gb": {"N": "50"}, "max_runtime_minutes": {"N": "360"},
         "desired_running": {"N": "10"}, "desired_stopped": {"N": "0"}} for p, t in zip(POOLS, TYPES)])
    ids: list[str] = []
    reservations = 0
    for p, (pool, itype) in enumerate(zip(POOLS, TYPES)):
        count = runners // len(POOLS) + (1 if p < runners % len(POOLS) else 0)
        tags = [{"Key": "runs-fleet:managed", "Value": "true"}, {"Key": "runs-fleet:pool", "Value": pool}]
        for start in range(0, count, RESERVATION):
            n = min(RESERVATION, count - start)
            reservations += 1
            response = aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType=itype, MinCount=n, MaxCount=n,
                                             TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
            ids += [i["InstanceId"] for i in response["Instances"]]
    jobs, counter = [], iter(range(1_000_000, 9_999_999))
    by_id = {instance.id: instance for instance in backend.all_instances()}
    for n, iid in enumerate(ids):
        by_id[iid].launch_time = (now - timedelta(minutes=30)).replace(tzinfo=None)
        job_id = str(next(counter))
        backend.create_tags([iid], {"runs-fleet:job-id": job_id})
        jobs.append({"job_id": {"S": job_id}, "status": {"S": "running"}, "pool": {"S": POOLS[n % 4]},
                     "instance_id": {"S": iid}, "started_at": {"S": (now - timedelta(minutes=20)).strftime(
                         "%Y-%m-%dT%H:%M:%SZ")}})
    gone = [f"i-{n:017x}" for n in range(1, leaked + 1)]
    clean = [f"i-{n:017x}" for n in range(leaked + 1, leaked + runners + 1)]
    for n, runner in enumerate(gone + clean):
        jobs.append({"job_id": {"S": str(next(counter))}, "status": {"S": "completed"}, "pool": {"S": POOLS[n % 4]},
                     "instance_id": {"S": runner}, "completed_at": {"S": (now - timedelta(days=1)).strftime(
                         "%Y-%m-%dT%H:%M:%SZ")}})
    batch_write(aws, settings.jobs_table, jobs)

    with_pieces = ids + gone

    def pieces(runner):
        name = settings.ssm_parameter_name(runner)
        aws.ssm.put_parameter(Name=name, Type="String", Value="{}", Overwrite=True)
        urls = {k: aws.sqs.create_queue(QueueName=q)["QueueUrl"] for k, q in settings.runner_queue_names(runner).items()}
        return name, urls

    with ThreadPoolExecutor(max_workers=8) as workers:
        made = list(workers.map(pieces, with_pieces))
    backdate.backdate_parameters([name for name, _ in made], now - timedelta(hours=3), aws.ssm.meta.region_name)
    ms = int((now - timedelta(days=2)).timestamp() * 1000)
    batch_write(aws, settings.queue_tracking_table, [
        {"runner_id": {"S": r}, "input_queue_url": {"S": u["input"]}, "output_queue_url": {"S": u["output"]},
         "dlq_url": {"S": u["dlq"]}, "created_at": {"N": str(ms)}, "last_activity": {"N": str(ms)}}
        for r, (_, u) in zip(with_pieces, made)])
    return {"instances": len(ids), "reservations": reservations, "leaked_runners": len(gone),
            "clean_runners": len(clean), "parameters": len(made), "queues": 3 * len(made), "jobs": len(jobs)}


def run(aws, settings, log: CallLog, reads: int):
    log.clear()
    tracemalloc.start()
    started = time.perf_counter()
    result = materialize([fleet_ledger], resources={"aws": aws, "settings": settings},
                         instance=DagsterInstance.ephemeral(),
                         run_config={"ops": {"fleet_ledger": {"config": {"queue_attribute_reads": reads}}}})
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.success
    return elapsed, peak, result.asset_materializations_for_node("fleet_ledger")[0].metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=1000)
    parser.add_argument("--leak-percent", type=float, default=2.0)
    args = parser.parse_args()
    server, url = start_moto()
    import os

    os.environ.update(sandbox_env(url))
    speed_up_moto_tag_lookup()
    aws, settings = load_aws_clients(), load_settings()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    leaked = max(1, int(args.runners * args.leak_percent / 100))
    seeded = seed(aws, settings, args.runners, leaked, now)
    print(f"seeded in {time.perf_counter() - started:.0f} s: {json.dumps(seeded)}")

    log = CallLog()
    remove = add_client_observer(log.observe)
    try:
        for reads in (100, 0):
            elapsed, peak, metadata = run(aws, settings, log, reads)
            minimum = {
                "ec2:DescribeInstances": max(1, math.ceil(seeded["reservations"] / 1000)),
                "ecs:ListTasks": 2,
                # moto's DescribeParameters pages 10 whatever MaxResults asks (AWS: the 50 asked for).
                "ssm:DescribeParameters": max(1, math.ceil(seeded["parameters"] / 10)),
                "sqs:ListQueues": max(1, math.ceil((seeded["queues"] + 4) / 1000)),
                # one paged Scan per table: tracking, jobs, pools (the ledger reads the pools table twice)
                "dynamodb:Scan": log.calls["dynamodb:Scan"] - 1,
                "cloudwatch:PutMetricData": 1,
            }
            pages = {api: n for api, n in log.calls.items() if api != "sqs:GetQueueAttributes"}
            made, least = sum(pages.values()), sum(minimum.values())
            print(f"\nqueue_attribute_reads={reads}: {elapsed:.1f} s wall, peak {peak / 2**20:.1f} MiB "
                  f"(tracemalloc, moto included), {metadata['runners'].value} runners "
                  f"({metadata['runners_leaked'].value} leaked, {metadata['runners_live'].value} live, "
                  f"{metadata['runners_finished_clean'].value} finished_clean)")
            print(f"  page calls {made}, minimum {least}, ratio {made / least:.3f}; "
                  f"plus GetQueueAttributes {log.calls.get('sqs:GetQueueAttributes', 0)}")
            for api in sorted(set(log.calls) | set(minimum)):
                print(f"  {api:30s} made {log.calls.get(api, 0):6d}   minimum {minimum.get(api, 0):6d}")
    finally:
        remove()
        server.stop()


if __name__ == "__main__":
    main()
