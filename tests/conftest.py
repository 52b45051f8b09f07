"""Shared fixtures: one real moto server for the session, a freshly deployed stack per test.

The moto server runs in this process (moto's ThreadedMotoServer on a free loopback port);
boto3 reaches it over HTTP through AWS_ENDPOINT_URL exactly as it would reach AWS. Each test
that asks for `aws` gets every service reset and the infra/ template deployed anew.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sandbox.server import reset_moto, sandbox_env, start_moto

# The multi-fleet suite loads the code location with RUNS_FLEET_FLEETS: it runs in its own
# process (tests/test_fleets_suite.py), never in this session's (read before the
# loop below clears every RUNS_FLEET_* variable).
collect_ignore = [] if os.environ.get("RUNS_FLEET_FLEETS_SUITE") == "1" else ["fleets"]

# Settings must come from the contract's defaults in tests, whatever the shell exported.
for _var in [v for v in os.environ if v.startswith("RUNS_FLEET_") or v.startswith("AWS_")]:
    del os.environ[_var]
# The archival tests use fixed days (2026-11-10): the partitions must not move with the clock.
os.environ["RUNS_FLEET_ARCHIVE_START"] = "2024-01-01"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server, url = start_moto()
    os.environ.update(sandbox_env(url))
    yield url
    server.stop()


@pytest.fixture()
def stack(moto_url: str) -> dict[str, str]:
    """Reset moto and deploy infra/fleet.yaml and infra/template.yaml through CloudFormation; returns the stacks' outputs."""
    from resources import load_aws_clients
    from sandbox.deploy import deploy_stack

    reset_moto(moto_url)
    clients = load_aws_clients()
    return deploy_stack(clients.client("cloudformation"), clients.dynamodb)


@pytest.fixture()
def aws(stack: dict[str, str]):
    """The project's own AWS resource, pointed at the freshly deployed moto stack."""
    from resources import load_aws_clients

    return load_aws_clients()


@pytest.fixture()
def settings():
    from resources import load_settings

    return load_settings()
