"""Every piece at the issue's full size, under AWS's latency and rate limits: calls ÷ minimum, wall ÷ floor.

    .venv/bin/python bench/full_size.py                  # every piece, each in its own process, then the table
    .venv/bin/python bench/full_size.py --piece sweeps   # one piece (sweeps | audit | ledger | termination |
                                                         #            archival | custodian)

Each piece seeds its fleet into a fresh moto server with plain clients, then measures the
project's real Dagster job or asset on fresh clients that carry :mod:`bench.latency`'s model
(per-call latency, AWS's token buckets, throttling answered as AWS does). moto's superlinear
paths are replaced by :mod:`bench.moto_fast` (same answers; ``tests/bench``), and the seeded
instances are split one per reservation so DescribeInstances pages by instance, as on AWS.

Printed per piece: wall (the run, Dagster included), the floor (bench.latency.LatencyModel.floor
on the *minimum* calls, at the concurrency the code used), AWS calls made (successful HTTP
requests; throttled attempts apart) against the minimum, the throttled attempts, and the
calls where moto itself took longer than the modelled latency (the stand-in's own cost,
which no floor contains). Sizes: orphaned instances 10,000 running (5 % orphaned); stale SSM
20,000 parameters; orphaned queues 2,000 queue sets (10 % orphaned); pool audit and queue
health 10,000 instances / 2,000 queue sets; the ledger 10,000 runners; termination 10,000
messages; archival 100,000 records. ``--scale`` shrinks them all (a quick check).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUIET = {"console": {"config": {"log_level": "WARNING"}}}  # Dagster's per-event console lines, off
PIECES = ("sweeps", "audit", "ledger", "termination", "archival", "custodian")
SERVICE_OF = {
    "DescribeInstances": "ec2", "TerminateInstances": "ec2", "Scan": "dynamodb", "BatchGetItem": "dynamodb",
    "BatchWriteItem": "dynamodb", "PutMetricData": "cloudwatch", "DescribeParameters": "ssm",
    "DeleteParameters": "ssm", "ListQueues": "sqs", "GetQueueAttributes": "sqs", "ReceiveMessage": "sqs",
    "DeleteQueue": "sqs", "PutObject": "s3", "GetObject": "s3",
}


def qualify(minimum: dict) -> Counter:
    """``service:Operation`` keys (the older benchmarks name operations bare, or CloudWatch ``monitoring``)."""
    out: Counter = Counter()
    for api, n in minimum.items():
        if ":" not in api:
            api = f"{SERVICE_OF[api]}:{api}"
        out[api.replace("monitoring:", "cloudwatch:")] += n
    return out


def pages(n: int, size: int) -> int:
    return max(1, math.ceil(n / size))


def report(piece: str, size: str, model, minimum: dict, wall: float, **extra) -> dict:
    """Print one piece's figures by API and a RESULT line; returns the row."""
    minimum = qualify(minimum)
    made = model.calls()
    floor, per_api = model.floor(minimum)
    total, least = sum(made.values()), sum(minimum.values())
    summary = model.summary()
    print(f"\n== {piece} ({size}): wall {wall:.1f} s, floor {floor:.1f} s, wall/floor {wall / floor:.2f}; "
          f"calls {total}, minimum {least}, ratio {total / least:.3f}; throttled attempts {summary['throttled']}; "
          f"moto slower than the model on {summary['moto_over']} calls (+{summary['moto_excess_s']} s summed)")
    print(f"   {'API':34} {'made':>7} {'min':>7} {'throttled':>9} {'max conc':>8} {'floor s':>8} {'stand-in s':>10}")
    for api in sorted(set(made) | set(minimum)):
        s = model.stats.get(api)
        print(f"   {api:34} {made.get(api, 0):>7} {minimum.get(api, 0):>7} {s.throttled if s else 0:>9} "
              f"{s.max_in_flight if s else 0:>8} {per_api.get(api, 0):>8.2f} {s.moto_excess if s else 0:>10.1f}")
    print("   (stand-in s: time moto and botocore's parsing took beyond the modelled latency, summed over calls)")
    # The stand-in's excess on APIs the code called one at a time adds straight to the wall;
    # without it, what the run would take if moto answered within the modelled latency (a
    # lower bound: it also removes botocore's parsing of the answers, which AWS would cost too).
    sequential = sum(s.moto_excess for s in model.stats.values() if s.max_in_flight <= 1)
    adjusted = max(wall - sequential, 0.0)
    print(f"   wall less the stand-in's excess on sequential calls: {adjusted:.1f} s, / floor {adjusted / floor:.2f}")
    row = {"piece": piece, "size": size, "wall": round(wall, 1), "floor": round(floor, 2),
           "wall_less_standin": round(adjusted, 1), "adjusted_floor": round(adjusted / floor, 2),
           "wall_floor": round(wall / floor, 2), "calls": total, "minimum": least,
           "ratio": round(total / least, 3), "throttled": summary["throttled"],
           "moto_excess_s": summary["moto_excess_s"], **extra}
    print("RESULT " + json.dumps(row), flush=True)
    return row


def in_process_moto():
    from bench import moto_fast
    from sandbox.server import sandbox_env, start_moto

    moto_fast.apply()
    server, url = start_moto()
    os.environ.update(sandbox_env(url))
    for var in [v for v in os.environ if v.startswith("RUNS_FLEET_")]:
        del os.environ[var]
    return server, url


def modelled_clients():
    """A fresh AwsClients whose every client carries a new latency model (and the model)."""
    from bench.latency import LatencyModel
    from resources import AwsClients, add_client_observer

    model = LatencyModel()
    add_client_observer(model.attach)
    # moto answers a 1,000-instance page in seconds, not AWS's tens of milliseconds: no time-outs.
    return AwsClients(read_timeout=900.0), model


def timed(model, fn):
    model.reset_stats()
    model.reset_buckets()
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


# --- the three sweeps ------------------------------------------------------------------


def seed_sweeps_fleet(scale: float):
    import logging

    from bench import sweeps
    from bench.moto_fast import one_instance_per_reservation
    from resources import AwsClients, load_settings
    from sandbox.deploy import deploy_stack

    logging.getLogger("dagster").setLevel(logging.WARNING)
    aws, settings = AwsClients(read_timeout=900.0), load_settings()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    started = time.perf_counter()
    info = sweeps.seed(aws, settings, scale, scale)
    info["reservations"] = one_instance_per_reservation(aws.ec2.meta.region_name)
    print(f"seeded in {time.perf_counter() - started:.0f} s: {info}", flush=True)
    return settings, info


def run_sweep(job, act_op, aws, settings, model):
    config = {"ops": {act_op: {"config": {"max_actions": 1_000_000, "max_fraction": 0.5, "confirm_after_minutes": 0}}},
              "loggers": QUIET}
    result, wall = timed(model, lambda: job.execute_in_process(
        run_config=config, resources={"aws": aws, "settings": settings}, raise_on_error=False))
    assert result.success, f"{job.name} failed"
    return result, wall


def piece_sweeps(scale: float) -> None:
    server, _ = in_process_moto()
    settings, info = seed_sweeps_fleet(scale)
    from pipelines.sweeps import orphaned_instances as oi, orphaned_queues as oq, stale_ssm

    aws, model = modelled_clients()
    result, wall = run_sweep(oi.orphaned_instances_sweep, oi.ACT_OP, aws, settings, model)
    plan = result.output_for_node(oi.PLAN_OP)
    planned = len(plan.actions)
    assert planned == info["orphans"], (planned, info["orphans"])
    tagged_targets = sum(1 for job in plan.targets.values() if job)
    tagged = tagged_targets + info["long_busy"]
    report("orphaned instances", f"{info['running']:,} running, {planned} orphaned", model, {
        "DescribeInstances": pages(info["running"], 1000) + math.ceil(planned / 200),
        "Scan": 2, "BatchGetItem": math.ceil(tagged / 100) + math.ceil(tagged_targets / 100),
        "TerminateInstances": math.ceil(planned / 1000), "PutMetricData": 1,
    }, wall, terminated=planned)

    result, wall = run_sweep(stale_ssm.stale_ssm_sweep, stale_ssm.ACT_OP, aws, settings, model)
    planned = len(result.output_for_node(stale_ssm.PLAN_OP).actions)
    assert planned == info["stale_parameters"] + info["orphan_parameters"], (planned, info)
    report("stale SSM", f"{info['parameters']:,} parameters, {planned} stale", model, {
        "DescribeParameters": pages(info["parameters"], 50) + math.ceil(planned / 50),
        "DescribeInstances": math.ceil(info["parameters"] / 200) + math.ceil(planned / 200),
        "DeleteParameters": math.ceil(planned / 10), "PutMetricData": 1,
    }, wall, deleted=planned)

    result, wall = run_sweep(oq.orphaned_queues_sweep, oq.ACT_OP, aws, settings, model)
    planned = len(result.output_for_node(oq.PLAN_OP).actions)
    assert planned == info["orphaned_sets"], (planned, info)
    queues = 3 * info["queue_sets"]
    report("orphaned queues", f"{info['queue_sets']:,} queue sets ({queues:,} queues), {planned} orphaned", model, {
        "ListQueues": pages(queues, 1000), "Scan": 1,
        "DescribeInstances": math.ceil(info["queue_sets"] / 200) + math.ceil(planned / 200),
        "GetQueueAttributes": 3 * planned * 2, "ReceiveMessage": info["sets_with_messages"],
        "PutObject": info["sets_with_messages"], "GetObject": info["sets_with_messages"],
        "DeleteQueue": 3 * planned, "BatchWriteItem": math.ceil(planned / 25), "PutMetricData": 1,
    }, wall, deleted_sets=planned)
    server.stop()


# --- pool audit and queue health -----------------------------------------------------------


def piece_audit(scale: float) -> None:
    import random

    from dagster import DagsterInstance, materialize

    from bench import audit
    from bench.moto_fast import one_instance_per_reservation

    server, _ = in_process_moto()
    from resources import AwsClients, load_settings
    from sandbox.deploy import deploy_stack

    seed_aws, settings = AwsClients(read_timeout=900.0), load_settings()
    deploy_stack(seed_aws.client("cloudformation"), seed_aws.dynamodb)
    now = datetime.now(timezone.utc)
    instances, sets = int(10_000 * scale), int(2_000 * scale)
    started = time.perf_counter()
    fleet = audit.seed_instances(seed_aws, settings, instances, 20, random.Random(7), now)
    queues = audit.seed_queues(seed_aws, settings, sets, now)
    one_instance_per_reservation(seed_aws.ec2.meta.region_name)
    print(f"seeded in {time.perf_counter() - started:.0f} s: {fleet} {queues}", flush=True)

    from pipelines.audit.pool_audit import cost_metrics, pool_cost_report, pool_inventory
    from pipelines.audit.queue_health import queue_health

    aws, model = modelled_clients()

    def run(assets):
        result = materialize(assets, resources={"aws": aws, "settings": settings}, instance=DagsterInstance.ephemeral(),
                             run_config={"loggers": QUIET})
        assert result.success
        return result

    result, wall = timed(model, lambda: run([pool_inventory, pool_cost_report]))
    metrics = len(cost_metrics(result.output_for_node("pool_cost_report")))
    report("pool audit", f"{instances:,} instances", model, {
        "ec2:DescribeInstances": pages(instances, 1000), "dynamodb:Scan": 1,
        "dynamodb:BatchGetItem": math.ceil(fleet["running_jobs"] / 100), "s3:PutObject": 1,
        "cloudwatch:PutMetricData": pages(metrics, 1000),
    }, wall)
    result, wall = timed(model, lambda: run([queue_health]))
    report("queue health", f"{sets:,} queue sets ({queues['queues']:,} queues)", model, {
        "sqs:GetQueueUrl": 4, "sqs:ListQueues": pages(queues["queues"], 1000),
        "sqs:GetQueueAttributes": queues["queues"] + 4,
        "cloudwatch:GetMetricData": math.ceil(queues["with_messages"] / 500), "cloudwatch:PutMetricData": 1,
    }, wall)
    server.stop()


# --- the fleet ledger -------------------------------------------------------------------


def piece_ledger(scale: float) -> None:
    from bench import ledger
    from bench.audit import CallLog
    from bench.moto_fast import one_instance_per_reservation

    server, _ = in_process_moto()
    from resources import AwsClients, load_settings
    from sandbox.deploy import deploy_stack

    seed_aws, settings = AwsClients(read_timeout=900.0), load_settings()
    deploy_stack(seed_aws.client("cloudformation"), seed_aws.dynamodb)
    runners = int(10_000 * scale)
    leaked = max(1, runners // 50)
    started = time.perf_counter()
    seeded = ledger.seed(seed_aws, settings, runners, leaked, datetime.now(timezone.utc))
    one_instance_per_reservation(seed_aws.ec2.meta.region_name)
    print(f"seeded in {time.perf_counter() - started:.0f} s: {seeded}", flush=True)

    aws, model = modelled_clients()
    log = CallLog()
    from resources import add_client_observer

    add_client_observer(log.observe)
    aws.client("dynamodb")  # the observer sees clients made from now on
    (elapsed, peak, metadata), wall = timed(model, lambda: ledger.run(aws, settings, log, 0))
    scans = model.calls().get("dynamodb:Scan", 0)
    report("fleet ledger", f"{runners:,} runners (+{leaked} leaked)", model, {
        "ec2:DescribeInstances": pages(seeded["instances"], 1000), "ecs:ListTasks": 2,
        "ssm:DescribeParameters": pages(seeded["parameters"], 50),
        "sqs:ListQueues": pages(seeded["queues"] + 4, 1000),
        # one paged Scan per table (tracking, jobs, pools): the pages the tables need, as made, less
        # the pools table's second read
        "dynamodb:Scan": max(3, scans - 1), "cloudwatch:PutMetricData": 1,
    }, wall, peak_mib=round(peak / 2**20, 1),
        classes={k: metadata[k].value for k in ("runners", "runners_leaked", "runners_live")})
    server.stop()


# --- termination -----------------------------------------------------------------------


def _termination_child(port_queue) -> None:  # pragma: no cover - child process
    sys.path.insert(0, str(ROOT))
    from bench import moto_fast
    from bench.termination import _serve

    moto_fast.apply()
    _serve(port_queue)


def piece_termination(scale: float) -> None:
    import multiprocessing

    from dagster import DagsterInstance

    from bench import termination as term
    from sandbox.server import sandbox_env

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    child = ctx.Process(target=_termination_child, args=(ports,), daemon=True)
    child.start()
    url = f"http://127.0.0.1:{ports.get(timeout=120)}"
    os.environ.update(sandbox_env(url))
    for var in [v for v in os.environ if v.startswith("RUNS_FLEET_")]:
        del os.environ[var]
    try:
        from pipelines.termination.jobs import process_terminations
        from resources import load_aws_clients, load_settings
        from sandbox.deploy import deploy_stack

        size = int(10_000 * scale)
        seeding, settings = load_aws_clients(), load_settings()
        deploy_stack(seeding.client("cloudformation"), seeding.dynamodb)
        started = time.perf_counter()
        seeded = term.seed(seeding, settings, size, 50)
        print(f"seeded {size} runners in {time.perf_counter() - started:.0f} s", flush=True)
        aws, model = modelled_clients()
        runs = 0

        def drain():
            nonlocal runs
            with DagsterInstance.local_temp() as instance:
                while True:
                    result = process_terminations.execute_in_process(
                        run_config={"ops": {"drain_termination_queue": {"config": {
                            "max_messages": term.RUN_MAX, "wait_seconds": 1}}}, "loggers": QUIET},
                        resources={"aws": aws, "settings": settings}, instance=instance)
                    runs += 1
                    out = result.output_for_node("drain_termination_queue")
                    if out["received"] == 0 or runs > size // term.RUN_MAX + 5:
                        return

        _, wall = timed(model, drain)
        state = term.check_end_state(seeding, settings, size)
        assert state["ok"], state
        report("termination", f"{size:,} messages in {runs} runs", model,
               term.minimum_calls(size, seeded["with_messages"]), wall, messages_per_s=round(size / wall, 1))
    finally:
        child.terminate()


# --- archival --------------------------------------------------------------------------


def _archival_child(conn) -> None:  # pragma: no cover - child process
    sys.path.insert(0, str(ROOT))
    from bench import moto_fast
    from bench.archival import _moto_process

    moto_fast.apply(("ec2_tag_lookup", "ec2_instance_ids", "ssm_describe", "sqs_retention", "dynamodb_transact"))
    _moto_process(conn)  # adds its own json serialiser patch


def piece_archival(scale: float) -> None:
    import multiprocessing

    from bench import archival
    from sandbox.server import sandbox_env

    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=_archival_child, args=(child_conn,), daemon=True)
    child.start()
    url = conn.recv()
    os.environ.update(sandbox_env(url))
    for var in [v for v in os.environ if v.startswith("RUNS_FLEET_")]:
        del os.environ[var]
    try:
        from definitions import defs
        from resources import load_aws_clients, load_settings
        from sandbox.deploy import deploy_stack

        count = int(100_000 * scale)
        seeding, settings = load_aws_clients(), load_settings()
        deploy_stack(seeding.client("cloudformation"), seeding.dynamodb)
        started = time.perf_counter()
        conn.send(("seed", settings.jobs_table, archival.LARGE_DAY, count, "l-"))
        conn.recv()
        print(f"seeded {count:,} records in {time.perf_counter() - started:.0f} s", flush=True)
        aws, model = modelled_clients()
        for service in ("dynamodb", "s3", "cloudwatch"):
            aws.client(service)
        resources = {"aws": aws, "settings": settings}
        archival.archive(defs, archival.EMPTY_DAY, Counter(), resources, False)  # Dagster's first-run imports
        (_, _, metadata), wall = timed(model, lambda: archival.archive(
            defs, archival.LARGE_DAY, Counter(), resources, False))
        left = archival.remaining(seeding, settings.jobs_table, archival.LARGE_DAY)
        assert metadata["records_deleted"] == count and left == 0, (metadata, left)
        made = model.calls()
        # The query pages made (1 MB each), a TransactWriteItems per 100 records, and the S3
        # objects of the archive as designed (parts, manifest, the job index's bucket objects)
        # written and read back once each: counted at what was made. The index's design (one
        # object per hash bucket per day) is a product choice; the report lists it.
        minimum = {api: n for api, n in made.items() if api != "dynamodb:TransactWriteItems"}
        minimum["dynamodb:TransactWriteItems"] = math.ceil(count / 100)
        report("archival", f"{count:,} records", model, minimum, wall, records_per_s=round(count / wall))
    finally:
        conn.send(("stop",))
        child.join(timeout=30)


# --- Cloud Custodian -------------------------------------------------------------------

C7N_VENV = ROOT / ".bench-venv-c7n"
C7N_RUNNER = ROOT / "bench" / "c7n_run.py"


def ensure_c7n() -> Path | None:
    python = C7N_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(C7N_VENV)], check=True)
    if subprocess.run([str(python), "-c", "import c7n"], capture_output=True).returncode:
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "c7n"])
        if done.returncode:
            return None
    return python


def piece_custodian(scale: float) -> None:
    python = ensure_c7n()
    if python is None:
        print("RESULT " + json.dumps({"piece": "custodian", "error": "pip could not install c7n"}))
        return
    server, url = in_process_moto()
    settings, info = seed_sweeps_fleet(scale)
    pools = {"small": 60, "large": 180, "gpu": 360}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([str(python), str(C7N_RUNNER), json.dumps(pools)], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    print(done.stdout[-4000:], done.stderr[-4000:])
    from moto.ec2.models import ec2_backends

    from sandbox.server import DEFAULT_REGION, MOTO_ACCOUNT_ID

    backend = ec2_backends[MOTO_ACCOUNT_ID][DEFAULT_REGION]
    terminated = sum(1 for i in backend.all_instances() if i.state == "terminated") - info["terminated"]
    inner = next((json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("C7NRUN ")), {})
    print("RESULT " + json.dumps({"piece": "custodian", "size": f"{info['running']:,} running",
                                  "wall": round(inner.get("wall", wall), 1), "process_wall": round(wall, 1),
                                  "wall_less_standin": round(inner.get("wall_less_standin", wall), 1),
                                  "by_api": inner.get("by_api"),
                                  "calls": inner.get("calls"), "throttled": inner.get("throttled"),
                                  "terminated": terminated, "orphans_by_project_rule": info["orphans"],
                                  "returncode": done.returncode}), flush=True)
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piece", choices=PIECES + ("all",), default="all")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every full size (default 1)")
    parser.add_argument("--table", nargs="+", metavar="LOG", help="print the table from the RESULT lines of run logs")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line[7:]) for log in args.table for line in Path(log).read_text().splitlines()
                     if line.startswith("RESULT ")]))
        return
    if args.piece != "all":
        globals()[f"piece_{args.piece}"](args.scale)
        return
    rows = []
    for piece in PIECES:
        command = [sys.executable, __file__, "--piece", piece, "--scale", str(args.scale)]
        print(f"\n##### {' '.join(command[1:])}", flush=True)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("RESULT "):
                rows.append(json.loads(line[7:]))
        process.wait()
    print(table(rows))


def table(rows: list[dict]) -> str:
    """The README's table from RESULT rows."""
    out = ["| piece | size | calls / minimum | wall s | floor s | wall / floor | wall less stand-in s | that / floor "
           "| throttled | other |", "|---|---|---|---|---|---|---|---|---|---|"]
    skip = {"piece", "size", "calls", "minimum", "ratio", "wall", "floor", "wall_floor", "wall_less_standin",
            "adjusted_floor", "throttled", "moto_excess_s", "by_api"}
    for r in rows:
        other = ", ".join(f"{k} {v}" for k, v in r.items() if k not in skip)
        if "floor" in r:
            out.append(f"| {r['piece']} | {r['size']} | {r['calls']} / {r['minimum']} = **{r['ratio']}** | {r['wall']} | "
                       f"{r['floor']} | **{r['wall_floor']}** | {r['wall_less_standin']} | {r['adjusted_floor']} | "
                       f"{r['throttled']} | {other} |")
        else:
            out.append(f"| {r['piece']} | {r.get('size', '')} | {r.get('calls')} calls | {r.get('wall')} | | | "
                       f"{r.get('wall_less_standin', '')} | | {r.get('throttled', '')} | {other} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
