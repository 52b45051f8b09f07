"""Blast radius and dry-run rules shared by every destructive piece."""

from __future__ import annotations

import pytest

from pipelines.common.safety import BlastRadiusExceeded, check_blast_radius, is_dry_run
from resources.settings import load_settings


def test_within_limits_passes():
    check_blast_radius("instances", planned=10, found=10, max_actions=100, max_fraction=0.2)  # <=10 ignores fraction
    check_blast_radius("instances", planned=20, found=100, max_actions=100, max_fraction=0.2)


def test_max_actions_names_the_counts():
    with pytest.raises(BlastRadiusExceeded, match=r"101 actions, more than max_actions=100"):
        check_blast_radius("instances", planned=101, found=10_000, max_actions=100, max_fraction=0.2)


def test_max_fraction_names_the_counts():
    with pytest.raises(BlastRadiusExceeded, match=r"21 of 100 found"):
        check_blast_radius("parameters", planned=21, found=100, max_actions=100, max_fraction=0.2)


def test_raised_limits_let_the_plan_through():
    check_blast_radius("parameters", planned=21, found=100, max_actions=100, max_fraction=0.5)


def test_dry_run_from_config_or_environment():
    assert is_dry_run(True, load_settings({})) is True
    assert is_dry_run(False, load_settings({})) is False
    assert is_dry_run(False, load_settings({"RUNS_FLEET_DRY_RUN": "true"})) is True


def test_object_links_open_in_the_console_or_the_local_endpoint():
    from pipelines.common.contract import object_link

    assert object_link("runs-fleet-archive", "jobs/completed_date=2026-11-10/part-00000.jsonl.gz", "eu-west-1") == (
        "https://eu-west-1.console.aws.amazon.com/s3/object/runs-fleet-archive?region=eu-west-1&bucketType=general"
        "&prefix=jobs%2Fcompleted_date%3D2026-11-10%2Fpart-00000.jsonl.gz")
    assert object_link("b", "reports/x.csv", "us-east-1", "http://127.0.0.1:5000/") == \
        "aws --endpoint-url http://127.0.0.1:5000 s3 cp s3://b/reports/x.csv -"
