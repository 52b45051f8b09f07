"""The multi-fleet suite: the code location loaded with RUNS_FLEET_FLEETS (fleets.yaml).

Fleets are read when the code location is imported, so this suite runs in its own pytest
process (tests/test_fleets_suite.py starts it); the root conftest leaves it out of the main
session. Each test gets a reset moto server with every reachable fleet's stacks deployed in
its own account and region, through that fleet's assumed role.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FLEETS_FILE = Path(__file__).with_name("fleets.yaml")
os.environ["RUNS_FLEET_FLEETS"] = str(FLEETS_FILE)
REACHABLE = ["a-use1", "a-euw1", "b-use1", "b-euw1"]
DENIED = "denied"
DENIED_ACCOUNT = "333333333333"
ROLE_TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "fleet-role.yaml"
world_roles: dict = {}  # account -> its role stack, as last deployed


@pytest.fixture()
def fleets(moto_url: str):
    """{fleet name: (clients, settings, account)} for every reachable fleet, its stacks freshly deployed."""
    from pipelines.common.fleets import FLEETS
    from resources import load_aws_clients, load_settings
    from resources.aws import forget_sessions
    from resources.fleets import fleet_clients, fleet_settings
    from sandbox.deploy import deploy_stack
    from sandbox.server import reset_moto

    reset_moto(moto_url)
    forget_sessions()  # the reset server forgot every assumed role's credentials
    hub, base = load_aws_clients(), load_settings()
    hub_account = hub.client("sts").get_caller_identity()["Account"]
    world = {}
    policies: dict[str, list[str]] = {}
    for name in REACHABLE:
        fleet = FLEETS.get(name)
        aws, settings = fleet_clients(hub, fleet), fleet_settings(base, fleet)
        parameters = {"ArchiveBucketName": settings.archive_bucket, "JobsTableName": settings.jobs_table,
                      "HubAccountId": hub_account}
        outputs = deploy_stack(aws.client("cloudformation"), aws.dynamodb, parameters=parameters)
        account = fleet.role_arn.split(":")[4]
        policies.setdefault(account, []).append(outputs["HousekeepingPolicyArn"])
        world[name] = (aws, settings, account)
    # Each account's role, as a user deploys it: once per account, with every region's policy.
    for name in REACHABLE:
        aws, _, account = world[name]
        if account in policies:
            cloudformation = aws.client("cloudformation")
            cloudformation.create_stack(StackName="runs-fleet-role", TemplateBody=ROLE_TEMPLATE.read_text(),
                                        Capabilities=["CAPABILITY_NAMED_IAM"], Parameters=[
                {"ParameterKey": "HubAccountId", "ParameterValue": hub_account},
                {"ParameterKey": "HousekeepingPolicyArns", "ParameterValue": ",".join(policies.pop(account))}])
            world_roles[account] = cloudformation.describe_stacks(StackName="runs-fleet-role")["Stacks"][0]
    return world
