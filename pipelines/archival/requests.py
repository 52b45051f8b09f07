"""The `old_jobs` housekeeping request: params are ``archive_old_jobs``'s config plus ``date`` (YYYY-MM-DD),
which picks the partition (default: the day the schedule would archive, 7 days back)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel

from pipelines.archival.jobs import ARCHIVE_START_DATE, ArchiveConfig, archive_day_for
from pipelines.common.contract import parse_day
from pipelines.common.requests import BadParams, RequestableJob, requestable



def archive_day(raw: str | None, now: datetime | None = None) -> str:
    """The day to archive: ``raw`` (YYYY-MM-DD, a finished day since the archive's start), or 7 days back."""
    now = now or datetime.now(timezone.utc)
    if raw is None:
        return archive_day_for(now).isoformat()
    try:
        day = parse_day(raw)
    except ValueError as why:
        raise BadParams(f"params.date {raw[:40]!r} {why}") from None
    if day < date.fromisoformat(ARCHIVE_START_DATE) or day >= now.astimezone(timezone.utc).date():
        raise BadParams(f"params.date {raw!r} is outside the archive's days ({ARCHIVE_START_DATE} to yesterday, UTC)")
    return raw


def archive_partition_key(params: Mapping[str, Any], now: datetime | None = None) -> str:
    """The partition a request's raw params ask for; raises BadParams naming the bad field."""
    return archive_day(REQUESTS[0].parse(params).date, now)  # type: ignore[attr-defined]


def _partition(params: BaseModel) -> str:
    return archive_day(params.date)  # type: ignore[attr-defined]


REQUESTS: list[RequestableJob] = [
    requestable("old_jobs", "archive_old_jobs", {"archive_job_records_for_day": ArchiveConfig},
                extra={"date": (str | None, None)}, partition=_partition),
]
