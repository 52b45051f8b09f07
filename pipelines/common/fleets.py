"""Every piece per fleet, as Dagster partitions (contract: "Many fleets"; resources/fleets.py).

``FLEETS`` is read when the code location loads. With ``RUNS_FLEET_FLEETS`` unset it is the
single ``default`` fleet and nothing here partitions anything: jobs, assets and schedules are
exactly what a single-fleet deployment always had. With a fleet list:

- every job and asset is partitioned by fleet (``FLEET_PARTITIONS``; archival by date × fleet),
  and the run's fleet partition picks the clients and names its resources hand out;
- each schedule starts one run per fleet, tagged ``runs-fleet/exclusive=<job>@<fleet>`` so
  one run per (job, fleet) runs at a time while fleets run side by side;
- a sweep's plan history (its marks and the anomaly gate's baseline) is kept per fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    StaticPartitionsDefinition,
    schedule,
)

from resources.fleets import DEFAULT_FLEET, FLEET_DIMENSION, Fleets, load_fleets

EXCLUSIVE_TAG = "runs-fleet/exclusive"
DATE_DIMENSION = "date"

FLEETS: Fleets = load_fleets()
FLEET_PARTITIONS: StaticPartitionsDefinition | None = (
    StaticPartitionsDefinition(FLEETS.names) if FLEETS.listed else None
)


def by_fleet(daily: PartitionsDefinition) -> PartitionsDefinition:
    """Archival's partitions: its days alone for one fleet, days × fleets for a fleet list."""
    if FLEET_PARTITIONS is None:
        return daily
    return MultiPartitionsDefinition({DATE_DIMENSION: daily, FLEET_DIMENSION: FLEET_PARTITIONS})


def partition_key(fleet: str | None, day: str | None = None) -> Any:
    """The partition a run for ``fleet`` (and ``day``, for archival) asks for, in this deployment's shape."""
    if FLEET_PARTITIONS is None:
        return day
    if day is None:
        return fleet
    return MultiPartitionKey({DATE_DIMENSION: day, FLEET_DIMENSION: fleet})


def run_fleet(context: Any) -> str:
    """The fleet a run (op or asset context) works on: its fleet partition, or ``default``."""
    if FLEET_PARTITIONS is None or not context.has_partition_key:
        return DEFAULT_FLEET
    key = context.partition_key
    if isinstance(key, MultiPartitionKey):
        return key.keys_by_dimension[FLEET_DIMENSION]
    return str(key)


def history_partition(context: Any) -> str | None:
    """The partition a sweep's plan history lives in: its fleet, or none for a single fleet."""
    return run_fleet(context) if FLEET_PARTITIONS is not None else None


def exclusive(job_name: str, fleet: str | None = None) -> dict[str, str]:
    """The run tag infra/dagster.yaml limits to one run per value: per job, or per (job, fleet)."""
    return {EXCLUSIVE_TAG: job_name if fleet is None or FLEET_PARTITIONS is None else f"{job_name}@{fleet}"}


def fleet_run_requests(job_name: str, fleets: Sequence[str], key: Callable[[str], Any] = partition_key,
                       run_key: str | None = None) -> list[RunRequest]:
    """One run request per fleet, each exclusive per (job, fleet)."""
    return [RunRequest(run_key=f"{run_key}:{fleet}" if run_key else None, partition_key=key(fleet),
                       tags=exclusive(job_name, fleet)) for fleet in fleets]


def fleet_schedule(*, name: str, job: Any, cron_schedule: str, description: str,
                   default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED) -> ScheduleDefinition:
    """A schedule: as before for one fleet; with a fleet list, one run per fleet on each tick."""
    if FLEET_PARTITIONS is None:
        return ScheduleDefinition(name=name, job=job, cron_schedule=cron_schedule, execution_timezone="UTC",
                                  default_status=default_status, description=description)

    @schedule(name=name, job=job, cron_schedule=cron_schedule, execution_timezone="UTC",
              default_status=default_status, description=f"{description} One run per fleet ({', '.join(FLEETS.names)}).")
    def per_fleet(context: ScheduleEvaluationContext) -> list[RunRequest]:
        """One run per fleet, keyed by the tick, each exclusive per (job, fleet)."""
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else None
        return fleet_run_requests(job.name, FLEETS.names, run_key=f"{name}:{tick}" if tick else None)

    return per_fleet


def own_records(context: Any) -> Any:
    """What to fetch an asset's earlier materializations by: its own key, and its fleet's partition if
    partitioned by fleet (one fleet's history is no baseline for another's)."""
    from dagster import AssetRecordsFilter

    if FLEET_PARTITIONS is None or not context.has_partition_key:
        return context.asset_key
    return AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[run_fleet(context)])
