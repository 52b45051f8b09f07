"""The thin Dagster layer every destructive piece shares: recording a plan and its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import MetadataValue

from pipelines.common.contract import md_cell as _cell
from pipelines.common.safety import ActResult, PlannedAction

MAX_TABLE_ROWS = 500  # the UI renders a table this long comfortably; the logs carry the rest


def plan_table(actions: Sequence[PlannedAction],
               spared: Sequence[tuple[str, str, str, str | None]] = (),
               marks: dict[str, str] | None = None) -> MetadataValue:
    """The plan as a Markdown table, one row per candidate: resource, outcome, reason, pool, marked since.

    ``spared`` holds the candidates kept (resource, outcome such as ``kept: protected``,
    reason, pool), so a plan shows what it spared and why, not only what it would do;
    ``marks`` gives, per target, since when the sweep's plans have held it.
    """
    marks = marks or {}
    rows = [(a.resource, a.action, a.reason, a.pool) for a in actions] + list(spared)
    lines = ["| resource | outcome | reason | pool | marked since |", "|---|---|---|---|---|"]
    lines += [f"| {_cell(r)} | {_cell(o)} | {_cell(why)} | {_cell(p or '')} | {marks.get(r, '')} |"
              for r, o, why, p in rows[:MAX_TABLE_ROWS]]
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"| … {len(rows) - MAX_TABLE_ROWS} more in the run logs | | | | |")
    if not rows:
        lines.append("| (nothing to do) | | | | |")
    return MetadataValue.md("\n".join(lines))


def log_plan(log: Any, kind: str, actions: Sequence[PlannedAction], found: int) -> None:
    log.info(f"{kind}: plan has {len(actions)} action(s) out of {found} found")
    for action in actions:
        log.info(f"{kind} plan: {action.action} {action.resource}: {action.reason}")


def outcome_metadata(result: ActResult) -> dict[str, Any]:
    return {
        "acted": len(result.done),
        "skipped_at_recheck": len(result.skipped),
        "failed": len(result.failed),
        "skipped": MetadataValue.md(
            "\n".join(f"- {a.resource}: {why}" for a, why in result.skipped) or "none"
        ),
        "failures": MetadataValue.md("\n".join(f"- {a.resource}: {why}" for a, why in result.failed) or "none"),
    }
