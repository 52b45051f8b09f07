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
