"""The fleet contract's names, read once from the environment and validated at load.

Every name of ``docs/contract.md`` lives here with its environment variable and
default. ``load_settings`` reads the environment when ``definitions.py`` is imported, so a
misconfigured deployment (an empty table name, ``RUNS_FLEET_DRY_RUN=maybe``) fails to load
with an error that names the variable, instead of failing halfway through a sweep.

Deployment settings win (contract): ``deployment_resources`` binds the settings and the AWS
clients as resources with an empty config schema, so no run's config (the Launchpad, a
schedule, a housekeeping request) can turn ``RUNS_FLEET_DRY_RUN`` off, rename a table or
point a run at another endpoint or region: Dagster refuses such a run config before the run
starts, naming the entry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from typing import Any

from dagster import ConfigurableResource, ResourceDefinition, Shape
from pydantic import Field


class SettingsError(ValueError):
    """A RUNS_FLEET_* / AWS_* environment variable holds a value the project cannot use."""


@dataclass(frozen=True)
class Setting:
    """One deployment setting as its field on ``FleetSettings`` declares it."""

    field: str
    env_var: str
    default: str | bool
    description: str
    kind: str = "name"  # name | ssm_prefix | queue | bool


def _setting(default: str | bool, env_var: str, description: str, kind: str = "name") -> Any:
    """A ``FleetSettings`` field that also names its environment variable and how it is checked."""
    return Field(default=default, description=f"{description} ({env_var})",
                 json_schema_extra={"env_var": env_var, "kind": kind})


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NAME = re.compile(r"^[A-Za-z0-9._\-:/]+$")


def parse_bool(env_var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{env_var}={raw!r} is not a boolean: use true or false")


def validate_setting(setting: Setting, raw: str) -> str:
    """Check one raw value; returns it, or raises naming the variable."""
    value = raw.strip()
    if not value:
        raise SettingsError(f"{setting.env_var} is set but empty: it names the {setting.description}")
    if value != raw:
        raise SettingsError(f"{setting.env_var}={raw!r} has surrounding whitespace")
    if setting.kind == "bool":
        parse_bool(setting.env_var, value)
        return value
    if setting.kind == "queue" and value.startswith(("http://", "https://")):
        return value
    if not _NAME.match(value):
        raise SettingsError(f"{setting.env_var}={raw!r} holds characters no AWS name allows")
    if setting.kind == "ssm_prefix" and not (value.startswith("/") and value.endswith("/")):
        raise SettingsError(f"{setting.env_var}={raw!r} must start and end with '/' (e.g. /runs-fleet/runners/)")
    return value


class FleetSettings(ConfigurableResource):
    """The fleet contract's resource names (see docs/contract.md), one per RUNS_FLEET_* variable."""

    jobs_table: str = _setting("runs-fleet-jobs", "RUNS_FLEET_JOBS_TABLE", "DynamoDB jobs table.")
    pools_table: str = _setting("runs-fleet-pools", "RUNS_FLEET_POOLS_TABLE", "DynamoDB pools table.")
    queue_tracking_table: str = _setting("runs-fleet-queue-tracking", "RUNS_FLEET_QUEUE_TRACKING_TABLE",
                                         "DynamoDB per-runner queue tracking table.")
    ssm_prefix: str = _setting("/runs-fleet/runners/", "RUNS_FLEET_SSM_PREFIX",
                               "SSM path under which each runner's `{runner-id}/config` parameter lives.",
                               kind="ssm_prefix")
    termination_queue: str = _setting("runs-fleet-termination.fifo", "RUNS_FLEET_TERMINATION_QUEUE_URL",
                                      "Termination FIFO queue: a URL, or a queue name resolved with GetQueueUrl.",
                                      kind="queue")
    housekeeping_queue: str = _setting("runs-fleet-housekeeping", "RUNS_FLEET_HOUSEKEEPING_QUEUE_URL",
                                       "Housekeeping request queue: a URL, or a queue name resolved with GetQueueUrl.",
                                       kind="queue")
    runner_queue_prefix: str = _setting("runs-fleet-runner-", "RUNS_FLEET_RUNNER_QUEUE_PREFIX",
                                        "Name prefix of the per-runner input/output/dlq queues.")
    archive_bucket: str = _setting("runs-fleet-archive", "RUNS_FLEET_ARCHIVE_BUCKET", "S3 archive bucket.")
    ecs_cluster: str = _setting("runs-fleet", "RUNS_FLEET_ECS_CLUSTER", "ECS cluster of container runners.")
    metrics_namespace: str = _setting("RunsFleet", "RUNS_FLEET_METRICS_NAMESPACE", "CloudWatch namespace.")
    dry_run: bool = _setting(False, "RUNS_FLEET_DRY_RUN",
                             "When true, every destructive piece stops after its plan, whatever its run config says.",
                             kind="bool")

    @property
    def global_dry_run(self) -> bool:
        return self.dry_run

    def ssm_parameter_name(self, runner_id: str) -> str:
        return f"{self.ssm_prefix}{runner_id}/config"

    def runner_queue_names(self, runner_id: str) -> dict[str, str]:
        """The three per-runner queue names, keyed by the archive layout's `queue=` value."""
        p = self.runner_queue_prefix
        return {"input": f"{p}input-{runner_id}", "output": f"{p}output-{runner_id}", "dlq": f"{p}dlq-{runner_id}"}


# Derived from the fields: each setting is declared once, above.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name, info.json_schema_extra["env_var"], info.default, info.description or "",  # type: ignore[index]
            info.json_schema_extra["kind"])  # type: ignore[index]
    for name, info in FleetSettings.model_fields.items()
)


def load_settings(environ: Mapping[str, str] | None = None) -> FleetSettings:
    """Validate every RUNS_FLEET_* variable now and build the settings, with typed values.

    Values are resolved here rather than passed as ``EnvVar``: an ``EnvVar`` is resolved as
    run config, and run config is exactly what must not be able to change them.
    """
    env = os.environ if environ is None else environ
    kwargs: dict[str, object] = {}
    for setting in SETTINGS:
        if setting.env_var in env:
            value = validate_setting(setting, env[setting.env_var])
            kwargs[setting.field] = parse_bool(setting.env_var, value) if setting.kind == "bool" else value
    return FleetSettings(**kwargs)


def _describe(settings: FleetSettings) -> str:
    values = ", ".join(f"{s.env_var}={getattr(settings, s.field)}" for s in SETTINGS)
    return f"The fleet contract's names, from the code location's environment only ({values})."


def locked(resource: Any, description: str, bind: Any = None) -> ResourceDefinition:
    """Bind an already-configured resource with an empty config schema: a run config cannot change it.

    Dagster validates run config against ``Shape({})``, so ``resources: {settings: {config:
    {dry_run: false}}}`` is refused before the run starts ("unexpected config entry").
    ``bind(resource, run_tags)``, if given, turns it into the run's own (its fleet's) from the
    run's partition tags, which Dagster sets and run config cannot reach.
    """
    if bind is None:
        return ResourceDefinition(resource_fn=lambda _: resource, config_schema=Shape({}), description=description)

    def resource_fn(init: Any) -> Any:
        run = init.dagster_run
        return bind(resource, dict(run.tags) if run is not None else None)

    return ResourceDefinition(resource_fn=resource_fn, config_schema=Shape({}), description=description)


def deployment_resources(aws: Any, settings: FleetSettings, fleets: Any = None) -> dict[str, ResourceDefinition]:
    """The ``aws`` and ``settings`` resources as every run of the code location gets them: locked, and
    (with ``RUNS_FLEET_FLEETS``) bound to the run's fleet partition (resources.fleets)."""
    from resources.fleets import SINGLE, bind_clients, bind_settings

    fleets = fleets or SINGLE
    if not fleets.listed:
        return {
            "aws": locked(aws, "boto3 clients (region, endpoint, retries) from the code location's environment only."),
            "settings": locked(settings, _describe(settings)),
        }
    listed = f" Per fleet ({', '.join(fleets.names)}): the run's fleet partition picks the region, role and names."
    return {
        "aws": locked(aws, "boto3 clients from the code location's environment only." + listed,
                      bind=lambda a, tags: bind_clients(fleets, a, tags)),
        "settings": locked(settings, _describe(settings) + listed,
                           bind=lambda s, tags: bind_settings(fleets, s, tags)),
    }
