"""The thin Dagster layer every destructive piece shares: recording a plan and its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import MetadataValue

from pipelines.common.safety import ActResult, PlannedAction

MAX_TABLE_ROWS = 500  # the UI renders a table this long comfortably; the logs carry the rest


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def plan_table(actions: Sequence[PlannedAction]) -> MetadataValue:
    """The plan as a Markdown table (resource, reason, action) for run metadata."""
    lines = ["| resource | reason | action |", "|---|---|---|"]
    lines += [f"| {_cell(a.resource)} | {_cell(a.reason)} | {_cell(a.action)} |" for a in actions[:MAX_TABLE_ROWS]]
    if len(actions) > MAX_TABLE_ROWS:
        lines.append(f"| … {len(actions) - MAX_TABLE_ROWS} more in the run logs | | |")
    if not actions:
        lines.append("| (nothing to do) | | |")
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
