"""Small fleet pieces the tests build one by one: instances, pools, runner parameters (old where asked)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sandbox import backdate
from tests.metadata import rows


def launch(aws, age_minutes, *, name="test", pool=None, job_id=None, protect=False, managed=True, count=1,
           account=backdate.MOTO_ACCOUNT_ID):
    """Launch ``count`` tagged instances launched ``age_minutes`` ago (in ``account``, whose clients ``aws`` are);
    one id, or a list when count > 1."""
    tags = [{"Key": "Name", "Value": name}]
    if managed:
        tags.append({"Key": "runs-fleet:managed", "Value": "true"})
    if pool:
        tags.append({"Key": "runs-fleet:pool", "Value": pool})
    if job_id is not None:
        tags.append({"Key": "runs-fleet:job-id", "Value": job_id})
    if protect:
        tags.append({"Key": "runs-fleet:protect", "Value": "true"})
    reservation = aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=count,
                                        MaxCount=count, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    backdate.backdate_instances(ids, datetime.now(timezone.utc) - timedelta(minutes=age_minutes),
                                aws.ec2.meta.region_name, account)
    return ids[0] if count == 1 else ids


def put_pool(aws, settings, name: str, max_runtime: int) -> None:
    aws.dynamodb.put_item(TableName=settings.pools_table, Item={
        "pool_name": {"S": name}, "instance_type": {"S": "t3.micro"}, "ebs_gb": {"N": "30"},
        "max_runtime_minutes": {"N": str(max_runtime)}, "desired_running": {"N": "1"}, "desired_stopped": {"N": "0"},
    })


def put_params(aws, settings, runner_ids, age_minutes: float, account=backdate.MOTO_ACCOUNT_ID) -> list[str]:
    """Runner config parameters last modified ``age_minutes`` ago; returns their names."""
    names = [settings.ssm_parameter_name(r) for r in runner_ids]
    for name in names:
        aws.ssm.put_parameter(Name=name, Type="String", Value=json.dumps({"labels": ["x"]}), Overwrite=True)
    backdate.backdate_parameters(names, datetime.now(timezone.utc) - timedelta(minutes=age_minutes),
                                 aws.ssm.meta.region_name, account)
    return names


def iso_minutes_ago(minutes: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def put_job(aws, settings, job_id: str, *, status: str | None = "running", started_minutes_ago: float | None = 120,
            started_at: str | None = None, instance_id: str | None = None, pool: str | None = "p", **extra) -> dict:
    """A jobs-table record as the contract shapes it (started_at from ``started_minutes_ago`` unless given raw)."""
    item = {"job_id": {"S": job_id}}
    if status is not None:
        item["status"] = {"S": status}
    if pool is not None:
        item["pool"] = {"S": pool}
    if instance_id is not None:
        item["instance_id"] = {"S": instance_id}
    started = started_at if started_at is not None else (
        iso_minutes_ago(started_minutes_ago) if started_minutes_ago is not None else None)
    if started is not None:
        item["started_at"] = {"S": started}
    for name, value in extra.items():
        item[name] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": str(value)}
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item=item)
    return item


def get_job(aws, settings, job_id: str) -> dict[str, str]:
    """A job record as plain strings (ConsistentRead), {} when absent."""
    item = aws.dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}},
                                 ConsistentRead=True).get("Item", {})
    return {k: next(iter(v.values())) for k, v in item.items()}


def plan_rows(table) -> list[tuple[str, str, str]]:
    """A plan table's (resource, outcome, pool) rows: what two plans of the same world must agree on
    (reasons quote ages and times, and 'marked since' is when each run first saw a target)."""
    return [(row["resource"], row["outcome"], row["pool"] or "") for row in rows(table)]


_SHARED_CLIENTS: dict = {}


def redeployed(moto_url):
    """Reset the moto server and deploy the stack anew: (shared project clients, settings).

    For hypothesis tests, whose examples cannot take function-scoped fixtures; the clients are
    created once (creating them is slow) and are stateless across resets.
    """
    from resources import load_aws_clients, load_settings
    from sandbox.deploy import deploy_stack
    from sandbox.server import reset_moto

    reset_moto(moto_url)
    aws = _SHARED_CLIENTS.setdefault("aws", load_aws_clients())
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    return aws, load_settings()


def hooked_clients(event, handler, services=("dynamodb",)):
    """Fresh project clients (the real AWS resource) whose ``services`` carry a botocore ``handler`` on
    ``event`` (e.g. "before-call.dynamodb.TransactWriteItems"); clients created elsewhere are untouched."""
    from resources import add_client_observer, load_aws_clients

    remove = add_client_observer(lambda client: client.meta.events.register(event, handler))
    try:
        clients = load_aws_clients()
        for service in services:
            clients.client(service)  # created while the observer is registered
    finally:
        remove()
    return clients
