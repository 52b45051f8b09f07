"""Deploy infra/template.yaml through the CloudFormation API: the same template a user deploys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"
STACK_NAME = "runs-fleet"


class DeployError(RuntimeError):
    pass


def template_body() -> str:
    return TEMPLATE_PATH.read_text()


def deploy_stack(
    cloudformation: Any,
    dynamodb: Any,
    *,
    stack_name: str = STACK_NAME,
    parameters: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> dict[str, str]:
    """Create the stack unless it already exists; return its outputs by key.

    Re-running reuses a stack that is already complete. Where moto's CloudFormation leaves a
    property out (the queue-tracking table's TTL), the same setting is applied directly.
    """
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except cloudformation.exceptions.ClientError as error:
        if "does not exist" not in str(error):
            raise
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=template_body(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        stack = _wait_for_stack(cloudformation, stack_name, timeout_s)
    if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise DeployError(f"stack {stack_name} is {stack['StackStatus']}: {stack.get('StackStatusReason', '')}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    _ensure_ttl(dynamodb, outputs["QueueTrackingTableName"])
    return outputs


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
