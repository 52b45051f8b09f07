"""Restore one archived day to the jobs table: verify every part the manifest names, then put the records back.

How an operator undoes an archival, and how the tests prove nothing was lost. Idempotent:
a record already in the table exactly as archived is skipped; one the table holds in a
different version (the job id was reused, or the record changed since) is left alone and
reported unless ``overwrite`` is set, so a restore never clobbers newer data by accident.

A day's archive may hold a job more than once: a record that changed after its archive line
was written is kept in the table, and the next run of the day archives its new version in a
later part. Parts are only ever appended, so the manifest's order is the versions' order and
the last line of a job is the version that was deleted; only that one is restored, the
earlier ones are counted as superseded.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
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
    superseded: int = 0  # earlier versions of a job archived again later in the day's archive; not restored
    write_calls: int = 0


class _LastLines:
    """Disk-backed map job id -> position of its last line in the archive (memory stays flat however large the day)."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE last (job_id TEXT PRIMARY KEY, position INTEGER) WITHOUT ROWID")

    def see(self, job_id: str, position: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO last VALUES (?, ?)", (job_id, position))

    def is_last(self, job_id: str, position: int) -> bool:
        return self.db.execute("SELECT 1 FROM last WHERE job_id = ? AND position = ?", (job_id, position)).fetchone() is not None

    def close(self) -> None:
        self.db.close()


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
    with tempfile.TemporaryDirectory(prefix="job-restore-") as scratch, \
            closing(_LastLines(os.path.join(scratch, "last.db"))) as last:
        # All parts first: a damaged archive restores nothing rather than half a day. The same
        # pass finds each job's last line, its latest version.
        position = 0

        def note(line: str) -> None:
            nonlocal position
            last.see(job_id_of(decode_record(line)), position)
            position += 1

        for part in manifest.parts:
            verify_part(s3, bucket, part, note)
            result.parts_verified += 1
        position = 0
        for part in manifest.parts:
            batch: dict[str, dict[str, Any]] = {}

            def take(line: str) -> None:
                nonlocal position
                item = decode_record(line)
                job_id = job_id_of(item)
                result.archived += 1
                position += 1
                if not last.is_last(job_id, position - 1):
                    result.superseded += 1
                    return
                if len(batch) == DYNAMODB_GET_BATCH:
                    _restore_batch(dynamodb, table, batch, result, dry_run=dry_run, overwrite=overwrite)
                    batch.clear()
                batch[job_id] = item

            # Read again, verified again: the checksum holds for exactly the bytes being restored.
            verify_part(s3, bucket, part, take)
            if batch:
                _restore_batch(dynamodb, table, batch, result, dry_run=dry_run, overwrite=overwrite)
    return result
