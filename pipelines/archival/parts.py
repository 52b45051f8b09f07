"""Archive parts: gzip JSON Lines objects written from a bounded temp file and verified by reading them back.

Layout (the contract's): ``jobs/completed_date=YYYY-MM-DD/part-00000.jsonl.gz``, more parts
when a day is large. A part is built in a temporary file (never in memory), its SHA-256 is
taken over the compressed bytes as they are written, and it is uploaded in one PutObject
that S3 itself checks against that SHA-256 and that refuses to overwrite an existing part
(``If-None-Match: *``): a part, once written, is never replaced.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from typing import IO, Any

from botocore.exceptions import ClientError

from pipelines.archival.records import earliest, latest
from pipelines.common.aws import error_code
from pipelines.common.message_archive import ArchiveVerificationError  # noqa: F401 - one error for every archive

ARCHIVE_ROOT = "jobs"
PART_NAME = re.compile(r"part-([0-9]{5,})\.jsonl\.gz")  # the whole object name, ASCII digits
READ_CHUNK = 1024 * 1024


class ArchiveConflict(RuntimeError):
    """Another writer changed this day's archive while this run was writing it; nothing was deleted."""


# What S3 answers a conditional PutObject (If-None-Match / If-Match) that another writer got to first.
LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def put_unless_changed(s3: Any, *, conflict: str, body_sha256: bytes, **put: Any) -> dict[str, Any]:
    """One conditional PutObject (``put`` holds its If-None-Match or If-Match), checked by S3 against
    ``body_sha256``; losing the race to another writer raises ``ArchiveConflict(conflict)``."""
    try:
        return s3.put_object(ChecksumSHA256=base64.b64encode(body_sha256).decode(), **put)
    except ClientError as error:
        if error_code(error) in LOST_RACE_CODES:
            raise ArchiveConflict(conflict) from error
        raise


def day_prefix(day: date) -> str:
    return f"{ARCHIVE_ROOT}/completed_date={day.isoformat()}/"


def part_key(day: date, number: int) -> str:
    return f"{day_prefix(day)}part-{number:05d}.jsonl.gz"


def part_number(key: str) -> int | None:
    match = PART_NAME.fullmatch(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


@dataclass(frozen=True)
class PartInfo:
    """One part as the manifest records it."""

    key: str
    records: int
    bytes: int  # compressed, as stored
    uncompressed_bytes: int
    sha256: str  # hex, of the stored (compressed) bytes
    min_completed_at: str
    max_completed_at: str
    run_id: str
    written_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartInfo:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


class _HashingWriter(io.RawIOBase):
    """Passes writes to a file, hashing and counting the bytes on the way."""

    def __init__(self, target: IO[bytes], digest: Any):
        self._target, self._digest, self.written = target, digest, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._digest.update(data)
        self._target.write(data)
        self.written += len(data)
        return len(data)


class PartWriter:
    """Accumulates one part's lines into a gzip temp file; memory stays at gzip's window, whatever the size."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self._digest = hashlib.sha256()
        self._raw = _HashingWriter(self.file, self._digest)
        # mtime=0: the same records always give the same bytes (and checksum).
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        self.records = 0
        self.uncompressed_bytes = 0
        self.min_completed_at = ""
        self.max_completed_at = ""

    def add(self, line: str, completed_at: str) -> None:
        data = (line + "\n").encode()
        self._gzip.write(data)
        self.records += 1
        self.uncompressed_bytes += len(data)
        self.min_completed_at = earliest(self.min_completed_at, completed_at)
        self.max_completed_at = latest(self.max_completed_at, completed_at)

    def finish(self) -> tuple[bytes, int]:
        """Close the gzip stream; returns (sha256 digest, compressed size) and rewinds the file for upload."""
        self._gzip.close()
        self.file.flush()
        self.file.seek(0)
        return self._digest.digest(), self._raw.written

    def close(self) -> None:
        self.file.close()


def upload_part(
    s3: Any, bucket: str, key: str, writer: PartWriter, *, run_id: str, written_at: str
) -> PartInfo:
    """Upload a finished part in one PutObject; S3 checks the SHA-256 and refuses to overwrite an existing key."""
    digest, size = writer.finish()
    put_unless_changed(
        s3, Bucket=bucket, Key=key, Body=writer.file, ContentType="application/gzip", body_sha256=digest,
        IfNoneMatch="*", Metadata={"run-id": run_id, "records": str(writer.records), "sha256": digest.hex()},
        conflict=(f"{s3_uri(bucket, key)} appeared while this run was writing it: another run is archiving "
                  f"this day. Nothing was deleted; re-run once that run has finished."),
    )
    return PartInfo(
        key=key, records=writer.records, bytes=size, uncompressed_bytes=writer.uncompressed_bytes,
        sha256=digest.hex(), min_completed_at=writer.min_completed_at, max_completed_at=writer.max_completed_at,
        run_id=run_id, written_at=written_at,
    )


class _HashingReader(io.RawIOBase):
    """Reads a streaming body in chunks, hashing and counting the bytes on the way."""

    def __init__(self, body: Any, digest: Any):
        self._body, self._digest, self.read_bytes = body, digest, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        self._digest.update(data)
        self.read_bytes += len(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.readinto(bytearray(READ_CHUNK)):
            pass


@dataclass(frozen=True)
class PartScan:
    """What reading a stored part back found."""

    key: str
    records: int
    bytes: int
    uncompressed_bytes: int
    sha256: str
    run_id: str  # the writer's, from the object's metadata ("" if absent)


def scan_part(s3: Any, bucket: str, key: str, on_line: Callable[[str], None] | None = None) -> PartScan:
    """Stream a part from S3: hash the stored bytes, decompress, count lines, hand each line to ``on_line``.

    Memory stays at one read chunk and one line. A missing object or a body that is not
    gzip raises ArchiveVerificationError naming the part.
    """
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in {"NoSuchKey", "404"}:
            raise ArchiveVerificationError(f"{s3_uri(bucket, key)} is missing") from error
        raise
    digest = hashlib.sha256()
    raw = _HashingReader(response["Body"], digest)
    records = uncompressed = 0
    try:
        with gzip.GzipFile(fileobj=io.BufferedReader(raw, READ_CHUNK), mode="rb") as lines:
            for raw_line in lines:
                uncompressed += len(raw_line)
                if not raw_line.strip():
                    continue
                records += 1
                if on_line is not None:
                    on_line(raw_line.decode().rstrip("\n"))
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ArchiveVerificationError(f"{s3_uri(bucket, key)} is not a readable gzip JSON Lines part: {error}") from error
    raw.drain()
    return PartScan(
        key=key, records=records, bytes=raw.read_bytes, uncompressed_bytes=uncompressed, sha256=digest.hexdigest(),
        run_id=response.get("Metadata", {}).get("run-id", ""),
    )


def verify_part(s3: Any, bucket: str, part: PartInfo, on_line: Callable[[str], None] | None = None) -> PartScan:
    """Read a part back and check its record count and SHA-256 against ``part``; raises naming what differs."""
    scan = scan_part(s3, bucket, part.key, on_line)
    if scan.sha256 != part.sha256:
        raise ArchiveVerificationError(
            f"{s3_uri(bucket, part.key)}: SHA-256 read back {scan.sha256} differs from the recorded {part.sha256}"
        )
    if scan.records != part.records:
        raise ArchiveVerificationError(
            f"{s3_uri(bucket, part.key)}: read back {scan.records} records, the manifest says {part.records}"
        )
    return scan


def list_part_keys(s3: Any, bucket: str, day: date) -> list[str]:
    """Every part object under the day's prefix (paged to the end), in part-number order."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=day_prefix(day)):
        keys += [obj["Key"] for obj in page.get("Contents", []) if part_number(obj["Key"]) is not None]
    return sorted(keys, key=lambda k: part_number(k) or 0)
