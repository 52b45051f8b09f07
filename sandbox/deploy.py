"""Deploy the fleet (infra/fleet.yaml) and the housekeeping stack (infra/template.yaml) through CloudFormation.

The same two templates a user with no fleet deploys (docs/deploy.md); a user whose fleet
exists deploys only the housekeeping stack, with the fleet's names as parameters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parent.parent / "infra"
TEMPLATE_PATH = INFRA / "template.yaml"  # the housekeeping stack: policies, roles, alarms, dashboard
FLEET_TEMPLATE_PATH = INFRA / "fleet.yaml"  # the fleet's tables, queues, bucket and cluster
STACK_NAME = "runs-fleet"
HOUSEKEEPING_STACK_SUFFIX = "-housekeeping"


class DeployError(RuntimeError):
    pass


def template_body(path: Path = TEMPLATE_PATH) -> str:
    return path.read_text()


def _declared(path: Path) -> set[str]:
    import yaml

    return set(yaml.safe_load(path.read_text()).get("Parameters", {}))


def deploy_stack(
    cloudformation: Any,
    dynamodb: Any,
    *,
    stack_name: str = STACK_NAME,
    parameters: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> dict[str, str]:
    """Create the fleet stack ``stack_name`` and the housekeeping stack ``stack_name``-housekeeping
    unless they exist; return both stacks' outputs by key.

    Each template gets the ``parameters`` it declares (the resource names are in both).
    Re-running reuses stacks that are already complete. Where moto's CloudFormation leaves a
    property out (the queue-tracking table's TTL), the same setting is applied directly.
    """
    parameters = parameters or {}
    outputs: dict[str, str] = {}
    for name, path in ((stack_name, FLEET_TEMPLATE_PATH), (stack_name + HOUSEKEEPING_STACK_SUFFIX, TEMPLATE_PATH)):
        declared = _declared(path)
        outputs.update(_deploy_one(cloudformation, name, path, {k: v for k, v in parameters.items() if k in declared},
                                   timeout_s))
    _ensure_ttl(dynamodb, outputs["QueueTrackingTableName"])
    return outputs


def _deploy_one(cloudformation: Any, stack_name: str, path: Path, parameters: dict[str, str],
                timeout_s: float) -> dict[str, str]:
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except cloudformation.exceptions.ClientError as error:
        if "does not exist" not in str(error):
            raise
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=template_body(path),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        stack = _wait_for_stack(cloudformation, stack_name, timeout_s)
    if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise DeployError(f"stack {stack_name} is {stack['StackStatus']}: {stack.get('StackStatusReason', '')}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _wait_for_stack(cloudformation: Any, stack_name: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            return stack
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name} still {stack['StackStatus']} after {timeout_s:.0f} s")
        time.sleep(1)


def _ensure_ttl(dynamodb: Any, table: str) -> None:
    # moto's CloudFormation ignores TimeToLiveSpecification; real CloudFormation applies it.
    status = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"]
    if status not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
        )
