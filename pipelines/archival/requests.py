"""The `old_jobs` housekeeping request: params are ``archive_old_jobs``'s config plus ``date`` (YYYY-MM-DD),
which picks the partition (default: the day the schedule would archive, 7 days back)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel

from pipelines.archival.jobs import ARCHIVE_START_DATE, ArchiveConfig, archive_day_for
from pipelines.common.requests import BadParams, RequestableJob, requestable

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


def archive_day(raw: str | None, now: datetime | None = None) -> str:
    """The day to archive: ``raw`` (YYYY-MM-DD, a finished day since the archive's start), or 7 days back."""
    now = now or datetime.now(timezone.utc)
    if raw is None:
        return archive_day_for(now).isoformat()
    if not _DATE.match(raw):
        raise BadParams(f"params.date must be a date as YYYY-MM-DD, got {raw[:40]!r}")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadParams(f"params.date {raw!r} is not a real date") from None
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
