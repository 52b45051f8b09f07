"""Restore one archived day to the jobs table: verify every part the manifest names, then put the records back.

How an operator undoes an archival, and how the tests prove nothing was lost. Idempotent:
a record already in the table exactly as archived is skipped; one the table holds in a
different version (the job id was reused, or the record changed since) is left alone and
reported unless ``overwrite`` is set, so a restore never clobbers newer data by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pipelines.archival.manifest import manifest_key, read_manifest
from pipelines.archival.parts import s3_uri, verify_part
from pipelines.archival.records import decode_record, encode_record, job_id_of
from pipelines.common.aws import DYNAMODB_GET_BATCH, batch_get_with_retry, batch_write_with_retry

MAX_CONFLICTS_REPORTED = 100


@dataclass
class DayRestoreResult:
    day: date
    dry_run: bool
    manifest_uri: str | None = None  # None: the day has no archive
    parts_verified: int = 0
    archived: int = 0  # records in the archive
    restored: int = 0  # put back (would be, in a dry run)
    already_present: int = 0
    conflicts: int = 0  # table holds a different version; not overwritten
    conflict_examples: list[str] = field(default_factory=list)
    write_calls: int = 0


def _restore_batch(dynamodb: Any, table: str, batch: dict[str, dict[str, Any]], result: DayRestoreResult,
                   *, dry_run: bool, overwrite: bool) -> None:
    keys = [{"job_id": {"S": job_id}} for job_id in batch]
    present = {job_id_of(item): encode_record(item) for item in batch_get_with_retry(dynamodb, table, keys)}
    puts = []
    for job_id, item in batch.items():
        if job_id not in present:
            puts.append(item)
        elif present[job_id] == encode_record(item):
            result.already_present += 1
        elif overwrite:
            puts.append(item)
        else:
            result.conflicts += 1
            if len(result.conflict_examples) < MAX_CONFLICTS_REPORTED:
                result.conflict_examples.append(job_id)
    result.restored += len(puts)
    if puts and not dry_run:
        result.write_calls += batch_write_with_retry(dynamodb, table, [{"PutRequest": {"Item": item}} for item in puts])


def restore_day(
    dynamodb: Any, s3: Any, *, table: str, bucket: str, day: date, dry_run: bool = False, overwrite: bool = False,
) -> DayRestoreResult:
    """Verify the day's whole archive (count and SHA-256 of every part), then write its records back."""
    result = DayRestoreResult(day=day, dry_run=dry_run)
    manifest = read_manifest(s3, bucket, day)
    if manifest.etag is None:
        return result
    result.manifest_uri = s3_uri(bucket, manifest_key(day))
    # All parts first: a damaged archive restores nothing rather than half a day.
    for part in manifest.parts:
        verify_part(s3, bucket, part)
        result.parts_verified += 1
    for part in manifest.parts:
        batch: dict[str, dict[str, Any]] = {}

        def take(line: str) -> None:
            item = decode_record(line)
            job_id = job_id_of(item)
            # One batch may not name a key twice; a job archived twice (two versions) splits the batch.
            if job_id in batch or len(batch) == DYNAMODB_GET_BATCH:
                _restore_batch(dynamodb, table, batch, result, dry_run=dry_run, overwrite=overwrite)
                batch.clear()
            batch[job_id] = item
            result.archived += 1

        # Read again, verified again: the checksum holds for exactly the bytes being restored.
        verify_part(s3, bucket, part, take)
        if batch:
            _restore_batch(dynamodb, table, batch, result, dry_run=dry_run, overwrite=overwrite)
    return result
