"""The contract's rules for every destructive piece, as plain data and functions.

Plan, then act: a sweep computes a list of ``PlannedAction``; ``check_blast_radius`` refuses
a plan that is too large before anything is touched; ``is_dry_run`` decides whether to stop
after the plan. The Dagster layer (``pipelines.common.reporting``) records the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from dagster import Config
from pydantic import Field

from resources.settings import FleetSettings


class BlastRadiusExceeded(RuntimeError):
    """The plan is larger than the run's limits allow; nothing was touched."""


@dataclass(frozen=True)
class PlannedAction:
    """One target of a plan: what, why, and what would be done to it."""

    resource: str
    reason: str
    action: str
    pool: str | None = None


@dataclass
class ActResult:
    """What acting on a plan did: done, skipped at re-check (with why), failed (with why)."""

    done: list[PlannedAction] = field(default_factory=list)
    skipped: list[tuple[PlannedAction, str]] = field(default_factory=list)
    failed: list[tuple[PlannedAction, str]] = field(default_factory=list)
    # How many things each done action counts for in the sweep's metric (e.g. queues deleted
    # for one runner); a target not listed counts 1.
    units: dict[str, int] = field(default_factory=dict)

    @property
    def handled(self) -> int:
        """Targets dealt with so far: done, skipped at re-check, or failed."""
        return len(self.done) + len(self.skipped) + len(self.failed)


class SweepConfig(Config):
    """Run config every destructive sweep takes; an operator raises a limit for one run here."""

    dry_run: bool = Field(default=False, description="Compute and record the plan, then stop without acting.")
    max_actions: int = Field(default=100, ge=0, description="Fail before acting if the plan holds more actions than this.")
    max_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0,
        description="Fail before acting if a plan of more than 10 actions exceeds this fraction of what was found.",
    )
    confirm_after_minutes: int | None = Field(
        default=None, ge=0,
        description="Act only on targets held by every plan of this sweep for at least this many minutes "
        "(two observations); unset: one schedule interval of the sweep; 0 turns it off for this run.",
    )
    anomaly_factor: float = Field(
        default=3.0, gt=0.0,
        description="Fail before acting if the plan is more than this many times the median of the sweep's "
        "recent plans, or crowds a usually quiet pool; raise it for one run to approve such a plan.",
    )


def is_dry_run(config_dry_run: bool, settings: FleetSettings) -> bool:
    """Dry run if the run asks for it or RUNS_FLEET_DRY_RUN=true says so for all runs."""
    return bool(config_dry_run) or settings.global_dry_run


def check_blast_radius(kind: str, planned: int, found: int, max_actions: int, max_fraction: float) -> None:
    """Raise ``BlastRadiusExceeded`` naming the counts when a plan is too large to act on.

    A plan is too large when it holds more than ``max_actions`` actions, or when it holds
    more than 10 actions and more than ``max_fraction`` of the ``found`` resources of its kind.
    """
    if planned > max_actions:
        raise BlastRadiusExceeded(
            f"{kind}: plan has {planned} actions, more than max_actions={max_actions}; "
            f"nothing was touched. Raise max_actions for one run if the plan is right."
        )
    # Exact: 29 of 100 at max_fraction 0.29 is not more (0.29 * 100 is 28.999... in floats).
    if planned > 10 and found > 0 and Decimal(planned) > Decimal(str(max_fraction)) * found:
        raise BlastRadiusExceeded(
            f"{kind}: plan has {planned} of {found} found ({planned / found:.0%}), more than "
            f"max_fraction={max_fraction:.0%}; nothing was touched. Raise max_fraction for one run if the plan is right."
        )
