"""Helpers shared by the archival tests: job records written straight into the jobs table, and reading them back."""

from __future__ import annotations

import gzip
import json
from datetime import date
from typing import Any

from pipelines.common.aws import batch_write_with_retry

DAY = date(2026, 11, 10)  # a fixed day well in the past, so nothing depends on the clock


def job(job_id: str, status: str, completed_at: str | None, **extra: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "job_id": {"S": job_id}, "status": {"S": status}, "pool": {"S": "linux-small"},
        "instance_id": {"S": f"i-runner-{job_id}"},
        "created_at": {"S": "2026-11-09T23:00:00Z"}, "started_at": {"S": "2026-11-09T23:01:00Z"},
    }
    if completed_at is not None:
        item["completed_at"] = {"S": completed_at}
        item["exit_code"] = {"N": "0" if status == "completed" else "1"}
        item["duration_seconds"] = {"N": "314"}
    item.update(extra)
    return item


def day_jobs(prefix: str, count: int, day: date = DAY, statuses=("completed", "failed", "cancelled", "interrupted")):
    """``count`` finished records spread over ``day``, cycling through ``statuses``."""
    return [
        job(f"{prefix}-{n}", statuses[n % len(statuses)],
            f"{day.isoformat()}T{(n * 7) % 24:02d}:{(n * 13) % 60:02d}:{n % 60:02d}Z")
        for n in range(count)
    ]


def put_jobs(aws, settings, items) -> None:
    batch_write_with_retry(aws.dynamodb, settings.jobs_table, [{"PutRequest": {"Item": i}} for i in items])


def table_items(aws, settings) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    for page in aws.dynamodb.get_paginator("scan").paginate(TableName=settings.jobs_table, ConsistentRead=True):
        for item in page.get("Items", []):
            items[item["job_id"]["S"]] = item
    return items


def s3_keys(aws, settings, prefix="jobs/") -> list[str]:
    keys = []
    for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=settings.archive_bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def read_manifest_json(aws, settings, day: date = DAY) -> dict[str, Any]:
    key = f"jobs/completed_date={day.isoformat()}/_manifest.json"
    return json.loads(aws.s3.get_object(Bucket=settings.archive_bucket, Key=key)["Body"].read())


def archived_lines(aws, settings, key: str) -> list[dict[str, Any]]:
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
