"""The job index: from a job id to the day, part and manifest that archive it, without knowing its day.

Layout, outside ``jobs/`` so a table over the archive never reads it:
``index/jobs/bucket=HH/completed_date=YYYY-MM-DD.jsonl.gz``, where ``HH`` is the first two hex
digits of the SHA-256 of the job id (256 buckets). One object per bucket and archived day,
gzip JSON Lines sorted by job id, one line per job of that day:
``{"completed_date", "job_id", "manifest", "part"}`` (s3:// URIs). A job archived again in a
later part of its day (it changed after its first archive line) is indexed at its latest part,
the version restore writes back. A bucket is Hive-style, so pandas or DuckDB read it as a table.

The lines are built here, Dagster- and AWS-free (``build_index``, ``bucket_objects``);
``write_day_index`` puts a day's objects and reads each back; ``locate_archived_job`` lists and
reads one bucket (paged ListObjectsV2) and returns every day that archives the job.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from itertools import groupby
from typing import Any

from pipelines.archival.parts import ArchiveVerificationError, s3_uri

INDEX_ROOT = "index/jobs"
INDEX_FORMAT = "runs-fleet/job-index/v1"
_DAY_OBJECT = re.compile(r"completed_date=(\d{4}-\d{2}-\d{2})\.jsonl\.gz\Z")


def index_bucket(job_id: str) -> str:
    """The job's bucket: the first two hex digits of the SHA-256 of its id (stable across runs and machines)."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:2]


def bucket_prefix(bucket: str) -> str:
    return f"{INDEX_ROOT}/bucket={bucket}/"


def index_key(bucket: str, day: date) -> str:
    return f"{bucket_prefix(bucket)}completed_date={day.isoformat()}.jsonl.gz"


@dataclass(frozen=True)
class IndexEntry:
    """Where one job is archived: its day, the part holding its latest version, the day's manifest (s3:// URIs)."""

    job_id: str
    completed_date: str
    part: str
    manifest: str

    def line(self) -> str:
        return json.dumps({"completed_date": self.completed_date, "job_id": self.job_id, "manifest": self.manifest,
                           "part": self.part}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_line(cls, line: str) -> IndexEntry:
        data = json.loads(line)
        return cls(job_id=data["job_id"], completed_date=data["completed_date"], part=data["part"],
                   manifest=data["manifest"])


def build_index(archive_bucket: str, day: date, manifest_key: str,
                parts: Iterable[tuple[str, Iterable[str]]]) -> dict[str, list[str]]:
    """A day's index lines per bucket, from its parts in manifest order: (part key, the job ids of its lines).

    A job in several parts is indexed at the last one (its latest version). Lines are sorted
    by job id, so the same archive always gives the same bytes.
    """
    latest: dict[str, str] = {}
    for key, job_ids in parts:
        for job_id in job_ids:
            latest[job_id] = key
    rows = sorted((index_bucket(job_id), job_id, key) for job_id, key in latest.items())
    return {bucket: lines for bucket, lines in bucket_objects(archive_bucket, day, manifest_key, rows)}


def bucket_objects(archive_bucket: str, day: date, manifest_key: str,
                   rows: Iterable[tuple[str, str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(bucket, lines) per bucket, from (bucket, job id, part key) rows sorted by bucket then job id.

    One bucket's lines at a time, so a caller streaming rows from disk keeps memory at one bucket.
    """
    manifest = s3_uri(archive_bucket, manifest_key)
    for bucket, group in groupby(rows, key=lambda row: row[0]):
        yield bucket, [IndexEntry(job_id, day.isoformat(), s3_uri(archive_bucket, key), manifest).line()
                       for _, job_id, key in group]


def encode_object(lines: list[str]) -> bytes:
    # mtime=0: the same lines always give the same bytes, so a re-run writes the same object.
    return gzip.compress("".join(line + "\n" for line in lines).encode(), compresslevel=6, mtime=0)


class IndexDigest:
    """SHA-256 over a day's whole index, object by object: what the manifest records once it is written."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.objects = self.entries = 0

    def add(self, bucket: str, lines: list[str]) -> None:
        self._digest.update(f"{bucket}\n".encode())
        for line in lines:
            self._digest.update((line + "\n").encode())
        self.objects += 1
        self.entries += len(lines)

    def summary(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "sha256": self._digest.hexdigest(), "objects": self.objects,
                "entries": self.entries}


def write_index_object(s3: Any, archive_bucket: str, day: date, bucket: str, lines: list[str]) -> int:
    """Put one bucket's object for the day (replacing any earlier one) and read it back; returns its size."""
    key = index_key(bucket, day)
    body = encode_object(lines)
    digest = hashlib.sha256(body)
    s3.put_object(Bucket=archive_bucket, Key=key, Body=body, ContentType="application/gzip",
                  ChecksumSHA256=base64.b64encode(digest.digest()).decode())
    stored = s3.get_object(Bucket=archive_bucket, Key=key)["Body"].read()
    if hashlib.sha256(stored).hexdigest() != digest.hexdigest():
        raise ArchiveVerificationError(f"{s3_uri(archive_bucket, key)}: the index object read back differs from "
                                       f"what was written; nothing was deleted")
    return len(body)


@dataclass
class LookupStats:
    """What a lookup read: list pages and index objects of its one bucket."""

    bucket: str = ""
    list_pages: int = 0
    objects_read: int = 0
    bytes_read: int = 0


def locate_archived_job(s3: Any, archive_bucket: str, job_id: str, stats: LookupStats | None = None) -> list[IndexEntry]:
    """Every archived day of ``job_id`` (day, part, manifest), oldest day first; [] if it is not in the index.

    Lists the job's one bucket (paged ListObjectsV2) and reads each of its day objects: one
    GetObject per archived day on which a job of that bucket finished, none of any other bucket.
    """
    stats = stats if stats is not None else LookupStats()
    stats.bucket = index_bucket(job_id)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=archive_bucket, Prefix=bucket_prefix(stats.bucket)):
        stats.list_pages += 1
        for obj in page.get("Contents", []):
            if not _DAY_OBJECT.search(obj["Key"]):
                continue
            body = s3.get_object(Bucket=archive_bucket, Key=obj["Key"])["Body"].read()
            stats.objects_read += 1
            stats.bytes_read += len(body)
            for line in gzip.decompress(body).decode().splitlines():
                # Lines are compact JSON with sorted keys: a cheap text test before parsing.
                if line and json.dumps(job_id, ensure_ascii=False) in line:
                    entry = IndexEntry.from_line(line)
                    if entry.job_id == job_id:
                        found.append(entry)
    return sorted(found, key=lambda e: e.completed_date)
