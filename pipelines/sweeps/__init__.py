"""Housekeeping sweeps: orphaned instances, stale SSM parameters, orphaned queues, stuck jobs.

Each module holds one contract rule as plain find / plan / act functions plus its Dagster
plan op → act op job and schedule (all schedules default to STOPPED: an operator turns a
destructive schedule on). ``REQUESTS`` lets ``housekeeping_queue_sensor`` start them on demand.
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions

from pipelines.common.requests import RequestableJob
from pipelines.sweeps import orphaned_instances, orphaned_queues, stale_ssm, stuck_jobs

JOBS = [
    orphaned_instances.orphaned_instances_sweep,
    stale_ssm.stale_ssm_sweep,
    orphaned_queues.orphaned_queues_sweep,
    stuck_jobs.stuck_jobs_sweep,
]
SCHEDULES = [
    orphaned_instances.orphaned_instances_schedule,
    stale_ssm.stale_ssm_schedule,
    orphaned_queues.orphaned_queues_schedule,
    stuck_jobs.stuck_jobs_schedule,
]
REQUESTS: list[RequestableJob] = [
    orphaned_instances.REQUEST, stale_ssm.REQUEST, orphaned_queues.REQUEST, stuck_jobs.REQUEST,
]

_defs: Definitions | None = None


def __getattr__(name: str) -> Any:
    # `defs` is built on first access (PEP 562) because the housekeeping sensor it exports
    # imports this package for REQUESTS and JOBS: building it at import time would make the
    # import order of sensors.housekeeping and pipelines.sweeps matter.
    global _defs
    if name == "defs":
        if _defs is None:
            from sensors.housekeeping import housekeeping_queue_sensor

            _defs = Definitions(jobs=JOBS, schedules=SCHEDULES, sensors=[housekeeping_queue_sensor])
        return _defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
