"""The Dagster layer of the job index: "where is job X archived?" as a small job with one op.

Thin like ``jobs.py``: config in, ``index.locate_archived_job`` called, its answer logged and
recorded as metadata (the day, the part and the manifest as s3:// URIs).
"""

# No "from __future__ import annotations": Dagster resolves the op's Config annotation at definition time.

from dagster import Config, MetadataValue, OpExecutionContext, Output, in_process_executor, job, op
from pydantic import Field, field_validator

from pipelines.archival.index import LookupStats, bucket_prefix, locate_archived_job
from pipelines.common.tables import column, table
from resources.aws import AwsClients
from pipelines.common.contract import JOB_ID_MAX, plain_token
from pipelines.common.fleets import FLEET_PARTITIONS
from resources.settings import FleetSettings

LOCATION_COLUMNS = [
    column("completed_date", description="the archived day (UTC date of completed_at)"),
    column("part", description="s3:// URI of the part holding the job's latest archived version on that day"),
    column("manifest", description="s3:// URI of that day's manifest"),
]


class LocateConfig(Config):
    """Run config of locate_archived_job: the job id to look for."""

    job_id: str = Field(
        min_length=1, max_length=JOB_ID_MAX,
        description="The job id, exactly as in the jobs table (e.g. 8812): one token, no spaces or control characters.",
    )

    @field_validator("job_id")
    @classmethod
    def _plain_token(cls, value: str) -> str:
        # The rule termination processing applies to a job id (pipelines.common.contract.plain_token).
        if not plain_token(value):
            raise ValueError("job_id must be one token: no spaces, control or invisible characters")
        return value


@op
def find_job_in_archive(context: OpExecutionContext, config: LocateConfig, aws: AwsClients, settings: FleetSettings):
    """Find where a job is archived, from its job id alone: the day, the part and the manifest (s3:// URIs).

    Reads only the job's bucket of the job index (index/jobs/bucket=HH/ in the archive bucket):
    one list call per 1,000 archived days and one small object per day. A job not found is
    still in the jobs table, or was never archived, or its day was archived before the index
    existed (re-running that day's archive_old_jobs writes its index).
    """
    job_id = config.job_id
    stats = LookupStats()
    entries = locate_archived_job(aws.s3, settings.archive_bucket, job_id, stats)
    where = f"s3://{settings.archive_bucket}/{bucket_prefix(stats.bucket)}"
    if entries:
        for entry in entries:
            context.log.info(f"job {job_id} is archived on {entry.completed_date}: part {entry.part}, "
                             f"manifest {entry.manifest}")
    else:
        context.log.warning(
            f"job {job_id} is not archived: no day in the job index ({where}) holds it. It is still in the jobs "
            f"table, never existed, or its day was archived before the index existed (re-run archive_old_jobs "
            f"for that day to index it)."
        )
    metadata = {
        "job_id": MetadataValue.text(job_id),
        "archived": bool(entries),
        "days": len(entries),
        "answer": MetadataValue.md(
            "\n".join(f"- **{e.completed_date}**: part `{e.part}`, manifest `{e.manifest}`" for e in entries)
            or f"**Not archived**: job `{job_id}` is in no day of the job index."),
        "locations": table(LOCATION_COLUMNS, ({"completed_date": e.completed_date, "part": e.part,
                                               "manifest": e.manifest} for e in entries)),
        "index_bucket": MetadataValue.text(where),
        "index_objects_read": stats.objects_read,
        "index_bytes_read": stats.bytes_read,
        "list_pages": stats.list_pages,
    }
    return Output({"job_id": job_id, "archived": [e.__dict__ for e in entries]}, metadata=metadata)


@job(
    name="locate_archived_job",
    executor_def=in_process_executor,
    partitions_def=FLEET_PARTITIONS,
    tags={"runs-fleet/exclusive": "locate_archived_job", "runs-fleet/capability": "archival"},
)
def locate_job():
    """Where is job X archived? Give its job_id in the run config; the run names its day, part and manifest."""
    find_job_in_archive()
