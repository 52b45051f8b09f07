"""Benchmark: archive_old_jobs on one day of 100,000 finished jobs and one of 10,000.

    .venv/bin/python bench/archival.py            # 100,000 and 10,000
    .venv/bin/python bench/archival.py --large 50000 --small 5000

Moto runs in a child process (so tracemalloc here sees only the archival's own memory, not
the server's), and the records are seeded straight into its backend there (seeding 110,000
records through BatchWriteItem would take minutes and measure nothing of interest). Each
day is then archived by the real job, ``archive_old_jobs``, through ``execute_in_process``
with the code location's own resources, talking to moto over HTTP like to AWS.

Printed per day: records/s (whole run, Dagster included, with tracemalloc on), AWS calls by
operation against the minimum (query pages + parts written + ceil(N/100) deletes), and
tracemalloc's peak. The run's boto3 clients are created before measuring, and an empty day
is archived first (warm-up, then again as the baseline row): the peaks are the archival's
and Dagster's per-run memory, not one-off imports.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
import tracemalloc
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.server import DEFAULT_REGION, MOTO_ACCOUNT_ID, sandbox_env, start_moto  # noqa: E402

STATUSES = ("completed", "failed", "cancelled", "interrupted")
WEIGHTS = (80, 12, 5, 3)  # out of 100, as in the seeded demo fleet
EMPTY_DAY, SMALL_DAY, LARGE_DAY = date(2026, 10, 3), date(2026, 10, 2), date(2026, 10, 1)


def job_item(n: int, day: date, prefix: str) -> dict:
    status = STATUSES[next(i for i, edge in enumerate((80, 92, 97, 100)) if n % 100 < edge)]
    second = (n * 7919) % 86_400
    completed = f"{day.isoformat()}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
    duration = 30 + (n * 37) % 3600
    return {
        "job_id": {"S": f"{prefix}{n:07d}"}, "status": {"S": status}, "pool": {"S": ("linux-small", "linux-large", "gpu")[n % 3]},
        "instance_id": {"S": f"i-{n:017x}"}, "created_at": {"S": completed}, "started_at": {"S": completed},
        "completed_at": {"S": completed}, "exit_code": {"N": "0" if status == "completed" else "1"},
        "duration_seconds": {"N": str(duration)},
    }


def _speed_up_moto_dynamodb_responses() -> None:
    """Serialise moto's DynamoDB responses with json.dumps (benchmark child process only).

    moto 5.2's generic, model-driven response serialiser spends about 5 ms per item on this
    machine, so a 100,000-record day would spend most of an hour inside moto. DynamoDB's JSON
    protocol is the wire dict moto already builds, so json.dumps sends boto3 the same body.
    Anything json.dumps cannot handle falls back to moto's own serialiser.
    """
    from bench import moto_fast

    moto_fast.dynamodb_json()  # the one copy of the patch (tests/bench proves its answers equal)


def _moto_process(conn) -> None:
    """The moto server, and a seeding command that writes straight into its backend."""
    _speed_up_moto_dynamodb_responses()
    server, url = start_moto()
    conn.send(url)
    from moto.dynamodb.models import dynamodb_backends

    while True:
        command = conn.recv()
        if command[0] == "stop":
            server.stop()
            conn.send("stopped")
            return
        _, table, day, count, prefix = command
        backend = dynamodb_backends[MOTO_ACCOUNT_ID][DEFAULT_REGION]
        for n in range(count):
            backend.put_item(table, job_item(n, day, prefix))
        conn.send(count)


def archive(defs, day: date, calls: Counter, resources: dict, trace: bool) -> tuple[float, int, dict]:
    from dagster import DagsterInstance

    calls.clear()
    if trace:
        tracemalloc.start()
        tracemalloc.reset_peak()
    started = time.perf_counter()
    result = defs.resolve_job_def("archive_old_jobs").execute_in_process(
        partition_key=day.isoformat(), instance=DagsterInstance.ephemeral(), resources=resources)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    assert result.success
    step = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    return elapsed, peak, {k: v.value for k, v in step.event_specific_data.metadata.items()}


def remaining(aws, table: str, day: date) -> int:
    total = 0
    for status in STATUSES:
        for page in aws.dynamodb.get_paginator("query").paginate(
            TableName=table, IndexName="completed_at-index", Select="COUNT",
            KeyConditionExpression="#s = :s AND begins_with(completed_at, :d)", ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}, ":d": {"S": day.isoformat()}},
        ):
            total += page["Count"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="time the runs without tracemalloc's overhead (no memory figures)")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    server = context.Process(target=_moto_process, args=(child_conn,), daemon=True)
    server.start()
    url = conn.recv()
    os.environ.update(sandbox_env(url))
    for var in [v for v in os.environ if v.startswith("RUNS_FLEET_")]:
        del os.environ[var]

    from definitions import defs
    from resources import load_aws_clients, load_settings
    from resources.aws import add_client_observer
    from sandbox.deploy import deploy_stack

    aws, settings = load_aws_clients(), load_settings()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    started = time.perf_counter()
    for day, count in ((LARGE_DAY, args.large), (SMALL_DAY, args.small)):
        conn.send(("seed", settings.jobs_table, day, count, f"{day:%m%d}-"))
        conn.recv()
    print(f"seeded {args.large:,} + {args.small:,} finished jobs in moto's backend in {time.perf_counter() - started:.1f} s",
          flush=True)

    calls: Counter = Counter()

    def count_calls(client) -> None:
        service = client.meta.service_model.service_name
        client.meta.events.register("before-call", lambda model, **_: calls.update([f"{service}:{model.name}"]))

    add_client_observer(count_calls)
    # The run's own clients, created (and botocore's service models loaded) before measuring:
    # what is measured is the archival, not loading the S3 model.
    runner = load_aws_clients()
    for service in ("dynamodb", "s3", "cloudwatch"):
        runner.client(service)
    resources = {"aws": runner, "settings": settings}
    archive(defs, EMPTY_DAY, calls, resources, False)  # warm-up: Dagster's first-run imports
    rows = []
    for label, day, count in (("empty day", EMPTY_DAY, 0), ("small", SMALL_DAY, args.small), ("large", LARGE_DAY, args.large)):
        print(f"archiving the {label} ({count:,} records)...", flush=True)
        elapsed, peak, metadata = archive(defs, day, calls, resources, not args.no_tracemalloc)
        left = remaining(aws, settings.jobs_table, day)
        assert metadata["records_deleted"] == count and left == 0, (metadata, left)
        minimum = calls["dynamodb:Query"] + metadata["parts_written"] + math.ceil(count / 100)
        total = sum(calls.values())
        rows.append((label, count, elapsed, peak, total, minimum, dict(calls), metadata))

    print()
    baseline = rows[0][3]
    print(f"tracemalloc: {'off' if args.no_tracemalloc else 'on (slows Python code, so records/s is pessimistic)'}")
    print(f"{'day':<10} {'records':>9} {'seconds':>8} {'records/s':>10} {'AWS calls':>10} {'minimum':>8} {'ratio':>6} "
          f"{'peak MiB':>9} {'above empty':>12}")
    for label, count, elapsed, peak, total, minimum, _, _ in rows:
        ratio = f"{total / minimum:.3f}" if minimum else "-"
        print(f"{label:<10} {count:>9,} {elapsed:>8.1f} {count / elapsed:>10,.0f} {total:>10,} {minimum:>8,} {ratio:>6} "
              f"{peak / 2**20:>9.1f} {(peak - baseline) / 2**20:>12.1f}")
    print()
    for label, count, *_, by_operation, metadata in rows:
        print(f"{label}: calls {dict(sorted(by_operation.items()))}; parts {metadata['parts_written']}, "
              f"bytes {metadata['bytes_written']:,}, query pages {metadata['query_pages']}, "
              f"delete calls {metadata['delete_calls']}, delete write units {metadata['delete_write_units_estimated']:,} "
              f"(2 per KB per record, TransactWriteItems; BatchWriteItem would be half)")
    small, large = rows[1], rows[2]
    call_ratio = max(r[4] / r[5] for r in rows[1:])
    print()
    print(f"goal: call ratio <= 1.05 (worst of small and large): {call_ratio:.3f} -> "
          f"{'met' if call_ratio <= 1.05 else 'NOT met'}")
    if not args.no_tracemalloc:
        memory_ratio = large[3] / small[3]
        print(f"goal: peak memory for {large[1]:,} within 1.5x of that for {small[1]:,}: {memory_ratio:.2f}x -> "
              f"{'met' if memory_ratio <= 1.5 else 'NOT met'}")
    conn.send(("stop",))
    conn.recv()


if __name__ == "__main__":
    main()
