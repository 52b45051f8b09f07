"""The ledger as the UI and CloudWatch show it: the runner frame, counts, oldest leaks, leak cost, metrics."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
else:
    from pipelines.common.lazy import pandas as pd  # imported by the first DataFrame built
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from pipelines.audit.pool_audit import PoolRecord
from pipelines.common.aws import Metric
from pipelines.common.contract import iso
from pipelines.ledger.rules import CLASSES, INSTANCE, LEAKED, PIECE_KINDS, STUCK, Fleet, Runner

MAX_LEAK_ROWS = 50
LEAK_METRIC = "LeakedResources"
FRAME_COLUMNS = ["runner_id", "class", "pool", "platform", "aws_state", "launched", "ended_at", "leaked_pieces",
                 "leaked_since", "held", "jobs", "running_jobs", "job_status", "job_started", "why"]


def _when(value: datetime | None) -> str | None:
    return iso(value) if value else None


def ledger_frame(rows: Sequence[Runner]) -> pd.DataFrame:
    """One row per runner (the asset's value)."""
    records = []
    for row in rows:
        known = [p.since for p in row.leaked if p.since]
        records.append({
            "runner_id": row.runner_id, "class": row.cls, "pool": row.pool, "platform": row.platform,
            "aws_state": row.aws_state, "launched": _when(row.launched), "ended_at": _when(row.ended_at),
            "leaked_pieces": ",".join(p.kind for p in row.leaked), "leaked_since": _when(min(known, default=None)),
            "held": ",".join(row.held), "jobs": row.jobs, "running_jobs": ",".join(row.running_jobs),
            "job_status": row.job_status, "job_started": _when(row.job_started), "why": row.why,
        })
    return pd.DataFrame(records, columns=FRAME_COLUMNS)


def leak_counts(rows: Sequence[Runner]) -> Counter[tuple[str, str]]:
    """(kind, pool) -> leaked pieces; stuck jobs counted under kind ``stuck_job``."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        for piece in row.leaked:
            counts[(piece.kind, row.pool)] += 1
        if row.cls == STUCK:
            counts[("stuck_job", row.pool)] += len(row.running_jobs)
    return counts


def class_table(rows: Sequence[Runner]) -> MetadataValue:
    """Runners per class and pool, with the leaked pieces of each kind."""
    runners: Counter[tuple[str, str]] = Counter((r.cls, r.pool) for r in rows)
    pieces: Counter[tuple[str, str, str]] = Counter((r.cls, r.pool, p.kind) for r in rows for p in r.leaked)
    schema = TableSchema(columns=[
        TableColumn("class", "string"), TableColumn("pool", "string"), TableColumn("runners", "int"),
        *[TableColumn(f"leaked_{k}s", "int") for k in PIECE_KINDS],
    ])
    order = {c: i for i, c in enumerate(CLASSES)}
    records = [TableRecord({"class": cls, "pool": pool, "runners": n,
                            **{f"leaked_{k}s": pieces[(cls, pool, k)] for k in PIECE_KINDS}})
               for (cls, pool), n in sorted(runners.items(), key=lambda i: (order[i[0][0]], i[0][1]))]
    return MetadataValue.table(records, schema)


def oldest_leaks_table(rows: Sequence[Runner], now: datetime, limit: int = MAX_LEAK_ROWS) -> MetadataValue:
    """The oldest leaked pieces and stuck jobs (unknown age last), capped at ``limit``."""
    entries = []
    for row in rows:
        for piece in row.leaked:
            entries.append((piece.since, row, piece.kind, piece.resource, piece.messages))
        if row.cls == STUCK:
            entries += [(row.job_started, row, "stuck_job", job_id, None) for job_id in row.running_jobs]
    entries.sort(key=lambda e: (e[0] is None, e[0] or now))
    schema = TableSchema(columns=[
        TableColumn("runner_id", "string"), TableColumn("class", "string"), TableColumn("pool", "string"),
        TableColumn("kind", "string"), TableColumn("resource", "string"), TableColumn("since", "string"),
        TableColumn("age_hours", "float"), TableColumn("messages_held", "string"), TableColumn("why", "string"),
    ])
    records = [TableRecord({
        "runner_id": row.runner_id, "class": row.cls, "pool": row.pool, "kind": kind, "resource": resource,
        "since": _when(since) or "unknown", "age_hours": round((now - since).total_seconds() / 3600, 2) if since else None,
        "messages_held": "not read" if messages is None else str(messages), "why": row.why[:200],
    }) for since, row, kind, resource, messages in entries[:limit]]
    return MetadataValue.table(records, schema)


def hourly_rate(pool: PoolRecord | None, instance_type: str, prices: Mapping[str, float]) -> tuple[float, str]:
    """The pool audit's pricing: the pool's hourly_price_usd override, else the shipped table; NaN when neither."""
    if pool is not None and pool.hourly_price_usd is not None:
        return pool.hourly_price_usd, "pool override"
    if instance_type in prices:
        return prices[instance_type], "price table"
    return math.nan, "unknown"


def leak_cost(rows: Sequence[Runner], fleet: Fleet, pools: Mapping[str, PoolRecord], prices: Mapping[str, float],
              now: datetime) -> pd.DataFrame:
    """Per pool: leaked instances, their orphan-hours (since each became an orphan) and cost; parameters, queues
    and tracking records counted (idle they cost nothing, but count against quotas)."""
    table: dict[str, dict[str, float | int | str]] = {}
    for row in rows:
        for piece in row.leaked:
            entry = table.setdefault(row.pool, {"pool": row.pool, "instances": 0, "orphan_hours": 0.0,
                                                "cost_usd": 0.0, "unpriced_instances": 0, "parameters": 0,
                                                "queues": 0, "tracking_records": 0, "messages_held": 0})
            if piece.kind == INSTANCE:
                hours = max(0.0, (now - piece.since).total_seconds() / 3600) if piece.since else 0.0
                seen = fleet.instances.get(row.runner_id)
                rate, _ = hourly_rate(pools.get(row.pool), seen.instance_type if seen else "", prices)
                entry["instances"] += 1
                entry["orphan_hours"] += hours
                if math.isnan(rate):
                    entry["unpriced_instances"] += 1
                else:
                    entry["cost_usd"] += rate * hours
            else:
                entry[{"parameter": "parameters", "queue": "queues", "tracking_record": "tracking_records"}[
                    piece.kind]] += 1
                entry["messages_held"] += piece.messages or 0
    columns = ["pool", "instances", "orphan_hours", "cost_usd", "unpriced_instances", "parameters", "queues",
               "tracking_records", "messages_held"]
    return pd.DataFrame(sorted(table.values(), key=lambda e: str(e["pool"])), columns=columns)


def cost_table(cost: pd.DataFrame) -> MetadataValue:
    schema = TableSchema(columns=[
        TableColumn("pool", "string"), TableColumn("instances", "int"), TableColumn("orphan_hours", "float"),
        TableColumn("cost_usd", "float"), TableColumn("unpriced_instances", "int"), TableColumn("parameters", "int"),
        TableColumn("queues", "int"), TableColumn("tracking_records", "int"), TableColumn("messages_held", "int"),
    ])
    records = [TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()})
               for rec in cost.to_dict("records")]
    return MetadataValue.table(records, schema)


def leak_metrics(rows: Sequence[Runner], pools: Sequence[str]) -> list[Metric]:
    """LeakedResources per (Kind, Pool): every kind for every pool of the table (zeros included, so an alarm
    sees 0 rather than missing data), plus any pool a leak names."""
    counts = leak_counts(rows)
    kinds = [*PIECE_KINDS, "stuck_job"]
    every_pool = sorted(set(pools) | {pool for _, pool in counts})
    return [Metric(LEAK_METRIC, counts[(kind, pool)], pool=pool, dimensions=(("Kind", kind),))
            for kind in kinds for pool in every_pool]


def totals(rows: Sequence[Runner]) -> dict[str, int]:
    classes = Counter(r.cls for r in rows)
    pieces = Counter(p.kind for r in rows for p in r.leaked)
    return {
        "runners": len(rows), **{f"runners_{c}": classes[c] for c in CLASSES},
        "leaked_pieces": sum(pieces.values()), **{f"leaked_{k}s": pieces[k] for k in PIECE_KINDS},
        "stuck_jobs": sum(len(r.running_jobs) for r in rows if r.cls == STUCK),
        "leaked_runners": classes[LEAKED],
    }
