"""Find a day's finished job records: the completed_at-index, one status at a time, every page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pipelines.common.contract import FINISHED_STATUSES

COMPLETED_AT_INDEX = "completed_at-index"


@dataclass
class QueryStats:
    """What reading a day cost and found: query pages (calls) and records per status."""

    pages: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.by_status.values())


def finished_records_of_day(
    dynamodb: Any, table: str, day: date, *, page_size: int | None = None, stats: QueryStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every finished record whose ``completed_at`` falls on ``day`` (UTC), one page at a time.

    The key condition is ``begins_with(completed_at, "YYYY-MM-DD")`` rather than a BETWEEN of
    two timestamps: the contract's timestamps are ISO 8601 UTC strings, whose date prefix *is*
    the UTC day, whatever follows it (``…T23:59:59.999999Z``, a missing ``Z``, a space instead
    of ``T``). A BETWEEN upper bound would have to guess the longest string a day can end with.
    ``running`` and ``queued`` records are never asked for. The GSI is eventually consistent:
    a record that finished seconds ago may be missed and is picked up by a later run.
    """
    stats = stats if stats is not None else QueryStats()
    paginator = dynamodb.get_paginator("query")
    for status in FINISHED_STATUSES:
        stats.by_status.setdefault(status, 0)
        pagination = {"PageSize": page_size} if page_size else {}
        pages = paginator.paginate(
            TableName=table,
            IndexName=COMPLETED_AT_INDEX,
            KeyConditionExpression="#status = :status AND begins_with(completed_at, :day)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":status": {"S": status}, ":day": {"S": day.isoformat()}},
            PaginationConfig=pagination,
        )
        for page in pages:
            stats.pages += 1
            items = page.get("Items", [])
            stats.by_status[status] += len(items)
            # Hand the items over by emptying the page's own list: botocore's page iterator
            # still holds the previous page while it fetches the next, and an emptied page
            # costs nothing, so at most one page of records is alive at a time.
            items.reverse()
            while items:
                yield items.pop()
