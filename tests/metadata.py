"""Reading what a run recorded: table metadata as rows of dicts, the way an operator reads the table."""

from __future__ import annotations

from typing import Any


def rows(value: Any) -> list[dict[str, Any]]:
    """A table metadata value's records, each a dict keyed by column name (the overflow row included)."""
    return [dict(record.data) for record in value.records]


def columns(value: Any) -> list[str]:
    return [c.name for c in value.schema.columns]


def column(value: Any, name: str) -> list[Any]:
    """One column's cells, top to bottom."""
    return [row.get(name) for row in rows(value)]


def row_for(value: Any, key: str, first: str | None = None) -> dict[str, Any]:
    """The one row whose first column (or ``first``) equals ``key``."""
    first = first or columns(value)[0]
    (found,) = [row for row in rows(value) if row.get(first) == key]
    return found
