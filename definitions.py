"""The runs-fleet-housekeeping code location: the one ``Definitions`` object, ``defs``.

Each capability under ``pipelines/`` (and its sensors) exports its own ``defs``; this file
merges them and binds the two resources every piece uses. Loading this module validates
the environment: a bad RUNS_FLEET_* or AWS_* value fails here, naming the variable.
"""

from __future__ import annotations

import importlib

from dagster import Definitions

from resources import deployment_resources, load_aws_clients, load_settings

# One module per capability; each defines `defs`.
CAPABILITIES: list[str] = ["pipelines.audit", "pipelines.archival", "pipelines.sweeps", "pipelines.termination"]

defs = Definitions.merge(
    *(importlib.import_module(module).defs for module in CAPABILITIES),
    # Locked: no run config can turn RUNS_FLEET_DRY_RUN off or point a run elsewhere.
    Definitions(resources=deployment_resources(load_aws_clients(), load_settings())),
)
