"""The runs-fleet-housekeeping code location: the one ``Definitions`` object, ``defs``.

Each capability under ``pipelines/`` (and its sensors) exports its own ``defs``; this file
merges them and binds the two resources every piece uses, and the IO manager of the
deployment (``DAGSTER_DEPLOYMENT=local|prod``: local disk or S3, see resources/io.py).
Loading this module validates the environment: a bad RUNS_FLEET_*, AWS_* or
DAGSTER_DEPLOYMENT value fails here, naming the variable.
"""

from __future__ import annotations

import importlib

from dagster import Definitions

from resources import load_aws_clients, load_settings
from resources.io import load_io_manager

# One module per capability; each defines `defs`.
CAPABILITIES: list[str] = ["pipelines.audit", "pipelines.archival", "pipelines.sweeps", "pipelines.termination"]

defs = Definitions.merge(
    *(importlib.import_module(module).defs for module in CAPABILITIES),
    Definitions(resources={"aws": load_aws_clients(), "settings": load_settings(), "io_manager": load_io_manager()}),
)
