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

import re

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # runners imports this module; the rule only reads a Liveness' fields
    from pipelines.sweeps.runners import Liveness

from pipelines.common.contract import (  # noqa: F401 - the sweeps import the vocabulary from here too
    JOB_ID_TAG,
    iso,
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
        return self.outcome in ("terminate", "interrupt")


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



# --- stuck jobs ---------------------------------------------------------------------------

EARLIEST_PLAUSIBLE_START = datetime(2010, 1, 1, tzinfo=timezone.utc)
# The contract's time format, e.g. 2026-11-22T10:05:14Z: UTC only (Z or +00:00), fraction optional.
_ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)")
# EC2 states in which a runner is gone for the stuck jobs sweep. runners.ec2_liveness calls
# shutting-down live (its parameter and queues may still be in use while it shuts down), but no
# job survives it. Stopped/stopping are not in the contract's list: a stopped instance may be
# hibernated and resume its job, so its job is kept (uncertain) for an operator to look at.
STUCK_GONE_EC2_STATES = frozenset({"shutting-down"})
STUCK_UNSURE_EC2_STATES = frozenset({"stopping", "stopped"})


@dataclass(frozen=True)
class JobRecord:
    """A jobs-table record as the stuck jobs rule reads it; text fields as stored (None when absent)."""

    job_id: str
    status: str | None
    started_at: str | None
    instance_id: str | None
    pool: str | None = None


def shown(text: str | None) -> str:
    """A value read from a record, fit for one log line: as is when plain, else quoted and cut (no newline in it)."""
    if text is not None and text.isprintable() and " " not in text and len(text) <= 80:
        return text
    return repr(text if text is None else text[:80])


def parse_started_at(raw: str | None, now: datetime) -> tuple[datetime | None, str | None]:
    """A record's ``started_at`` parsed strictly as ISO 8601 UTC: (time, None), or (None, why it is unusable).

    Unusable: missing, not ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with ``Z`` or ``+00:00``, not a real
    date, before 2010, or more than a day in the future. Never raises.
    """
    if raw is None:
        return None, "no started_at"
    if not isinstance(raw, str) or not _ISO_UTC.fullmatch(raw):
        return None, f"started_at {str(raw)[:40]!r} is not ISO 8601 UTC (YYYY-MM-DDTHH:MM:SSZ)"
    try:
        started = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None, f"started_at {raw!r} is not a real date"
    if started < EARLIEST_PLAUSIBLE_START:
        return None, f"started_at {raw} is before 2010"
    if started > now + FUTURE_TOLERANCE:
        return None, f"started_at {raw} is in the future"
    return started, None


def stuck_longer_than(started: datetime, grace_minutes: int, now: datetime) -> bool:
    """Started strictly more than ``grace_minutes`` ago, compared exactly."""
    return minutes_since(started, now) > grace_minutes


def stuck_job_precheck(job: JobRecord, grace_minutes: int, now: datetime) -> Decision | None:
    """The part of the stuck jobs rule that needs no AWS lookup.

    A Decision when the record alone settles it (``not running``, ``not stuck`` — neither is a
    candidate — or ``uncertain``); None when its runner's liveness decides.
    """
    if job.status is None:
        return Decision("uncertain", "record has no status")
    if job.status != "running":
        return Decision("not running", f"job is {shown(job.status)}")
    started, problem = parse_started_at(job.started_at, now)
    if started is None:
        return Decision("uncertain", f"{problem}: cannot tell how long it has run")
    if not stuck_longer_than(started, grace_minutes, now):
        return Decision("not stuck", f"started {minutes_since(started, now):.0f} min ago, within {grace_minutes}")
    if job.instance_id is None or not job.instance_id.strip():
        return Decision("uncertain", "record has no instance_id: its runner cannot be looked up")
    return None


def decide_stuck_job(job: JobRecord, runner: Liveness | None, grace_minutes: int, now: datetime) -> Decision:
    """The stuck jobs rule: ``interrupt`` a running job older than the grace whose runner is gone.

    Gone: EC2 instance terminated, shutting-down or unknown; ECS task STOPPED or unknown in
    the cluster. A live runner keeps the job (``in use``); a stopped EC2 instance, a failed
    lookup or an answer we do not understand keeps it too (``uncertain``).
    """
    settled = stuck_job_precheck(job, grace_minutes, now)
    if settled is not None:
        return settled
    runner_id = shown(job.instance_id)
    if runner is None:
        return Decision("uncertain", f"runner {runner_id} was not looked up")
    age = f"running since {job.started_at} (> {grace_minutes} min)"
    if runner.state == "gone":
        return Decision("interrupt", f"{age}; runner {runner_id}: {runner.why}")
    if runner.state == "live" and (job.instance_id or "").startswith("i-"):
        if runner.aws_state in STUCK_GONE_EC2_STATES:
            return Decision("interrupt", f"{age}; runner {runner_id}: instance {runner.aws_state}")
        if runner.aws_state in STUCK_UNSURE_EC2_STATES:
            return Decision("uncertain", f"runner {runner_id} is {runner.aws_state} (may be hibernated and resume)")
    if runner.state == "live":
        return Decision("in use", f"runner {runner_id} is live ({runner.why})")
    return Decision("uncertain", f"runner {runner_id}: {runner.why}")


def interrupted_at(runner: Liveness | None, started: datetime | None, now: datetime) -> tuple[str, str]:
    """``completed_at`` for an interrupted job and where it comes from.

    When AWS says when the runner ended (EC2 StateTransitionReason, ECS stoppedAt) and that
    time lies between the job's start and now, that time; otherwise now.
    """
    ended = runner.ended_at if runner is not None else None
    if ended is not None and ended.tzinfo is None:
        ended = ended.replace(tzinfo=timezone.utc)
    if ended is not None and started is not None and started <= ended <= now:
        return iso(ended), "when AWS says the runner ended"
    return iso(now), "now: AWS gives no usable end time"
