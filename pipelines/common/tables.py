"""Dagster table metadata: what an operator reads on the run and asset pages.

A ``MetadataValue.table`` with a ``TableSchema`` shows sorted and sortable without the
"Show Markdown" click a Markdown table needs, and keeps numbers as numbers. Long tables are
capped, and a last row says how many more rows are elsewhere (the run logs, the asset value).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dagster import MetadataValue, TableColumn, TableMetadataValue, TableRecord, TableSchema

MAX_TABLE_ROWS = 500  # the UI renders a table this long comfortably; the logs carry the rest


def column(name: str, kind: str = "string", description: str | None = None) -> TableColumn:
    """One column; ``kind`` is Dagster's type name (``string``, ``int``, ``float``, ``bool``)."""
    return TableColumn(name=name, type=kind, description=description)


def cell(value: Any) -> str | int | float | bool | None:
    """A value a table record may hold: unknown (None, NaN) stays empty, never 0; numpy scalars become Python ones."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / pandas scalar
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def table(columns: Sequence[TableColumn], rows: Iterable[Mapping[str, Any]], *, cap: int = MAX_TABLE_ROWS,
          rest: str = "in the run logs", more: int = 0) -> TableMetadataValue:
    """``rows`` (dicts keyed by column name) as table metadata, at most ``cap`` of them.

    Beyond the cap, plus ``more`` rows the caller knows of but did not keep, one last row says
    how many more there are and where (``rest``); its text sits in the first column, which is
    therefore a string column in every table here.
    """
    rows = list(rows)
    names = [c.name for c in columns]
    records = [TableRecord({n: cell(row.get(n)) for n in names}) for row in rows[:cap]]
    hidden = max(0, len(rows) - cap) + max(0, more)
    if hidden:
        records.append(TableRecord({names[0]: f"… {hidden} more {rest}", **{n: None for n in names[1:]}}))
    return MetadataValue.table(records=records, schema=TableSchema(columns=list(columns)))
