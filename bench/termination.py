"""Termination processing at fleet scale: messages/s, AWS calls per message against the minimum, peak memory.

Run from the repo root:

    .venv/bin/python bench/termination.py [--sizes 250,1000] [--messages-every 50] [--tracemalloc]

The issue asks for 10,000 runners (``--sizes 10000``). Against moto that does not fit the
benchmark budget of ~5 minutes: moto answers one request in ~10-20 ms on a 2-core machine
and the work is ~7.7 requests a message, so 10,000 messages take well over half an hour,
plus the seeding of 40,000 resources. The default sizes fit; calls per message and the
ratio to the minimum do not depend on the size, and two sizes show whether memory does.

For each size N it seeds N runners — each with a running job, an SSM parameter, three
per-runner queues and a tracking record; every ``--messages-every``-th runner's output queue
holds 3 messages — sends one termination message per runner, then drains the queue with
the real ``process_terminations`` job (run after run, 1,000 messages a run, as the sensor
would start them) and checks the end state: every job completed, every parameter, queue and
tracking record gone, the termination queue empty.

Calls are counted per HTTP request (botocore's ``before-send``, so retries count too) on
the job's own clients. The minimum is what the APIs allow at best for the same work:
ReceiveMessage and DeleteMessageBatch 10 a call, one UpdateItem per job (a conditional
update has no batch form), DeleteParameters 10 a call, tracking records read 100 and
deleted 25 a call, PutMetricData 1,000 data a call, one GetQueueAttributes and one
DeleteQueue per per-runner queue (SQS has no batch form of either, and a queue may only be
deleted once known empty), and for a queue holding messages one receive per 10 messages
plus the archive's PutObject and its verifying GetObject.

The moto server runs in a child process here (the other benchmarks run it in-process):
tracemalloc then measures the drain's own memory (Dagster, boto3, the job), not moto's
storage of the 40,000 seeded resources, and moto gets the second core.
"""

import argparse
import json
import math
import multiprocessing
import os
import resource
import sys
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagster import DagsterInstance  # noqa: E402

from pipelines.termination.jobs import process_terminations  # noqa: E402
from resources import add_client_observer, load_aws_clients, load_settings  # noqa: E402
from sandbox.deploy import deploy_stack  # noqa: E402
from sandbox.server import reset_moto, sandbox_env  # noqa: E402

POOLS = ["linux-small", "linux-large", "gpu"]
QUEUE_MESSAGES = 3  # in the output queue of every --messages-every-th runner
RUN_MAX = 1000  # messages per run: the job's default


def _serve(port_queue) -> None:  # pragma: no cover - runs in the child process
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_queue.put(server.get_host_and_port()[1])
    while True:
        time.sleep(3600)


def start_moto_child():
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    process = ctx.Process(target=_serve, args=(ports,), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{ports.get(timeout=60)}"


def seed(aws, settings, size: int, messages_every: int) -> dict:
    """N runners with their job, parameter, queues and tracking record; one termination message each."""
    runners = [f"i-{n:017x}" for n in range(size)]
    jobs = {r: str(1_000_000 + n) for n, r in enumerate(runners)}
    termination_url = aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]

    def batch_write(table, items):
        for start in range(0, len(items), 25):
            pending = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
            while pending:
                pending = aws.dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def one(n_runner):
        n, runner = n_runner
        aws.ssm.put_parameter(Name=settings.ssm_parameter_name(runner), Value='{"labels":["self-hosted"]}',
                              Type="String", Overwrite=True)
        urls = {k: aws.sqs.create_queue(QueueName=q)["QueueUrl"] for k, q in settings.runner_queue_names(runner).items()}
        if messages_every and n % messages_every == 0:
            aws.sqs.send_message_batch(QueueUrl=urls["output"], Entries=[
                {"Id": str(k), "MessageBody": json.dumps({"step": k, "log": f"runner {runner} step {k}"})}
                for k in range(QUEUE_MESSAGES)])
        return {"runner_id": {"S": runner}, "input_queue_url": {"S": urls["input"]},
                "output_queue_url": {"S": urls["output"]}, "dlq_url": {"S": urls["dlq"]},
                "created_at": {"N": "1"}, "last_activity": {"N": "1"}}

    with ThreadPoolExecutor(max_workers=8) as pool:
        tracking = list(pool.map(one, enumerate(runners)))
        job_items = [{"job_id": {"S": jobs[r]}, "status": {"S": "running"}, "pool": {"S": POOLS[n % len(POOLS)]},
                      "instance_id": {"S": r}, "created_at": {"S": "2026-11-22T09:59:00Z"},
                      "started_at": {"S": "2026-11-22T10:00:00Z"}} for n, r in enumerate(runners)]
        list(pool.map(lambda part: batch_write(settings.jobs_table, part),
                      [job_items[i : i + 500] for i in range(0, size, 500)]))
        list(pool.map(lambda part: batch_write(settings.queue_tracking_table, part),
                      [tracking[i : i + 500] for i in range(0, size, 500)]))

        def send(start):
            entries = []
            for k, runner in enumerate(runners[start : start + 10]):
                n = start + k
                ok = n % 5 != 0
                body = {"instance_id": runner, "job_id": jobs[runner], "status": "completed" if ok else "failed",
                        "exit_code": 0 if ok else 1, "duration_seconds": 60 + n % 1800,
                        "started_at": "2026-11-22T10:00:00Z", "completed_at": "2026-11-22T10:30:00Z"}
                entries.append({"Id": str(k), "MessageBody": json.dumps(body), "MessageGroupId": runner})
            aws.sqs.send_message_batch(QueueUrl=termination_url, Entries=entries)

        list(pool.map(send, range(0, size, 10)))
    with_messages = len(range(0, size, messages_every)) if messages_every else 0
    return {"runners": runners, "with_messages": with_messages}


def minimum_calls(size: int, with_messages: int) -> Counter:
    """The fewest requests the same work can take, by service:operation (see the module docstring)."""
    receives_per_archive = math.ceil(QUEUE_MESSAGES / 10)
    return Counter({
        "sqs:ReceiveMessage": math.ceil(size / 10) + with_messages * receives_per_archive,
        "sqs:DeleteMessageBatch": math.ceil(size / 10),
        "dynamodb:UpdateItem": size,
        "ssm:DeleteParameters": math.ceil(size / 10),
        "dynamodb:BatchGetItem": math.ceil(size / 100),
        "dynamodb:BatchWriteItem": math.ceil(size / 25),
        "monitoring:PutMetricData": math.ceil(2 * size / 1000),
        "sqs:GetQueueAttributes": 3 * size,
        "sqs:DeleteQueue": 3 * size,
        "s3:PutObject": with_messages,
        "s3:GetObject": with_messages,
    })


def check_end_state(aws, settings, size: int) -> dict:
    completed = failed = 0
    for page in aws.dynamodb.get_paginator("scan").paginate(TableName=settings.jobs_table, ProjectionExpression="#s",
                                                            ExpressionAttributeNames={"#s": "status"}):
        for item in page["Items"]:
            completed += item["status"]["S"] == "completed"
            failed += item["status"]["S"] == "failed"
    queues = sum(len(p.get("QueueUrls", [])) for p in aws.sqs.get_paginator("list_queues").paginate(
        QueueNamePrefix=settings.runner_queue_prefix))
    params = sum(len(p["Parameters"]) for p in aws.ssm.get_paginator("get_parameters_by_path").paginate(
        Path=settings.ssm_prefix, Recursive=True))
    tracking = aws.dynamodb.scan(TableName=settings.queue_tracking_table, Select="COUNT")["Count"]
    url = aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]
    attrs = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                       "ApproximateNumberOfMessagesNotVisible"])
    left = sum(int(v) for v in attrs["Attributes"].values())
    state = {"jobs_finished": completed + failed, "queues_left": queues, "parameters_left": params,
             "tracking_left": tracking, "messages_left": left}
    ok = state == {"jobs_finished": size, "queues_left": 0, "parameters_left": 0, "tracking_left": 0,
                   "messages_left": 0}
    state["ok"] = ok
    return state


def bench(url: str, size: int, messages_every: int, trace: bool) -> dict:
    reset_moto(url)
    seeding = load_aws_clients()
    deploy_stack(seeding.client("cloudformation"), seeding.dynamodb)
    settings = load_settings()
    started = time.monotonic()
    seeded = seed(seeding, settings, size, messages_every)
    seed_seconds = time.monotonic() - started

    calls: Counter = Counter()

    def observe(client):
        service = client.meta.service_model.endpoint_prefix
        client.meta.events.register(
            "before-send", lambda request, **kw: calls.update([f"{service}:{kw['event_name'].rsplit('.', 1)[-1]}"])
        )

    undo = add_client_observer(observe)
    job_aws = load_aws_clients()  # fresh clients, observed; the seeding ones are not
    runs = 0
    received = 0
    with DagsterInstance.local_temp() as instance:  # run logs to sqlite on disk, as in a deployment
        if trace:
            tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        started = time.monotonic()
        while True:
            result = process_terminations.execute_in_process(
                run_config={"ops": {"drain_termination_queue": {"config": {"max_messages": RUN_MAX, "wait_seconds": 1}}}},
                resources={"aws": job_aws, "settings": settings}, instance=instance,
            )
            out = result.output_for_node("drain_termination_queue")
            runs += 1
            received += out["received"]
            if out["received"] == 0 or runs > size // RUN_MAX + 5:
                break
            if out["failed"]:
                print(f"  run {runs}: {out['failed']} failed", flush=True)
        drain_seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] - base if trace else None
        tracemalloc.stop()
    undo()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    state = check_end_state(seeding, settings, size)
    minimum = minimum_calls(size, seeded["with_messages"])
    return {"size": size, "seed_seconds": seed_seconds, "drain_seconds": drain_seconds, "runs": runs,
            "received": received, "calls": calls, "minimum": minimum, "peak_mib": None if peak is None else peak / 2**20,
            "max_rss_mib": max_rss, "state": state,
            "with_messages": seeded["with_messages"]}


def report(r: dict) -> None:
    size = r["size"]
    calls, minimum = r["calls"], r["minimum"]
    total, least = sum(calls.values()), sum(minimum.values())
    print(f"\n== {size:,} runners / termination messages ({r['with_messages']} runners with {QUEUE_MESSAGES} queued "
          f"messages each) ==")
    print(f"seeding: {r['seed_seconds']:.0f}s; drain: {r['drain_seconds']:.1f}s in {r['runs']} run(s) "
          f"(the last one finds the queue empty), {r['received']:,} messages received")
    traced = " and tracemalloc" if r["peak_mib"] is not None else ""
    print(f"throughput: {size / r['drain_seconds']:.1f} messages/s (Dagster run overhead{traced} included)")
    if r["peak_mib"] is not None:
        print(f"peak traced memory during the drain: {r['peak_mib']:.1f} MiB")
    print(f"peak RSS of the bench process so far: {r['max_rss_mib']:.0f} MiB")
    print(f"end state: {r['state']}")
    print(f"{'call':36} {'made':>8} {'minimum':>8} {'per msg':>8} {'min/msg':>8}")
    for key in sorted(set(calls) | set(minimum), key=lambda k: (k.split(':')[0], -calls.get(k, 0))):
        print(f"{key:36} {calls.get(key, 0):8,} {minimum.get(key, 0):8,} {calls.get(key, 0) / size:8.3f} "
              f"{minimum.get(key, 0) / size:8.3f}")
    by_service: Counter = Counter()
    for key, n in calls.items():
        by_service[key.split(":")[0]] += n
    print("per message by service: " + ", ".join(f"{s} {n / size:.3f}" for s, n in sorted(by_service.items())))
    print(f"total: {total / size:.3f} calls/message; minimum {least / size:.3f}; ratio {total / least:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250,1000", help="comma-separated runner/message counts, smallest first")
    parser.add_argument("--messages-every", type=int, default=50, help="every Nth runner's output queue holds messages")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations during the drain (slows it down ~2x)")
    args = parser.parse_args()
    process, url = start_moto_child()
    os.environ.update(sandbox_env(url))
    for var in [v for v in os.environ if v.startswith("RUNS_FLEET_")]:
        del os.environ[var]
    try:
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            results.append(bench(url, size, args.messages_every, args.tracemalloc))
            report(results[-1])
        if len(results) > 1:
            print("\npeak RSS after each size (cumulative peak, sizes in the order run): "
                  + ", ".join(f"{r['size']:,}: {r['max_rss_mib']:.0f} MiB" for r in results))
            if results[0]["peak_mib"] is not None:
                print("peak traced memory by size: "
                      + ", ".join(f"{r['size']:,}: {r['peak_mib']:.1f} MiB" for r in results))
        if not all(r["state"]["ok"] for r in results):
            sys.exit("end state wrong: see above")
    finally:
        process.terminate()


if __name__ == "__main__":
    main()
