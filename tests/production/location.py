"""The code location tests/test_production.py serves: the project's ``defs`` plus one test schedule.

Every schedule of the project ticks at most every 5 minutes (and the destructive ones ship
stopped), too slow to wait for in a test. This adds one schedule, running by default and
ticking every minute, that starts ``orphaned_instances_sweep`` as a dry run: the daemon's
schedule tick is then proven on a real sweep of the project within a minute.
"""

from dagster import DefaultScheduleStatus, Definitions, ScheduleDefinition

import definitions
from pipelines.sweeps import REQUESTS

(_request,) = [r for r in REQUESTS if r.task_type == "orphaned_instances"]

TEST_SCHEDULE = "test_orphaned_instances_dry_run_every_minute"

every_minute = ScheduleDefinition(
    name=TEST_SCHEDULE,
    job_name=_request.job_name,
    cron_schedule="* * * * *",
    execution_timezone="UTC",
    run_config=_request.build_run_config({"dry_run": True}),
    default_status=DefaultScheduleStatus.RUNNING,
    description="Test only: a dry-run orphaned instances sweep every minute.",
)

defs = Definitions.merge(definitions.defs, Definitions(schedules=[every_minute]))
