"""Archival's record rules without AWS: a record <-> one archive line, time order, part and manifest helpers.

Table-driven, one row a case, and hypothesis properties for the invariants: every record the
archive can hold round-trips exactly (DynamoDB's digits included), and equal records always
give byte-identical lines.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date

import pytest
from hypothesis import given, settings, strategies as st

from pipelines.archival.manifest import FORMAT, Manifest, manifest_key
from pipelines.archival.parts import PartInfo, PartWriter, day_prefix, part_key, part_number, s3_uri
from pipelines.archival.records import (
    UnarchivableRecord,
    completed_at_of,
    decode_record,
    earliest,
    encode_record,
    instant_key,
    job_id_of,
    latest,
)

RECORD = {"job_id": {"S": "8812"}, "status": {"S": "completed"}, "exit_code": {"N": "0"},
          "duration_seconds": {"N": "314.25"}, "completed_at": {"S": "2026-11-22T10:05:14Z"}}


# ---- a record as one line ----------------------------------------------------------------------

@pytest.mark.parametrize(("item", "line"), [
    (RECORD, '{"completed_at":"2026-11-22T10:05:14Z","duration_seconds":314.25,"exit_code":0,'
             '"job_id":"8812","status":"completed"}'),  # keys sorted, numbers verbatim
    ({"n": {"N": "1E+13"}}, '{"n":1E+13}'),
    ({"n": {"N": "-0.000001"}}, '{"n":-0.000001}'),
    ({"n": {"N": "12345678901234567890123456789012345678"}}, '{"n":12345678901234567890123456789012345678}'),
    ({"b": {"BOOL": True}, "f": {"BOOL": False}, "z": {"NULL": True}}, '{"b":true,"f":false,"z":null}'),
    ({"m": {"M": {"y": {"S": "1"}, "x": {"L": [{"N": "1"}, {"S": "a"}]}}}}, '{"m":{"x":[1,"a"],"y":"1"}}'),
    ({"s": {"S": "line\nbreak \u202e \U0001f4a5"}}, '{"s":"line\\nbreak \\u202e \\ud83d\\udca5"}'),
    ({"s": {"S": ""}}, '{"s":""}'),
    ({}, "{}"),
])
def test_encode_record(item, line):
    assert encode_record(item) == line
    assert decode_record(line) == item


@pytest.mark.parametrize(("item", "named"), [
    ({"tags": {"SS": ["a", "b"]}}, "attribute tags has DynamoDB type SS"),
    ({"n": {"NS": ["1"]}}, "type NS"),
    ({"blob": {"B": b"\x00"}}, "type B"),
    ({"m": {"M": {"deep": {"BS": [b"x"]}}}}, "attribute m.deep has DynamoDB type BS"),
    ({"l": {"L": [{"S": "a"}, {"B": b"x"}]}}, "attribute l[1]"),
    ({"n": {"N": "NaN"}}, "holds number 'NaN', which is not a JSON number"),
    ({"n": {"N": "0x10"}}, "not a JSON number"),
    ({"n": {"N": "01"}}, "not a JSON number"),
    ({"n": {"N": "1."}}, "not a JSON number"),
    ({"n": {"N": 5}}, "holds number 5"),
    ({"bad": "plain"}, "attribute bad is not a DynamoDB typed value"),
    ({"bad": {"S": "a", "N": "1"}}, "is not a DynamoDB typed value"),
])
def test_records_json_cannot_hold_exactly_are_refused_naming_the_attribute(item, named):
    with pytest.raises(UnarchivableRecord) as refused:
        encode_record(item)
    assert named in str(refused.value)


@pytest.mark.parametrize(("line", "problem"), [
    ("[1, 2]", "must be a JSON object"),
    ('"text"', "must be a JSON object"),
    ('{"n": NaN}', "NaN is not valid"),
    ('{"n": Infinity}', "Infinity is not valid"),
    ('{"n": 1', "Expecting"),
])
def test_decode_refuses_what_the_archive_never_writes(line, problem):
    with pytest.raises(ValueError, match=problem):
        decode_record(line)


NUMBERS = st.one_of(st.integers(-(10**38), 10**38).map(str), st.decimals(allow_nan=False, allow_infinity=False,
                                                                         places=6).map(lambda d: format(d, "f")))
VALUES = st.recursive(
    st.one_of(st.text(max_size=12).map(lambda s: {"S": s}), NUMBERS.map(lambda n: {"N": n}),
              st.booleans().map(lambda b: {"BOOL": b}), st.just({"NULL": True})),
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda values: {"L": values}),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3).map(lambda m: {"M": m})),
    max_leaves=10,
)
ITEMS = st.dictionaries(st.text(max_size=10), VALUES, max_size=6)


@settings(max_examples=300, deadline=None)
@given(ITEMS)
def test_every_archivable_record_round_trips_exactly(item):
    line = encode_record(item)
    assert "\n" not in line  # one record, one line
    assert decode_record(line) == item
    assert encode_record(decode_record(line)) == line
    json.loads(line)  # plain JSON any reader takes


@settings(max_examples=100, deadline=None)
@given(ITEMS)
def test_equal_records_give_identical_lines_whatever_their_key_order(item):
    assert encode_record(dict(reversed(list(item.items())))) == encode_record(item)


@pytest.mark.parametrize(("item", "expected"), [
    ({"job_id": {"S": "8812"}}, "8812"),
    ({"job_id": {"S": "a b"}}, "a b"),  # the key as DynamoDB holds it
])
def test_job_id_of(item, expected):
    assert job_id_of(item) == expected


@pytest.mark.parametrize("item", [{}, {"job_id": {"S": ""}}, {"job_id": {"N": "8812"}}, {"job_id": "8812"},
                                  {"job_id": {"S": None}}])
def test_a_record_without_a_string_job_id_is_unarchivable(item):
    with pytest.raises(UnarchivableRecord, match="no string job_id"):
        job_id_of(item)


@pytest.mark.parametrize(("item", "expected"), [
    ({"completed_at": {"S": "2026-11-22T10:05:14Z"}}, "2026-11-22T10:05:14Z"),
    ({"completed_at": {"N": "1"}}, ""), ({"completed_at": "x"}, ""), ({}, ""),
])
def test_completed_at_of(item, expected):
    assert completed_at_of(item) == expected


# ---- time order ------------------------------------------------------------------------------

@pytest.mark.parametrize(("earlier", "later"), [
    ("2026-11-22T23:59:59Z", "2026-11-22T23:59:59.5Z"),  # plain string order gets this one wrong
    ("2026-11-22T23:59:59.999999Z", "2026-11-23T00:00:00Z"),
    ("2026-11-22T10:00:00+01:00", "2026-11-22T09:30:00Z"),  # offsets compared as instants
    ("2026-11-22T10:00:00", "2026-11-22T10:00:01Z"),  # naive: UTC
    ("2026-11-22T10:00:00Z", "garbage"),  # unparseable sorts after every real instant
    ("aaa", "bbb"),  # ...and among themselves by text
])
def test_instant_key_orders_by_instant(earlier, later):
    assert instant_key(earlier) <= instant_key(later)
    assert earliest(later, earlier) == (earlier if instant_key(earlier) < instant_key(later) else later)


@pytest.mark.parametrize(("timestamps", "first", "last"), [
    ((), "", ""),
    (("", ""), "", ""),  # empty values are absent
    (("2026-11-22T10:00:00Z",), "2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"),
    (("", "2026-11-22T10:00:00.5Z", "2026-11-22T10:00:00Z", "2026-11-21T23:00:00Z"),
     "2026-11-21T23:00:00Z", "2026-11-22T10:00:00.5Z"),
])
def test_earliest_and_latest(timestamps, first, last):
    assert (earliest(*timestamps), latest(*timestamps)) == (first, last)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.datetimes(timezones=st.just(None)).map(lambda d: d.isoformat() + "Z"), min_size=1, max_size=6))
def test_earliest_and_latest_agree_with_sorting_the_instants(timestamps):
    ordered = sorted(timestamps, key=instant_key)
    assert instant_key(earliest(*timestamps)) == instant_key(ordered[0])
    assert instant_key(latest(*timestamps)) == instant_key(ordered[-1])


# ---- part and manifest helpers ---------------------------------------------------------------

DAY = date(2026, 11, 10)


@pytest.mark.parametrize(("number", "key"), [
    (0, "jobs/completed_date=2026-11-10/part-00000.jsonl.gz"),
    (42, "jobs/completed_date=2026-11-10/part-00042.jsonl.gz"),
    (123456, "jobs/completed_date=2026-11-10/part-123456.jsonl.gz"),  # more than 5 digits when a day is huge
])
def test_part_key_and_number_are_inverse(number, key):
    assert part_key(DAY, number) == key
    assert part_number(key) == number
    assert key.startswith(day_prefix(DAY))


@pytest.mark.parametrize("key", [
    "jobs/completed_date=2026-11-10/_manifest.json",
    "jobs/completed_date=2026-11-10/part-0001.jsonl.gz",  # fewer than 5 digits
    "jobs/completed_date=2026-11-10/part-00001.jsonl.gz.tmp",
    "jobs/completed_date=2026-11-10/part-00001.jsonl",
    "jobs/completed_date=2026-11-10/xpart-00001.jsonl.gz",  # another writer's object under the prefix
    "jobs/completed_date=2026-11-10/part-\u0660\u0660\u0660\u0660\u0661.jsonl.gz",  # non-ASCII digits
])
def test_part_number_of_other_keys_is_none(key):
    assert part_number(key) is None


def test_layout_keys():
    assert day_prefix(DAY) == "jobs/completed_date=2026-11-10/"
    assert manifest_key(DAY) == "jobs/completed_date=2026-11-10/_manifest.json"
    assert s3_uri("runs-fleet-archive", manifest_key(DAY)) == \
        "s3://runs-fleet-archive/jobs/completed_date=2026-11-10/_manifest.json"


def part(number, records, min_at, max_at, run_id="run-1", size=100):
    return PartInfo(key=part_key(DAY, number), records=records, bytes=size, uncompressed_bytes=size * 3,
                    sha256="ab" * 32, min_completed_at=min_at, max_completed_at=max_at, run_id=run_id,
                    written_at="2026-11-17T02:00:00Z")


def test_part_info_round_trips_through_json():
    info = part(3, 10, "2026-11-10T00:00:01Z", "2026-11-10T23:59:59Z")
    assert PartInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    assert PartInfo.from_json({**info.to_json(), "future_field": 1}) == info  # newer manifests still read


@pytest.mark.parametrize(("parts", "expected"), [
    ([], {"record_count": 0, "bytes": 0, "min_completed_at": None, "max_completed_at": None,
          "run_ids": ["run-9"]}),
    ([part(0, 2, "2026-11-10T05:00:00Z", "2026-11-10T06:00:00Z"),
      part(1, 3, "2026-11-10T01:00:00.5Z", "2026-11-10T23:00:00Z", run_id="run-2", size=50)],
     {"record_count": 5, "bytes": 150, "min_completed_at": "2026-11-10T01:00:00.5Z",
      "max_completed_at": "2026-11-10T23:00:00Z", "run_ids": ["run-1", "run-2", "run-9"]}),
    # an empty part (a crash left it) counts for bytes and run ids, never for the times
    ([part(0, 0, "", ""), part(1, 1, "2026-11-10T12:00:00Z", "2026-11-10T12:00:00Z")],
     {"record_count": 1, "min_completed_at": "2026-11-10T12:00:00Z", "max_completed_at": "2026-11-10T12:00:00Z"}),
])
def test_manifest_json(parts, expected):
    manifest = Manifest(day=DAY, parts=parts)
    body = manifest.to_json("run-9", "2026-11-17T02:00:00Z")
    assert {name: body[name] for name in expected} == expected
    assert body["format"] == FORMAT and body["completed_date"] == "2026-11-10" and body["run_id"] == "run-9"
    assert [PartInfo.from_json(p) for p in body["parts"]] == parts
    assert (manifest.records, manifest.bytes) == (body["record_count"], body["bytes"])


def test_part_writer_counts_hashes_and_bounds_what_it_wrote():
    writer = PartWriter()
    try:
        lines = [encode_record({**RECORD, "completed_at": {"S": at}}) for at in
                 ("2026-11-10T10:00:00Z", "2026-11-10T09:59:59.5Z", "2026-11-10T23:00:00Z")]
        for line in lines:
            writer.add(line, decode_record(line)["completed_at"]["S"])
        digest, size = writer.finish()
        stored = writer.file.read()
    finally:
        writer.close()
    assert (writer.records, size, digest) == (3, len(stored), hashlib.sha256(stored).digest())
    assert gzip.decompress(stored).decode().splitlines() == lines
    assert writer.uncompressed_bytes == len(gzip.decompress(stored))
    assert (writer.min_completed_at, writer.max_completed_at) == ("2026-11-10T09:59:59.5Z", "2026-11-10T23:00:00Z")


def test_equal_records_give_byte_identical_parts():
    def build() -> bytes:
        writer = PartWriter()
        try:
            writer.add(encode_record(RECORD), "2026-11-22T10:05:14Z")
            writer.finish()
            return writer.file.read()
        finally:
            writer.close()
    assert build() == build()  # gzip mtime 0: a re-run recognises its own part by checksum
