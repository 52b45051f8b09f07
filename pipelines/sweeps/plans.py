"""What every sweep shares: a plan (targets, kept-for-uncertainty) and the thin Dagster layer around it.

The rule of each sweep lives in its own module as plain functions that return a
``SweepPlan`` and act on it. Here is what turns that into a guarded Dagster run: the plan
is recorded as output metadata of the plan op (so the UI shows the last plan even when the
act op is blocked), dry run stops after it, the blast radius fails the run before anything
is touched, and the outcome (done, skipped at re-check, failed) is recorded and published.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import Failure, MetadataValue, Output

from pipelines.common.aws import Metric, put_metrics
from pipelines.common.reporting import log_plan, outcome_metadata, plan_table
from pipelines.common.safety import ActResult, BlastRadiusExceeded, SweepConfig, check_blast_radius, is_dry_run
from resources.aws import AwsClients
from resources.settings import FleetSettings

MAX_KEPT_ROWS = 200


@dataclass(frozen=True)
class Kept:
    """A candidate the sweep spared, with the category an operator filters on and why.

    ``outcome``: ``protected``, ``job running`` or ``in use`` (the rule spares it), or
    ``uncertain`` (a lookup failed or a record is malformed: uncertainty keeps it alive).
    """

    resource: str
    outcome: str
    reason: str
    pool: str | None = None


@dataclass
class SweepPlan:
    """A sweep's plan: what was found, what it would act on and why, which candidates it spared and why.

    ``actions[i].resource`` is the target's id (instance id, parameter name, runner id);
    ``targets`` carries, per id, what the act step needs to re-check and act on it.
    """

    kind: str
    found: int
    actions: list[Any] = field(default_factory=list)  # PlannedAction
    kept: list[Kept] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def uncertain(self) -> list[Kept]:
        return [k for k in self.kept if k.outcome == "uncertain"]


def _kept_markdown(kept: list[Kept]) -> MetadataValue:
    lines = [f"- {k.resource}: kept ({k.outcome}): {k.reason}" for k in kept[:MAX_KEPT_ROWS]]
    if len(kept) > MAX_KEPT_ROWS:
        lines.append(f"- … {len(kept) - MAX_KEPT_ROWS} more in the run logs")
    return MetadataValue.md("\n".join(lines) or "none")


def plan_output(log: Any, plan: SweepPlan) -> Output:
    """Log the plan and return it as the plan op's output: every candidate with its outcome, as a table."""
    log_plan(log, plan.kind, plan.actions, plan.found)
    outcomes = Counter(k.outcome for k in plan.kept)
    for kept in plan.kept:
        if kept.outcome == "in use":
            continue  # every live runner's pieces: counted below, listed in the plan table
        message = f"{plan.kind}: kept {kept.resource} ({kept.outcome}): {kept.reason}"
        # Uncertainty is worth an operator's look; a protected or busy runner is the rule working.
        (log.warning if kept.outcome == "uncertain" else log.info)(message)
    if outcomes["in use"]:
        log.info(f"{plan.kind}: kept {outcomes['in use']} in use (their runners are live)")
    return Output(
        plan,
        metadata={
            "plan": plan_table(plan.actions, [(k.resource, f"kept: {k.outcome}", k.reason, k.pool) for k in plan.kept]),
            "found": plan.found,
            "planned": len(plan.actions),
            "kept_because_uncertain": outcomes["uncertain"],
            "kept_protected": outcomes["protected"],
            "kept_in_use": outcomes["job running"] + outcomes["in use"],
            "kept": _kept_markdown(plan.kept),
        },
    )


def metrics_by_pool(name: str, result: ActResult, count: Callable[[Any], int] = lambda a: 1) -> list[Metric]:
    """One datum per pool (no dimension when the pool is unknown); a single 0 when nothing was done."""
    per_pool: Counter[str | None] = Counter()
    for action in result.done:
        per_pool[action.pool] += count(action)
    if not per_pool:
        return [Metric(name, 0)]
    return [Metric(name, value, pool=pool) for pool, value in sorted(per_pool.items(), key=lambda kv: kv[0] or "")]


def guarded_act(
    context: Any,
    plan: SweepPlan,
    config: SweepConfig,
    settings: FleetSettings,
    aws: AwsClients,
    act: Callable[[SweepPlan], ActResult],
    metric: str,
    metric_count: Callable[[Any], int] = lambda a: 1,
) -> Output:
    """Dry run → stop; blast radius → fail naming the counts; else act, publish the metric, record the outcome."""
    log = context.log
    planned = len(plan.actions)
    blocked: str | None = None
    try:
        check_blast_radius(plan.kind, planned, plan.found, config.max_actions, config.max_fraction)
    except BlastRadiusExceeded as error:
        blocked = str(error)
    if is_dry_run(config.dry_run, settings):
        source = "run config" if config.dry_run else "RUNS_FLEET_DRY_RUN=true"
        log.info(f"{plan.kind}: dry run ({source}): stopping after the plan; {planned} action(s) not taken")
        if blocked:
            log.warning(f"{plan.kind}: a real run would be blocked: {blocked}")
        return Output(None, metadata={"dry_run": True, "would_act": planned, "would_be_blocked": blocked or "no"})
    if blocked:
        log.error(blocked)
        raise Failure(
            description=blocked,
            metadata={"planned": planned, "found": plan.found, "max_actions": config.max_actions,
                      "max_fraction": config.max_fraction},
            allow_retries=False,
        )
    if not planned:
        log.info(f"{plan.kind}: nothing to do")
    result = act(plan)
    for action, why in result.skipped:
        log.warning(f"{plan.kind}: skipped {action.resource} at re-check: {why}")
    for action, why in result.failed:
        log.error(f"{plan.kind}: failed on {action.resource}: {why}")
    log.info(
        f"{plan.kind}: {len(result.done)} done, {len(result.skipped)} skipped at re-check, {len(result.failed)} failed"
    )
    try:
        put_metrics(aws.cloudwatch, settings.metrics_namespace, metrics_by_pool(metric, result, metric_count))
    except (ClientError, BotoCoreError) as error:
        # The actions are done; a lost datum must not turn a finished cleanup into a failed run.
        log.warning(f"{plan.kind}: could not publish {metric}: {error}")
    metadata: Mapping[str, Any] = outcome_metadata(result)
    if result.failed:
        raise Failure(
            description=f"{plan.kind}: {len(result.failed)} action(s) failed; a re-run retries them", metadata=metadata
        )
    return Output(None, metadata=metadata)
