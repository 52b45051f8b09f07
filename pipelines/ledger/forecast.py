"""Quota headroom, pure: how long until a count reaches its limit, at the rate the ledger's history shows.

The ledger records each count it watches (standard SSM parameters under the prefix, queues in
the account) as numeric metadata on every materialization. The net rate (creates minus
deletes per day) is the least-squares slope of those counts over time, the current one
included; a flat or falling count never runs out. ``WARN`` when the headroom lasts 7 days or
less, ``ERROR`` when 1 day or less, or when the count is already at the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

OK, WARN, ERROR = "ok", "warn", "error"


@dataclass(frozen=True)
class Forecast:
    count: int
    limit: int
    headroom: int
    rate_per_day: float | None  # None: fewer than two points in time
    days_left: float | None  # None: never at this rate (or no rate)
    status: str
    points: int

    def describe(self, what: str) -> str:
        rate = "no rate yet (one point)" if self.rate_per_day is None else f"{self.rate_per_day:+.1f}/day"
        runs_out = ("never at this rate" if self.days_left is None
                    else "now" if self.days_left <= 0 else f"in {self.days_left:.1f} days")
        return (f"{what}: {self.count} of {self.limit} ({self.headroom} left), net {rate} over {self.points} "
                f"point(s): runs out {runs_out}")


def net_rate_per_day(history: Sequence[tuple[datetime, float]]) -> float | None:
    """Least-squares slope of (time, count), per day; None with fewer than two distinct times."""
    if len({t for t, _ in history}) < 2:
        return None
    origin = min(t for t, _ in history)
    xs = [(t - origin).total_seconds() / 86400 for t, _ in history]
    ys = [float(c) for _, c in history]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


def forecast(history: Sequence[tuple[datetime, float]], now: datetime, count: int, limit: int,
             warn_days: float = 7, error_days: float = 1) -> Forecast:
    """The headroom of ``count`` against ``limit``, with ``history`` (earlier materializations) and now."""
    points = [*history, (now, count)]
    rate = net_rate_per_day(points)
    headroom = limit - count
    if headroom <= 0:
        days = 0.0
    elif rate is None or rate <= 0:
        days = None
    else:
        days = headroom / rate
    status = OK if days is None or days > warn_days else (ERROR if days <= error_days else WARN)
    return Forecast(count, limit, headroom, rate, days, status, len(points))
