"""Housekeeping sweeps: orphaned instances, stale SSM parameters, orphaned queues.

Each module holds one contract rule as plain find / plan / act functions plus its Dagster
plan op → act op job and schedule (all schedules default to STOPPED: an operator turns a
destructive schedule on). ``REQUESTS`` lets ``housekeeping_queue_sensor`` start them on demand.
"""

from __future__ import annotations

from dagster import Definitions

from pipelines.common.requests import RequestableJob
from pipelines.sweeps import orphaned_instances, orphaned_queues, stale_ssm

JOBS = [orphaned_instances.orphaned_instances_sweep, stale_ssm.stale_ssm_sweep, orphaned_queues.orphaned_queues_sweep]
SCHEDULES = [
    orphaned_instances.orphaned_instances_schedule,
    stale_ssm.stale_ssm_schedule,
    orphaned_queues.orphaned_queues_schedule,
]
REQUESTS: list[RequestableJob] = [orphaned_instances.REQUEST, stale_ssm.REQUEST, orphaned_queues.REQUEST]

defs = Definitions(jobs=JOBS, schedules=SCHEDULES)
