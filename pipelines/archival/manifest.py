"""A day's manifest, ``jobs/completed_date=YYYY-MM-DD/_manifest.json``: which parts hold the day and how to check them.

It holds the record count, each part's key, record count, size and SHA-256, the min and max
``completed_at``, and the run ids that wrote it. It is replaced only with a conditional
PutObject (``If-Match`` its ETag as read, or ``If-None-Match: *`` when there was none), so two
runs of one day can never silently overwrite each other's view of the archive.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

from pipelines.archival.parts import (
    ArchiveVerificationError,
    PartInfo,
    day_prefix,
    put_unless_changed,
    s3_uri,
)
from pipelines.archival.records import earliest, latest
from pipelines.common.aws import error_code

MANIFEST_NAME = "_manifest.json"
FORMAT = "runs-fleet/job-archive-manifest/v1"


def manifest_key(day: date) -> str:
    return f"{day_prefix(day)}{MANIFEST_NAME}"


@dataclass
class Manifest:
    """The manifest as read (``etag`` None when the day had none yet)."""

    day: date
    parts: list[PartInfo] = field(default_factory=list)
    etag: str | None = None
    # The day's job index as last written and read back (index.IndexDigest.summary()); None: not written yet.
    index: dict[str, Any] | None = None

    @property
    def records(self) -> int:
        return sum(p.records for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    def to_json(self, run_id: str, updated_at: str) -> dict[str, Any]:
        nonempty = [p for p in self.parts if p.records]
        return {
            "format": FORMAT,
            "completed_date": self.day.isoformat(),
            "record_count": self.records,
            "bytes": self.bytes,
            "min_completed_at": earliest(*(p.min_completed_at for p in nonempty)) or None,
            "max_completed_at": latest(*(p.max_completed_at for p in nonempty)) or None,
            "run_id": run_id,
            "run_ids": sorted({p.run_id for p in self.parts} | {run_id}),
            "updated_at": updated_at,
            "parts": [p.to_json() for p in self.parts],
            "index": self.index,
        }


def read_manifest(s3: Any, bucket: str, day: date) -> Manifest:
    """The day's manifest, or an empty one (etag None) if the day has never been archived."""
    key = manifest_key(day)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in {"NoSuchKey", "404"}:
            return Manifest(day=day)
        raise
    try:
        data = json.loads(response["Body"].read())
        if data.get("completed_date") != day.isoformat():
            raise ValueError(f"it is for {data.get('completed_date')!r}")
        parts = [PartInfo.from_json(p) for p in data["parts"]]
        index = data.get("index")
    except (ValueError, KeyError, TypeError) as error:
        raise ArchiveVerificationError(f"{s3_uri(bucket, key)} is not a valid manifest ({error}); nothing was touched") from error
    return Manifest(day=day, parts=parts, etag=response["ETag"], index=index if isinstance(index, dict) else None)


def write_manifest(s3: Any, bucket: str, manifest: Manifest, *, run_id: str, updated_at: str) -> str:
    """Replace the manifest if nobody else did since it was read; returns its key."""
    key = manifest_key(manifest.day)
    body = json.dumps(manifest.to_json(run_id, updated_at), indent=1, sort_keys=True).encode()
    condition = {"IfMatch": manifest.etag} if manifest.etag else {"IfNoneMatch": "*"}
    response = put_unless_changed(
        s3, Bucket=bucket, Key=key, Body=body, ContentType="application/json",
        body_sha256=hashlib.sha256(body).digest(), **condition,
        conflict=(f"{s3_uri(bucket, key)} changed since this run read it: another run archived this day meanwhile. "
                  f"Nothing was deleted; re-run to verify and finish."),
    )
    manifest.etag = response.get("ETag")
    return key
