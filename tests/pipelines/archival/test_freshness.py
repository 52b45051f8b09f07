"""Archived days: per-day freshness (the check archived_days_on_time names missing and late days) and the
links to the archive's objects in the archival materialization. The rule table-driven without AWS; the rest
through real archive runs on moto.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, build_asset_check_context

from definitions import defs
from pipelines.archival.freshness import due_at, judge
from pipelines.archival.jobs import CHECK_ON_TIME, archived_days_on_time
from tests.metadata import rows
from tests.pipelines.archival.helpers import DAY, day_jobs, put_jobs

NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
D20, D21, D22, D23 = "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"  # due 27th, 28th, 29th, 30th 02:00


def at(day: str, hours_after_due: float) -> datetime:
    return due_at(date.fromisoformat(day), 7) + timedelta(hours=hours_after_due)


# (archived days -> hours after due, or absent) -> (passed, missing, late, pending)
CASES = [
    ("all on time", {D20: 1, D21: 0, D22: 3, D23: 2}, (True, [], [], [])),
    ("archived 23 h late: still on time", {D20: 1, D21: 23, D22: 1, D23: 1}, (True, [], [], [])),
    ("archived one day late: a warning", {D20: 1, D21: 24, D22: 1, D23: 1}, (False, [], [D21], [])),
    ("missing a day after due", {D20: 1, D22: 1, D23: 1}, (False, [D21], [], [])),
    ("due 10 h ago, not yet archived: pending", {D20: 1, D21: 1, D22: 1}, (True, [], [], [D23])),
    ("late long ago: ages out", {"2026-11-01": 72, D20: 1, D21: 1, D22: 1, D23: 1}, (True, [], [], [])),
]


@pytest.mark.parametrize("case,archived,want", CASES, ids=[c[0] for c in CASES])
def test_judge(case, archived, want):
    days = ["2026-11-01", D20, D21, D22, D23, "2026-11-24", "2026-11-29"]  # the last two are not due yet
    stamps = {d: at(d, h) for d, h in archived.items()}
    if "2026-11-01" not in archived:
        stamps["2026-11-01"] = at("2026-11-01", 0)
    verdict = judge(days, stamps, NOW, 7)
    assert (verdict.passed, verdict.missing, [d for d, _ in verdict.late], verdict.pending) == want, case
    for day in want[1] + want[2]:
        assert day in verdict.description  # the check names the days


def run_day(day: date, instance):
    return defs.resolve_job_def("archive_old_jobs").execute_in_process(
        partition_key=day.isoformat(), instance=instance,
        run_config={"ops": {"archive_job_records_for_day": {"config": {}}}})


def test_each_archive_run_judges_every_day_and_links_its_objects(aws, settings):
    put_jobs(aws, settings, day_jobs("fresh", 5))
    instance = DagsterInstance.ephemeral()
    result = run_day(DAY, instance)
    assert result.success

    (evaluation,) = [e.asset_check_evaluation_data for e in result.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.check_name == CHECK_ON_TIME and evaluation.asset_key == AssetKey("job_archive")
    # The test partitions start at 2024-01-01 (tests/conftest.py): every other due day is missing.
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    assert "2024-01-01" in evaluation.description and DAY.isoformat() not in evaluation.metadata["missing"].value
    assert evaluation.metadata["missing_days"].value > 600

    materialization = instance.get_latest_materialization_event(AssetKey("job_archive")).asset_materialization
    md = materialization.metadata
    manifest = f"s3://{settings.archive_bucket}/jobs/completed_date={DAY}/_manifest.json"
    assert md["manifest"].value == manifest  # the s3:// form, as text, for the CLI
    # Against the local stand-in there is no console: the "link" is the command that prints the object.
    assert md["manifest_link"].value == f"aws --endpoint-url {os.environ['AWS_ENDPOINT_URL']} s3 cp {manifest} -"
    (part,) = rows(md["s3_uris"].value)
    assert part["part"].startswith(f"s3://{settings.archive_bucket}/jobs/completed_date={DAY}/part-")
    assert part["open"].endswith(f"s3 cp {part['part']} -")


def test_the_check_alone_reads_only_the_instance(aws, settings):
    instance = DagsterInstance.ephemeral()
    result = archived_days_on_time(build_asset_check_context(instance=instance))
    assert not result.passed and result.metadata["missing_days"].value > 600  # nothing archived yet
    put_jobs(aws, settings, day_jobs("fresh", 2))
    assert run_day(DAY, instance).success
    again = archived_days_on_time(build_asset_check_context(instance=instance))
    assert again.metadata["missing_days"].value == result.metadata["missing_days"].value - 1


def test_console_links_are_region_aware_on_real_aws():
    from pipelines.common.contract import object_link

    link = object_link("runs-fleet-archive", "jobs/completed_date=2026-11-10/_manifest.json", "eu-west-1")
    assert link.startswith("https://eu-west-1.console.aws.amazon.com/s3/object/runs-fleet-archive?region=eu-west-1")
    assert "prefix=jobs%2Fcompleted_date%3D2026-11-10%2F_manifest.json" in link
