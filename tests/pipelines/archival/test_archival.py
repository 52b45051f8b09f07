"""archive_day / restore_day against the moto stack: what is archived, what is kept, and that nothing is ever lost."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from datetime import timedelta

import pytest

from pipelines.archival.archive import archive_day
from pipelines.archival.parts import ArchiveVerificationError
from pipelines.archival.restore import restore_day
from tests.builders import hooked_clients
from tests.pipelines.archival.helpers import (
    DAY, archived_lines, day_jobs, job, put_jobs, read_manifest_json, s3_keys, table_items,
)

PREFIX = f"jobs/completed_date={DAY.isoformat()}/"


def archive(aws, settings, *, run_id="run-1", **kwargs):
    return archive_day(aws.dynamodb, aws.s3, table=settings.jobs_table, bucket=settings.archive_bucket, day=DAY,
                       run_id=run_id, **kwargs)


def restore(aws, settings, **kwargs):
    return restore_day(aws.dynamodb, aws.s3, table=settings.jobs_table, bucket=settings.archive_bucket, day=DAY, **kwargs)


def test_a_day_of_every_finished_status_is_archived_and_running_jobs_are_not(aws, settings):
    finished = day_jobs("fin", 20)
    running = [job("run-1", "running", None), job("run-2", "queued", None),
               job("run-3", "running", f"{DAY}T10:00:00Z")]  # odd, but a running record is never archived
    put_jobs(aws, settings, finished + running)

    result = archive(aws, settings)

    assert result.found == 20 and result.newly_archived == 20 and result.deleted == 20
    assert result.query.by_status == {"completed": 5, "failed": 5, "cancelled": 5, "interrupted": 5}
    assert set(table_items(aws, settings)) == {"run-1", "run-2", "run-3"}
    assert s3_keys(aws, settings) == [PREFIX + "_manifest.json", PREFIX + "part-00000.jsonl.gz"]
    manifest = read_manifest_json(aws, settings)
    assert manifest["record_count"] == 20 and manifest["run_id"] == "run-1"
    assert manifest["min_completed_at"] == min(j["completed_at"]["S"] for j in finished)
    assert manifest["max_completed_at"] == max(j["completed_at"]["S"] for j in finished)
    (part,) = manifest["parts"]
    stored = aws.s3.get_object(Bucket=settings.archive_bucket, Key=part["key"])["Body"].read()
    assert part["sha256"] == hashlib.sha256(stored).hexdigest() and part["bytes"] == len(stored)
    lines = archived_lines(aws, settings, part["key"])
    assert part["records"] == len(lines) == 20
    # Plain JSON for Athena/DuckDB/pandas: numbers are numbers, strings strings.
    assert {(line["job_id"], line["exit_code"], line["duration_seconds"]) for line in lines} == {
        (j["job_id"]["S"], int(j["exit_code"]["N"]), 314) for j in finished}


def test_day_bounds_are_utc_dates_of_completed_at(aws, settings):
    before, after = DAY - timedelta(days=1), DAY + timedelta(days=1)
    inside = [job("in-1", "completed", f"{DAY}T00:00:00Z"), job("in-2", "failed", f"{DAY}T23:59:59.999999Z"),
              job("in-3", "completed", f"{DAY}T23:59:59Z"), job("in-4", "cancelled", f"{DAY}T12:00:00.5Z")]
    outside = [job("out-1", "completed", f"{before}T23:59:59.999Z"), job("out-2", "failed", f"{after}T00:00:00Z")]
    put_jobs(aws, settings, inside + outside)

    result = archive(aws, settings)

    assert result.deleted == 4
    assert set(table_items(aws, settings)) == {"out-1", "out-2"}
    manifest = read_manifest_json(aws, settings)
    assert manifest["min_completed_at"] == f"{DAY}T00:00:00Z"
    assert manifest["max_completed_at"] == f"{DAY}T23:59:59.999999Z"


def test_a_day_with_no_records_writes_and_deletes_nothing(aws, settings):
    put_jobs(aws, settings, day_jobs("other", 3, DAY + timedelta(days=1)))
    result = archive(aws, settings)
    assert (result.found, result.deleted, result.parts_written, result.manifest_uri) == (0, 0, [], None)
    assert s3_keys(aws, settings) == []
    assert len(table_items(aws, settings)) == 3


def test_many_query_pages_and_parts(aws, settings):
    jobs = day_jobs("many", 130)
    put_jobs(aws, settings, jobs)

    result = archive(aws, settings, page_size=7, part_max_bytes=8_000)

    # 130 records over 4 statuses, 7 a page: at least ceil(n_status / 7) pages each.
    assert result.query.pages >= sum(math.ceil(n / 7) for n in result.query.by_status.values()) >= 19
    assert result.deleted == 130 and table_items(aws, settings) == {}
    assert result.delete_calls == math.ceil(130 / 100)  # conditional deletes, 100 a TransactWriteItems
    manifest = read_manifest_json(aws, settings)
    assert len(manifest["parts"]) == len(result.parts_written) >= 3
    assert sum(p["records"] for p in manifest["parts"]) == manifest["record_count"] == 130
    ids = [line["job_id"] for p in manifest["parts"] for line in archived_lines(aws, settings, p["key"])]
    assert sorted(ids) == sorted(j["job_id"]["S"] for j in jobs)  # each exactly once


def test_rerun_of_an_archived_day_is_harmless(aws, settings):
    put_jobs(aws, settings, day_jobs("again", 12))
    archive(aws, settings)
    keys, manifest = s3_keys(aws, settings), read_manifest_json(aws, settings)

    again = archive(aws, settings, run_id="run-2")

    assert again.parts_verified == 1 and again.found == 0 and again.deleted == 0 and again.parts_written == []
    assert s3_keys(aws, settings) == keys and read_manifest_json(aws, settings) == manifest


def test_late_records_for_an_archived_day_go_into_a_new_part(aws, settings):
    first = day_jobs("early", 6)
    put_jobs(aws, settings, first)
    archive(aws, settings)
    late = [job("late-1", "completed", f"{DAY}T22:00:00Z"), job("late-2", "interrupted", f"{DAY}T23:30:00Z")]
    put_jobs(aws, settings, late)

    result = archive(aws, settings, run_id="run-2")

    assert result.newly_archived == 2 and result.already_archived == 0 and result.deleted == 2
    manifest = read_manifest_json(aws, settings)
    assert [p["key"] for p in manifest["parts"]] == [PREFIX + "part-00000.jsonl.gz", PREFIX + "part-00001.jsonl.gz"]
    assert manifest["record_count"] == 8 and manifest["run_ids"] == ["run-1", "run-2"]
    assert {line["job_id"] for line in archived_lines(aws, settings, PREFIX + "part-00001.jsonl.gz")} == {"late-1", "late-2"}
    assert table_items(aws, settings) == {}
    assert restore(aws, settings).restored == 8


def _crashing_clients(when):
    """A fresh AwsClients whose calls raise when ``when(operation, params)`` says so (botocore events, real client)."""

    def before_call(model, params, **kwargs):
        if when(model.name, params):
            raise ConnectionError(f"injected crash before {model.name}")

    return hooked_clients("before-call", before_call, services=("dynamodb", "s3"))


def _is_manifest_put(op, params):
    return op == "PutObject" and params["url_path"].endswith("_manifest.json")


def _every_delete_call(op, params):
    return op == "TransactWriteItems"


def _second_delete_call():
    seen = []

    def when(op, params):
        if op == "TransactWriteItems":
            seen.append(1)
            return len(seen) >= 2
        return False

    return when


@pytest.mark.parametrize(
    "crash_point", ["after the parts, before the manifest", "after the archive, before the deletes", "midway through the deletes"]
)
def test_a_crash_loses_nothing_and_the_next_run_finishes(aws, settings, crash_point):
    jobs = day_jobs("crash", 130)  # more than one delete call's 100
    put_jobs(aws, settings, jobs)
    when = {"after the parts, before the manifest": _is_manifest_put,
            "after the archive, before the deletes": _every_delete_call,
            "midway through the deletes": _second_delete_call()}[crash_point]

    with pytest.raises(ConnectionError, match="injected crash"):
        archive(_crashing_clients(when), settings, part_max_bytes=12_000)

    # Every record is in the table or in a part in S3 (or both).
    in_table = set(table_items(aws, settings))
    parts = [k for k in s3_keys(aws, settings) if k.endswith(".jsonl.gz")]
    in_parts = [line["job_id"] for key in parts for line in archived_lines(aws, settings, key)]
    assert len(in_parts) == len(set(in_parts)) == 130
    assert in_table | set(in_parts) == {j["job_id"]["S"] for j in jobs}
    if crash_point == "midway through the deletes":
        assert len(in_table) == 130 - 100
    else:
        assert len(in_table) == 130

    again = archive(aws, settings, run_id="run-2")

    assert again.newly_archived == 0 and again.parts_written == []  # nothing written twice
    assert again.already_archived == again.deleted == len(in_table)
    if crash_point == "after the parts, before the manifest":
        assert again.parts_adopted == parts
    assert table_items(aws, settings) == {}
    manifest = read_manifest_json(aws, settings)
    assert manifest["record_count"] == 130 and [p["key"] for p in manifest["parts"]] == parts
    restore(aws, settings)
    assert table_items(aws, settings) == {j["job_id"]["S"]: j for j in jobs}


def _answering_clients(answers):
    """A fresh AwsClients whose TransactWriteItems calls get ``answers`` (fake error responses) first, then moto."""
    from types import SimpleNamespace

    sent = []

    def before_call(model, params, **kwargs):
        items = json.loads(params["body"])["TransactItems"]  # the serialised request
        sent.append(len(items))
        if answers:
            # A before-call handler's answer stands in for the HTTP round trip (botocore's own retries skipped).
            return SimpleNamespace(status_code=400, headers={}), answers.pop(0)(items)
        return None

    return hooked_clients("before-call.dynamodb.TransactWriteItems", before_call), sent


def _cancelled(code_of):
    def answer(items):
        reasons = [{"Code": code_of(n), "Message": "injected"} if code_of(n) != "None" else {"Code": "None"}
                   for n in range(len(items))]
        return {"Error": {"Code": "TransactionCanceledException", "Message": "injected"}, "CancellationReasons": reasons}
    return answer


def _throttled(items):
    return {"Error": {"Code": "ThrottlingException", "Message": "injected"}}


def test_conflicts_and_throttling_are_retried_until_deleted(aws, settings, monkeypatch):
    monkeypatch.setattr("pipelines.common.aws.backoff_sleep", lambda attempt: None)
    put_jobs(aws, settings, day_jobs("slow", 150))
    answers = [
        _throttled,  # the whole call throttled
        _cancelled(lambda n: "TransactionConflict" if n == 3 else "None"),  # another transaction holds one item
        _cancelled(lambda n: "ThrottlingError" if n % 2 else "None"),
    ]
    flaky, sent = _answering_clients(answers)

    result = archive(flaky, settings)

    assert result.deleted == 150 and table_items(aws, settings) == {}
    assert result.changed_since_archive == 0 and result.gone_before_delete == 0
    assert result.delete_calls == len(sent) == 2 + 3  # two batches of 100 and 50, three retried
    assert sent[:4] == [100, 100, 100, 100]  # a retry resends the whole batch: nothing dropped


def test_a_cancellation_without_reasons_stops_before_guessing(aws, settings):
    put_jobs(aws, settings, day_jobs("odd", 5))
    flaky, _ = _answering_clients([lambda items: {"Error": {"Code": "TransactionCanceledException", "Message": "?"}}])
    with pytest.raises(RuntimeError, match="0 reason"):
        archive(flaky, settings)
    assert len(table_items(aws, settings)) == 5


def test_archive_then_restore_gives_back_exactly_the_original_records(aws, settings):
    odd = [
        job("odd-1", "completed", f"{DAY}T01:00:00Z", note={"S": 'quotes " and \\ and\nnewline, ünïcødé ✓'},
            ratio={"N": "0.333333333333333333333333333333333333"}, big={"N": "123456789012345678901234567890"},
            negative={"N": "-42.5"}, flag={"BOOL": True}, nothing={"NULL": True},
            labels={"L": [{"S": "gpu"}, {"N": "2"}, {"BOOL": False}, {"M": {"k": {"S": "v"}}}]},
            meta={"M": {"attempt": {"N": "3"}, "tags": {"M": {"team": {"S": "ci"}}}, "empty": {"M": {}}}}),
        job("odd-2", "failed", f"{DAY}T02:00:00Z", exit_code={"N": "137"}, empty_list={"L": []}, blank={"S": ""}),
    ]
    originals = day_jobs("rt", 40) + odd
    unarchivable = job("set-1", "completed", f"{DAY}T03:00:00Z", tags={"SS": ["a", "b"]})
    put_jobs(aws, settings, [*originals, unarchivable])
    before = table_items(aws, settings)

    result = archive(aws, settings, part_max_bytes=5_000)

    assert result.deleted == 42 and result.kept == 1 and result.kept_examples[0][0] == "set-1"
    assert "SS" in result.kept_examples[0][1]
    assert set(table_items(aws, settings)) == {"set-1"}  # kept, not lost

    restored = restore(aws, settings)

    assert restored.restored == 42 and restored.parts_verified == len(result.parts_written) > 1
    assert table_items(aws, settings) == before


def test_restoring_twice_is_harmless_and_never_clobbers_a_newer_record(aws, settings):
    jobs = day_jobs("twice", 10)
    put_jobs(aws, settings, jobs)
    archive(aws, settings)
    assert restore(aws, settings).restored == 10
    changed = dict(jobs[0], exit_code={"N": "99"})
    put_jobs(aws, settings, [changed])

    again = restore(aws, settings)

    assert (again.restored, again.already_present, again.conflicts) == (0, 9, 1)
    assert again.conflict_examples == ["twice-0"]
    assert table_items(aws, settings)["twice-0"] == changed
    assert restore(aws, settings, overwrite=True).restored == 1
    assert table_items(aws, settings)["twice-0"] == jobs[0]


def test_dry_run_reports_and_touches_nothing(aws, settings):
    put_jobs(aws, settings, day_jobs("dry", 9))
    result = archive(aws, settings, dry_run=True)
    assert (result.found, result.newly_archived, result.to_delete, result.deleted) == (9, 9, 9, 0)
    assert s3_keys(aws, settings) == [] and len(table_items(aws, settings)) == 9


def test_a_damaged_archive_stops_the_run_before_any_delete(aws, settings):
    put_jobs(aws, settings, day_jobs("dmg", 8))
    archive(aws, settings)
    restore(aws, settings)  # the records are back in the table, and in the archive
    key = PREFIX + "part-00000.jsonl.gz"
    aws.s3.put_object(Bucket=settings.archive_bucket, Key=key, Body=gzip.compress(b'{"job_id": "x"}\n'))

    with pytest.raises(ArchiveVerificationError, match="part-00000"):
        archive(aws, settings, run_id="run-2")
    with pytest.raises(ArchiveVerificationError, match="part-00000"):
        restore(aws, settings)
    assert len(table_items(aws, settings)) == 8


def test_too_many_deletes_fail_after_the_archive_is_safe(aws, settings):
    from pipelines.common.safety import BlastRadiusExceeded

    put_jobs(aws, settings, day_jobs("big", 30))
    with pytest.raises(BlastRadiusExceeded, match="30"):
        archive(aws, settings, max_deletes=20)
    assert len(table_items(aws, settings)) == 30 and read_manifest_json(aws, settings)["record_count"] == 30
    assert archive(aws, settings, run_id="run-2", max_deletes=30).deleted == 30


# ---- a record that changes after its archive copy is written -----------------------------------

def _racing_clients(aws, settings, mutate):
    """A fresh AwsClients that runs ``mutate(admin)`` once, just before its first TransactWriteItems: the race."""
    done = []

    def before_call(**kwargs):
        if not done:
            done.append(1)
            mutate(aws)

    return hooked_clients("before-call.dynamodb.TransactWriteItems", before_call)


def test_a_record_changed_after_its_archive_copy_is_kept_and_the_next_run_archives_its_new_version(aws, settings):
    jobs = day_jobs("chg", 30)
    put_jobs(aws, settings, jobs)
    by_id = {j["job_id"]["S"]: j for j in jobs}
    changed = {
        "chg-1": dict(by_id["chg-1"], status={"S": "running"}),  # set back to running
        "chg-2": dict(by_id["chg-2"], exit_code={"N": "137"}),  # corrected
        "chg-3": dict(by_id["chg-3"], interrupted_by={"S": "stuck_jobs_sweep"}),  # an attribute added
        "chg-4": {k: v for k, v in by_id["chg-4"].items() if k != "duration_seconds"},  # one removed
    }

    def mutate(admin):
        put_jobs(admin, settings, list(changed.values()))
        admin.dynamodb.delete_item(TableName=settings.jobs_table, Key={"job_id": {"S": "chg-5"}})  # someone else

    result = archive(_racing_clients(aws, settings, mutate), settings)

    assert (result.deleted, result.changed_since_archive, result.gone_before_delete) == (25, 4, 1)
    assert table_items(aws, settings) == changed  # every new version kept, exactly
    whats = dict(result.changed_examples)
    assert set(whats) == set(changed)
    assert whats["chg-1"] == "status 'failed' -> 'running'"
    assert "exit_code" in whats["chg-2"] and "interrupted_by added" in whats["chg-3"]
    assert "duration_seconds removed" in whats["chg-4"]

    again = archive(aws, settings, run_id="run-2")

    # The three still finished that day are archived in their new versions, in a new part.
    assert (again.newly_archived, again.already_archived, again.deleted, again.changed_since_archive) == (3, 0, 3, 0)
    assert table_items(aws, settings) == {"chg-1": changed["chg-1"]}  # running: not archival's business
    manifest = read_manifest_json(aws, settings)
    assert [p["key"] for p in manifest["parts"]] == [PREFIX + "part-00000.jsonl.gz", PREFIX + "part-00001.jsonl.gz"]
    assert manifest["record_count"] == 33 and manifest["run_ids"] == ["run-1", "run-2"]
    first = archived_lines(aws, settings, PREFIX + "part-00000.jsonl.gz")
    assert sorted(line["job_id"] for line in first) == sorted(by_id)  # the old archive is untouched
    new = {line["job_id"]: line for line in archived_lines(aws, settings, PREFIX + "part-00001.jsonl.gz")}
    assert new["chg-2"]["exit_code"] == 137 and new["chg-3"]["interrupted_by"] == "stuck_jobs_sweep"
    assert "duration_seconds" not in new["chg-4"]

    third = archive(aws, settings, run_id="run-3")  # settled: verifies both parts, writes nothing
    assert (third.parts_verified, third.newly_archived, third.deleted, third.parts_written) == (2, 0, 0, [])

    restored = restore(aws, settings)

    # Each job comes back in its latest archived version; the running record is not clobbered.
    assert (restored.restored, restored.superseded, restored.conflicts) == (29, 3, 1)
    expected = {**by_id, **changed}
    assert table_items(aws, settings) == expected


def test_a_record_changed_and_changed_back_is_archived_again_so_the_latest_line_is_what_was_deleted(aws, settings):
    original = job("flip-1", "completed", f"{DAY}T05:00:00Z")
    put_jobs(aws, settings, [original])
    corrected = dict(original, exit_code={"N": "3"})
    archive(_racing_clients(aws, settings, lambda admin: put_jobs(admin, settings, [corrected])), settings)
    archive(_racing_clients(aws, settings, lambda admin: put_jobs(admin, settings, [original])), settings, run_id="run-2")
    assert table_items(aws, settings) == {"flip-1": original}  # changed back before the second delete: kept

    last = archive(aws, settings, run_id="run-3")

    # The original's line is in part 0, but the archive's latest (part 1) is the corrected one:
    # the original is written again rather than deleted on the strength of an older line.
    assert (last.newly_archived, last.deleted) == (1, 1)
    assert restore(aws, settings).restored == 1 and table_items(aws, settings) == {"flip-1": original}
