"""Where Dagster keeps what one step hands to the next: the IO manager, chosen per deployment.

``DAGSTER_DEPLOYMENT=local`` (the default: the sandbox, tests) keeps outputs on the local
disk under DAGSTER_HOME, which is enough when every step of every run shares one machine.
``DAGSTER_DEPLOYMENT=prod`` pickles them to S3 with dagster-aws's ``S3PickleIOManager``:
on ECS (or Kubernetes) each run is its own task with its own disk, so ``pool_cost_report``
materialized alone, or a retried run, must find ``pool_inventory`` somewhere shared.

The bucket is ``RUNS_FLEET_IO_BUCKET``, by default the fleet's archive bucket
(``RUNS_FLEET_ARCHIVE_BUCKET``, contract default ``runs-fleet-archive``), under the prefix
``RUNS_FLEET_IO_PREFIX`` (default ``dagster-io``): the archive's own keys (``jobs/``,
``queues/``, ``reports/``) never collide with it. The S3 endpoint and region follow the
contract's ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, given to dagster-aws's ``S3Resource`` explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import ConfigurableIOManager, FilesystemIOManager, IOManagerDefinition, Shape
from dagster_aws.s3 import S3PickleIOManager, S3Resource

from resources.settings import SettingsError

DEPLOYMENTS = ("local", "prod")
DEFAULT_ARCHIVE_BUCKET = "runs-fleet-archive"
DEFAULT_IO_PREFIX = "dagster-io"


def deployment(environ: Mapping[str, str] | None = None) -> str:
    """``DAGSTER_DEPLOYMENT``: ``local`` (default) or ``prod``; anything else fails now, naming the variable."""
    env = os.environ if environ is None else environ
    value = env.get("DAGSTER_DEPLOYMENT", "local").strip().lower() or "local"
    if value not in DEPLOYMENTS:
        raise SettingsError(f"DAGSTER_DEPLOYMENT={value!r} is not one of {', '.join(DEPLOYMENTS)}")
    return value


def load_io_manager(environ: Mapping[str, str] | None = None) -> ConfigurableIOManager:
    """The IO manager of this deployment (see the module docstring)."""
    env = os.environ if environ is None else environ
    if deployment(env) == "local":
        return FilesystemIOManager()
    bucket = env.get("RUNS_FLEET_IO_BUCKET") or env.get("RUNS_FLEET_ARCHIVE_BUCKET") or DEFAULT_ARCHIVE_BUCKET
    prefix = (env.get("RUNS_FLEET_IO_PREFIX") or DEFAULT_IO_PREFIX).strip("/")
    if not prefix:
        raise SettingsError("RUNS_FLEET_IO_PREFIX must not be empty: the IO manager's keys would mix with the archive's")
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return S3PickleIOManager(
        s3_resource=S3Resource(endpoint_url=endpoint, region_name=region), s3_bucket=bucket, s3_prefix=prefix
    )


def locked_io_manager(io_manager: ConfigurableIOManager | FilesystemIOManager) -> IOManagerDefinition:
    """``io_manager`` bound with an empty config schema, like the settings and the AWS clients:
    no run config can point a run's step outputs at another bucket, prefix or directory."""
    if isinstance(io_manager, ConfigurableIOManager):  # S3: the manager is its own IO manager
        return IOManagerDefinition(resource_fn=lambda _: io_manager, config_schema=Shape({}),
                                   description="S3 pickles of step outputs, from the code location's environment only.")
    return IOManagerDefinition(resource_fn=lambda context: io_manager.create_io_manager(context), config_schema=Shape({}),
                               description="Step outputs on local disk under DAGSTER_HOME (DAGSTER_DEPLOYMENT=local).")
