"""The first day of the archive's partitions: ``RUNS_FLEET_ARCHIVE_START`` (YYYY-MM-DD), else 90 days back.

The partition bar shows one square per day from this date to yesterday: a start years back
gives a young fleet a thousand empty squares (and the browser a warning). A default that
moves with the clock keeps the bar at 90 days; a deployment whose jobs table holds older
finished records, or that backfills further back, sets the variable. Read once, when the
code location loads; a bad value stops the load with an error naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone

from pipelines.common.contract import parse_day

ARCHIVE_START_ENV = "RUNS_FLEET_ARCHIVE_START"
DEFAULT_DAYS_BACK = 90


class ArchiveStartError(ValueError):
    """``RUNS_FLEET_ARCHIVE_START`` is not a usable first day."""


def archive_start(environ: Mapping[str, str] = os.environ, today: date | None = None) -> str:
    """The first archive partition (YYYY-MM-DD): the variable if set, else ``today`` − 90 days (UTC)."""
    today = today or datetime.now(timezone.utc).date()
    raw = environ.get(ARCHIVE_START_ENV, "").strip()
    if not raw:
        return (today - timedelta(days=DEFAULT_DAYS_BACK)).isoformat()
    try:
        start = parse_day(raw)
    except ValueError as why:
        raise ArchiveStartError(f"{ARCHIVE_START_ENV}={raw[:40]!r} {why}") from None
    # The newest partition is yesterday: a start from today on would leave no day to archive.
    if start >= today:
        raise ArchiveStartError(f"{ARCHIVE_START_ENV}={raw!r} is not before today ({today.isoformat()}, UTC): "
                                "the archive's days end yesterday")
    return raw
