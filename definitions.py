"""The runs-fleet-housekeeping code location: the one ``Definitions`` object, ``defs``.

Everything is assembled here, by static imports: each capability under ``pipelines/``
exports its ``defs`` (jobs, schedules, assets) plus the ``JOBS`` and ``REQUESTS`` that the
housekeeping queue may start; the sensors are factories called here, so no capability
imports a sensor and no sensor imports a capability. The resources are the two every piece
uses, locked against run config, and the IO manager of the deployment
(``DAGSTER_DEPLOYMENT=local|prod``: local disk or S3, see resources/io.py). Loading this
module validates the environment: a bad RUNS_FLEET_*, AWS_* or DAGSTER_DEPLOYMENT value
fails here, naming the variable.
"""

from __future__ import annotations

from dagster import Definitions

from pipelines import archival, audit, ledger, sweeps, termination
from pipelines.common.fleets import FLEETS
from pipelines.common.progress import route_item_logs
from resources import deployment_resources, load_aws_clients, load_settings
from resources.io import load_io_manager, locked_io_manager
from sensors.housekeeping import build_housekeeping_sensor
from sensors.termination import build_termination_sensor

route_item_logs()  # per-item lines to the step's compute log (stderr); the event log gets one per batch

# What the housekeeping queue may ask for (the contract's task types) and the jobs they start.
REQUESTS = [*sweeps.REQUESTS, *archival.REQUESTS, *audit.REQUESTS]
# One fleet (the environment), or every fleet RUNS_FLEET_FLEETS lists: the sensors watch each one's queues.
housekeeping_queue_sensor = build_housekeeping_sensor(REQUESTS, [*sweeps.JOBS, *archival.JOBS, *audit.JOBS], FLEETS)
termination_queue_sensor = build_termination_sensor(termination.process_terminations, FLEETS)

defs = Definitions.merge(
    audit.defs,
    ledger.defs,
    archival.defs,
    sweeps.defs,
    termination.defs,
    Definitions(sensors=[housekeeping_queue_sensor, termination_queue_sensor]),
    # Locked: no run config can turn RUNS_FLEET_DRY_RUN off or point a run (or its outputs) elsewhere.
    Definitions(resources={**deployment_resources(load_aws_clients(), load_settings(), FLEETS),
                           "io_manager": locked_io_manager(load_io_manager())}),
)
