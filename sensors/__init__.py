"""What wakes a run: the termination and housekeeping queue sensors."""

import warnings

from dagster import BetaWarning

# Dagster 1.13 copies each sensor when it binds the resources of the jobs it targets
# (Definitions -> SensorDefinition.with_attributes) and passes the copy the sensor's `owners`,
# an empty list for a sensor that sets none; the beta check then warns in every process that
# loads the code location (the UI, each run worker, each tick). These sensors set no owners:
# the warning is about Dagster's copy, not about us, so it is silenced here and only here.
warnings.filterwarnings(
    "ignore", message=r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
    category=BetaWarning,
)
