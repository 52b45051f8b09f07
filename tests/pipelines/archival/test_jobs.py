"""The Dagster layer of archival: partitioned runs, the job_archive asset, metric, schedule, requests, backfill."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from dagster import (
    AssetKey, DagsterInstance, DagsterRunStatus, PartitionKeyRange, RunsFilter, build_schedule_context,
)

from definitions import defs
from pipelines.archival import REQUESTS
from pipelines.archival.jobs import ARCHIVE_START_DATE, archive_old_jobs_daily, job_archive_partitions
from pipelines.archival.start import ArchiveStartError, archive_start
from pipelines.archival.requests import archive_partition_key
from pipelines.common.requests import BadParams
from tests.metadata import column
from tests.pipelines.archival.helpers import DAY, day_jobs, put_jobs, read_manifest_json, s3_keys, table_items

ROOT = Path(__file__).resolve().parents[2]


def run_partition(job_name: str, day: date, instance, config: dict | None = None):
    op = {"archive_old_jobs": "archive_job_records_for_day", "restore_archived_jobs": "restore_job_records_for_day"}[job_name]
    return defs.resolve_job_def(job_name).execute_in_process(
        partition_key=day.isoformat(), instance=instance,
        run_config={"ops": {op: {"config": config or {}}}},
    )


def test_a_partition_run_archives_its_day_and_materializes_job_archive(aws, settings):
    put_jobs(aws, settings, day_jobs("dag", 30) + day_jobs("next", 4, DAY + timedelta(days=1)))
    instance = DagsterInstance.ephemeral()

    result = run_partition("archive_old_jobs", DAY, instance)

    assert result.success
    assert set(table_items(aws, settings)) == {f"next-{n}" for n in range(4)}
    event = instance.get_latest_materialization_event(AssetKey("job_archive"))
    materialization = event.asset_materialization
    assert materialization.partition == DAY.isoformat()
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    manifest = read_manifest_json(aws, settings)
    assert metadata["records"] == 30 == manifest["record_count"]
    assert metadata["bytes"] == sum(p["bytes"] for p in manifest["parts"]) > 0
    assert f"s3://{settings.archive_bucket}/{manifest['parts'][0]['key']}" in column(metadata["s3_uris"], "part")
    assert metadata["manifest"] == f"s3://{settings.archive_bucket}/jobs/completed_date={DAY}/_manifest.json"
    assert manifest["run_id"] == result.run_id == metadata["run_id"]
    output = result.output_for_node("archive_job_records_for_day")
    assert output == {"day": DAY.isoformat(), "archived": 30, "deleted": 30, "dry_run": False}
    metrics = aws.cloudwatch.list_metrics(Namespace=settings.metrics_namespace, MetricName="JobRecordsArchived")
    assert metrics["Metrics"], "JobRecordsArchived was not published"
    stats = aws.cloudwatch.get_metric_statistics(
        Namespace=settings.metrics_namespace, MetricName="JobRecordsArchived", Statistics=["Sum"], Period=60,
        StartTime=datetime.now(timezone.utc) - timedelta(hours=1), EndTime=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    assert sum(p["Sum"] for p in stats["Datapoints"]) == 30

    # Restore through its job: the day is back.
    restored = run_partition("restore_archived_jobs", DAY, instance)
    assert restored.success and restored.output_for_node("restore_job_records_for_day")["restored"] == 30
    assert len(table_items(aws, settings)) == 34


def test_a_dry_run_partition_reports_and_touches_nothing(aws, settings):
    put_jobs(aws, settings, day_jobs("dry", 5))
    instance = DagsterInstance.ephemeral()
    result = run_partition("archive_old_jobs", DAY, instance, {"dry_run": True})
    assert result.success
    step = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = {k: v.value for k, v in step.event_specific_data.metadata.items()}
    assert (metadata["dry_run"], metadata["records_archived_now"], metadata["records_to_delete"]) == (True, 5, 5)
    assert metadata["records_deleted"] == 0
    assert s3_keys(aws, settings) == [] and len(table_items(aws, settings)) == 5
    assert instance.get_latest_materialization_event(AssetKey("job_archive")) is None


def test_the_schedule_asks_for_the_day_seven_days_back_at_two():
    context = build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc), repository_def=defs.get_repository_def())
    request = archive_old_jobs_daily.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-11-18"
    assert archive_old_jobs_daily.cron_schedule == "0 2 * * *" and archive_old_jobs_daily.execution_timezone == "UTC"
    assert archive_old_jobs_daily.default_status.value == "STOPPED"
    assert request.partition_key in job_archive_partitions.get_partition_keys(
        current_time=datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc))


def test_the_job_archive_asset_is_in_the_graph_with_daily_partitions():
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == AssetKey("job_archive"))
    assert spec.partitions_def == job_archive_partitions
    keys = job_archive_partitions.get_partition_keys(current_time=datetime(2026, 11, 25, 12, tzinfo=timezone.utc))
    # tests/conftest.py sets RUNS_FLEET_ARCHIVE_START=2024-01-01 so that fixed days stay partitions
    assert keys[0] == "2024-01-01" == ARCHIVE_START_DATE and keys[-1] == "2026-11-24"  # today is not a partition


def test_the_archive_starts_90_days_back_unless_configured_and_a_bad_start_names_the_variable():
    today = date(2026, 11, 30)
    assert archive_start({}, today) == "2026-09-01"
    assert archive_start({"RUNS_FLEET_ARCHIVE_START": " "}, today) == "2026-09-01"  # blank: the default
    assert archive_start({"RUNS_FLEET_ARCHIVE_START": "2025-06-01"}, today) == "2025-06-01"
    for bad, why in [("2025/06/01", "YYYY-MM-DD"), ("2025-02-30", "not a real date"), ("2026-11-30", "before today"),
                     ("yesterday", "YYYY-MM-DD")]:
        with pytest.raises(ArchiveStartError, match=f"RUNS_FLEET_ARCHIVE_START=.*{why}"):
            archive_start({"RUNS_FLEET_ARCHIVE_START": bad}, today)


def test_each_job_runs_one_at_a_time_and_in_process():
    for name in ("archive_old_jobs", "restore_archived_jobs"):
        job_def = defs.resolve_job_def(name)
        assert job_def.tags["runs-fleet/exclusive"] == name  # the instance's run queue limit (infra/dagster.yaml)
        assert job_def.executor_def.name == "in_process"


def test_old_jobs_request_params():
    (request,) = REQUESTS
    assert (request.task_type, request.job_name) == ("old_jobs", "archive_old_jobs")
    config = request.build_run_config({"dry_run": True, "max_actions": 5000, "date": "2026-11-10"})
    assert config == {"ops": {"archive_job_records_for_day": {"config": {"dry_run": True, "max_actions": 5000}}}}
    assert request.partition_key({"date": "2026-11-10"}) == "2026-11-10"
    now = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
    assert archive_partition_key({}, now) == "2026-11-18"
    defs.resolve_job_def("archive_old_jobs").run_config_schema  # the config it builds is the job's own shape
    for params, field in [({"date": "10/11/2026"}, "params.date"), ({"date": "2026-02-30"}, "params.date"),
                          ({"date": "2023-12-31"}, "params.date"), ({"date": 20261110}, "params.date"),
                          ({"dry_run": "yes"}, "params.dry_run"), ({"max_actions": -1}, "params.max_actions"),
                          ({"dryrun": True}, "params.dryrun")]:
        with pytest.raises(BadParams, match=field.replace(".", r"\.")):
            request.build_run_config(params)
    with pytest.raises(BadParams, match=r"params\.date"):
        archive_partition_key({"date": "2026-11-25"}, now)  # today: not finished yet


def test_a_backfill_of_a_range_runs_one_partition_per_day(aws, settings):
    """A backfill as the UI launches one: a PartitionBackfill that Dagster's backfill daemon turns into runs.

    ``dagster job backfill`` (see docs/archival.md) builds the same runs from the same
    partition set; it is left out of the suite because it costs three cold imports of the
    code location (about 30 s on this machine).
    """
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import instance_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._time import get_current_timestamp

    days = [DAY + timedelta(days=n) for n in range(3)]
    put_jobs(aws, settings, day_jobs("d0", 7, days[0]) + day_jobs("d2", 5, days[2]) +
             day_jobs("later", 2, days[2] + timedelta(days=1)))
    # Runs are launched at once and run in this process (production: queued, then the daemon).
    overrides = {
        "run_coordinator": {"module": "dagster._core.run_coordinator.sync_in_memory_run_coordinator",
                            "class": "SyncInMemoryRunCoordinator"},
        "run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                         "class": "SyncInMemoryRunLauncher"},
    }
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="definitions", working_directory=str(ROOT)),
        location_name="runs-fleet-housekeeping",
    )
    with instance_for_test(overrides=overrides) as instance, \
            WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace:
        location = workspace.create_request_context().get_code_location("runs-fleet-housekeeping")
        repository = next(iter(location.get_repositories().values()))
        partition_set = next(p for p in repository.get_partition_sets() if p.job_name == "archive_old_jobs")
        # The range as the UI's "Backfill" dialog selects it: every partition key from..to.
        keys = job_archive_partitions.get_partition_keys_in_range(
            PartitionKeyRange(days[0].isoformat(), days[-1].isoformat()))
        instance.add_backfill(PartitionBackfill(
            backfill_id="archive-range", partition_set_origin=partition_set.get_remote_origin(),
            status=BulkActionStatus.REQUESTED, partition_names=keys, from_failure=False, reexecution_steps=None,
            tags={}, backfill_timestamp=get_current_timestamp(),
        ))
        for _ in range(5):
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
            if instance.get_backfill("archive-range").status != BulkActionStatus.REQUESTED:
                break
        assert instance.get_backfill("archive-range").status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs(RunsFilter(job_name="archive_old_jobs"))
        assert sorted(r.tags["dagster/partition"] for r in runs) == [d.isoformat() for d in days]
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        assert {r.tags["dagster/backfill"] for r in runs} == {"archive-range"}
        assert instance.get_materialized_partitions(AssetKey("job_archive")) == {d.isoformat() for d in days}
    assert set(table_items(aws, settings)) == {"later-0", "later-1"}
    assert read_manifest_json(aws, settings, days[0])["record_count"] == 7
    assert read_manifest_json(aws, settings, days[2])["record_count"] == 5
    assert not any(f"completed_date={days[1]}" in k for k in s3_keys(aws, settings))  # empty day: nothing written
