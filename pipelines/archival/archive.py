"""Archive one day of finished job records to S3, verify the archive, then delete the records.

``archive_day`` is the whole rule, Dagster-free:

1. Read the day's manifest and read back every part it names (SHA-256 and record count).
   A part in S3 that no manifest names was written by a run that stopped before writing
   the manifest: it is read back the same way and adopted, never rewritten or lost.
   Every archived record goes into a ledger (a SQLite file in a temp directory, so memory
   stays flat however large the day): per job id, the SHA-256 of its *latest* archive line,
   in manifest order (a part written later holds a later version).
2. Query the day's finished records. A record whose exact line is its latest in the
   archive is only marked for deletion; any other (first run, a record that finished late
   for a day already archived, or one that changed since its archived version) is streamed
   into a new part, which is uploaded when it passes ``part_max_bytes`` and read back at once.
3. Write the manifest (conditionally: a concurrent run makes this one fail, not overwrite).
4. Write the day's job index (``index.py``: job id -> day, part, manifest), rebuilt from the
   ledger so it always matches the archive, read back; the manifest then records its digest,
   so a re-run with nothing new writes no index object.
5. Only then delete the marked records, each only in the version that was archived
   (``deletes.delete_archived_versions``: conditional deletes, 100 a TransactWriteItems).
   A record that changed since is kept and reported; the next run archives its new version.

A crash anywhere leaves each record in DynamoDB, in a verified part, or both; the next run
of the day finishes the job without writing any record version twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from pipelines.archival.deletes import delete_archived_versions
from pipelines.archival.index import IndexDigest, bucket_objects, index_bucket, write_index_object
from pipelines.archival.manifest import Manifest, manifest_key, read_manifest, write_manifest
from pipelines.archival.parts import (
    ArchiveVerificationError, PartInfo, PartWriter, list_part_keys, part_key, part_number, s3_uri, scan_part,
    upload_part, verify_part,
)
from pipelines.archival.query import QueryStats, finished_records_of_day
from pipelines.archival.records import (
    UnarchivableRecord, completed_at_of, decode_record, earliest, encode_record, job_id_of, latest,
)
from pipelines.common.aws import DYNAMODB_TRANSACT_BATCH
from pipelines.common.contract import iso
from pipelines.common.progress import Progress
from pipelines.common.safety import check_blast_radius

DEFAULT_PART_MAX_BYTES = 64 * 1024 * 1024  # uncompressed; about 200,000 job records
MAX_KEPT_REPORTED = 100
logger = logging.getLogger(__name__)
DELETE_CHUNK = DYNAMODB_TRANSACT_BATCH * 10  # archived versions read from the ledger at a time; still 100 per call


@dataclass
class DayArchiveResult:
    """What archiving one day found, wrote and deleted (or, in a dry run, would have)."""

    day: date
    dry_run: bool
    found: int = 0  # finished records of the day in the table
    already_archived: int = 0  # of those, already in a verified part: delete only
    newly_archived: int = 0  # written to new parts by this run (would be, in a dry run)
    to_delete: int = 0
    deleted: int = 0
    delete_calls: int = 0
    changed_since_archive: int = 0  # changed after their archive line was written: kept, archived next run
    changed_examples: list[tuple[str, str]] = field(default_factory=list)  # (job id, what changed), first few
    gone_before_delete: int = 0  # deleted by someone else meanwhile; in the archive all the same
    delete_capacity_units: float = 0.0  # as DynamoDB reported them (none from moto)
    delete_units_estimated: int = 0  # 2 write units per KB per record: a transactional delete's price
    kept: int = 0  # records that cannot be archived exactly, left in the table
    kept_examples: list[tuple[str, str]] = field(default_factory=list)  # (job id, why), first few
    parts_written: list[PartInfo] = field(default_factory=list)
    parts_adopted: list[str] = field(default_factory=list)
    parts_verified: int = 0
    manifest_uri: str | None = None
    archive_records: int = 0  # in the day's archive after this run
    archive_bytes: int = 0
    part_uris: list[str] = field(default_factory=list)
    index_entries: int = 0  # jobs in the day's index (one line each)
    index_objects: int = 0  # the day's index objects (one per bucket holding a job of the day)
    index_objects_written: int = 0  # by this run: 0 when the manifest shows the index already matches
    index_bytes_written: int = 0
    query: QueryStats = field(default_factory=QueryStats)

    @property
    def bytes_written(self) -> int:
        return sum(p.bytes for p in self.parts_written)


class _Ledger:
    """Disk-backed maps: job id -> digest of its latest archived line, and job id -> the archived line to delete."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path)
        # A scratch file for one run: durability would only cost time.
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        # part: the key of the part holding that latest line; bucket: the job's index bucket.
        self.db.execute("CREATE TABLE latest (job_id TEXT PRIMARY KEY, digest BLOB, part TEXT, bucket TEXT) WITHOUT ROWID")
        self.db.execute("CREATE TABLE to_delete (job_id TEXT PRIMARY KEY, line TEXT) WITHOUT ROWID")

    def add_archived(self, job_id: str, digest: bytes, part: str) -> None:
        # Called in archive order, so the last line of a job entered is its latest version.
        self.db.execute("INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?)", (job_id, digest, part, index_bucket(job_id)))

    def index_rows(self) -> Iterator[tuple[str, str, str]]:
        """(bucket, job id, part key) of every archived job, by bucket then job id: the index's order."""
        cursor = self.db.execute("SELECT bucket, job_id, part FROM latest ORDER BY bucket, job_id")
        while rows := cursor.fetchmany(DELETE_CHUNK):
            yield from rows

    def is_latest(self, job_id: str, digest: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM latest WHERE job_id = ? AND digest = ?", (job_id, digest)).fetchone() is not None

    def mark_for_delete(self, job_id: str, line: str) -> None:
        # The version to delete is the one last seen: the delete is conditional on exactly it.
        self.db.execute("INSERT OR REPLACE INTO to_delete VALUES (?, ?)", (job_id, line))

    def delete_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM to_delete").fetchone()[0]

    def lines_to_delete(self) -> Iterator[list[str]]:
        cursor = self.db.execute("SELECT line FROM to_delete")
        while rows := cursor.fetchmany(DELETE_CHUNK):
            yield [row[0] for row in rows]

    def close(self) -> None:
        self.db.close()


def _digest(line: str) -> bytes:
    return hashlib.sha256(line.encode()).digest()


class _PartLoader:
    """Called with each line of a part read back: checks it is a job record, enters it in the ledger, tracks its bounds."""

    def __init__(self, ledger: _Ledger, bucket: str, key: str, names: set[str]):
        self.ledger, self.key, self.uri, self.names = ledger, key, s3_uri(bucket, key), names
        self.min_completed_at = self.max_completed_at = ""

    def __call__(self, line: str) -> None:
        try:
            item = decode_record(line)
            # Re-encoding normalises the line, so a match never depends on how it was first written.
            canonical = encode_record(item)
            job_id = job_id_of(item)
        except (ValueError, UnarchivableRecord) as error:
            raise ArchiveVerificationError(f"{self.uri} holds a line that is not a job record: {error}") from error
        self.ledger.add_archived(job_id, _digest(canonical), self.key)
        self.names.update(item)
        completed = completed_at_of(item)
        self.min_completed_at = earliest(self.min_completed_at, completed)
        self.max_completed_at = latest(self.max_completed_at, completed)


def _write_index(s3: Any, bucket: str, day: date, manifest: Manifest, ledger: _Ledger, result: DayArchiveResult,
                 *, run_id: str, written_at: str) -> None:
    """Write the day's index from the ledger (unless the manifest records exactly this one), then record it there."""
    key = manifest_key(day)
    wanted = IndexDigest()
    for index_bucket_name, lines in bucket_objects(bucket, day, key, ledger.index_rows()):
        wanted.add(index_bucket_name, lines)
    summary = wanted.summary()
    result.index_entries, result.index_objects = wanted.entries, wanted.objects
    if manifest.index == summary:
        return  # written and read back by an earlier run; the archive has not changed since
    # Every object of the day again (the same bytes where nothing changed): a bucket's object
    # is whole, never patched, so it always matches the parts it names.
    for index_bucket_name, lines in bucket_objects(bucket, day, key, ledger.index_rows()):
        result.index_bytes_written += write_index_object(s3, bucket, day, index_bucket_name, lines)
        result.index_objects_written += 1
    manifest.index = summary
    write_manifest(s3, bucket, manifest, run_id=run_id, updated_at=written_at)


def archive_day(
    dynamodb: Any,
    s3: Any,
    *,
    table: str,
    bucket: str,
    day: date,
    run_id: str,
    dry_run: bool = False,
    max_deletes: int | None = None,
    part_max_bytes: int = DEFAULT_PART_MAX_BYTES,
    page_size: int | None = None,
    now: datetime | None = None,
    log: Any = logger,
) -> DayArchiveResult:
    """Archive ``day``'s finished records to S3, verify, then delete them; see the module docstring.

    ``dry_run`` reads everything (manifest, parts, table) and reports what would be archived
    and deleted, writing and deleting nothing. ``max_deletes`` fails the run before any delete
    (the archive is already written and verified by then, so a re-run with a higher limit
    just deletes). Raises ArchiveVerificationError or ArchiveConflict before deleting anything
    if the archive cannot be trusted. ``log`` gets progress lines while a large day is read and deleted.
    """
    now = now or datetime.now(timezone.utc)
    written_at = iso(now)
    result = DayArchiveResult(day=day, dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="job-archive-") as scratch, closing(_Ledger(os.path.join(scratch, "ledger.db"))) as ledger:
        # 1. The archive as it stands: verified parts named by the manifest, then orphans adopted.
        # Every attribute name seen on the day (archive and table): a delete's condition
        # requires each one the archived version lacks to be still absent.
        names: set[str] = set()
        manifest: Manifest = read_manifest(s3, bucket, day)
        for part in manifest.parts:
            verify_part(s3, bucket, part, _PartLoader(ledger, bucket, part.key, names))
            result.parts_verified += 1
        named = {p.key for p in manifest.parts}
        stored = list_part_keys(s3, bucket, day)
        for key in stored:
            if key in named:
                continue
            loader = _PartLoader(ledger, bucket, key, names)
            scan = scan_part(s3, bucket, key, loader)
            # An orphan is complete (PutObject is atomic and S3 checked its SHA-256 on upload);
            # read back in full just now, it is adopted with what was read.
            manifest.parts.append(PartInfo(
                key=key, records=scan.records, bytes=scan.bytes, uncompressed_bytes=scan.uncompressed_bytes,
                sha256=scan.sha256, min_completed_at=loader.min_completed_at, max_completed_at=loader.max_completed_at,
                run_id=scan.run_id or "unknown", written_at=written_at,
            ))
            result.parts_adopted.append(key)
        numbers = [part_number(k) for k in [*stored, *named]]
        next_number = max((n for n in numbers if n is not None), default=-1) + 1

        # 2. The day's records: already archived -> delete only; otherwise -> a new part.
        writer: PartWriter | None = None

        def flush() -> None:
            nonlocal writer, next_number
            if writer is None:
                return
            try:
                if writer.records:
                    info = upload_part(s3, bucket, part_key(day, next_number), writer, run_id=run_id, written_at=written_at)
                    next_number += 1
                    verify_part(s3, bucket, info)
                    manifest.parts.append(info)
                    result.parts_written.append(info)
            finally:
                writer.close()
                writer = None

        reading = Progress(log, f"job archive {day}: reading and archiving", unit="record")
        try:
            for item in finished_records_of_day(dynamodb, table, day, page_size=page_size, stats=result.query):
                result.found += 1
                reading.add()
                names.update(item)
                try:
                    job_id = job_id_of(item)
                    line = encode_record(item)
                except UnarchivableRecord as error:
                    result.kept += 1
                    if len(result.kept_examples) < MAX_KEPT_REPORTED:
                        result.kept_examples.append((item.get("job_id", {}).get("S", "?"), str(error)))
                    continue
                digest = _digest(line)
                # Only the *latest* archived version counts: a record that changed and changed
                # back is archived again, so the archive's latest line is always what was deleted.
                if ledger.is_latest(job_id, digest):
                    result.already_archived += 1
                else:
                    result.newly_archived += 1
                    # The part this line goes into: the writer's, uploaded under the next number.
                    ledger.add_archived(job_id, digest, part_key(day, next_number))
                    if not dry_run:
                        if writer is None:
                            writer = PartWriter()
                        writer.add(line, completed_at_of(item))
                        if writer.uncompressed_bytes >= part_max_bytes:
                            flush()
                ledger.mark_for_delete(job_id, line)
            if not dry_run:
                flush()
        finally:
            if writer is not None:
                writer.close()

        result.to_delete = ledger.delete_count()
        result.archive_records = manifest.records
        result.archive_bytes = manifest.bytes
        result.part_uris = [s3_uri(bucket, p.key) for p in manifest.parts]
        if dry_run:
            return result

        # 3. The manifest, before any delete: a restore starts from it.
        if result.parts_written or result.parts_adopted:
            manifest.index = None  # the parts changed: the index it recorded no longer covers them
            write_manifest(s3, bucket, manifest, run_id=run_id, updated_at=written_at)
        if manifest.etag:
            result.manifest_uri = s3_uri(bucket, manifest_key(day))

            # 4. The index, before any delete: every deleted record can be found by its job id.
            _write_index(s3, bucket, day, manifest, ledger, result, run_id=run_id, written_at=written_at)

        # 5. Delete what is in a verified part, in the version that is there, and nothing else.
        if max_deletes is not None:
            check_blast_radius("job records", result.to_delete, result.to_delete, max_deletes, 1.0)
        deleting = Progress(log, f"job archive {day}: deleting", result.to_delete, unit="record")
        for lines in ledger.lines_to_delete():
            done = delete_archived_versions(dynamodb, table, (decode_record(line) for line in lines), other_names=names)
            result.delete_calls += done.calls
            result.deleted += done.deleted
            result.changed_since_archive += done.changed
            result.changed_examples += done.changed_examples[:MAX_KEPT_REPORTED - len(result.changed_examples)]
            result.kept += len(done.kept_too_large)
            result.kept_examples += [(i, "archived, but too many attributes to delete conditionally")
                                     for i in done.kept_too_large][:MAX_KEPT_REPORTED - len(result.kept_examples)]
            result.gone_before_delete += done.gone
            result.delete_capacity_units += done.capacity_units
            result.delete_units_estimated += done.estimated_units
            deleting.add(done.deleted + done.changed + done.gone + len(done.kept_too_large))
    return result
