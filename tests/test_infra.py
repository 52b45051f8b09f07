"""infra/template.yaml deploys through CloudFormation and creates every contract resource as specified."""

from __future__ import annotations

import json

import yaml

from sandbox.deploy import TEMPLATE_PATH


def attrs(aws, name: str) -> dict[str, str]:
    url = aws.sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def test_termination_queue_is_fifo_with_redrive(aws, settings):
    main = attrs(aws, settings.termination_queue)
    dlq = attrs(aws, "runs-fleet-termination-dlq.fifo")
    assert main["FifoQueue"] == "true"
    assert main["ContentBasedDeduplication"] == "true"
    assert main["VisibilityTimeout"] == "120"
    assert main["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    redrive = json.loads(main["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3
    assert dlq["FifoQueue"] == "true"


def test_housekeeping_queue_has_dlq(aws, settings):
    main = attrs(aws, settings.housekeeping_queue)
    dlq = attrs(aws, "runs-fleet-housekeeping-dlq")
    assert main["VisibilityTimeout"] == "300"
    assert json.loads(main["RedrivePolicy"])["deadLetterTargetArn"] == dlq["QueueArn"]
    assert "FifoQueue" not in main


def test_tables_keys_index_and_ttl(aws, settings):
    jobs = aws.dynamodb.describe_table(TableName=settings.jobs_table)["Table"]
    assert jobs["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    (index,) = jobs["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "completed_at-index"
    assert index["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "completed_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"]["ProjectionType"] == "ALL"
    pools = aws.dynamodb.describe_table(TableName=settings.pools_table)["Table"]
    assert pools["KeySchema"] == [{"AttributeName": "pool_name", "KeyType": "HASH"}]
    tracking = aws.dynamodb.describe_table(TableName=settings.queue_tracking_table)["Table"]
    assert tracking["KeySchema"] == [{"AttributeName": "runner_id", "KeyType": "HASH"}]
    ttl = aws.dynamodb.describe_time_to_live(TableName=settings.queue_tracking_table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == "ttl"


def test_bucket_cluster_and_policy_exist(aws, settings, stack):
    assert settings.archive_bucket in [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]
    clusters = aws.ecs.describe_clusters(clusters=[settings.ecs_cluster])["clusters"]
    assert [c["clusterName"] for c in clusters] == [settings.ecs_cluster]
    iam = aws.client("iam")
    policy = iam.get_policy(PolicyArn=stack["HousekeepingPolicyArn"])["Policy"]
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    document = version["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    actions = {a for s in document["Statement"] for a in s["Action"]}
    assert "ec2:TerminateInstances" in actions


def test_policy_is_scoped():
    """No wildcard actions; only un-scopable describe/put calls use Resource "*"; terminate needs the managed tag."""
    template = yaml.safe_load(TEMPLATE_PATH.read_text())
    statements = template["Resources"]["HousekeepingPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        assert all("*" not in action for action in statement["Action"]), statement["Sid"]
        if statement["Resource"] == "*":
            assert set(statement["Action"]) <= {
                "ec2:DescribeInstances", "ssm:DescribeParameters", "cloudwatch:PutMetricData",
                # queue_health's message ages: GetMetricData has no resource-level permissions.
                "cloudwatch:GetMetricData",
            }, statement["Sid"]
    (terminate,) = [s for s in statements if "ec2:TerminateInstances" in s["Action"]]
    assert terminate["Condition"] == {"StringEquals": {"ec2:ResourceTag/runs-fleet:managed": "true"}}
    (metrics,) = [s for s in statements if "cloudwatch:PutMetricData" in s["Action"]]
    assert "cloudwatch:namespace" in metrics["Condition"]["StringEquals"]


def test_redeploy_reuses_the_stack(aws, stack):
    from sandbox.deploy import deploy_stack

    again = deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    assert again == stack
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    assert len(stacks) == 1
