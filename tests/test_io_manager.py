"""The IO manager per deployment (resources/io.py): local disk, or S3 so an asset can be materialized alone.

In production every run is its own task with its own disk: ``pool_cost_report`` materialized
alone must load ``pool_inventory`` from what an earlier run wrote to S3. Proven here on the
moto server with two separate instances (nothing shared but S3); tests/test_production.py
proves it again across real processes.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, FilesystemIOManager, materialize
from dagster_aws.s3 import S3PickleIOManager

from pipelines.audit.pool_audit import pool_cost_report, pool_inventory
from resources.io import load_io_manager, locked_io_manager
from resources.settings import SettingsError
from tests.builders import launch, put_pool


def test_local_is_the_default_and_prod_is_s3_under_the_archive_bucket():
    assert isinstance(load_io_manager({}), FilesystemIOManager)
    assert isinstance(load_io_manager({"DAGSTER_DEPLOYMENT": "local"}), FilesystemIOManager)
    prod = load_io_manager({"DAGSTER_DEPLOYMENT": "prod", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1"})
    assert isinstance(prod, S3PickleIOManager)
    assert (prod.s3_bucket, prod.s3_prefix) == ("runs-fleet-archive", "dagster-io")
    assert (prod.s3_resource.endpoint_url, prod.s3_resource.region_name) == ("http://127.0.0.1:9", "eu-west-1")
    named = load_io_manager({"DAGSTER_DEPLOYMENT": "prod", "RUNS_FLEET_ARCHIVE_BUCKET": "arch",
                             "AWS_ENDPOINT_URL_S3": "http://s3.local:1", "AWS_ENDPOINT_URL": "http://other:2"})
    assert (named.s3_bucket, named.s3_resource.endpoint_url) == ("arch", "http://s3.local:1")
    own = load_io_manager({"DAGSTER_DEPLOYMENT": "prod", "RUNS_FLEET_IO_BUCKET": "io", "RUNS_FLEET_IO_PREFIX": "/x/"})
    assert (own.s3_bucket, own.s3_prefix) == ("io", "x")


@pytest.mark.parametrize("value", ["production", "staging", "s3"])
def test_an_unknown_deployment_fails_naming_the_variable(value):
    with pytest.raises(SettingsError, match="DAGSTER_DEPLOYMENT"):
        load_io_manager({"DAGSTER_DEPLOYMENT": value})


def test_an_empty_prefix_is_refused():
    with pytest.raises(SettingsError, match="RUNS_FLEET_IO_PREFIX"):
        load_io_manager({"DAGSTER_DEPLOYMENT": "prod", "RUNS_FLEET_IO_PREFIX": "/"})


def test_pool_cost_report_alone_reads_the_inventory_another_run_wrote_to_s3(aws, settings, monkeypatch):
    monkeypatch.setenv("DAGSTER_DEPLOYMENT", "prod")
    put_pool(aws, settings, "linux-small", 60)
    launch(aws, 5, pool="linux-small", count=2)
    resources = {"aws": aws, "settings": settings, "io_manager": locked_io_manager(load_io_manager())}

    with DagsterInstance.ephemeral() as first:
        assert materialize([pool_inventory], resources=resources, instance=first).success
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=settings.archive_bucket, Prefix="dagster-io/")["Contents"]]
    assert keys == ["dagster-io/pool_inventory"]

    # A fresh instance and no local state: the upstream exists only in S3.
    with DagsterInstance.ephemeral() as second:
        result = materialize([pool_inventory.to_source_asset(), pool_cost_report], resources=resources,
                             instance=second, selection=[pool_cost_report])
    assert result.success
    report = result.output_for_node("pool_cost_report")
    (row,) = report[report["pool"] == "linux-small"].itertuples()
    assert row.running == 2
