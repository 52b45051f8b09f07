"""The fleet ledger: one read-only survey that says, for every runner, which of its pieces still exist.

- ``rules``: the classes (live, finished_clean, leaked, stuck) and the invariants, pure.
- ``forecast``: quota headroom from the ledger's own history, pure.
- ``survey``: the paged AWS reads.  ``report``: tables, cost, metrics.  ``assets``: the Dagster asset and checks.

`fleet_ledger_job` materializes `fleet_ledger` and runs its checks hourly. Its schedule ships
RUNNING, unlike the sweeps': it only reads (and publishes a metric), and an invariant that
is never evaluated cannot turn red when a sweep is off.
"""

from __future__ import annotations

from dagster import AssetSelection, DefaultScheduleStatus, Definitions, define_asset_job

from pipelines.common.fleets import fleet_schedule
from pipelines.ledger.assets import fleet_ledger

fleet_ledger_job = define_asset_job(
    name="fleet_ledger_job",
    selection=AssetSelection.assets(fleet_ledger),
    description="Survey the fleet (pages only), class every runner live / finished_clean / leaked / stuck, publish "
    "LeakedResources, and run the invariant and quota headroom checks.",
    tags={"runs-fleet/exclusive": "fleet_ledger_job", "runs-fleet/capability": "ledger"},
)

fleet_ledger_schedule = fleet_schedule(
    name="fleet_ledger_hourly",
    job=fleet_ledger_job,
    cron_schedule="7 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly at :07 UTC: materialize fleet_ledger and run its checks. Read-only, so shipped running.",
)

JOBS = [fleet_ledger_job]
defs = Definitions(assets=[fleet_ledger], jobs=JOBS, schedules=[fleet_ledger_schedule])

__all__ = ["JOBS", "defs", "fleet_ledger", "fleet_ledger_job"]
