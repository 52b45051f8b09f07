"""Tiny fleets for the fault scenarios, and the whole world's end state read back in comparable form.

Instance ids are random, so every instance carries a ``Name`` tag (its label) and every id
in the end state is replaced by its label: two runs on identical fleets compare equal.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from tests.faults.conftest import queue_bodies
from sandbox import backdate
from tests import builders
from tests.builders import put_params, put_pool  # noqa: F401 - the scenarios build with them via world

DAY = date(2026, 11, 10)


# ---- building -----------------------------------------------------------------------------------

def launch(aws, label: str, age_minutes: float, *, pool: str | None = "small", job_id: str | None = None,
           protect: bool = False) -> str:
    """One managed instance whose Name tag is its label (so end states compare across fleets)."""
    return builders.launch(aws, age_minutes, name=label, pool=pool, job_id=job_id, protect=protect)


def put_job(aws, settings, job_id: str, status: str | None, *, runner: str = "-", completed_at: str | None = None):
    item: dict[str, Any] = {"job_id": {"S": job_id}, "pool": {"S": "small"}, "instance_id": {"S": runner},
                            "created_at": {"S": "2026-11-09T23:00:00Z"}, "started_at": {"S": "2026-11-09T23:01:00Z"}}
    if status:
        item["status"] = {"S": status}
    if completed_at:
        item["completed_at"] = {"S": completed_at}
        item["exit_code"] = {"N": "0" if status == "completed" else "1"}
        item["duration_seconds"] = {"N": "314"}
    aws.dynamodb.put_item(TableName=settings.jobs_table, Item=item)
    return item


def queue_set(aws, settings, runner_id: str, age_hours: float, *, messages: int = 0, idle_hours: float | None = None):
    """A runner's three queues (``messages`` bodies in its output queue) and its tracking record."""
    names = settings.runner_queue_names(runner_id)
    urls = {kind: aws.sqs.create_queue(QueueName=name)["QueueUrl"] for kind, name in names.items()}
    for n in range(messages):
        aws.sqs.send_message(QueueUrl=urls["output"], MessageBody=json.dumps({"runner": runner_id, "line": n}))
    backdate.backdate_queues(names.values(), datetime.now(timezone.utc) - timedelta(hours=age_hours),
                             aws.sqs.meta.region_name)
    last = datetime.now(timezone.utc) - timedelta(hours=idle_hours if idle_hours is not None else age_hours)
    millis = str(int(last.timestamp() * 1000))
    aws.dynamodb.put_item(TableName=settings.queue_tracking_table, Item={
        "runner_id": {"S": runner_id}, "input_queue_url": {"S": urls["input"]},
        "output_queue_url": {"S": urls["output"]},
        "dlq_url": {"S": urls["dlq"]}, "created_at": {"N": millis}, "last_activity": {"N": millis},
    })
    return urls


def termination_url(aws, settings) -> str:
    return aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]


def termination_dlq_name(settings) -> str:
    return settings.termination_queue.replace(".fifo", "-dlq.fifo")


def send_fifo(aws, url: str, body: dict[str, Any], group: str) -> None:
    aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body, sort_keys=True), MessageGroupId=group,
                         MessageDeduplicationId=uuid.uuid4().hex)


# ---- reading the end state --------------------------------------------------------------------------

def _labels(aws) -> dict[str, str]:
    labels = {}
    for page in aws.ec2.get_paginator("describe_instances").paginate():
        for r in page["Reservations"]:
            for i in r["Instances"]:
                name = {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Name")
                if name:
                    labels[i["InstanceId"]] = name
    return labels


def _norm(text: str, labels: dict[str, str]) -> str:
    for instance_id, label in labels.items():
        text = text.replace(instance_id, f"<{label}>")
    return text


def _s3_objects(aws, settings, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=settings.archive_bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = aws.s3.get_object(Bucket=settings.archive_bucket, Key=o["Key"])["Body"].read()
    return out


def job_archive(aws, settings) -> dict[str, Any]:
    """Per day: the manifest's count, whether every part matches its SHA-256 and count, and the job records in it."""
    objects = _s3_objects(aws, settings, "jobs/")
    days: dict[str, Any] = {}
    for key, body in objects.items():
        if not key.endswith("_manifest.json"):
            continue
        manifest = json.loads(body)
        records, verified = [], True
        latest_part: dict[str, str] = {}
        for part in manifest["parts"]:
            data = objects.get(part["key"])
            if data is None or hashlib.sha256(data).hexdigest() != part["sha256"]:
                verified = False
                continue
            lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
            verified &= len(lines) == part["records"]
            records += lines
            for line in lines:  # where each job's latest version is, as the index must say
                latest_part[line["job_id"]] = part["key"]
        verified &= len(records) == manifest["record_count"]
        days[manifest["completed_date"]] = {
            "record_count": manifest["record_count"], "verified": verified,
            "job_ids": sorted(r["job_id"] for r in records), "records": {r["job_id"]: r for r in records},
            "latest_part": latest_part,
        }
    return days


def job_index(aws, settings) -> dict[str, list[tuple[str, str]]]:
    """The job index read back: job id -> [(day, part key)], from every index object."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key, body in sorted(_s3_objects(aws, settings, "index/jobs/").items()):
        for line in gzip.decompress(body).decode().splitlines():
            entry = json.loads(line)
            part = entry["part"].removeprefix(f"s3://{settings.archive_bucket}/")
            out.setdefault(entry["job_id"], []).append((entry["completed_date"], part))
    return out


def queue_archive(aws, settings, labels) -> list[tuple[str, str]]:
    """Every archived queue message once, as (key prefix up to archived_at, body).

    A set: a re-archive after a crash would repeat a message (archived_queue_copies counts copies)."""
    out = set()
    for key, body in _s3_objects(aws, settings, "queues/").items():
        where = _norm(key.split("/archived_at=")[0], labels)
        for line in gzip.decompress(body).decode().splitlines():
            out.add((where, json.loads(line)["body"]))
    return sorted(out)


def archived_queue_copies(aws, settings) -> int:
    return sum(len(gzip.decompress(b).splitlines()) for b in _s3_objects(aws, settings, "queues/").values())


def world(aws, settings) -> dict[str, Any]:
    """Everything the destructive pieces touch, ids replaced by labels."""
    labels = _labels(aws)
    region = aws.sqs.meta.region_name
    instances = {}
    for page in aws.ec2.get_paginator("describe_instances").paginate():
        for r in page["Reservations"]:
            for i in r["Instances"]:
                state = i["State"]["Name"]
                instances[labels.get(i["InstanceId"], i["InstanceId"])] = (
                    "terminated" if state in ("shutting-down", "terminated") else state)
    pages = aws.ssm.get_paginator("get_parameters_by_path").paginate(
        Path=settings.ssm_prefix.rstrip("/") or "/", Recursive=True)
    params = sorted(_norm(p["Name"], labels) for page in pages for p in page["Parameters"])
    raw_queues = [url.rsplit("/", 1)[-1] for page in aws.sqs.get_paginator("list_queues").paginate()
                  for url in page.get("QueueUrls", [])]
    queues = sorted(_norm(q, labels) for q in raw_queues)
    runner_queue_bodies = {_norm(q, labels): sorted(queue_bodies(region, q))
                           for q in raw_queues if q.startswith(settings.runner_queue_prefix)}
    tracking = sorted(_norm(i["runner_id"]["S"], labels)
                      for p in aws.dynamodb.get_paginator("scan").paginate(TableName=settings.queue_tracking_table)
                      for i in p["Items"])
    jobs = {i["job_id"]["S"]: json.loads(_norm(json.dumps(i, sort_keys=True), labels))
            for p in aws.dynamodb.get_paginator("scan").paginate(TableName=settings.jobs_table, ConsistentRead=True)
            for i in p["Items"]}
    archive = job_archive(aws, settings)
    return {
        "instances": instances, "parameters": params, "queues": queues, "runner_queue_bodies": runner_queue_bodies,
        "tracking": tracking, "jobs": jobs,
        "job_archive": archive,
        "job_index": job_index(aws, settings),
        "queue_archive": queue_archive(aws, settings, labels),
        "termination_queue": sorted(queue_bodies(region, settings.termination_queue)),
        "termination_dlq": sorted(queue_bodies(region, termination_dlq_name(settings))),
    }
