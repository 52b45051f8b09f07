"""The ledger's rules, pure: what one survey of the fleet says about each runner.

A runner (an EC2 instance ``i-…`` or an ECS task id) is *present* while AWS shows it not
ended (an instance in any state but shutting-down / terminated; a task whose lastStatus is
not STOPPED) and *gone* otherwise, unknown to EC2/ECS included. Each runner id seen anywhere
(an instance, a task, a parameter, a per-runner queue, a tracking record, a job record's
``instance_id``) gets one class:

- ``live``: present and not an orphaned instance (a protected or still-working overdue
  instance is live); or never seen in EC2/ECS but every piece younger than the stale SSM
  sweep's minimum age (a runner's parameter and queues are written before it is visible).
- ``leaked``: pieces outlive their runner. An orphaned instance (the orphaned instances
  sweep's rule: running, launched more than max runtime + 10 min ago, unprotected, its job-id
  tag naming no running job) is itself the leaked piece; for a gone runner the leaked
  pieces are its parameter, per-runner queues and tracking record.
- ``stuck``: gone, yet a job record says ``running`` on it (stuck wins over leaked; the
  pieces are still listed).
- ``finished_clean``: gone, nothing left but finished job records.

A leaked piece is dated by its own clock, the one its sweep reads (an instance: when it
became overdue; a parameter: LastModifiedDate; a queue: CreatedTimestamp, else the tracking
record's created_at; a tracking record: last_activity), so the invariant checks compare the
same age the sweep does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from pipelines.common.contract import iso
from pipelines.sweeps.rules import DEFAULT_MAX_RUNTIME_MINUTES, GRACE_MINUTES, protected

LIVE, FINISHED_CLEAN, LEAKED, STUCK = "live", "finished_clean", "leaked", "stuck"
CLASSES = (LIVE, FINISHED_CLEAN, LEAKED, STUCK)
INSTANCE, PARAMETER, QUEUE, TRACKING = "instance", "parameter", "queue", "tracking_record"
PIECE_KINDS = (INSTANCE, PARAMETER, QUEUE, TRACKING)
GONE_EC2_STATES = frozenset({"shutting-down", "terminated"})
NO_POOL = "unknown"  # CloudWatch takes no empty dimension value


# --- what the survey saw --------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceSeen:
    runner_id: str
    state: str
    launched: datetime
    pool: str | None = None
    instance_type: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    ended_at: datetime | None = None

    @property
    def job_tag(self) -> str | None:
        return (self.tags.get("runs-fleet:job-id") or "").strip() or None


@dataclass(frozen=True)
class TaskSeen:
    runner_id: str
    status: str  # ECS lastStatus
    started: datetime | None = None
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class ParameterSeen:
    name: str
    runner_id: str
    last_modified: datetime
    tier: str = "Standard"


@dataclass(frozen=True)
class QueueSeen:
    runner_id: str
    kind: str  # input | output | dlq
    url: str
    created: datetime | None = None  # CreatedTimestamp when read
    messages: int | None = None  # visible + in flight + delayed, when read


@dataclass(frozen=True)
class TrackingSeen:
    runner_id: str
    created_at: datetime | None = None
    last_activity: datetime | None = None


@dataclass(frozen=True)
class JobSeen:
    job_id: str
    status: str | None
    runner_id: str | None
    pool: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass
class Fleet:
    """One survey's view, indexed by runner id; ``max_runtimes`` maps a pool to its usable limit (None: unusable)."""

    instances: dict[str, InstanceSeen] = field(default_factory=dict)
    tasks: dict[str, TaskSeen] = field(default_factory=dict)
    parameters: dict[str, ParameterSeen] = field(default_factory=dict)
    queues: dict[str, list[QueueSeen]] = field(default_factory=lambda: defaultdict(list))
    tracking: dict[str, TrackingSeen] = field(default_factory=dict)
    jobs: list[JobSeen] = field(default_factory=list)
    max_runtimes: Mapping[str, Decimal | None] = field(default_factory=dict)

    def runner_ids(self) -> set[str]:
        ids = set(self.instances) | set(self.tasks) | set(self.parameters) | set(self.queues) | set(self.tracking)
        return ids | {j.runner_id for j in self.jobs if j.runner_id}


# --- the classes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Each sweep's own threshold and schedule interval (contract defaults): a leak past both is a failing sweep."""

    parameter_min_age_minutes: int = 60
    queue_min_age_minutes: int = 24 * 60
    stuck_grace_minutes: int = 30
    instance_interval_minutes: int = 15
    parameter_interval_minutes: int = 60
    queue_interval_minutes: int = 6 * 60
    stuck_interval_minutes: int = 15

    def overdue_after(self, kind: str) -> timedelta:
        """How old a leaked piece may be before its sweep should have taken it (threshold + one interval)."""
        if kind == INSTANCE:
            # An instance's age counts from when it became overdue (launch + max runtime + 10 min).
            return timedelta(minutes=self.instance_interval_minutes)
        if kind == PARAMETER:
            return timedelta(minutes=self.parameter_min_age_minutes + self.parameter_interval_minutes)
        return timedelta(minutes=self.queue_min_age_minutes + self.queue_interval_minutes)

    def stuck_after(self) -> timedelta:
        return timedelta(minutes=self.stuck_grace_minutes + self.stuck_interval_minutes)


@dataclass(frozen=True)
class Piece:
    """One leaked piece: its kind, its AWS name, and since when its sweep's clock runs (None: unknown)."""

    kind: str
    resource: str
    since: datetime | None
    messages: int | None = None


@dataclass(frozen=True)
class Runner:
    """One row of the ledger."""

    runner_id: str
    cls: str
    pool: str
    platform: str  # ec2 | ecs
    aws_state: str  # what EC2/ECS said, or "unknown"
    launched: datetime | None
    ended_at: datetime | None
    leaked: tuple[Piece, ...] = ()
    held: tuple[str, ...] = ()  # pieces that exist (kinds), leaked or not
    jobs: int = 0
    running_jobs: tuple[str, ...] = ()
    job_status: str | None = None  # of the most recently started job
    job_started: datetime | None = None  # of the oldest running job, else the latest job
    why: str = ""


def present(fleet: Fleet, runner_id: str) -> tuple[bool, str, datetime | None]:
    """(present, what AWS said, when it ended if AWS says) for one runner id."""
    if runner_id.startswith("i-"):
        seen = fleet.instances.get(runner_id)
        if seen is None:
            return False, "unknown", None
        return seen.state not in GONE_EC2_STATES, seen.state, seen.ended_at
    task = fleet.tasks.get(runner_id)
    if task is None:
        return False, "unknown", None
    return task.status != "STOPPED", task.status, task.stopped_at


def orphaned_instance(seen: InstanceSeen, running_job_ids: set[str], max_runtimes: Mapping[str, Decimal | None],
                      now: datetime) -> datetime | None:
    """When the instance became an orphan by the orphaned instances sweep's rule, or None if it is not one."""
    if seen.state != "running" or protected(seen.tags):
        return None
    if seen.job_tag is not None and seen.job_tag in running_job_ids:
        return None
    # As the sweep's PoolLimits.limit_of: the pool's limit, None when unusable, the default when not in the table.
    limit = max_runtimes[seen.pool] if seen.pool in max_runtimes else DEFAULT_MAX_RUNTIME_MINUTES
    if limit is None:
        return None  # the pool's limit is unusable: the sweep keeps it, and so does the ledger
    overdue_at = seen.launched + timedelta(minutes=float(limit + GRACE_MINUTES))
    return overdue_at if now > overdue_at else None


def _pieces_of(fleet: Fleet, runner_id: str) -> list[Piece]:
    pieces: list[Piece] = []
    parameter = fleet.parameters.get(runner_id)
    if parameter:
        pieces.append(Piece(PARAMETER, parameter.name, parameter.last_modified))
    tracking = fleet.tracking.get(runner_id)
    for queue in sorted(fleet.queues.get(runner_id, []), key=lambda q: q.kind):
        since = queue.created or (tracking.created_at if tracking else None)
        pieces.append(Piece(QUEUE, queue.url.rstrip("/").rsplit("/", 1)[-1], since, queue.messages))
    if tracking:
        pieces.append(Piece(TRACKING, runner_id, tracking.last_activity))
    return pieces


def classify(fleet: Fleet, now: datetime, thresholds: Thresholds = Thresholds()) -> list[Runner]:
    """Every runner id the survey saw, classed (see the module docstring), sorted by id."""
    jobs_of: dict[str, list[JobSeen]] = defaultdict(list)
    for job in fleet.jobs:
        if job.runner_id:
            jobs_of[job.runner_id].append(job)
    running_ids = {j.job_id for j in fleet.jobs if j.status == "running"}
    rows = [_classify_one(fleet, runner_id, jobs_of.get(runner_id, []), running_ids, now, thresholds)
            for runner_id in sorted(fleet.runner_ids())]
    rows += [_jobless_runner(job) for job in fleet.jobs if job.status == "running" and not job.runner_id]
    return rows


def _classify_one(fleet: Fleet, runner_id: str, jobs: Sequence[JobSeen], running_ids: set[str], now: datetime,
                  thresholds: Thresholds) -> Runner:
    is_present, aws_state, ended = present(fleet, runner_id)
    instance = fleet.instances.get(runner_id)
    task = fleet.tasks.get(runner_id)
    running = tuple(sorted(j.job_id for j in jobs if j.status == "running"))
    latest = max(jobs, key=lambda j: (j.started_at is not None, j.started_at or now), default=None)
    oldest_running = min((j.started_at for j in jobs if j.status == "running" and j.started_at), default=None)
    pool = (instance.pool if instance else None) or next((j.pool for j in jobs if j.pool), None) or NO_POOL
    pieces = _pieces_of(fleet, runner_id)
    base = dict(
        runner_id=runner_id, pool=pool, platform="ec2" if runner_id.startswith("i-") else "ecs", aws_state=aws_state,
        launched=instance.launched if instance else (task.started if task else None), ended_at=ended,
        held=((INSTANCE,) if instance and instance.state != "terminated" else ())
        + tuple(dict.fromkeys(p.kind for p in pieces)), jobs=len(jobs), running_jobs=running,
        job_status=latest.status if latest else None, job_started=oldest_running or (latest.started_at if latest else None),
    )
    if is_present:
        orphaned_at = orphaned_instance(instance, running_ids, fleet.max_runtimes, now) if instance else None
        if orphaned_at is not None:
            piece = Piece(INSTANCE, runner_id, orphaned_at)
            return Runner(**base, cls=LEAKED, leaked=(piece,),
                          why=f"instance running past its pool's max runtime + {GRACE_MINUTES} min since "
                              f"{iso(orphaned_at)}, no running job, not protected")
        why = f"{base['platform']} {aws_state}"
        if instance and protected(instance.tags):
            why += ", protected"
        return Runner(**base, cls=LIVE, why=why)
    if running:
        return Runner(**base, cls=STUCK, leaked=tuple(pieces),
                      why=f"job(s) {', '.join(running)} running on a runner that is {aws_state}")
    if pieces:
        young = timedelta(minutes=thresholds.parameter_min_age_minutes)
        if aws_state == "unknown" and not jobs and all(p.since is not None and now - p.since <= young for p in pieces):
            return Runner(**base, cls=LIVE, why="starting: pieces younger than "
                          f"{thresholds.parameter_min_age_minutes} min, runner not yet visible to EC2/ECS")
        return Runner(**base, cls=LEAKED, leaked=tuple(pieces),
                      why=f"{', '.join(dict.fromkeys(p.kind for p in pieces))} left by a runner that is {aws_state}")
    return Runner(**base, cls=FINISHED_CLEAN, why=f"runner {aws_state}, nothing left")


def _jobless_runner(job: JobSeen) -> Runner:
    return Runner(runner_id=f"(no runner: job {job.job_id})", cls=STUCK, pool=job.pool or NO_POOL, platform="none",
                  aws_state="unknown", launched=None, ended_at=None, jobs=1, running_jobs=(job.job_id,),
                  job_status=job.status, job_started=job.started_at,
                  why="running job record without instance_id: the stuck jobs sweep keeps and reports it")


# --- the invariants -------------------------------------------------------------------------


@dataclass(frozen=True)
class Overdue:
    """A leaked piece or stuck job older than its sweep's threshold plus one schedule interval."""

    runner_id: str
    kind: str
    resource: str
    age: timedelta
    allowed: timedelta


def overdue_leaks(rows: Iterable[Runner], now: datetime, thresholds: Thresholds = Thresholds()) -> tuple[list[Overdue], list[Piece]]:
    """(pieces past their sweep's threshold + interval, pieces whose age is unknown), oldest first."""
    overdue: list[Overdue] = []
    unknown: list[Piece] = []
    for row in rows:
        for piece in row.leaked:
            if piece.since is None:
                unknown.append(piece)
                continue
            allowed = thresholds.overdue_after(piece.kind)
            if now - piece.since > allowed:
                overdue.append(Overdue(row.runner_id, piece.kind, piece.resource, now - piece.since, allowed))
    return sorted(overdue, key=lambda o: -o.age), unknown


def overdue_stuck(rows: Iterable[Runner], now: datetime, thresholds: Thresholds = Thresholds()
                  ) -> tuple[list[Overdue], list[str]]:
    """(stuck jobs started more than grace + interval ago, stuck jobs the sweep cannot judge), oldest first."""
    allowed = thresholds.stuck_after()
    overdue: list[Overdue] = []
    unjudged: list[str] = []
    for row in rows:
        if row.cls != STUCK:
            continue
        if row.platform == "none" or row.job_started is None:
            unjudged += list(row.running_jobs)
        elif now - row.job_started > allowed:
            overdue += [Overdue(row.runner_id, "job", job_id, now - row.job_started, allowed)
                        for job_id in row.running_jobs]
    return sorted(overdue, key=lambda o: -o.age), unjudged
