"""Quota headroom forecast on synthetic histories, without AWS."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipelines.ledger.forecast import ERROR, OK, WARN, forecast, net_rate_per_day

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def hourly(counts: list[int]) -> list[tuple[datetime, float]]:
    """Counts one hour apart, ending one hour before NOW."""
    return [(NOW - timedelta(hours=len(counts) - i), c) for i, c in enumerate(counts)]


def test_the_rate_is_the_least_squares_slope_per_day():
    assert net_rate_per_day(hourly([100, 110, 120])) == pytest.approx(240)
    assert net_rate_per_day(hourly([100])) is None


@pytest.mark.parametrize("history,count,limit,status", [
    (hourly([5000] * 24), 5000, 10_000, OK),  # flat: never
    (hourly(list(range(6000, 5000, -40))), 5000, 10_000, OK),  # falling: never
    ([], 9000, 10_000, OK),  # one point: no rate, headroom left
    # +10/hour = 240/day; 1,200 left = 5 days → WARN
    (hourly([8800 - 10 * (24 - i) for i in range(24)]), 8800, 10_000, WARN),
    # 8 days left → OK
    (hourly([8080 - 10 * (24 - i) for i in range(24)]), 8080, 10_000, OK),
    # 200 left at 240/day → under a day → ERROR
    (hourly([9800 - 10 * (24 - i) for i in range(24)]), 9800, 10_000, ERROR),
    ([], 10_000, 10_000, ERROR),  # at the limit: now
])
def test_headroom_warns_within_a_week_and_errors_within_a_day(history, count, limit, status):
    result = forecast(history, NOW, count, limit)
    assert result.status == status, result.describe("x")


def test_the_description_says_when_it_runs_out():
    result = forecast(hourly([8800 - 10 * (24 - i) for i in range(24)]), NOW, 8800, 10_000)
    assert result.days_left == pytest.approx(5.0)
    assert "in 5.0 days" in result.describe("params")
