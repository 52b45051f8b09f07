"""The Dagster layer of job archival: daily partitions, the archive and restore jobs, the schedule, the asset.

Thin by design: each op reads config and resources, calls ``archive_day`` / ``restore_day``,
and turns the result into logs, metadata, a metric and an ``job_archive`` materialization.
"""

import os
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

from dagster import (
    AssetCheckEvaluation, AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetKey,
    AssetMaterialization, AssetSpec, Config, DailyPartitionsDefinition, DefaultScheduleStatus, MetadataValue,
    MultiPartitionsDefinition,
    OpExecutionContext, Output, RunRequest, ScheduleEvaluationContext, SkipReason, in_process_executor, job, op,
    asset_check, schedule,
)
from pydantic import Field

from pipelines.archival.archive import DEFAULT_PART_MAX_BYTES, DayArchiveResult, archive_day
from pipelines.archival.freshness import archived_at, judge
from pipelines.archival.restore import restore_day
from pipelines.archival.start import archive_start
from pipelines.common.aws import Metric, put_metrics
from pipelines.common.contract import object_link
from pipelines.common.safety import is_dry_run
from pipelines.common.tables import column, table
from resources.aws import AwsClients
from pipelines.common.fleets import DATE_DIMENSION, FLEETS, by_fleet, fleet_run_requests, partition_key
from resources.settings import FleetSettings

ARCHIVE_START_DATE = archive_start()  # RUNS_FLEET_ARCHIVE_START, else 90 days back (pipelines/archival/start.py)
ARCHIVE_AFTER_DAYS = 7  # the schedule archives the day this many days back
JOB_ARCHIVE_ASSET = "job_archive"
JOB_WHY_COLUMNS = [column("job id"), column("why")]
JOB_COLUMNS = [column("job id")]
PART_COLUMNS = [column("part", description="s3:// URI of one gzip JSON Lines part of the day (for the CLI)"),
                column("open", description="the AWS console's object page (region-aware); against a local "
                       "stand-in, the command that prints the object")]
CHECK_ON_TIME = "archived_days_on_time"

# One partition per UTC day of completed_at. end_offset=0: the newest partition is yesterday,
# since today's records are still finishing.
# With a fleet list (RUNS_FLEET_FLEETS), days × fleets: a backfill spans fleets and days.
archive_days = DailyPartitionsDefinition(start_date=ARCHIVE_START_DATE, timezone="UTC", end_offset=0)
job_archive_partitions = by_fleet(archive_days)

job_archive = AssetSpec(
    JOB_ARCHIVE_ASSET,
    partitions_def=job_archive_partitions,
    group_name="archival",
    kinds={"s3"},
    description=(
        "Finished job records archived from the jobs table, one partition per completed_at day (UTC): "
        "gzip JSON Lines parts under s3://<archive bucket>/jobs/completed_date=YYYY-MM-DD/ with a _manifest.json. "
        "Materialized by each run of archive_old_jobs."
    ),
)


def _console(uri: str, region: str | None) -> str:
    """Where a person opens ``s3://bucket/key`` (pipelines.common.contract.object_link)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return object_link(bucket, key, region, os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _link(target: str) -> MetadataValue:
    return MetadataValue.url(target) if target.startswith("https://") else MetadataValue.text(target)


def on_time_verdict(instance: Any, now: datetime, just_archived: str | None = None):
    """The per-day freshness verdict of job_archive (pipelines/archival/freshness.py) at ``now``."""
    archived = archived_at(instance, AssetKey(JOB_ARCHIVE_ASSET))
    if just_archived:
        archived.setdefault(just_archived, now)  # this run's materialization is stored after the op yields
    days = job_archive_partitions.get_partition_keys(current_time=now)
    return judge(days, archived, now, ARCHIVE_AFTER_DAYS, day_of=partition_day)


def partition_day(key: str) -> str:
    """The YYYY-MM-DD of an archive partition key: the key itself, or the date of a date × fleet key."""
    if isinstance(job_archive_partitions, MultiPartitionsDefinition):
        return job_archive_partitions.get_partition_key_from_str(str(key)).keys_by_dimension[DATE_DIMENSION]
    return str(key)


@asset_check(asset=JOB_ARCHIVE_ASSET, name=CHECK_ON_TIME, description=(
    "Per-day freshness of the archive (Dagster's freshness policies judge the asset as a whole): WARN naming "
    "each day still not archived a day after it was due (D+7 d 02:00 UTC), and each day archived a day or more "
    "late this week. Also evaluated by every archive_old_jobs run."))
def archived_days_on_time(context: AssetCheckExecutionContext) -> AssetCheckResult:
    """Name the archive's missing and late days (reads the Dagster instance only; no AWS call)."""
    verdict = on_time_verdict(context.instance, datetime.now(timezone.utc))
    context.log.info(f"{CHECK_ON_TIME}: {verdict.description}")
    return AssetCheckResult(passed=verdict.passed, severity=AssetCheckSeverity.WARN, description=verdict.description,
                            metadata=verdict.metadata(ARCHIVE_AFTER_DAYS))


def archive_day_for(moment: datetime) -> date:
    """The day the daily schedule archives when it runs at ``moment``."""
    return moment.astimezone(timezone.utc).date() - timedelta(days=ARCHIVE_AFTER_DAYS)


class ArchiveConfig(Config):
    """Run config of archive_old_jobs; an operator raises a limit or asks for a dry run for one run here."""

    dry_run: bool = Field(default=False, description="Report what would be archived and deleted, then stop.")
    max_actions: int = Field(
        default=1_000_000, ge=0,
        description="Fail before deleting if more records than this would be deleted. The archive is written and "
        "verified by then, so a re-run with a higher limit only deletes.",
    )
    part_max_mb: int = Field(default=DEFAULT_PART_MAX_BYTES // (1024 * 1024), ge=1,
                             description="Start a new part once one holds this many MiB of uncompressed JSON.")
    query_page_size: int | None = Field(default=None, ge=1,
                                        description="Records per Query page; unset: DynamoDB's 1 MB pages.")


class RestoreConfig(Config):
    """Run config of restore_archived_jobs."""

    dry_run: bool = Field(default=False, description="Verify the archive and report what would be restored, then stop.")
    overwrite: bool = Field(
        default=False,
        description="Replace a record the table holds in a different version. Off: such records are kept and reported.",
    )


def _archive_metadata(result: DayArchiveResult) -> dict[str, Any]:
    return {
        "records_found": result.found,
        "records_archived_now": result.newly_archived,
        "records_already_archived": result.already_archived,
        "records_deleted": result.deleted,
        "records_to_delete": result.to_delete,
        "records_kept": result.kept,
        "changed_since_archive": result.changed_since_archive,
        "changed_examples": table(JOB_WHY_COLUMNS, ({"job id": i, "why": what} for i, what in result.changed_examples)),
        "records_gone_before_delete": result.gone_before_delete,
        "kept_examples": table(JOB_WHY_COLUMNS, ({"job id": i, "why": why} for i, why in result.kept_examples)),
        "parts_written": len(result.parts_written),
        "parts_adopted": len(result.parts_adopted),
        "bytes_written": result.bytes_written,
        "index_entries": result.index_entries,
        "index_objects": result.index_objects,
        "index_objects_written": result.index_objects_written,
        "index_bytes_written": result.index_bytes_written,
        "query_pages": result.query.pages,
        "delete_calls": result.delete_calls,
        "delete_write_units_estimated": result.delete_units_estimated,
        "delete_write_units_reported": result.delete_capacity_units,
        "by_status": MetadataValue.json(result.query.by_status),
    }


@op
def archive_job_records_for_day(
    context: OpExecutionContext, config: ArchiveConfig, aws: AwsClients, settings: FleetSettings
):
    """Archive the partition's day of finished job records to S3, verify the archive, then delete them from the jobs table.

    Re-running a day is safe: records already in a verified part are only deleted, late
    records go into a new part, and a part left by a crashed run is adopted. A record is
    deleted only in the version that was archived; one that changed since is kept and
    reported (changed_since_archive), and the next run archives its new version.
    """
    day = date.fromisoformat(partition_day(context.partition_key))
    dry_run = is_dry_run(config.dry_run, settings)
    started = time.monotonic()
    result = archive_day(
        aws.dynamodb, aws.s3, table=settings.jobs_table, bucket=settings.archive_bucket, day=day,
        run_id=context.run_id, dry_run=dry_run, max_deletes=config.max_actions,
        part_max_bytes=config.part_max_mb * 1024 * 1024, page_size=config.query_page_size, log=context.log,
    )
    elapsed = time.monotonic() - started
    verb = "would archive" if dry_run else "archived"
    context.log.info(
        f"job archive {day}: done in {elapsed:.1f} s ({result.found / elapsed if elapsed else 0:.0f} records/s): "
        f"found {result.found} finished record(s) in {result.query.pages} query page(s); "
        f"{verb} {result.newly_archived} new, {result.already_archived} already archived; "
        f"{'would delete' if dry_run else 'deleted'} {result.deleted if not dry_run else result.to_delete}; "
        f"kept {result.kept}; changed since archived (kept) {result.changed_since_archive}; "
        f"parts written {len(result.parts_written)}, adopted {len(result.parts_adopted)}; "
        f"job index: {result.index_entries} job(s) in {result.index_objects} object(s), "
        f"{result.index_objects_written} written by this run"
    )
    for job_id, why in result.kept_examples:
        context.log.warning(f"job archive {day}: kept job {job_id} in the table: {why}")
    for job_id, what in result.changed_examples:
        context.log.warning(
            f"job archive {day}: kept job {job_id}: it changed after its archive copy was written ({what}); "
            f"the next run of this day archives its new version"
        )
    metadata = _archive_metadata(result)
    metadata["dry_run"] = dry_run
    if not dry_run:
        region = aws.s3.meta.region_name
        put_metrics(aws.cloudwatch, settings.metrics_namespace, [Metric("JobRecordsArchived", result.deleted)])
        yield AssetMaterialization(
            asset_key=JOB_ARCHIVE_ASSET,
            partition=context.partition_key,
            description=f"Job records completed on {day} (UTC)",
            metadata={
                "records": result.archive_records,
                "bytes": result.archive_bytes,
                "parts": len(result.part_uris),
                "records_archived_now": result.newly_archived,
                "records_deleted": result.deleted,
                "manifest": MetadataValue.text(result.manifest_uri or "none (no records for this day)"),
                **({"manifest_link": _link(_console(result.manifest_uri, region))} if result.manifest_uri else {}),
                "s3_uris": table(PART_COLUMNS, ({"part": uri, "open": _console(uri, region)}
                                                for uri in result.part_uris)),
                # The job index of the day: find any job of it with locate_archived_job.
                "index_entries": result.index_entries,
                "index_objects": result.index_objects,
                "run_id": context.run_id,
            },
        )
        verdict = on_time_verdict(context.instance, datetime.now(timezone.utc), context.partition_key)
        if not verdict.passed:
            context.log.warning(f"{CHECK_ON_TIME}: {verdict.description}")
        yield AssetCheckEvaluation(
            asset_key=AssetKey(JOB_ARCHIVE_ASSET), check_name=CHECK_ON_TIME, passed=verdict.passed,
            severity=AssetCheckSeverity.WARN, description=verdict.description,
            metadata=verdict.metadata(ARCHIVE_AFTER_DAYS),
        )
    yield Output(
        {"day": day.isoformat(), "archived": result.newly_archived, "deleted": result.deleted, "dry_run": dry_run},
        metadata=metadata,
    )


# One op per run: the in-process executor saves a step subprocess (and its imports) per day,
# which adds up over a backfill of many days.
@job(
    partitions_def=job_archive_partitions,
    executor_def=in_process_executor,
    # One archive run at a time (instance run queue): a backfill works through its days in turn.
    tags={"runs-fleet/exclusive": "archive_old_jobs", "runs-fleet/capability": "archival"},
)
def archive_old_jobs():
    """Archive one day (the partition, by completed_at in UTC) of finished jobs to S3 and delete them from the jobs table.

    Records are deleted only after their archive parts are read back and verified. Backfill
    any range of days from the UI (Backfill on the job's partitions) or `dagster job backfill`.
    """
    archive_job_records_for_day()


@op
def restore_job_records_for_day(
    context: OpExecutionContext, config: RestoreConfig, aws: AwsClients, settings: FleetSettings
):
    """Verify the partition's day of archive (count and SHA-256 of every part), then write its records back to the jobs table.

    Restoring twice is harmless: records already present as archived are skipped.
    """
    day = date.fromisoformat(partition_day(context.partition_key))
    dry_run = is_dry_run(config.dry_run, settings)
    result = restore_day(
        aws.dynamodb, aws.s3, table=settings.jobs_table, bucket=settings.archive_bucket, day=day,
        dry_run=dry_run, overwrite=config.overwrite,
    )
    if result.manifest_uri is None:
        context.log.warning(f"job restore {day}: no archive for this day; nothing to restore")
    context.log.info(
        f"job restore {day}: {result.archived} archived record(s) in {result.parts_verified} verified part(s); "
        f"{'would restore' if dry_run else 'restored'} {result.restored}, already present {result.already_present}, "
        f"kept different version {result.conflicts}, earlier versions superseded in the archive {result.superseded}"
    )
    for job_id in result.conflict_examples:
        context.log.warning(f"job restore {day}: job {job_id} exists in the table in a different version; not overwritten")
    return Output(
        {"day": day.isoformat(), "restored": result.restored, "dry_run": dry_run},
        metadata={
            "dry_run": dry_run,
            "manifest": MetadataValue.text(result.manifest_uri or "none"),
            "parts_verified": result.parts_verified,
            "records_archived": result.archived,
            "records_restored": result.restored,
            "records_already_present": result.already_present,
            "records_conflicting": result.conflicts,
            "records_superseded": result.superseded,
            "conflict_examples": table(JOB_COLUMNS, ({"job id": i} for i in result.conflict_examples)),
        },
    )


@job(
    partitions_def=job_archive_partitions,
    executor_def=in_process_executor,
    tags={"runs-fleet/exclusive": "restore_archived_jobs", "runs-fleet/capability": "archival"},
)
def restore_archived_jobs():
    """Write one archived day (the partition) of job records back to the jobs table, after verifying its archive."""
    restore_job_records_for_day()


@schedule(
    job=archive_old_jobs,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    # Destructive (deletes table records once archived): an operator turns it on deliberately.
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily at 02:00 UTC: archive_old_jobs for the day 7 days back. Stopped by default (it deletes "
    "table records once they are archived and verified).",
)
def archive_old_jobs_daily(context: ScheduleEvaluationContext):
    """Every day at 02:00 UTC, archive the day 7 days back (its records are long finished by then)."""
    moment = context.scheduled_execution_time or datetime.now(timezone.utc)
    day = archive_day_for(moment).isoformat()
    if day < ARCHIVE_START_DATE:
        return SkipReason(f"{day} is before the first archive partition, {ARCHIVE_START_DATE}")
    if not FLEETS.listed:
        return RunRequest(run_key=f"archive_old_jobs:{day}", partition_key=day)
    # One run per fleet for the day; each exclusive per (job, fleet), so fleets archive side by side.
    return fleet_run_requests("archive_old_jobs", FLEETS.names, key=lambda fleet: partition_key(fleet, day),
                              run_key=f"archive_old_jobs:{day}")
