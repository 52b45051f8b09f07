"""Per-day freshness of the archive: which days are archived late, or not at all, as the check `archived_days_on_time`.

Dagster 1.13's freshness policies judge an asset as a whole (its latest materialization of
any partition), not each partition, so a day skipped while later days were archived would
look fresh. This check judges every day of the archive's partitions instead.

A day D is **due** when the daily schedule archives it: D + 7 days at 02:00 UTC
(``ARCHIVE_AFTER_DAYS``). A day is **late** when, one day (``GRACE``) after it was due, it
is still not archived (**missing**), or when it was archived a day or more after it was due
and that was within the last week (**archived late**: the schedule slipped recently; an old
backfill does not warn for ever). Either fails the check with severity WARN, naming the
days. A day due less than a day ago and not yet archived is only **pending**.

The rule is ``judge`` (pure); ``archived_at`` reads when each day was first archived from
the Dagster instance (the `job_archive` materializations).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

GRACE = timedelta(days=1)
RECENT = timedelta(days=7)
DUE_AT = time(2, 0)  # the archive schedule's hour (UTC)
NAMED = 30  # days named in the description and metadata at most


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    missing: list[str]
    late: list[tuple[str, float]]  # (day, hours late)
    pending: list[str]

    def metadata(self, after_days: int) -> dict[str, Any]:
        return {
            "missing_days": len(self.missing), "late_days": len(self.late), "pending_days": len(self.pending),
            "missing": self.missing[:NAMED], "archived_late": [f"{d} ({h:.0f} h late)" for d, h in self.late[:NAMED]],
            "pending": self.pending[:NAMED],
            "rule": f"day D is due D+{after_days} d 02:00 UTC; missing or archived late by {GRACE.days} day: WARN",
        }


def due_at(day: date, after_days: int) -> datetime:
    return datetime.combine(day + timedelta(days=after_days), DUE_AT, tzinfo=timezone.utc)


def judge(days: Sequence[str], archived: Mapping[str, datetime], now: datetime, after_days: int,
          day_of: Callable[[str], str] = str) -> Verdict:
    """Missing, late and pending days among ``days`` (partition keys), given when each was first archived.
    ``day_of`` reads a key's YYYY-MM-DD (a date × fleet key, with many fleets, names its fleet too)."""
    missing, late, pending = [], [], []
    for key in days:
        due = due_at(date.fromisoformat(day_of(key)), after_days)
        if due > now:
            continue  # not due yet
        when = archived.get(key)
        if when is None:
            (missing if now - due >= GRACE else pending).append(key)
        elif when - due >= GRACE and now - due <= RECENT + GRACE:
            late.append((key, (when - due).total_seconds() / 3600))
    parts = []
    if missing:
        parts.append(f"{len(missing)} day(s) due more than a day ago and not archived: {_days(missing)}")
    if late:
        parts.append(f"{len(late)} day(s) archived a day or more late this week: {_days([d for d, _ in late])}")
    if not parts:
        text = "every due day is archived on time" + (f" ({len(pending)} due within the last day, pending)"
                                                      if pending else "")
        return Verdict(True, text, missing, late, pending)
    return Verdict(False, "; ".join(parts), missing, late, pending)


def _days(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:NAMED])
    return shown + (f" and {len(keys) - NAMED} more" if len(keys) > NAMED else "")


def archived_at(instance: Any, asset_key: Any) -> dict[str, datetime]:
    """When each partition of ``asset_key`` was first materialized (oldest first, paged through the event log)."""
    first: dict[str, datetime] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(asset_key, limit=1000, cursor=cursor, ascending=True)
        for record in result.records:
            if record.partition_key and record.partition_key not in first:
                first[record.partition_key] = datetime.fromtimestamp(record.timestamp, timezone.utc)
        if not result.has_more:
            return first
        cursor = result.cursor
