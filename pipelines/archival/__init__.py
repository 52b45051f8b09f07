"""Archival of finished jobs: one day of the jobs table at a time to S3, verified before delete, restorable.

Plain rules in ``query``, ``parts``, ``manifest``, ``index``, ``archive`` and ``restore``; the Dagster
layer (daily partitions, jobs, schedule, the ``job_archive`` asset) in ``jobs``, the job index's
lookup job in ``locate``; the
``old_jobs`` housekeeping request in ``requests``. See docs/archival.md.
"""

from dagster import Definitions

from pipelines.archival.jobs import (
    archive_old_jobs, archive_old_jobs_daily, archived_days_on_time, job_archive, restore_archived_jobs,
)
from pipelines.archival.locate import locate_job
from pipelines.archival.requests import REQUESTS

JOBS = [archive_old_jobs, restore_archived_jobs, locate_job]

defs = Definitions(
    jobs=JOBS,
    schedules=[archive_old_jobs_daily],
    assets=[job_archive],
    asset_checks=[archived_days_on_time],
)

__all__ = ["JOBS", "REQUESTS", "defs"]
