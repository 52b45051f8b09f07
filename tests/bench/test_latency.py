"""bench/latency.py: throttling answered in each service's own protocol, retried by botocore; the floor."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from bench.latency import LatencyModel, Limit, bucket_time


def _model(apis):
    # One token, refilled every 10 s: the second call in a row is throttled.
    limits = tuple(Limit(api, (api,), 1, 0.1, "request", "test") for api in apis)
    return LatencyModel(limits=limits, latency_ms={s: (1, 2) for s in ("ec2", "ssm", "cloudwatch", "dynamodb", "s3")})


@pytest.fixture()
def clients(moto_url):
    from resources import AwsClients
    from sandbox.server import reset_moto

    reset_moto(moto_url)
    return lambda attempts: AwsClients(max_attempts=attempts)


CALLS = {
    "ec2:DescribeInstances": ("ec2", lambda c: c.describe_instances(), "RequestLimitExceeded"),
    "ssm:DescribeParameters": ("ssm", lambda c: c.describe_parameters(), "ThrottlingException"),
    "cloudwatch:PutMetricData": ("cloudwatch", lambda c: c.put_metric_data(
        Namespace="t", MetricData=[{"MetricName": "m", "Value": 1.0}]), "ThrottlingException"),
    "dynamodb:Scan": ("dynamodb", lambda c: c.list_tables() and c.scan(TableName="t"),
                      "ProvisionedThroughputExceededException"),
    "s3:ListObjectsV2": ("s3", lambda c: c.list_objects_v2(Bucket="bench-bucket"), "SlowDown"),
}


@pytest.mark.parametrize("api", list(CALLS))
def test_throttling_is_the_services_own_error(clients, api):
    service, call, code = CALLS[api]
    model = _model([api])
    aws = clients(1)
    client = aws.client(service)
    model.attach(client)
    if service == "dynamodb":
        model.enabled = False
        client.create_table(TableName="t", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        model.enabled = True
    if service == "s3":
        model.enabled = False
        client.create_bucket(Bucket="bench-bucket")
        model.enabled = True
    call(client)
    with pytest.raises(ClientError) as throttled:
        call(client)
    assert throttled.value.response["Error"]["Code"] == code
    assert model.stats[api].throttled == 1


def test_botocore_retries_a_throttled_call(clients):
    model = LatencyModel(limits=(Limit("d", ("ec2:DescribeInstances",), 1, 2.0, "request", "test"),),
                         latency_ms={"ec2": (1, 2)})
    client = clients(5).ec2
    model.attach(client)
    client.describe_instances()
    response = client.describe_instances()  # throttled, then retried after botocore's backoff
    assert response["ResponseMetadata"]["RetryAttempts"] >= 1
    assert model.calls()["ec2:DescribeInstances"] == 2 and model.stats["ec2:DescribeInstances"].throttled >= 1


def test_floor_is_burst_then_rate_or_the_latency_path():
    assert bucket_time(250, 5, 5) == 49.0
    model = LatencyModel()
    floor, per_api = model.floor({"ssm:DeleteParameters": 250, "sqs:DeleteQueue": 600},
                                 concurrency={"sqs:DeleteQueue": 8})
    assert per_api["ssm:DeleteParameters"] == 49.0  # the bucket, not 250 x 40 ms = 10 s
    assert per_api["sqs:DeleteQueue"] == pytest.approx(75 * 0.02)  # 600 / 8 waves x 20 ms
    assert floor == pytest.approx(49.0 + 1.5)


def test_units_come_from_the_calls_parameters(clients):
    model = LatencyModel()
    client = clients(1).dynamodb
    model.attach(client)
    client.create_table(TableName="u", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    client.transact_write_items(TransactItems=[{"Put": {"TableName": "u", "Item": {"k": {"S": str(n)}}}}
                                               for n in range(30)])
    assert model.stats["dynamodb:TransactWriteItems"].units == 60  # 2 write units a transactional item
    floor, per_api = model.floor({"dynamodb:TransactWriteItems": 1000}, units={"dynamodb:TransactWriteItems": 200_000})
    assert per_api["dynamodb:TransactWriteItems"] == 49.0
