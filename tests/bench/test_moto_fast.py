"""bench/moto_fast.py: each patch answers as moto's own code does, on a small fleet.

The reads are asked twice of the same moto state, without and with the patches; the writes
(receives, transactions) run on twin resources seeded alike, one with each.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from bench import moto_fast
from bench.moto_fast import one_instance_per_reservation
from sandbox.server import DEFAULT_REGION


@pytest.fixture()
def aws(moto_url):
    from resources import load_aws_clients
    from sandbox.server import reset_moto

    reset_moto(moto_url)
    return load_aws_clients()


def patched(read):
    """``read()`` without the patches, then with them."""
    before = read()
    undo = moto_fast.apply()
    try:
        return before, read()
    finally:
        undo()


def test_ec2_describe_answers_equal(aws):
    ids = []
    for n, extra in enumerate([[], [{"Key": "runs-fleet:protect", "Value": ""}], [{"Key": "other", "Value": "x"}]]):
        tags = [{"Key": "runs-fleet:managed", "Value": "true"}, {"Key": "runs-fleet:pool", "Value": f"p{n}"}, *extra]
        response = aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=7, MaxCount=7,
                                         TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        ids += [i["InstanceId"] for i in response["Instances"]]
    aws.ec2.create_tags(Resources=ids[:3], Tags=[{"Key": "runs-fleet:job-id", "Value": "j1"}])
    aws.ec2.stop_instances(InstanceIds=ids[3:5])
    aws.ec2.terminate_instances(InstanceIds=ids[5:6])
    unmanaged = aws.ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=2, MaxCount=2)
    assert one_instance_per_reservation(DEFAULT_REGION) == 23

    def read():
        pages = aws.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:runs-fleet:managed", "Values": ["true"]},
                     {"Name": "instance-state-name", "Values": ["running", "stopped"]}],
            PaginationConfig={"PageSize": 5})
        listed = [(i["InstanceId"], i["State"]["Name"], sorted((t["Key"], t["Value"]) for t in i.get("Tags", [])))
                  for page in pages for r in page["Reservations"] for i in r["Instances"]]
        by_id = aws.ec2.describe_instances(InstanceIds=ids[::2] + [unmanaged["Instances"][0]["InstanceId"]])
        named = [(i["InstanceId"], i["State"]["Name"]) for r in by_id["Reservations"] for i in r["Instances"]]
        with pytest.raises(ClientError) as missing:
            aws.ec2.describe_instances(InstanceIds=[ids[0], "i-0123456789abcdef0"])
        return listed, named, missing.value.response["Error"]["Code"]

    before, after = patched(read)
    assert before == after
    assert len(before[0]) == 20 and len(before[1]) == 12


def test_ssm_describe_answers_equal(aws):
    prefix = "/runs-fleet/runners/"
    for n in range(45):
        aws.ssm.put_parameter(Name=f"{prefix}i-{n:017x}/config", Value="{}", Type="String")
    for n in range(5):
        aws.ssm.put_parameter(Name=f"/elsewhere/{n}", Value="{}", Type="String")
    names = [f"{prefix}i-{n:017x}/config" for n in (44, 3, 17, 8)] + [f"{prefix}missing/config"]

    def read():
        paginator = aws.ssm.get_paginator("describe_parameters")
        everything = [(p["Name"], p["LastModifiedDate"]) for page in paginator.paginate(
            ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [prefix]}],
            PaginationConfig={"PageSize": 50}) for p in page["Parameters"]]
        named = [p["Name"] for page in paginator.paginate(
            ParameterFilters=[{"Key": "Name", "Values": names}], PaginationConfig={"PageSize": 50})
            for p in page["Parameters"]]
        plain = [p["Name"] for page in paginator.paginate() for p in page["Parameters"]]
        return everything, named, plain

    before, after = patched(read)
    assert before == after
    assert len(before[0]) == 45 and len(before[1]) == 4 and len(before[2]) == 50


def _drain(aws, url):
    bodies = []
    while True:
        messages = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies += [m["Body"] for m in messages]
        aws.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(messages)])


def test_sqs_receive_answers_equal(aws):
    urls = [aws.sqs.create_queue(QueueName=f"twin-{n}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
            for n in range(2)]
    for url in urls:
        for start in range(0, 25, 10):
            aws.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(k), "MessageBody": f"m{k}", "MessageGroupId": f"g{k % 7}", "MessageDeduplicationId": f"d{k}"}
                for k in range(start, min(25, start + 10))])
    before = _drain(aws, urls[0])
    undo = moto_fast.apply()
    try:
        after = _drain(aws, urls[1])
    finally:
        undo()
    assert before == after and len(before) == 25


def _transact_outcomes(aws, table):
    aws.dynamodb.create_table(TableName=table, KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
    for n in range(10):
        aws.dynamodb.put_item(TableName=table, Item={"k": {"S": str(n)}, "v": {"N": str(n)}})

    def delete(keys, version_of):
        return [{"Delete": {"TableName": table, "Key": {"k": {"S": str(k)}}, "ConditionExpression": "v = :v",
                            "ExpressionAttributeValues": {":v": {"N": str(version_of(k))}}}} for k in keys]

    outcomes = []
    aws.dynamodb.transact_write_items(TransactItems=delete(range(5), lambda k: k))
    for items in (delete([5, 6], lambda k: k + (1 if k == 6 else 0)), delete([7, 7], lambda k: k)):
        try:
            aws.dynamodb.transact_write_items(TransactItems=items)
            outcomes.append("ok")
        except ClientError as e:
            outcomes.append((e.response["Error"]["Code"],
                             [r.get("Code") for r in e.response.get("CancellationReasons", [])]))
    aws.dynamodb.transact_write_items(TransactItems=[
        {"Update": {"TableName": table, "Key": {"k": {"S": "8"}}, "UpdateExpression": "SET v = :n",
                    "ConditionExpression": "attribute_exists(k)", "ExpressionAttributeValues": {":n": {"N": "80"}}}},
        {"Put": {"TableName": table, "Item": {"k": {"S": "new"}, "v": {"N": "1"}}}}])
    items = aws.dynamodb.scan(TableName=table)["Items"]
    return outcomes, sorted((i["k"]["S"], i["v"]["N"]) for i in items)


def test_dynamodb_transact_and_json_answers_equal(aws):
    before = _transact_outcomes(aws, "twin-a")
    undo = moto_fast.apply()
    try:
        after = _transact_outcomes(aws, "twin-b")
        scanned_after = aws.dynamodb.scan(TableName="twin-a")["Items"]
    finally:
        undo()
    assert before == after
    assert before[0][0][1] == ["None", "ConditionalCheckFailed"] or before[0][0][0] == "TransactionCanceledException"
    assert sorted(map(str, aws.dynamodb.scan(TableName="twin-a")["Items"])) == sorted(map(str, scanned_after))
