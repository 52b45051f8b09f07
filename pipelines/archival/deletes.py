"""Delete archived job records only in the version that was archived.

A record can change after its archive line was written: the termination processor records a
job's real end over an ``interrupted`` one, an operator sets a job back to ``running`` or
corrects it. An unconditional delete would lose that new version. So each delete carries a
condition that holds only while the record is still exactly its archive line — every
archived attribute equal to its archived value (maps and lists compared whole), and every
other attribute name the record could gain (the contract's, and any seen on a record of
the day) still absent — and the deletes go 100 a call in
``TransactWriteItems`` (BatchWriteItem takes no conditions). A record whose condition fails
is kept and reported; the next run of its day archives its new version.

The one change the condition cannot see is an attribute of a name neither the contract nor
any record of the day has, added by a writer outside the fleet: DynamoDB has no condition
for "no other attributes", and closing that would take a read after each delete.

Cost: a transactional delete consumes 2 write capacity units per KB of item, a
BatchWriteItem delete 1; calls fall from ceil(N/25) to ceil(N/100).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.archival.records import encode_record, job_id_of
from pipelines.common.aws import transact_write_with_retry

# The jobs table's attributes (the contract's, and interrupted_by from the stuck jobs sweep):
# one of them appearing after the archive copy is a change too.
JOB_ATTRIBUTES = (
    "status", "pool", "instance_id", "created_at", "started_at", "completed_at", "exit_code", "duration_seconds",
    "interrupted_by",
)
KEY = "job_id"
MAX_CONDITION_CHARS = 4096  # DynamoDB's limit on an expression
MAX_CHANGED_REPORTED = 100


class ConditionTooLarge(ValueError):
    """The record has too many attributes for one condition expression; it is kept, not deleted blindly."""


def unchanged_condition(item: dict[str, dict[str, Any]], other_names: Iterable[str] = ()) -> dict[str, Any]:
    """The ConditionExpression (with its names and values) that holds only while the record is still ``item``.

    Besides the contract's attributes, ``other_names`` (names seen elsewhere on the day) must stay absent too.
    """
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses, names["#k"] = ["attribute_exists(#k)"], KEY
    for n, name in enumerate(sorted(a for a in item if a != KEY)):
        names[f"#a{n}"], values[f":a{n}"] = name, item[name]
        clauses.append(f"#a{n} = :a{n}")
    for n, name in enumerate(sorted((set(JOB_ATTRIBUTES) | set(other_names)) - set(item) - {KEY})):
        names[f"#m{n}"] = name
        clauses.append(f"attribute_not_exists(#m{n})")
    expression = " AND ".join(clauses)
    if len(expression) > MAX_CONDITION_CHARS:
        raise ConditionTooLarge(f"{len(item)} attributes need a {len(expression)}-character condition")
    condition: dict[str, Any] = {"ConditionExpression": expression, "ExpressionAttributeNames": names}
    if values:
        condition["ExpressionAttributeValues"] = values
    return condition


def conditional_delete(table: str, item: dict[str, dict[str, Any]], other_names: Iterable[str] = ()) -> dict[str, Any]:
    """One TransactWriteItems action: delete the record if it is still ``item``, else return it as it stands."""
    return {"Delete": {
        "TableName": table, "Key": {KEY: item[KEY]}, **unchanged_condition(item, other_names),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }}


def what_changed(archived: dict[str, Any], current: dict[str, Any] | None) -> str:
    """A short account of how the record differs from its archived version, for the run's log."""
    if current is None:
        return "gone from the table"
    changes = []
    for name in sorted(set(archived) | set(current)):
        before, after = archived.get(name), current.get(name)
        if before == after:
            continue
        if before is None:
            changes.append(f"{name} added")
        elif after is None:
            changes.append(f"{name} removed")
        else:
            changes.append(f"{name} {_plain(before)!r} -> {_plain(after)!r}")
    return ", ".join(changes) or "changed"


def _plain(value: dict[str, Any]) -> Any:
    return next(iter(value.values())) if isinstance(value, dict) and len(value) == 1 else value


def write_units(item: dict[str, Any], per_kb: int) -> int:
    """Write capacity units a delete of ``item`` consumes (its archive line's size stands in for the item size)."""
    return per_kb * max(1, math.ceil(len(encode_record(item).encode()) / 1024))


@dataclass
class DeleteResult:
    """What deleting archived versions did."""

    deleted: int = 0
    changed: int = 0  # changed since archived: kept
    changed_examples: list[tuple[str, str]] = field(default_factory=list)  # (job id, what changed)
    gone: int = 0  # already deleted by someone else (it is in the archive all the same)
    kept_too_large: list[str] = field(default_factory=list)
    calls: int = 0
    capacity_units: float = 0.0  # as DynamoDB reported them (0 where it does not, e.g. moto)
    estimated_units: int = 0  # 2 per KB per record deleted: DynamoDB's price of a transactional delete


def delete_archived_versions(
    dynamodb: Any, table: str, items: Iterable[dict[str, dict[str, Any]]], *, other_names: Iterable[str] = (),
) -> DeleteResult:
    """Delete each of ``items`` from ``table`` only if the record is still exactly that version; see the module docstring.

    ``other_names``: attribute names seen on the day's records, each of which a record must not have gained.
    """
    other_names = frozenset(other_names)
    result = DeleteResult()
    actions, archived = [], {}
    for item in items:
        job_id = job_id_of(item)
        try:
            actions.append((job_id, conditional_delete(table, item, other_names)))
        except ConditionTooLarge:
            result.kept_too_large.append(job_id)
            continue
        archived[job_id] = item
    if not actions:
        return result
    outcome = transact_write_with_retry(
        dynamodb, actions, size_of=lambda action: len(json.dumps(action["Delete"].get("ExpressionAttributeValues", {}))),
    )
    result.calls, result.capacity_units = outcome.calls, outcome.capacity_units
    result.deleted = len(outcome.written)
    result.estimated_units = sum(write_units(archived[job_id], 2) for job_id in outcome.written)
    for job_id, current in outcome.condition_failed:
        if current is None:
            result.gone += 1
            continue
        result.changed += 1
        if len(result.changed_examples) < MAX_CHANGED_REPORTED:
            result.changed_examples.append((job_id, what_changed(archived[job_id], current)))
    return result
