"""The job index: built from a day's parts (pure, table-driven), written with each archived day, and looked up (moto)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections import Counter
from datetime import timedelta

import pandas as pd
import pytest

from pipelines.archival.archive import archive_day
from pipelines.archival.index import (
    IndexEntry, bucket_prefix, build_index, index_bucket, index_key, locate_archived_job,
)
from tests.builders import hooked_clients
from tests.pipelines.archival.helpers import DAY, day_jobs, job, put_jobs, read_manifest_json, s3_keys

B = "arch"
P0 = f"jobs/completed_date={DAY}/part-00000.jsonl.gz"
P1 = f"jobs/completed_date={DAY}/part-00001.jsonl.gz"
M = f"jobs/completed_date={DAY}/_manifest.json"


def line(job_id: str, part: str) -> str:
    return IndexEntry(job_id, DAY.isoformat(), f"s3://{B}/{part}", f"s3://{B}/{M}").line()


def by_bucket(*entries: tuple[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job_id, part in sorted(entries):
        out.setdefault(index_bucket(job_id), []).append(line(job_id, part))
    return out


# (case, the day's parts in manifest order, expected (job id, part) entries)
CASES = [
    ("no parts", [], []),
    ("an empty part", [(P0, [])], []),
    ("one part", [(P0, ["8812", "8813", "a"])], [("8812", P0), ("8813", P0), ("a", P0)]),
    ("two parts, distinct jobs", [(P0, ["1"]), (P1, ["2"])], [("1", P0), ("2", P1)]),
    ("archived again later: the latest part wins", [(P0, ["1", "2"]), (P1, ["2"])], [("1", P0), ("2", P1)]),
    ("twice in one part: still one line", [(P0, ["1", "1"])], [("1", P0)]),
    ("unicode and quotes", [(P0, ['ü-"x"'])], [('ü-"x"', P0)]),
]


@pytest.mark.parametrize("parts,expected", [(p, e) for _, p, e in CASES], ids=[c for c, _, _ in CASES])
def test_build_index_from_a_days_parts(parts, expected):
    assert build_index(B, DAY, M, parts) == by_bucket(*expected)


def test_lines_and_keys_have_the_documented_shape():
    assert index_bucket("8812") == "66" == hashlib.sha256(b"8812").hexdigest()[:2]
    assert index_key("66", DAY) == "index/jobs/bucket=66/completed_date=2026-11-10.jsonl.gz"
    assert json.loads(line("8812", P0)) == {
        "job_id": "8812", "completed_date": "2026-11-10", "part": f"s3://{B}/{P0}", "manifest": f"s3://{B}/{M}"}
    # Sorted within a bucket, and the same input gives the same lines whatever the order of parts' lines.
    same_bucket = [j for j in (str(n) for n in range(2000)) if index_bucket(j) == "00"][:3]
    assert build_index(B, DAY, M, [(P0, same_bucket[::-1])]) == {"00": [line(j, P0) for j in sorted(same_bucket)]}


# ---- against moto ---------------------------------------------------------------------------

def archive(aws, settings, day=DAY, run_id="run-1"):
    return archive_day(aws.dynamodb, aws.s3, table=settings.jobs_table, bucket=settings.archive_bucket, day=day,
                       run_id=run_id)


def index_objects(aws, settings) -> dict[str, bytes]:
    return {k: aws.s3.get_object(Bucket=settings.archive_bucket, Key=k)["Body"].read()
            for k in s3_keys(aws, settings, prefix="index/")}


def uri(settings, key: str) -> str:
    return f"s3://{settings.archive_bucket}/{key}"


def test_archived_days_are_found_by_job_id_alone(aws, settings):
    day2 = DAY + timedelta(days=3)
    put_jobs(aws, settings, day_jobs("d1", 30) + day_jobs("d2", 30, day2) + [job("busy", "running", None)])
    first, second = archive(aws, settings), archive(aws, settings, day2)
    assert (first.index_entries, second.index_entries) == (30, 30)
    assert first.index_objects_written == first.index_objects == len({index_bucket(f"d1-{n}") for n in range(30)})

    for job_id, day in [("d1-7", DAY), ("d2-29", day2)]:
        (entry,) = locate_archived_job(aws.s3, settings.archive_bucket, job_id)
        prefix = f"jobs/completed_date={day}/"
        assert entry == IndexEntry(job_id, day.isoformat(), uri(settings, prefix + "part-00000.jsonl.gz"),
                                   uri(settings, prefix + "_manifest.json"))
    assert locate_archived_job(aws.s3, settings.archive_bucket, "busy") == []  # still running: not archived
    assert locate_archived_job(aws.s3, settings.archive_bucket, "never-existed") == []
    # Every object is a bucket's day, outside jobs/; the manifest records the index it was checked against.
    keys = s3_keys(aws, settings, prefix="index/")
    assert len(keys) == first.index_objects + second.index_objects
    assert all(k.startswith("index/jobs/bucket=") for k in keys)
    assert read_manifest_json(aws, settings)["index"]["entries"] == 30


def test_a_record_archived_again_later_is_found_in_its_latest_part(aws, settings):
    put_jobs(aws, settings, day_jobs("c", 4))
    archive(aws, settings)
    changed = job("c-1", "failed", f"{DAY}T08:00:00Z", note={"S": "corrected"})
    put_jobs(aws, settings, [changed])  # the job id comes back, changed (a late correction)

    result = archive(aws, settings, run_id="run-2")

    assert result.newly_archived == 1 and result.index_objects_written == result.index_objects == 4
    (entry,) = locate_archived_job(aws.s3, settings.archive_bucket, "c-1")
    assert entry.part == uri(settings, P1)
    (other,) = locate_archived_job(aws.s3, settings.archive_bucket, "c-2")
    assert other.part == uri(settings, P0)


def test_a_rerun_leaves_the_index_identical_and_writes_no_index_object(aws, settings):
    put_jobs(aws, settings, day_jobs("r", 25))
    archive(aws, settings)
    before = index_objects(aws, settings)

    again = archive(aws, settings, run_id="run-2")

    assert again.index_objects_written == 0 and again.index_entries == 25
    assert index_objects(aws, settings) == before
    # A day archived before the index existed (no index in its manifest, no objects) gets it on its next run.
    manifest = read_manifest_json(aws, settings)
    manifest.pop("index")
    aws.s3.put_object(Bucket=settings.archive_bucket, Key=M, Body=json.dumps(manifest).encode())
    for key in before:
        aws.s3.delete_object(Bucket=settings.archive_bucket, Key=key)
    rebuilt = archive(aws, settings, run_id="run-3")
    assert rebuilt.index_objects_written == len(before) and index_objects(aws, settings) == before


def test_a_bucket_reads_as_a_table_with_pandas(aws, settings):
    put_jobs(aws, settings, day_jobs("pd", 40))
    archive(aws, settings)
    key = index_key(index_bucket("pd-3"), DAY)
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=key)["Body"].read()
    frame = pd.read_json(io.BytesIO(gzip.decompress(body)), lines=True, dtype={"job_id": str})
    assert list(frame.columns) == ["completed_date", "job_id", "manifest", "part"]
    assert "pd-3" in set(frame["job_id"]) and set(frame["completed_date"].astype(str)) == {DAY.isoformat()}


def counting_clients():
    """Fresh project clients whose S3 calls are counted (botocore before-call events): (clients, calls)."""
    calls: list[tuple[str, dict]] = []

    def count(model, params, **kwargs):
        calls.append((model.name, params.get("url_path", ""), params.get("query_string", {})))

    return hooked_clients("before-call.s3", count, services=("s3",)), calls


def test_the_lookup_reads_only_the_jobs_bucket(aws, settings):
    days = [DAY + timedelta(days=n) for n in range(3)]
    target = "l1-17"
    bucket = index_bucket(target)
    # Neighbours in the target's bucket on every day, so the bucket holds one object per day.
    neighbours = [j for j in (f"n-{n}" for n in range(5000)) if index_bucket(j) == bucket][:3]
    for n, day in enumerate(days):
        put_jobs(aws, settings, day_jobs(f"l{n}", 60, day) + [job(neighbours[n], "completed", f"{day}T12:00:00Z")])
        archive(aws, settings, day)
    total = len(s3_keys(aws, settings, prefix="index/"))
    in_bucket = s3_keys(aws, settings, prefix=bucket_prefix(bucket))
    assert len(in_bucket) == 3
    counting, calls = counting_clients()

    (entry,) = locate_archived_job(counting.s3, settings.archive_bucket, target)

    assert entry.completed_date == days[1].isoformat()
    ops = Counter(name for name, _, _ in calls)
    assert ops == {"ListObjectsV2": 1, "GetObject": 3}, ops
    assert all(q.get("prefix") == bucket_prefix(bucket) for name, _, q in calls if name == "ListObjectsV2")
    assert all(f"bucket%3D{bucket}/" in path or f"bucket={bucket}/" in path
               for name, path, _ in calls if name == "GetObject"), calls
    print(f"lookup of {target}: {dict(ops)}; index objects in the archive: {total}, in its bucket: {len(in_bucket)}")
