"""infra/: the fleet template (fleet.yaml) creates every contract resource as specified; the housekeeping
stack (template.yaml) creates none of them, only policies, roles, alarms and a dashboard; both pass cfn-lint.
"""

from __future__ import annotations

import json

import yaml

from sandbox.deploy import FLEET_TEMPLATE_PATH, TEMPLATE_PATH


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
                # the ledger's task listing: authorised on container instances, narrowed by ecs:cluster below.
                "ecs:ListTasks",
                # the cost report's rates: neither has resource-level permissions.
                "pricing:GetProducts", "ec2:DescribeSpotPriceHistory",
            }, statement["Sid"]
    (terminate,) = [s for s in statements if "ec2:TerminateInstances" in s["Action"]]
    assert terminate["Condition"] == {"StringEquals": {"ec2:ResourceTag/runs-fleet:managed": "true"}}
    (list_tasks,) = [s for s in statements if "ecs:ListTasks" in s["Action"]]
    assert "ecs:cluster" in list_tasks["Condition"]["ArnEquals"]
    (metrics,) = [s for s in statements if "cloudwatch:PutMetricData" in s["Action"]]
    assert "cloudwatch:namespace" in metrics["Condition"]["StringEquals"]


def test_redeploy_reuses_the_stack(aws, stack):
    from sandbox.deploy import deploy_stack

    again = deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    assert again == stack
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    assert sorted(s["StackName"] for s in stacks) == ["runs-fleet", "runs-fleet-housekeeping"]


FLEET_TYPES = {"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket", "AWS::ECS::Cluster"}


def test_the_housekeeping_stack_creates_no_fleet_resource():
    """What a user deploys into an account whose fleet exists must not create its tables, queues or bucket."""
    housekeeping = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    assert not {r["Type"] for r in housekeeping.values()} & FLEET_TYPES
    fleet = yaml.safe_load(FLEET_TEMPLATE_PATH.read_text())["Resources"]
    assert {r["Type"] for r in fleet.values()} == FLEET_TYPES
    # The fleet's names are parameters of both, with the contract's defaults.
    fleet_params = yaml.safe_load(FLEET_TEMPLATE_PATH.read_text())["Parameters"]
    housekeeping_params = yaml.safe_load(TEMPLATE_PATH.read_text())["Parameters"]
    for name, spec in fleet_params.items():
        assert housekeeping_params[name]["Default"] == spec["Default"], name


def test_runs_and_the_daemon_hold_separate_roles(aws, stack):
    """Runs hold the housekeeping policy (and the IO manager's objects); the daemon only its run launcher's."""
    iam = aws.client("iam")
    for output in ("RunTaskRoleArn", "DaemonTaskRoleArn"):
        iam.get_role(RoleName=stack[output].rsplit("/", 1)[1])  # deployed
    # moto's CloudFormation does not attach ManagedPolicyArns, so the attachments are read from the template.
    template = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    assert template["RunTaskRole"]["Properties"]["ManagedPolicyArns"] == [
        {"Ref": "HousekeepingPolicy"}, {"Ref": "DagsterIoPolicy"}]
    assert template["DaemonTaskRole"]["Properties"]["ManagedPolicyArns"] == [{"Ref": "DaemonLaunchPolicy"}]
    statements = template["DaemonLaunchPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    actions = {a for s in statements for a in s["Action"]}
    assert actions.isdisjoint(a for s in template["HousekeepingPolicy"]["Properties"]["PolicyDocument"]["Statement"]
                              for a in s["Action"] if not a.startswith("ecs:Describe"))
    (pass_role,) = [s for s in statements if "iam:PassRole" in s["Action"]]
    assert pass_role["Resource"][0] == {"Fn::GetAtt": ["RunTaskRole", "Arn"]}


def test_alarms_and_dashboard_are_defined():
    resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    alarms = {k for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms == {"TerminationDlqDepthAlarm", "HousekeepingDlqDepthAlarm", "TerminationDlqRateAlarm",
                      "TerminationOldestMessageAlarm", "TerminationQueueGrowthAlarm"}
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body.replace("${AWS::Region}", "us-east-1").replace("${MetricsNamespace}", "RunsFleet"))
    shown = json.dumps(widgets)
    for metric in ("JobDuration", "JobSuccess", "JobFailure", "OrphanedInstancesTerminated", "SSMParametersDeleted",
                   "OrphanedQueuesDeleted", "StuckJobsInterrupted", "JobRecordsArchived", "PoolIdleCost",
                   "PoolComputeCost", "PoolUtilization", "QueueDepth", "DLQDepth"):
        assert metric in shown, metric


def test_every_template_passes_cfn_lint():
    from cfnlint.api import lint_all

    for path in (TEMPLATE_PATH, FLEET_TEMPLATE_PATH, TEMPLATE_PATH.with_name("fleet-role.yaml")):
        # Errors and warnings, as the cfn-lint command reports by default (informational rules are opt-in).
        matches = [m for m in lint_all(path.read_text()) if m.rule.id[0] in "EW"]
        assert not matches, f"{path.name}: " + "\n".join(str(m) for m in matches)
