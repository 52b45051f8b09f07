"""Property: whatever changes while a day is being archived, no version of a job record is ever lost.

Hypothesis draws a day of finished records and a subset of them to change in the window
between the archive being written and verified and the deletes: a "race" hook on the
project's own DynamoDB client (botocore's ``before-call.dynamodb.TransactWriteItems``) makes
the changes through another client just before a chosen delete call, the way another writer
would. After each run every record must be in the table in its current version, or absent
from the table with exactly that version as its latest line in the day's archive; a second
run must archive the new versions, and a restore must give every current version back.
"""

from __future__ import annotations

import gzip
import itertools
from datetime import timedelta

from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipelines.archival.archive import archive_day
from pipelines.archival.records import decode_record
from pipelines.archival.restore import restore_day
from tests.builders import hooked_clients
from tests.pipelines.archival.helpers import DAY, job, put_jobs, read_manifest_json

STATUSES = ("completed", "failed", "cancelled", "interrupted")
CHANGES = ("set back to running", "exit code corrected", "interrupted_by added", "duration removed",
           "moved to the next day", "note rewritten", "note removed", "status corrected")
_days = itertools.count(1)  # each example archives its own day, so examples never see each other's records


def _changed(item, change, day):
    if change == "set back to running":
        return dict(item, status={"S": "running"})
    if change == "exit code corrected":
        return dict(item, exit_code={"N": str(int(item["exit_code"]["N"]) + 100)})
    if change == "interrupted_by added":
        return dict(item, interrupted_by={"S": "stuck_jobs_sweep"})
    if change == "duration removed":
        return {k: v for k, v in item.items() if k != "duration_seconds"}
    if change == "moved to the next day":
        moved = (day + timedelta(days=1)).isoformat()
        return dict(item, completed_at={"S": moved + item["completed_at"]["S"][10:]})
    if change == "note rewritten":  # added where there was none: a name the day's records have
        return dict(item, note={"M": {"text": {"S": "rewritten"}, "n": {"N": "2"}}})
    if change == "note removed" and "note" in item:
        return {k: v for k, v in item.items() if k != "note"}
    statuses = [s for s in STATUSES if s != item["status"]["S"]]
    return dict(item, status={"S": statuses[0]})


def _racing_clients(aws, settings, changes, on_call):
    """The project's clients, whose ``on_call``-th TransactWriteItems is preceded by ``changes`` made through ``aws``."""
    calls = []

    def before_call(**kwargs):
        calls.append(1)
        if len(calls) == on_call:
            put_jobs(aws, settings, changes)

    return hooked_clients("before-call.dynamodb.TransactWriteItems", before_call)


def _table(aws, settings, ids):
    found = {}
    for page in aws.dynamodb.get_paginator("scan").paginate(TableName=settings.jobs_table, ConsistentRead=True):
        found.update({i["job_id"]["S"]: i for i in page["Items"] if i["job_id"]["S"] in ids})
    return found


def _latest_archived(aws, settings, day):
    """Each job's last line in the day's archive, in manifest order (typed, as DynamoDB holds it)."""
    latest = {}
    try:
        manifest = read_manifest_json(aws, settings, day)
    except aws.s3.exceptions.NoSuchKey:
        return latest, 0
    lines = 0
    for part in manifest["parts"]:
        body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=part["key"])["Body"].read()
        for line in gzip.decompress(body).decode().splitlines():
            item = decode_record(line)
            latest[item["job_id"]["S"]] = item
            lines += 1
    assert lines == manifest["record_count"] == sum(p["records"] for p in manifest["parts"])
    return latest, lines


def _assert_no_version_lost(aws, settings, day, current):
    table = _table(aws, settings, set(current))
    archived, _ = _latest_archived(aws, settings, day)
    for job_id, version in current.items():
        if job_id in table:
            assert table[job_id] == version, f"{job_id}: the table holds a version nobody wrote"
        else:
            assert archived.get(job_id) == version, f"{job_id}: deleted, and its current version is not the archive's"
    return table


# No shrinking: one example is a few archive runs against moto, and a failing example is readable as drawn.
@hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                     phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    data=st.data(),
    count=st.integers(min_value=1, max_value=110),  # past 100: two delete calls
)
def test_no_record_version_is_ever_lost(aws, settings, data, count):
    day = DAY + timedelta(days=10 * next(_days))  # this example's own day (its "next day" is free too)
    prefix = f"p{day:%m%d}-"
    statuses = data.draw(st.lists(st.sampled_from(STATUSES), min_size=count, max_size=count), label="statuses")
    notes = data.draw(st.lists(st.booleans(), min_size=count, max_size=count), label="has a note")
    notes[0] = True  # "note" is a name of the day (an attribute no record of the day has is the documented gap)
    originals = {
        f"{prefix}{n}": job(f"{prefix}{n}", status, f"{day}T{n % 24:02d}:{n % 60:02d}:00Z",
                            **({"note": {"M": {"text": {"S": f"n{n}"}, "n": {"N": "1"}}}} if note else {}))
        for n, (status, note) in enumerate(zip(statuses, notes))
    }
    picked = data.draw(st.lists(st.sampled_from(sorted(originals)), unique=True, max_size=min(count, 25)), label="changed")
    kinds = data.draw(st.lists(st.sampled_from(CHANGES), min_size=len(picked), max_size=len(picked)), label="changes")
    on_call = data.draw(st.integers(min_value=1, max_value=2 if count > 100 else 1), label="before delete call")
    put_jobs(aws, settings, list(originals.values()))

    changes = {job_id: _changed(originals[job_id], kind, day) for job_id, kind in zip(picked, kinds)}
    current = {**originals, **changes}

    def run(clients, run_id):
        return archive_day(clients.dynamodb, clients.s3, table=settings.jobs_table, bucket=settings.archive_bucket,
                           day=day, run_id=run_id, part_max_bytes=6_000)

    first = run(_racing_clients(aws, settings, list(changes.values()), on_call), "run-1")
    table = _assert_no_version_lost(aws, settings, day, current)
    # Exactly the changed records are left: kept because their condition failed, or (changed
    # just before the second delete call) written anew after the first call deleted them.
    assert set(table) == set(changes) and first.gone_before_delete == 0
    assert first.deleted + first.changed_since_archive == len(originals)
    if on_call == 1:
        assert first.changed_since_archive == len(changes)

    second = run(aws, "run-2")
    table = _assert_no_version_lost(aws, settings, day, current)
    still_of_the_day = {i for i, v in changes.items()
                        if v["status"]["S"] in STATUSES and v["completed_at"]["S"].startswith(day.isoformat())}
    # The second run archives the new version of every changed record still finished that day.
    assert second.changed_since_archive == 0
    assert second.newly_archived == second.deleted == len(still_of_the_day)
    assert set(table) == set(changes) - still_of_the_day

    restored = restore_day(aws.dynamodb, aws.s3, table=settings.jobs_table, bucket=settings.archive_bucket, day=day)
    assert restored.conflicts == len(set(changes) - still_of_the_day)
    assert _table(aws, settings, set(current)) == current  # every current version, back exactly
