"""Which fleets one deployment keeps, and how each one's AWS is reached (contract: "Many fleets").

A fleet is an account and a region with its own set of the contract's resources.
``RUNS_FLEET_FLEETS`` names a YAML file listing them::

    fleets:
      - name: prod-use1            # the partition key the UI shows
        region: us-east-1
        role_arn: arn:aws:iam::111111111111:role/runs-fleet-housekeeping   # omit: own credentials
        external_id: runs-fleet    # optional
        names: {jobs_table: ...}   # optional overrides of the contract's names

With no ``RUNS_FLEET_FLEETS`` there is one fleet, ``default``, made of the environment exactly
as before: nothing is partitioned and nothing changes for a single-fleet user.

The file is read and validated when the code location loads; an error names the file, the
entry (its position and name) and the field. A fleet's clients assume its role with botocore's
own assume-role fetcher: credentials are fetched on first use, cached, and refreshed by
botocore before they expire (a long archival run outlives the one-hour default). A role that
cannot be assumed fails that fleet's runs only, with an error naming the fleet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from resources.settings import SETTINGS, FleetSettings, SettingsError, validate_setting

FLEETS_ENV = "RUNS_FLEET_FLEETS"
DEFAULT_FLEET = "default"
# Run tags Dagster sets for a partitioned run: a fleet-partitioned job's partition, or the
# ``fleet`` dimension of archival's date × fleet partitions.
PARTITION_TAG = "dagster/partition"
FLEET_DIMENSION = "fleet"
FLEET_DIMENSION_TAG = f"{PARTITION_TAG}/{FLEET_DIMENSION}"

# A partition key that reads well in the UI, in a run tag and in a log line.
_FLEET_NAME = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
_REGION = r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}$"
# ASCII only, as IAM allows; lengths are separate limits (a bounded repeat of a class is a huge regex).
_ROLE_ARN = r"^arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
_EXTERNAL_ID = r"^[A-Za-z0-9_+=,.@:/-]+$"
# The settings a fleet may rename: the resource names, never the deployment's dry run.
RENAMEABLE = {s.field: s for s in SETTINGS if s.kind != "bool"}


class FleetError(SettingsError):
    """The fleet list is unreadable or an entry is invalid; the message names the file, entry and field."""


class FleetUnreachable(RuntimeError):
    """A fleet's role could not be assumed (or its credentials not read): that fleet's run fails, naming it."""


class Fleet(BaseModel):
    """One fleet: its partition key, account (through a role) and region, and its resource names."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=_FLEET_NAME, description="The partition key the UI shows (lower case, digits, '-').")
    region: str | None = Field(default=None, pattern=_REGION,
                               description="The fleet's region; omitted: the deployment's own (AWS_REGION).")
    role_arn: str | None = Field(default=None, pattern=_ROLE_ARN, max_length=2048,
                                 description="Role assumed in the fleet's account; omitted: the deployment's credentials.")
    external_id: str | None = Field(default=None, pattern=_EXTERNAL_ID, min_length=2, max_length=1224, description="sts:AssumeRole ExternalId.")
    names: dict[str, str] = Field(default_factory=dict, description="Overrides of the contract's resource names.")
    dry_run: bool = Field(default=False, description="This fleet's own kill switch: every destructive piece stops after "
                          "its plan in this fleet. It can only add to RUNS_FLEET_DRY_RUN, never lift it.")

    @field_validator("names")
    @classmethod
    def _known_names(cls, names: dict[str, str]) -> dict[str, str]:
        for key, value in names.items():
            if key not in RENAMEABLE:
                raise ValueError(f"{key!r} is not a resource name (one of: {', '.join(sorted(RENAMEABLE))})")
            try:
                validate_setting(RENAMEABLE[key], value)
            except SettingsError as error:
                raise ValueError(f"{key}: {error}") from None
        return names


@dataclass(frozen=True)
class Fleets:
    """The fleets of this deployment. ``listed`` is False for the implicit single ``default`` fleet."""

    fleets: tuple[Fleet, ...]
    listed: bool
    source: str | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fleets]

    def get(self, name: str) -> Fleet:
        for fleet in self.fleets:
            if fleet.name == name:
                return fleet
        raise FleetError(f"no fleet named {name!r} (fleets: {', '.join(self.names)})")

    def of_tags(self, tags: Mapping[str, str]) -> Fleet:
        """The fleet a run belongs to, from its partition tags; the default fleet when none are listed."""
        if not self.listed:
            return self.fleets[0]
        name = tags.get(FLEET_DIMENSION_TAG) or tags.get(PARTITION_TAG)
        if not name:
            raise FleetError(f"this run names no fleet: with {FLEETS_ENV} set, launch it for a fleet partition "
                             f"({', '.join(self.names)})")
        return self.get(name)


SINGLE = Fleets((Fleet(name=DEFAULT_FLEET),), listed=False)


def _describe(error: ValidationError, entries: list[Any]) -> str:
    problems = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "fleets" and isinstance(loc[1], int):
            entry = entries[loc[1]] if loc[1] < len(entries) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            field = ".".join(str(p) for p in loc[2:]) or "entry"
            where = f"fleets[{loc[1]}]" + (f" ({name})" if isinstance(name, str) else "") + f": {field}"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


class _FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    fleets: list[Fleet] = Field(min_length=1)


def parse_fleets(text: str, source: str) -> Fleets:
    """Validate a fleet list's YAML text; raises ``FleetError`` naming ``source``, the entry and the field."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FleetError(f"{FLEETS_ENV}={source}: not YAML: {error}") from None
    if not isinstance(raw, dict):
        raise FleetError(f"{FLEETS_ENV}={source}: expected a mapping with a 'fleets' list")
    entries = raw.get("fleets") if isinstance(raw.get("fleets"), list) else []
    try:
        parsed = _FleetFile.model_validate(raw)
    except ValidationError as error:
        raise FleetError(f"{FLEETS_ENV}={source}: {_describe(error, entries)}") from None
    seen: set[str] = set()
    for index, fleet in enumerate(parsed.fleets):
        if fleet.name in seen:
            raise FleetError(f"{FLEETS_ENV}={source}: fleets[{index}] ({fleet.name}): name: listed twice")
        seen.add(fleet.name)
    return Fleets(tuple(parsed.fleets), listed=True, source=source)


def load_fleets(environ: Mapping[str, str] | None = None) -> Fleets:
    """The deployment's fleets: the file ``RUNS_FLEET_FLEETS`` names, else the single ``default`` fleet."""
    env = os.environ if environ is None else environ
    source = env.get(FLEETS_ENV)
    if source is None:
        return SINGLE
    if not source.strip():
        raise FleetError(f"{FLEETS_ENV} is set but empty: it names a YAML file listing the fleets")
    try:
        text = Path(source).read_text()
    except OSError as error:
        raise FleetError(f"{FLEETS_ENV}={source}: cannot read it ({error.strerror or error})") from None
    return parse_fleets(text, source)


def fleet_settings(settings: FleetSettings, fleet: Fleet) -> FleetSettings:
    """The deployment's settings with the fleet's own resource names; dry run if the deployment or the fleet
    says so (a fleet's list entry can stop that fleet, never lift the deployment's kill switch)."""
    update: dict[str, Any] = dict(fleet.names)
    if fleet.dry_run and not settings.dry_run:
        update["dry_run"] = True
    return settings.model_copy(update=update) if update else settings


def fleet_clients(aws: Any, fleet: Fleet) -> Any:
    """The deployment's AWS resource for ``fleet``: its region, and its role assumed (external id included)."""
    update: dict[str, Any] = {}
    if fleet.region:
        update["region_name"] = fleet.region
    if fleet.role_arn:
        update["role_arn"] = fleet.role_arn
        update["external_id"] = fleet.external_id
    return aws.replaced(**update) if update else aws


def reach(aws: Any, fleet: Fleet) -> Any:
    """``fleet_clients`` with the role assumed now, so a fleet that cannot be reached fails before any work,
    naming the fleet and the role (the error code and AWS's message follow)."""
    clients = fleet_clients(aws, fleet)
    if fleet.role_arn:
        try:
            clients.credentials()
        except Exception as error:  # botocore's errors, and a missing source identity, alike
            code = getattr(error, "response", {}).get("Error", {}).get("Code") or type(error).__name__
            raise FleetUnreachable(f"fleet {fleet.name}: cannot assume {fleet.role_arn}: {code}: {error}") from error
    return clients



def bind_clients(fleets: Fleets, aws: Any, run_tags: Mapping[str, str] | None) -> Any:
    """The AWS resource a run gets: its fleet's (role assumed now). Outside a run (a sensor's tick) the
    deployment's own: sensors address each fleet themselves."""
    if run_tags is None:
        return aws
    return reach(aws, fleets.of_tags(run_tags))


def bind_settings(fleets: Fleets, settings: FleetSettings, run_tags: Mapping[str, str] | None) -> FleetSettings:
    """The settings a run gets: the deployment's, with its fleet's resource names."""
    if run_tags is None:
        return settings
    return fleet_settings(settings, fleets.of_tags(run_tags))
