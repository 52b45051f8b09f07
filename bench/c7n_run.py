"""Cloud Custodian's orphaned-instance policy under the same latency model (run by bench/full_size.py).

Runs in Custodian's own venv (``.bench-venv-c7n``, made by ``full_size.py --piece custodian``),
against the moto server named by ``AWS_ENDPOINT_URL``. Every botocore client Custodian makes
carries :class:`bench.latency.LatencyModel` (botocore's ``Session.create_client`` wrapped
here; Custodian's code is not touched). Argument: a JSON object pool -> max runtime minutes.

The policy, one per pool: ec2 instances in state running (the query), tagged managed and in
that pool, without the protect tag, launched more than max runtime + 10 minutes ago (a
``value`` filter on ``LaunchTime``: Custodian's ``instance-age`` filter reads the oldest EBS
attach time, which the stand-in does not backdate) → ``terminate``. Custodian cannot read the
jobs table, so it terminates busy long-running instances the project keeps; the comparison
is of wall time on the same fleet.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import botocore.session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.latency import LatencyModel  # noqa: E402

MODEL = LatencyModel()
_create_client = botocore.session.Session.create_client


def create_client(self, *args, **kwargs):
    client = _create_client(self, *args, **kwargs)
    MODEL.attach(client)
    return client


botocore.session.Session.create_client = create_client


def policy(pools: dict[str, int]) -> str:
    lines = ["policies:"]
    for pool, minutes in pools.items():
        lines += [
            f"  - name: orphaned-instances-{pool}",
            "    resource: ec2",
            "    query:",
            "      - instance-state-name: running",
            "    filters:",
            '      - "tag:runs-fleet:managed": "true"',
            f'      - "tag:runs-fleet:pool": "{pool}"',
            '      - "tag:runs-fleet:protect": absent',
            f"      - {{type: value, key: LaunchTime, value_type: age, op: gt, value: {(minutes + 10) / 1440:.6f}}}",
            "    actions:",
            "      - terminate",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    pools = json.loads(sys.argv[1])
    from c7n.cli import main as custodian

    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "policy.yml"
        path.write_text(policy(pools))
        # Custodian's own resource cache (its default 15 min period) lets the three policies share
        # one DescribeInstances sweep of the fleet, as a scheduled Custodian run would.
        sys.argv = ["custodian", "run", "--region", "us-east-1", "-s", str(Path(out) / "output"), "--cache",
                    str(Path(out) / "cache.pkl"), str(path)]
        started = time.perf_counter()
        try:
            custodian()
        except SystemExit as e:
            if e.code:
                raise
        wall = time.perf_counter() - started
    calls = MODEL.calls()
    # As bench/full_size.py: the stand-in's excess on APIs called one at a time, taken off.
    sequential = sum(s.moto_excess for s in MODEL.stats.values() if s.max_in_flight <= 1)
    print("C7NRUN " + json.dumps({"wall": wall, "calls": sum(calls.values()), "by_api": dict(calls),
                                  "throttled": MODEL.summary()["throttled"],
                                  "wall_less_standin": max(0.0, wall - sequential),
                                  "max_in_flight": {a: s.max_in_flight for a, s in MODEL.stats.items()}}), flush=True)


if __name__ == "__main__":
    main()
