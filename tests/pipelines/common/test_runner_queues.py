"""archive_and_delete_runner_queues: archive, verify, delete; idempotent; never loses an in-flight message."""

from __future__ import annotations

import gzip
import json

from pipelines.common.runner_queues import archive_and_delete_runner_queues


def make_queues(aws, settings, runner_id, messages=0):
    urls = {}
    for kind, name in settings.runner_queue_names(runner_id).items():
        urls[kind] = aws.sqs.create_queue(QueueName=name)["QueueUrl"]
    for n in range(messages):
        aws.sqs.send_message(QueueUrl=urls["output"], MessageBody=json.dumps({"n": n}))
    aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={"runner_id": {"S": runner_id}})
    return urls


def cleanup(aws, settings, runner_id):
    return archive_and_delete_runner_queues(
        aws.sqs, aws.s3, aws.dynamodb, runner_id=runner_id, queue_names=settings.runner_queue_names(runner_id),
        bucket=settings.archive_bucket, tracking_table=settings.queue_tracking_table,
    )


def test_archives_messages_then_deletes_queues_and_tracking(aws, settings):
    make_queues(aws, settings, "i-0aaa", messages=23)
    result = cleanup(aws, settings, "i-0aaa")
    assert result.messages_archived == 23
    assert len(result.queues_deleted) == 3 and result.tracking_deleted
    assert aws.sqs.list_queues(QueueNamePrefix=settings.runner_queue_prefix).get("QueueUrls", []) == []
    assert "Item" not in aws.dynamodb.get_item(TableName=settings.queue_tracking_table, Key={"runner_id": {"S": "i-0aaa"}})
    (key,) = result.archive_keys
    assert key.startswith(f"s3://{settings.archive_bucket}/queues/runner_id=i-0aaa/queue=output/archived_at=")
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=key.split("/", 3)[3])["Body"].read()
    records = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
    assert sorted(json.loads(r["body"])["n"] for r in records) == list(range(23))
    assert all(r["message_id"] and r["sent_timestamp"] for r in records)


def test_rerun_is_harmless(aws, settings):
    make_queues(aws, settings, "i-0bbb", messages=2)
    cleanup(aws, settings, "i-0bbb")
    again = cleanup(aws, settings, "i-0bbb")
    assert again.messages_archived == 0 and again.queues_deleted == []
    assert len(again.queues_missing) == 3 and again.tracking_deleted


def test_queue_with_messages_in_flight_is_kept(aws, settings):
    urls = make_queues(aws, settings, "i-0ccc", messages=1)
    aws.sqs.receive_message(QueueUrl=urls["output"], VisibilityTimeout=600)  # a live consumer holds it
    result = cleanup(aws, settings, "i-0ccc")
    assert list(result.queues_kept) == [settings.runner_queue_names("i-0ccc")["output"]]
    assert not result.tracking_deleted
    assert aws.sqs.get_queue_url(QueueName=settings.runner_queue_names("i-0ccc")["output"])
    assert "Item" in aws.dynamodb.get_item(TableName=settings.queue_tracking_table, Key={"runner_id": {"S": "i-0ccc"}})


def test_many_runners_batched_with_tracking_urls(aws, settings):
    from pipelines.common.runner_queues import archive_and_delete_many

    make_queues(aws, settings, "i-0a01", messages=4)  # tracked, holds messages
    for name in settings.runner_queue_names("i-0a02").values():  # queues but no tracking record
        aws.sqs.create_queue(QueueName=name)
    urls = make_queues(aws, settings, "i-0a03")
    delayed = aws.sqs.create_queue(QueueName="someone-elses-queue")["QueueUrl"]
    # A tracking record whose URL names another queue must never send the delete there.
    aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={
        "runner_id": {"S": "i-0a03"}, "input_queue_url": {"S": delayed}, "output_queue_url": {"S": urls["output"]},
        "dlq_url": {"S": urls["dlq"]}})
    held = make_queues(aws, settings, "i-0a04")
    aws.sqs.send_message(QueueUrl=held["input"], MessageBody="later", DelaySeconds=60)  # cannot be read yet

    results = archive_and_delete_many(
        aws.sqs, aws.s3, aws.dynamodb, runner_ids=["i-0a01", "i-0a02", "i-0a03", "i-0a04", "i-0a01"],
        queue_names_of=settings.runner_queue_names, bucket=settings.archive_bucket,
        tracking_table=settings.queue_tracking_table,
    )

    assert list(results) == ["i-0a01", "i-0a02", "i-0a03", "i-0a04"]
    assert results["i-0a01"].messages_archived == 4 and results["i-0a01"].tracking_deleted
    assert len(results["i-0a02"].queues_deleted) == 3 and results["i-0a02"].tracking_deleted
    assert len(results["i-0a03"].queues_deleted) == 3
    assert aws.sqs.get_queue_url(QueueName="someone-elses-queue")["QueueUrl"] == delayed
    kept = results["i-0a04"]
    assert list(kept.queues_kept) == [settings.runner_queue_names("i-0a04")["input"]]
    assert "delayed" in kept.queues_kept[settings.runner_queue_names("i-0a04")["input"]]
    assert not kept.tracking_deleted
    remaining = aws.dynamodb.scan(TableName=settings.queue_tracking_table)["Items"]
    assert [i["runner_id"]["S"] for i in remaining] == ["i-0a04"]


# ---- every kind of message attribute is archived exactly ---------------------------------------

NOT_UTF8 = bytes([0xFF, 0xFE, 0x00, 0x80, 0xC3, 0x28, 0x9F])  # invalid as UTF-8 at several points
EVERY_KIND = {
    "plain_string": {"DataType": "String", "StringValue": "ünïcødé ✓ \"quoted\"\nnewline"},
    "plain_number": {"DataType": "Number", "StringValue": "-12345.678e3"},
    "plain_binary": {"DataType": "Binary", "BinaryValue": NOT_UTF8},
    "custom_number": {"DataType": "Number.int", "StringValue": "42"},
    "custom_string": {"DataType": "String.custom", "StringValue": "x"},
    "custom_binary": {"DataType": "Binary.gif", "BinaryValue": b"GIF89a\x01\x00\x01\x00\x80\xff"},
}


def _read_archive(aws, settings, uri):
    body = aws.s3.get_object(Bucket=settings.archive_bucket, Key=uri.split("/", 3)[3])["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


def test_every_attribute_kind_is_archived_exactly_binary_as_base64(aws, settings):
    import base64

    urls = make_queues(aws, settings, "i-0bin")
    sent = {}
    for name, value in EVERY_KIND.items():  # one message per kind, then one holding them all
        response = aws.sqs.send_message(QueueUrl=urls["output"], MessageBody=f"only {name}",
                                        MessageAttributes={name: value})
        sent[response["MessageId"]] = (f"only {name}", {name: value}, response)
    response = aws.sqs.send_message(
        QueueUrl=urls["output"], MessageBody=NOT_UTF8.hex(), MessageAttributes=EVERY_KIND,
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}},
    )
    sent[response["MessageId"]] = (NOT_UTF8.hex(), EVERY_KIND, response)
    aws.sqs.send_message(QueueUrl=urls["output"], MessageBody="no attributes at all")

    result = cleanup(aws, settings, "i-0bin")

    assert result.messages_archived == len(sent) + 1 and result.tracking_deleted
    records = {r["message_id"]: r for r in _read_archive(aws, settings, result.archive_keys[0])}
    for message_id, (body, attributes, response) in sent.items():
        record = records[message_id]
        expected = {
            name: {"DataType": v["DataType"], **({"BinaryValue": base64.b64encode(v["BinaryValue"]).decode()}
                                                 if "BinaryValue" in v else {"StringValue": v["StringValue"]})}
            for name, v in attributes.items()
        }
        assert record["message_attributes"] == expected
        assert record["body"] == body
        assert record["md5_of_body"] == response["MD5OfMessageBody"]
        assert record["md5_of_message_attributes"] == response["MD5OfMessageAttributes"]
        # The system attributes ReceiveMessage returns with MessageSystemAttributeNames=All.
        assert {"SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp", "SenderId"} <= set(
            record["attributes"])
        assert record["sent_timestamp"] == record["attributes"]["SentTimestamp"] and record["sent_timestamp"].isdigit()
    assert base64.b64decode(records[response["MessageId"]]["message_attributes"]["plain_binary"]["BinaryValue"]) == NOT_UTF8
    assert records[response["MessageId"]]["attributes"]["AWSTraceHeader"] == "Root=1-5759e988-bd862e3fe1be46a994272793"
    (bare,) = [r for r in records.values() if r["body"] == "no attributes at all"]
    assert bare["message_attributes"] == {} and bare["md5_of_message_attributes"] is None


def test_a_binary_attribute_does_not_wedge_the_orphaned_queues_sweep_run_after_run(aws, settings):
    urls = make_queues(aws, settings, "i-0wedge")
    aws.sqs.send_message(QueueUrl=urls["dlq"], MessageBody="x",
                         MessageAttributes={"blob": {"DataType": "Binary", "BinaryValue": NOT_UTF8}})
    first = cleanup(aws, settings, "i-0wedge")
    assert first.complete and first.messages_archived == 1 and len(first.queues_deleted) == 3
    assert cleanup(aws, settings, "i-0wedge").queues_missing  # the next run finds nothing left to do


def test_verification_checks_the_read_back_against_what_sqs_said():
    """A record that lost an attribute, or a read-back that differs, fails verification: the queue is kept."""
    import hashlib

    import pytest

    from pipelines.common.message_archive import (
        ArchiveVerificationError, archive_record, attributes_md5, check_read_back, encode_archive,
    )

    message = {"MessageId": "m-1", "Body": "b", "MD5OfBody": hashlib.md5(b"b").hexdigest(),
               "Attributes": {"SentTimestamp": "1"}, "MessageAttributes": EVERY_KIND}
    message["MD5OfMessageAttributes"] = attributes_md5({k: archive_record(message)["message_attributes"][k] for k in EVERY_KIND})
    record = archive_record(message)
    check_read_back("s3://b/k", encode_archive([record]), [record])  # faithful: passes

    lossy = dict(record, message_attributes={k: v for k, v in record["message_attributes"].items() if k != "plain_binary"})
    with pytest.raises(ArchiveVerificationError, match="MD5OfMessageAttributes"):
        check_read_back("s3://b/k", encode_archive([lossy]), [lossy])
    altered = dict(record, body="B")
    with pytest.raises(ArchiveVerificationError, match="differs"):
        check_read_back("s3://b/k", encode_archive([altered]), [record])
    with pytest.raises(ArchiveVerificationError, match="read back 0"):
        check_read_back("s3://b/k", encode_archive([]), [record])
