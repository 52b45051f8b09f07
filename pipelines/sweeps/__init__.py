"""Housekeeping sweeps: orphaned instances, stale SSM parameters, orphaned queues, stuck jobs.

Each module holds one contract rule as plain find / plan / act functions plus its Dagster
plan op → act op job and schedule (all schedules default to STOPPED: an operator turns a
destructive schedule on). ``REQUESTS`` lets ``housekeeping_queue_sensor`` start them on demand.
"""

from __future__ import annotations

from dagster import AssetSpec, Definitions

from pipelines.common.fleets import FLEET_PARTITIONS
from pipelines.common.requests import RequestableJob
from pipelines.sweeps import orphaned_instances, orphaned_queues, stale_ssm, stuck_jobs
from pipelines.sweeps.plans import actions_asset_key, plan_asset_key

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

# Each sweep's plan, as the asset its plan op materializes on every run (contract: <sweep job>_plan).
# Its history is the UI's record of every plan and holds the marks of two-phase confirmation.
PLAN_ASSETS = [
    AssetSpec(
        plan_asset_key(job.name), group_name="sweeps", kinds={"plan"}, partitions_def=FLEET_PARTITIONS,
        description=f"Every plan of {job.name}: targets, what was spared and why, and since when each target "
        "has been in the plans (two observations confirm a target before it is acted on).",
    )
    for job in JOBS
]
# What each real run of a sweep did (done, skipped at re-check, failed, marked), downstream of
# the plan it acted on: the lineage from plan to action.
ACTION_ASSETS = [
    AssetSpec(
        actions_asset_key(job.name), deps=[plan_asset_key(job.name)], group_name="sweeps", kinds={"plan"},
        partitions_def=FLEET_PARTITIONS,
        description=f"What each real run of {job.name} did: acted, skipped at re-check (and why), failed, "
        "marked (first sightings, not yet acted on).",
    )
    for job in JOBS
]

defs = Definitions(jobs=JOBS, schedules=SCHEDULES, assets=[*PLAN_ASSETS, *ACTION_ASSETS])
