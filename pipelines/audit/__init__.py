"""The read-only, observable side of the fleet: pool audit (cost) and queue health, as assets.

- `pool_audit_job` materializes `pool_inventory` and `pool_cost_report`, daily at 09:00 UTC.
- `queue_health_job` materializes `queue_health` and runs its asset checks, every 5 minutes.
- Housekeeping requests `pool_audit` and `queue_health` start these jobs (``REQUESTS``).

Both pieces only read the fleet (and write a report, metrics and Dagster metadata), so a
request's `dry_run` and `max_actions` are accepted and ignored: there is nothing to limit.
Any other param is refused with ``BadParams`` naming it.
"""

from __future__ import annotations

from dagster import AssetSelection, DefaultScheduleStatus, Definitions, define_asset_job
from pydantic import Field

from pipelines.audit.pool_audit import pool_cost_report, pool_inventory
from pipelines.audit.queue_health import queue_health
from pipelines.audit.summary import build_summaries
from pipelines.common.fleets import FLEETS, fleet_schedule
from pipelines.common.requests import RequestableJob, requestable

pool_audit_job = define_asset_job(
    name="pool_audit_job",
    selection=AssetSelection.assets(pool_inventory, pool_cost_report),
    description="Inventory every pool and price it: cost report (CSV in the archive bucket, chart, metrics).",
    # One run at a time (infra/dagster.yaml limits each runs-fleet/exclusive value to one run).
    tags={"runs-fleet/exclusive": "pool_audit_job", "runs-fleet/capability": "audit"},
)

queue_health_job = define_asset_job(
    name="queue_health_job",
    selection=AssetSelection.assets(queue_health),
    description="Measure every fleet queue and DLQ, class it, and run the queue health asset checks.",
    # A slow run queues the next 5-minute one instead of overlapping it (and its growth baseline).
    tags={"runs-fleet/exclusive": "queue_health_job", "runs-fleet/capability": "audit"},
)

pool_audit_schedule = fleet_schedule(
    name="pool_audit_daily",
    job=pool_audit_job,
    cron_schedule="0 9 * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily at 09:00 UTC: materialize pool_inventory and pool_cost_report.",
)

queue_health_schedule = fleet_schedule(
    name="queue_health_every_5_minutes",
    job=queue_health_job,
    cron_schedule="*/5 * * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every 5 minutes: materialize queue_health and run its asset checks.",
)

# Params every housekeeping request may carry (contract); meaningless for a read-only piece,
# so accepted (strictly typed) and ignored: they are no op's config.
_IGNORED = {"dry_run": (bool, False), "max_actions": (int, Field(default=100, ge=0))}

REQUESTS: list[RequestableJob] = [
    requestable("pool_audit", pool_audit_job.name, {}, extra=_IGNORED),
    requestable("queue_health", queue_health_job.name, {}, extra=_IGNORED),
]
JOBS = [pool_audit_job, queue_health_job]
SCHEDULES = [pool_audit_schedule, queue_health_schedule]
ASSETS: list = [pool_inventory, pool_cost_report, queue_health]
# Many fleets: the per-fleet figures added up (per fleet and in total), beside the partitions.
if FLEETS.listed:
    _summaries, _summary_job, _summary_schedule = build_summaries(FLEETS.names)
    ASSETS += _summaries
    JOBS.append(_summary_job)
    SCHEDULES.append(_summary_schedule)

defs = Definitions(assets=ASSETS, jobs=JOBS, schedules=SCHEDULES)

__all__ = ["JOBS", "REQUESTS", "defs", "pool_audit_job", "queue_health_job"]
