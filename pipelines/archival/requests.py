"""The `old_jobs` housekeeping request: params `dry_run`, `max_actions`, `date` (YYYY-MM-DD) -> a run of one partition."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from pipelines.archival.jobs import ARCHIVE_START_DATE, archive_day_for
from pipelines.common.requests import BadParams, RequestableJob

ALLOWED_PARAMS = ("dry_run", "max_actions", "date")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


def _check_params(params: Mapping[str, Any]) -> None:
    if not isinstance(params, Mapping):
        raise BadParams(f"params must be an object, got {type(params).__name__}")
    # A misspelt "dryrun" must not quietly become a destructive run.
    unknown = sorted(set(params) - set(ALLOWED_PARAMS))
    if unknown:
        raise BadParams(f"params.{unknown[0]} is not a parameter of old_jobs (allowed: {', '.join(ALLOWED_PARAMS)})")


def archive_partition_key(params: Mapping[str, Any], now: datetime | None = None) -> str:
    """The day to archive: params.date, or, like the schedule, the day 7 days back."""
    _check_params(params)
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    raw = params.get("date")
    if raw is None:
        return archive_day_for(now or datetime.now(timezone.utc)).isoformat()
    if not isinstance(raw, str) or not _DATE.match(raw):
        raise BadParams(f"params.date must be a date as YYYY-MM-DD, got {raw!r}")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadParams(f"params.date {raw!r} is not a real date") from None
    if day < date.fromisoformat(ARCHIVE_START_DATE) or day >= today:
        raise BadParams(
            f"params.date {raw!r} is outside the archive's days ({ARCHIVE_START_DATE} to yesterday, UTC)"
        )
    return raw


def archive_run_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """Run config of archive_old_jobs from a request's params; raises BadParams naming the bad field."""
    _check_params(params)
    config: dict[str, Any] = {}
    if "dry_run" in params:
        if not isinstance(params["dry_run"], bool):
            raise BadParams(f"params.dry_run must be true or false, got {params['dry_run']!r}")
        config["dry_run"] = params["dry_run"]
    if "max_actions" in params:
        value = params["max_actions"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadParams(f"params.max_actions must be a whole number >= 0, got {value!r}")
        config["max_actions"] = value
    archive_partition_key(params)  # a bad date fails here too, whichever the caller asks first
    return {"ops": {"archive_job_records_for_day": {"config": config}}}


REQUESTS: list[RequestableJob] = [
    RequestableJob(
        task_type="old_jobs",
        job_name="archive_old_jobs",
        build_run_config=archive_run_config,
        partition_key=archive_partition_key,
    )
]
