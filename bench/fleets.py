"""Many fleets side by side vs one big fleet: the orphaned instances sweep under AWS's latency and limits.

    .venv/bin/python bench/fleets.py                 # 4 fleets x 2,500 instances vs 1 fleet of 10,000
    .venv/bin/python bench/fleets.py --scale 0.1     # a quick check (250 / 1,000)

Issue #18's benchmark. One moto server (in this process, moto's superlinear paths patched by
:mod:`bench.moto_fast`) holds five fleets, each in its own region (AWS's rate limits are per
account and region, so four regions are four fleets as far as the limits go; the multi-fleet
suite proves accounts separately): four of 2,500 running instances and one of 10,000, each 5 %
orphaned. Each sweep runs in its own process, as the Dagster run queue runs them, on the
project's real Dagster job loaded from ``definitions.py``: the four fleets' runs as the fleet
partitions of one deployment (``RUNS_FLEET_FLEETS``), the big fleet as a single-fleet
deployment. Every process puts :mod:`bench.latency`'s model (latency, token buckets,
throttling) on its own clients: one model per fleet, i.e. per account and region.

The processes load the code location first and then start together on a signal, so the wall
times are the runs' own: the four fleets' wall is from the signal to the last one done.
Printed: each scenario's wall, AWS calls by API, and the ratios the issue asks for (calls
equal, wall <= 0.4x serial).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLEET_REGIONS = {"f-use1": "us-east-1", "f-usw2": "us-west-2", "f-euw1": "eu-west-1", "f-euc1": "eu-central-1"}
SERIAL_REGION = "us-east-2"
POOL, MAX_RUNTIME = "bench", 60
ACT = {"max_actions": 1_000_000, "max_fraction": 0.5, "confirm_after_minutes": 0}


def seed_fleet(region: str, bucket: str, running: int, *, spoke: bool) -> int:
    """Deploy the stacks in ``region`` (a spoke: no Dagster roles, which are per account) and launch
    ``running`` managed instances, 5 % of them orphaned."""
    from bench.moto_fast import one_instance_per_reservation
    from bench.sweeps import bulk_run, tags
    from resources import AwsClients, load_settings
    from sandbox import backdate
    from sandbox.deploy import deploy_stack
    from sandbox.server import MOTO_ACCOUNT_ID

    aws = AwsClients(region_name=region, read_timeout=900.0)
    settings = load_settings({"RUNS_FLEET_ARCHIVE_BUCKET": bucket})
    parameters = {"ArchiveBucketName": bucket, **({"HubAccountId": MOTO_ACCOUNT_ID} if spoke else {})}
    deploy_stack(aws.client("cloudformation"), aws.dynamodb, parameters=parameters)
    aws.dynamodb.put_item(TableName=settings.pools_table, Item={
        "pool_name": {"S": POOL}, "max_runtime_minutes": {"N": str(MAX_RUNTIME)},
        "instance_type": {"S": "t3.micro"}, "ebs_gb": {"N": "30"}})
    now = datetime.now(timezone.utc)
    orphans = running // 20
    young, _ = bulk_run(aws, running - orphans, tags(POOL))
    backdate.backdate_instances(young, now - timedelta(minutes=20), region)
    old, _ = bulk_run(aws, orphans, tags(POOL))
    backdate.backdate_instances(old, now - timedelta(minutes=MAX_RUNTIME + 10 + 45), region)
    one_instance_per_reservation(region)
    return orphans


def _child(name: str, env: dict, partition: str | None, ready, go, results) -> None:  # pragma: no cover - child
    os.environ.update(env)
    import logging

    logging.getLogger("dagster").setLevel(logging.WARNING)
    from bench.latency import LatencyModel
    from resources import add_client_observer

    model = LatencyModel()
    add_client_observer(model.attach)
    import definitions

    job = definitions.defs.resolve_job_def("orphaned_instances_sweep")
    config = {"ops": {"terminate_orphaned_instances": {"config": ACT}},
              "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    ready.put(name)
    go.wait()
    started = time.time()
    result = job.execute_in_process(run_config=config, partition_key=partition, raise_on_error=False)
    ended = time.time()
    plan = result.output_for_node("plan_orphaned_instances") if result.success else None
    results.put({"name": name, "success": result.success, "started": started, "ended": ended,
                 "planned": len(plan.actions) if plan else None, "calls": dict(model.calls()),
                 "throttled": model.summary()["throttled"], "moto_excess_s": model.summary()["moto_excess_s"]})


def run_together(runs: list[tuple[str, dict, str | None]]) -> tuple[float, list[dict]]:
    """Start one process per run, let each load the code location, then start them all at once."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_child, args=(name, env, partition, ready, go, results)) for name, env, partition in runs]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    signal = time.time()
    go.set()
    out = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return max(r["ended"] for r in out) - signal, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's size (default 1)")
    args = parser.parse_args()
    per_fleet, big = int(2_500 * args.scale), int(10_000 * args.scale)

    from bench import moto_fast
    from sandbox.server import sandbox_env, start_moto

    moto_fast.apply()
    server, url = start_moto()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNS_FLEET_", "AWS_"))}
    base_env.update(sandbox_env(url))
    os.environ.update(sandbox_env(url))
    started = time.perf_counter()
    orphans = {name: seed_fleet(region, f"runs-fleet-archive-{name}", per_fleet, spoke=True)
               for name, region in FLEET_REGIONS.items()}
    orphans["serial"] = seed_fleet(SERIAL_REGION, "runs-fleet-archive", big, spoke=False)
    print(f"seeded 4 x {per_fleet:,} + {big:,} instances in {time.perf_counter() - started:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        fleets_file = Path(folder) / "fleets.yaml"
        fleets_file.write_text("fleets:\n" + "".join(
            f"  - name: {name}\n    region: {region}\n    names: {{archive_bucket: runs-fleet-archive-{name}}}\n"
            for name, region in FLEET_REGIONS.items()))
        many_env = {**base_env, "RUNS_FLEET_FLEETS": str(fleets_file)}
        one_env = {**base_env, "AWS_REGION": SERIAL_REGION, "AWS_DEFAULT_REGION": SERIAL_REGION}
        serial_wall, (serial,) = run_together([("serial", one_env, None)])
        parallel_wall, parallel = run_together([(name, many_env, name) for name in FLEET_REGIONS])
    server.stop()

    failed = [r["name"] for r in [serial, *parallel] if not r["success"]]
    if failed:
        raise SystemExit(f"runs failed: {failed}")
    for r in [serial, *parallel]:
        assert r["planned"] == orphans[r["name"]], (r["name"], r["planned"], orphans[r["name"]])
    many_calls = sum((Counter(r["calls"]) for r in parallel), Counter())
    one_calls = Counter(serial["calls"])
    print(f"\n== orphaned instances sweep: 4 fleets x {per_fleet:,} in parallel vs 1 fleet of {big:,}")
    print(f"   {'API':34} {'4 fleets':>9} {'1 fleet':>9}")
    for api in sorted(set(many_calls) | set(one_calls)):
        print(f"   {api:34} {many_calls.get(api, 0):>9} {one_calls.get(api, 0):>9}")
    for r in parallel:
        print(f"   {r['name']}: run {r['ended'] - r['started']:.1f} s, {r['planned']} terminated, "
              f"throttled {r['throttled']}, stand-in excess {r['moto_excess_s']} s")
    total_many, total_one = sum(many_calls.values()), sum(one_calls.values())
    # The least calls each scenario allows: per fleet, DescribeInstances pages of 1,000 plus the re-check
    # (200 ids a call), the pools and jobs tables' Scans, one TerminateInstances per 1,000, one PutMetricData.
    def least(running: int, orphaned: int) -> int:
        return -(-running // 1000) + -(-orphaned // 200) + 2 + -(-orphaned // 1000) + 1
    min_many = sum(least(per_fleet, orphans[name]) for name in FLEET_REGIONS)
    min_one = least(big, orphans["serial"])
    row = {"piece": "fleets", "size": f"4 x {per_fleet} vs {big}", "wall_parallel": round(parallel_wall, 1),
           "wall_serial": round(serial_wall, 1), "wall_ratio": round(parallel_wall / serial_wall, 2),
           "calls_parallel": total_many, "calls_serial": total_one, "calls_ratio": round(total_many / total_one, 3),
           "minimum_parallel": min_many, "minimum_serial": min_one,
           "stand_in_excess_parallel_s": round(sum(r["moto_excess_s"] for r in parallel), 1),
           "stand_in_excess_serial_s": serial["moto_excess_s"]}
    print(f"   wall: 4 fleets {parallel_wall:.1f} s vs 1 fleet {serial_wall:.1f} s = {row['wall_ratio']:.2f}x "
          f"(goal <= 0.4); calls {total_many} vs {total_one} = {row['calls_ratio']:.3f}x (goal 1)")
    print(f"   calls / minimum: 4 fleets {total_many / min_many:.3f}, 1 fleet {total_one / min_one:.3f} (each fleet has "
          "its own tables, metrics and pages: 4 fleets' minimum is 4 per-fleet minimums, not the big fleet's)")
    print("RESULT " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
