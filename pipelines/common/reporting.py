"""The thin Dagster layer every destructive piece shares: recording a plan and its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import MetadataValue, TableMetadataValue

from pipelines.common.safety import ActResult, PlannedAction
from pipelines.common.tables import MAX_TABLE_ROWS, column, table

PLAN_COLUMNS = [
    column("resource", description="The target's id: instance id, parameter name, runner id, job id."),
    column("outcome", description="What the sweep would do, or `kept: <why>` for a candidate it spared."),
    column("reason"),
    column("pool"),
    column("marked since", description="Since when the sweep's plans have held this target (UTC)."),
]
ACTED_COLUMNS = [column("resource"), column("pool"), column("why")]


def plan_table(actions: Sequence[PlannedAction],
               spared: Sequence[tuple[str, str, str, str | None]] = (),
               marks: dict[str, str] | None = None) -> TableMetadataValue:
    """The plan as a table, one row per candidate: resource, outcome, reason, pool, marked since.

    ``spared`` holds the candidates kept (resource, outcome such as ``kept: protected``,
    reason, pool), so a plan shows what it spared and why, not only what it would do;
    ``marks`` gives, per target, since when the sweep's plans have held it.
    """
    marks = marks or {}
    rows = [(a.resource, a.action, a.reason, a.pool) for a in actions] + list(spared)
    return table(PLAN_COLUMNS, ({"resource": r, "outcome": o, "reason": why, "pool": p, "marked since": marks.get(r)}
                                for r, o, why, p in rows), cap=MAX_TABLE_ROWS)


def actions_table(pairs: Sequence[tuple[PlannedAction, str]]) -> TableMetadataValue:
    """Targets with why (skipped at re-check, failed): resource, pool, why."""
    return table(ACTED_COLUMNS, ({"resource": a.resource, "pool": a.pool, "why": why} for a, why in pairs))


def log_plan(log: Any, kind: str, actions: Sequence[PlannedAction], found: int) -> None:
    log.info(f"{kind}: plan has {len(actions)} action(s) out of {found} found")
    for action in actions:
        log.info(f"{kind} plan: {action.action} {action.resource}: {action.reason}")


def outcome_metadata(result: ActResult) -> dict[str, Any]:
    """Counts of what acting did, and the targets skipped at re-check or failed, each with why."""
    return {
        # Explicit ints: the actions asset's page plots them over its materializations.
        "acted": MetadataValue.int(len(result.done)),
        "skipped_at_recheck": MetadataValue.int(len(result.skipped)),
        "failed": MetadataValue.int(len(result.failed)),
        "skipped": actions_table(result.skipped),
        "failures": actions_table(result.failed),
    }
