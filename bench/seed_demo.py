"""How long seeding the `make run` demo fleet takes (bar: under 60 s), with AWS calls by API.

Run: .venv/bin/python bench/seed_demo.py
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resources import add_client_observer, load_aws_clients, load_settings  # noqa: E402
from sandbox.deploy import deploy_stack  # noqa: E402
from sandbox.seed import demo_spec, seed_fleet  # noqa: E402
from sandbox.server import sandbox_env, start_moto  # noqa: E402


def main() -> None:
    server, url = start_moto()
    os.environ.update(sandbox_env(url))
    calls: Counter[str] = Counter()
    add_client_observer(lambda client: client.meta.events.register(
        "before-call", lambda model, **_: calls.update([f"{model.service_model.service_name}:{model.name}"])))
    aws, settings = load_aws_clients(), load_settings()
    started = time.perf_counter()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    deployed = time.perf_counter()
    fleet = seed_fleet(aws, settings, demo_spec())
    seeded = time.perf_counter()
    server.stop()
    print(f"deploy: {deployed - started:.1f} s; seed: {seeded - deployed:.1f} s "
          f"({fleet.instances} instances, {fleet.finished_jobs + len(fleet.running_jobs)} job records)")
    print(f"AWS calls: {sum(calls.values())}")
    for api, count in calls.most_common(10):
        print(f"  {api}: {count}")


if __name__ == "__main__":
    main()
