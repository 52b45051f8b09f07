"""The cross-fleet summary's arithmetic, table-driven (pipelines/audit/summary.py; no moto, no Dagster)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipelines.audit.summary import NOT_YET, FleetFigures, summarize, utilisation

AT = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("figures, total, covered, missing", [
    ([], {"a": 0.0, "m": 0.0}, 0, []),
    ([FleetFigures("x", {"a": 2, "m": 5}, AT), FleetFigures("y", {"a": 3.5, "m": 1}, AT)],
     {"a": 5.5, "m": 5.0}, 2, []),
    ([FleetFigures("x", {"a": 2, "m": 5}, AT), FleetFigures("y", None)], {"a": 2.0, "m": 5.0}, 1, ["y"]),
    # A figure the report left out (unknown) is not counted as zero in the row, and not added.
    ([FleetFigures("x", {"m": 7}, AT), FleetFigures("y", {"a": 1, "m": 9}, AT)], {"a": 1.0, "m": 9.0}, 2, []),
])
def test_totals_add_up_and_max_fields_take_the_maximum(figures, total, covered, missing):
    summary = summarize(figures, ["a", "m"], maxed=["m"])
    assert summary["total"] == total and summary["covered"] == covered and summary["missing"] == missing
    assert [r["fleet"] for r in summary["rows"]] == [f.fleet for f in figures]
    for row, item in zip(summary["rows"], figures):
        assert (row["as_of"] == NOT_YET) == (item.values is None)


@pytest.mark.parametrize("total, expected", [
    ({"running": 0, "stopped": 0, "assigned": 0}, None),
    ({"running": 3, "stopped": 1, "assigned": 2}, 0.5),
    ({"running": 4, "stopped": 0, "assigned": 4}, 1.0),
])
def test_utilisation_across_fleets(total, expected):
    assert utilisation(total) == expected
