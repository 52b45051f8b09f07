"""The AWS and settings resources: endpoints, retry configuration, and config errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources import AwsClients, FleetSettings, SettingsError, load_aws_clients, load_settings
from resources.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_every_service_is_reached_through_the_endpoint(aws, moto_url, settings):
    assert aws.ec2.describe_instances()["Reservations"] == []
    assert aws.ecs.list_clusters()["clusterArns"]
    assert any(settings.termination_queue in url for url in aws.sqs.list_queues()["QueueUrls"])
    assert settings.jobs_table in aws.dynamodb.list_tables()["TableNames"]
    assert aws.ssm.describe_parameters()["Parameters"] == []
    assert settings.archive_bucket in [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]
    aws.cloudwatch.put_metric_data(Namespace=settings.metrics_namespace, MetricData=[{"MetricName": "Probe", "Value": 1}])
    assert aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace)["Metrics"][0]["MetricName"] == "Probe"
    for service in ("ec2", "ecs", "sqs", "dynamodb", "ssm", "s3", "cloudwatch"):
        assert aws.client(service).meta.endpoint_url == moto_url


def test_per_service_endpoint_variable_wins(moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:9")
    clients = load_aws_clients()
    assert clients.sqs.meta.endpoint_url == "http://127.0.0.1:9"
    assert clients.dynamodb.meta.endpoint_url == moto_url


def test_explicit_endpoint_and_retry_config(moto_url):
    clients = AwsClients(endpoint_url=moto_url, region_name="eu-west-1", max_attempts=7, retry_mode="adaptive")
    sqs = clients.sqs
    assert sqs.meta.region_name == "eu-west-1"
    assert sqs.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert clients.sqs is sqs  # cached per resource instance


def test_retry_settings_from_environment(moto_url):
    clients = load_aws_clients({"AWS_MAX_ATTEMPTS": "9", "AWS_RETRY_MODE": "standard"})
    assert clients.ec2.meta.config.retries == {"mode": "standard", "total_max_attempts": 9}


def test_defaults_are_the_contract_names():
    settings = load_settings({})
    assert settings.jobs_table == "runs-fleet-jobs"
    assert settings.termination_queue == "runs-fleet-termination.fifo"
    assert settings.ssm_parameter_name("i-0abc") == "/runs-fleet/runners/i-0abc/config"
    assert settings.runner_queue_names("i-0abc") == {
        "input": "runs-fleet-runner-input-i-0abc",
        "output": "runs-fleet-runner-output-i-0abc",
        "dlq": "runs-fleet-runner-dlq-i-0abc",
    }
    assert settings.global_dry_run is False
    assert {s.field for s in SETTINGS} == set(FleetSettings.model_fields)


def test_overrides_are_taken(monkeypatch):
    monkeypatch.setenv("RUNS_FLEET_JOBS_TABLE", "staging-jobs")
    monkeypatch.setenv("RUNS_FLEET_DRY_RUN", "TRUE")
    settings = load_settings()
    # resolved and typed at load: run config is not where they can come from
    assert settings.jobs_table == "staging-jobs"
    assert settings.dry_run is True and settings.global_dry_run is True


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RUNS_FLEET_JOBS_TABLE", ""),
        ("RUNS_FLEET_POOLS_TABLE", "   "),
        ("RUNS_FLEET_QUEUE_TRACKING_TABLE", "has space"),
        ("RUNS_FLEET_SSM_PREFIX", "runs-fleet/runners"),
        ("RUNS_FLEET_ARCHIVE_BUCKET", " runs-fleet-archive"),
        ("RUNS_FLEET_DRY_RUN", "maybe"),
    ],
)
def test_bad_setting_names_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AWS_MAX_ATTEMPTS", "five"),
        ("AWS_MAX_ATTEMPTS", "0"),
        ("AWS_RETRY_MODE", "aggressive"),
        ("AWS_ENDPOINT_URL", "localhost:5000"),
        ("AWS_ENDPOINT_URL_SQS", "sqs.local"),
    ],
)
def test_bad_aws_setting_names_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_aws_clients({variable: value})


def test_code_location_refuses_to_load_with_a_bad_variable():
    env = {**os.environ, "RUNS_FLEET_JOBS_TABLE": ""}
    result = subprocess.run(
        [sys.executable, "-c", "import definitions"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "RUNS_FLEET_JOBS_TABLE is set but empty" in result.stderr


def test_region_from_aws_region_alone(moto_url, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert load_aws_clients().sqs.meta.region_name == "eu-central-1"


def test_clients_of_one_identity_share_a_session(moto_url):
    from resources import aws as aws_module

    first = load_aws_clients()
    first.sqs  # noqa: B018 - creates the session of this identity
    sessions = dict(aws_module._sessions)
    second = load_aws_clients()
    assert second.sqs is not first.sqs
    assert aws_module._sessions == sessions  # the second resource reused the loaded session
