"""The sweeps' rules as pure functions: data in, decision out, no AWS call.

Each sweep's find step reads the world, these functions decide, and the act step re-reads
what the decision relied on and asks the same functions again just before it destroys
anything. Numbers are compared exactly (integers and ``Decimal``), never as floats: a
fractional ``max_runtime_minutes`` of 90.9 must not become 90, and a plan of exactly
``max_fraction`` of what was found must pass.

Every value read from a record may be absurd (negative, NaN, ``1E+13``, milliseconds in
microseconds): such a value is *unusable*, the resource it governs is kept and reported,
and nothing raises, so one bad record never wedges a sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from pipelines.common.contract import (  # noqa: F401 - the sweeps import the vocabulary from here too
    JOB_ID_TAG,
    JOB_STATUSES,
    MANAGED_TAG,
    POOL_TAG,
    PROTECT_TAG,
)

DEFAULT_MAX_RUNTIME_MINUTES = Decimal(360)
GRACE_MINUTES = 10
# Ten years: a pool limit above this is a typo or a unit error, not a policy.
MAX_PLAUSIBLE_RUNTIME_MINUTES = Decimal(10 * 366 * 24 * 60)
# Epoch milliseconds before this (2010-01-01) are a unit error (seconds), not a date of this fleet.
EARLIEST_PLAUSIBLE_MS = 1_262_304_000_000
FUTURE_TOLERANCE = timedelta(days=1)

_US_PER_MINUTE = 60_000_000


def protected(tags: Mapping[str, str]) -> bool:
    """``runs-fleet:protect`` with any value but ``false`` (case and blanks ignored), empty included."""
    value = tags.get(PROTECT_TAG)
    return value is not None and value.strip().lower() != "false"


def parse_max_runtime(raw: str | None) -> Decimal | None:
    """A pool's ``max_runtime_minutes`` (DynamoDB N text) as an exact number; None when unusable.

    Unusable: missing, not a number, NaN or infinite, zero or negative, or above ten years.
    """
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except (InvalidOperation, TypeError, ValueError):
        return None
    if not value.is_finite() or value <= 0 or value > MAX_PLAUSIBLE_RUNTIME_MINUTES:
        return None
    return value


def minutes_since(then: datetime, now: datetime) -> Decimal:
    """Exact minutes from ``then`` to ``now`` (microsecond resolution, negative if ``then`` is later)."""
    return Decimal((now - then) // timedelta(microseconds=1)) / _US_PER_MINUTE


def overdue(launch_time: datetime, max_runtime_minutes: Decimal, now: datetime) -> bool:
    """Launched strictly more than ``max_runtime_minutes`` + 10 minutes ago, compared exactly."""
    return minutes_since(launch_time, now) > max_runtime_minutes + GRACE_MINUTES


@dataclass(frozen=True)
class JobLookup:
    """What the jobs table said about one job id: its status, or why it could not tell."""

    status: str | None = None  # None: the record is absent (found=False) or has no usable status
    found: bool = True


@dataclass(frozen=True)
class Decision:
    """One candidate's outcome: ``terminate``, or ``kept`` with the category an operator filters on."""

    outcome: str  # terminate | protected | job running | uncertain
    reason: str

    @property
    def acts(self) -> bool:
        return self.outcome == "terminate"


def decide_overdue_instance(
    tags: Mapping[str, str],
    job: JobLookup | None,
    lookup_error: str | None,
) -> Decision:
    """The orphaned-instance rule for an instance already past its age limit.

    ``job`` is what the jobs table said of its ``runs-fleet:job-id`` tag (None when untagged,
    or when the table was not read); ``lookup_error`` names why the table could not be read.
    """
    if protected(tags):
        return Decision("protected", f"{PROTECT_TAG}={tags[PROTECT_TAG]!r}")
    job_id = tags.get(JOB_ID_TAG)
    if lookup_error is not None:
        # A missing dependency acts on nothing, tagged or not.
        return Decision("uncertain", f"jobs table lookup failed ({lookup_error})")
    if job_id is None:
        return Decision("terminate", "no job assigned")
    if not job_id.strip():
        return Decision("uncertain", f"{JOB_ID_TAG} tag is empty: cannot tell whether it is busy")
    if job is None:
        return Decision("uncertain", f"job {job_id} was not looked up")
    if not job.found:
        return Decision("terminate", f"job {job_id} not in the jobs table")
    if job.status is None:
        return Decision("uncertain", f"job {job_id} record has no status")
    if job.status not in JOB_STATUSES:
        # A malformed status ("RUNNING", blanks) cannot prove the job is over.
        return Decision("uncertain", f"job {job_id} record has status {job.status!r}, not a known status")
    if job.status == "running":
        return Decision("job running", f"job {job_id} is running")
    return Decision("terminate", f"job {job_id} is {job.status}")


def activity_problem(last_activity_ms: int | None, now: datetime) -> str | None:
    """Why a tracking record's ``last_activity`` (epoch ms) cannot be trusted; None when it can."""
    if last_activity_ms is None:
        return "no usable last_activity"
    now_ms = (now - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    if last_activity_ms < EARLIEST_PLAUSIBLE_MS:
        return f"last_activity {last_activity_ms} is before 2010 (seconds instead of milliseconds?)"
    if last_activity_ms > now_ms + FUTURE_TOLERANCE // timedelta(milliseconds=1):
        return f"last_activity {last_activity_ms} is in the future (microseconds instead of milliseconds?)"
    return None


def idle_longer_than(last_activity_ms: int, limit: timedelta, now: datetime) -> bool:
    """Exact integer comparison of a plausible epoch-ms activity time with ``now - limit``."""
    now_ms = (now - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    return now_ms - last_activity_ms > limit // timedelta(milliseconds=1)

