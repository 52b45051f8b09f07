"""The sweeps' rules without AWS: table-driven boundaries, exact numbers, absurd values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from pipelines.common.safety import BlastRadiusExceeded, check_blast_radius
from pipelines.sweeps import rules
from pipelines.sweeps.rules import JobLookup, decide_overdue_instance

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("tags", "expected"), [
    ({}, False),
    ({"runs-fleet:protect": "true"}, True),
    ({"runs-fleet:protect": ""}, True),  # an empty value protects
    ({"runs-fleet:protect": "   "}, True),
    ({"runs-fleet:protect": "yes"}, True),
    ({"runs-fleet:protect": "no"}, True),  # only 'false' unprotects
    ({"runs-fleet:protect": "0"}, True),
    ({"runs-fleet:protect": "false"}, False),
    ({"runs-fleet:protect": " FALSE "}, False),
    ({"runs-fleet:protect": "False"}, False),
    ({"runs-fleet:protected": "true"}, False),  # another tag
])
def test_protect_tag(tags, expected):
    assert rules.protected(tags) is expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("60", Decimal(60)),
    ("90.9", Decimal("90.9")),
    ("1e2", Decimal(100)),
    ("5270400", Decimal(5270400)),  # ten years: the largest plausible limit
    ("5270401", None),
    ("1E+13", None),
    ("0", None),
    ("-5", None),
    ("NaN", None),
    ("sNaN", None),
    ("Infinity", None),
    ("-Infinity", None),
    ("ten", None),
    ("", None),
    (None, None),
])
def test_max_runtime_values(raw, expected):
    assert rules.parse_max_runtime(raw) == expected


@pytest.mark.parametrize(("age", "limit", "expected"), [
    (timedelta(minutes=100), "90.9", False),
    (timedelta(minutes=100, seconds=53), "90.9", False),  # 100.88 min < 100.9
    (timedelta(minutes=100, seconds=54), "90.9", False),  # exactly 100.9: not strictly more
    (timedelta(minutes=100, seconds=54, microseconds=1), "90.9", True),
    (timedelta(minutes=70), "60", False),
    (timedelta(minutes=70, microseconds=1), "60", True),
    (timedelta(minutes=-5), "60", False),  # launched in the future (clock skew)
    (timedelta(days=3650), "5270400", False),
])
def test_overdue_is_exact(age, limit, expected):
    assert rules.overdue(NOW - age, Decimal(limit), NOW) is expected


@given(st.text(max_size=40) | st.from_regex(r"-?[0-9]{1,400}(\.[0-9]{1,50})?([eE][+-]?[0-9]{1,6})?", fullmatch=True),
       st.integers(min_value=-10**6, max_value=10**9))
def test_no_limit_text_or_age_raises(raw, age_minutes):
    limit = rules.parse_max_runtime(raw)
    if limit is not None:
        assert Decimal(0) < limit <= rules.MAX_PLAUSIBLE_RUNTIME_MINUTES
        rules.overdue(NOW - timedelta(minutes=age_minutes), limit, NOW)


RUNNING, DONE = JobLookup("running"), JobLookup("completed")


@pytest.mark.parametrize(("tags", "job", "error", "outcome", "words"), [
    ({}, None, None, "terminate", "no job assigned"),
    ({"runs-fleet:job-id": "8812"}, DONE, None, "terminate", "job 8812 is completed"),
    ({"runs-fleet:job-id": "8812"}, JobLookup(found=False), None, "terminate", "not in the jobs table"),
    ({"runs-fleet:job-id": "8812"}, RUNNING, None, "job running", "is running"),
    ({"runs-fleet:job-id": "8812"}, JobLookup(None), None, "uncertain", "no status"),
    ({"runs-fleet:job-id": "8812"}, JobLookup("RUNNING"), None, "uncertain", "not a known status"),
    ({"runs-fleet:job-id": "8812"}, JobLookup(" running"), None, "uncertain", "not a known status"),
    ({"runs-fleet:job-id": "8812"}, None, None, "uncertain", "not looked up"),
    ({"runs-fleet:job-id": ""}, None, None, "uncertain", "tag is empty"),
    ({"runs-fleet:job-id": "  "}, None, None, "uncertain", "tag is empty"),
    ({"runs-fleet:job-id": "8812"}, DONE, "AccessDeniedException", "uncertain", "lookup failed"),
    ({}, None, "ResourceNotFoundException", "uncertain", "lookup failed"),  # untagged too: acts on nothing
    ({"runs-fleet:protect": ""}, DONE, None, "protected", "runs-fleet:protect"),
    ({"runs-fleet:protect": "false", "runs-fleet:job-id": "1"}, RUNNING, None, "job running", "is running"),
])
def test_overdue_instance_decisions(tags, job, error, outcome, words):
    decision = decide_overdue_instance(tags, job, error)
    assert decision.outcome == outcome and words in decision.reason
    assert decision.acts is (outcome == "terminate")


NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(("value", "problem"), [
    (NOW_MS - 25 * 3600 * 1000, None),
    (NOW_MS + 3600 * 1000, None),  # within a day of clock skew
    (None, "no usable"),
    (NOW_MS * 1000, "in the future"),  # microseconds
    (NOW_MS // 1000, "before 2010"),  # seconds
    (-1, "before 2010"),
    (10**30, "in the future"),
])
def test_activity_values(value, problem):
    found = rules.activity_problem(value, NOW)
    assert (found is None) if problem is None else (problem in found)


def test_idle_boundary_is_exact():
    day = timedelta(hours=24)
    assert not rules.idle_longer_than(NOW_MS - 24 * 3600 * 1000, day, NOW)
    assert rules.idle_longer_than(NOW_MS - 24 * 3600 * 1000 - 1, day, NOW)


@pytest.mark.parametrize(("planned", "found", "fraction", "blocked"), [
    (29, 100, 0.29, False),  # 0.29 * 100 is 28.999... in floats: exactly the limit is allowed
    (30, 100, 0.29, True),
    (20, 100, 0.2, False),
    (21, 100, 0.2, True),
    (10, 10, 0.0, False),  # ten or fewer actions: the fraction does not apply
    (11, 11, 1.0, False),
    (7, 10, 0.7, False),
    (57, 100, 0.57, False),
    (3, 3, 0.1, False),
])
def test_blast_radius_fraction_is_exact(planned, found, fraction, blocked):
    if blocked:
        with pytest.raises(BlastRadiusExceeded, match="max_fraction"):
            check_blast_radius("k", planned, found, 1000, fraction)
    else:
        check_blast_radius("k", planned, found, 1000, fraction)


@given(st.integers(min_value=11, max_value=10_000), st.integers(min_value=0, max_value=100))
def test_blast_radius_at_every_whole_percent(found, percent):
    planned = found * percent // 100
    if planned * 100 == found * percent and planned > 10:
        check_blast_radius("k", planned, found, 10**9, percent / 100)  # exactly the limit never blocks
