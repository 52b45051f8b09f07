"""Drain the termination queue: receive, act, and only then delete — at least once, nothing lost.

``drain_terminations`` is the whole of ``process_terminations`` without Dagster. It
receives 10 messages a call until it holds a work batch (``batch_size``, default 100), and
for each work batch:

1. parses each message (``messages.parse_message``); an invalid one is left in the queue,
   so the queue's redrive moves it to the DLQ after 3 receives;
2. marks each agent message's job done with a conditional update (in parallel);
3. cleans up every runner of the batch: SSM parameters (DeleteParameters, 10 a call),
   queues archived and deleted (in parallel), tracking records (read 100, deleted 25 a call);
4. publishes ``JobDuration`` and ``JobSuccess`` / ``JobFailure`` in one call for every job
   whose completion has no published metrics yet (marked now, or marked by an earlier
   attempt that did not get this far), then records that on each job record;
5. deletes the messages that are fully handled, 10 per DeleteMessageBatch.

A background thread keeps the visibility of messages still being worked on extended, so a
slow batch is not delivered twice. Anything that fails leaves its message in the queue.
"""

from __future__ import annotations

import logging
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.common.aws import SQS_BATCH, Metric, chunks, put_metrics, queue_url
from pipelines.common.progress import Progress
from pipelines.termination.cleanup import RunnerCleanup, describe_error, clean_up_runners
from pipelines.termination.jobs_table import JobUpdate, mark_job_done, mark_metrics_published
from pipelines.termination.messages import Ignored, Invalid, Termination, parse_message
from resources.settings import FleetSettings

logger = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 200  # run metadata stays readable; the logs carry every failure


@dataclass(frozen=True)
class DrainOptions:
    """How much one run drains and how it holds the messages it works on."""

    max_messages: int = 1000
    wait_seconds: int = 5
    visibility_timeout: int = 120
    workers: int = 10
    batch_size: int = 100  # messages acted on together (received 10 a call)


@dataclass(frozen=True)
class MessageFailure:
    """A message left in the queue, and why (safe to log: ids only, never the body)."""

    message_id: str
    reason: str
    runner_id: str | None = None
    job_id: str | None = None
    receive_count: int | None = None


@dataclass
class DrainReport:
    """What one drain did; becomes the run's metadata."""

    received: int = 0
    processed: int = 0  # jobs newly marked done, plus ECS stops cleaned up
    already_done: int = 0
    unknown_job: int = 0
    not_running: int = 0  # the job exists but is neither running nor finished (e.g. queued)
    ignored: int = 0
    failed: int = 0
    failures: list[MessageFailure] = field(default_factory=list)
    failure_reasons: Counter[str] = field(default_factory=Counter)
    failed_by_receive: Counter[int | None] = field(default_factory=Counter)  # every failure, by its receive count
    max_receives: int | None = None  # the termination queue's maxReceiveCount, read when something failed
    messages_deleted: int = 0
    delete_failures: int = 0
    messages_archived: int = 0
    queues_deleted: int = 0
    parameters_deleted: int = 0
    metrics_published: int = 0  # data points
    jobs_metrics_published: int = 0
    metrics_caught_up: int = 0  # jobs marked by an earlier attempt whose metrics this run published
    metric_failures: int = 0
    metric_flag_failures: int = 0  # published, but not recorded on the job record (may publish once more)
    visibility_extensions: int = 0
    batches: int = 0

    def fail(self, failure: MessageFailure) -> None:
        self.failed += 1
        self.failed_by_receive[failure.receive_count] += 1
        # Group reasons by their first clause so the table stays short however many fail.
        self.failure_reasons[failure.reason.split(":", 1)[0]] += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(failure)


@dataclass
class _Message:
    message_id: str
    receipt_handle: str
    receive_count: int | None
    sent_at: datetime
    parsed: Termination | Ignored | Invalid
    job: JobUpdate | None = None
    error: str | None = None

    @property
    def ids(self) -> str:
        parts = [f"message_id={self.message_id}"]
        if isinstance(self.parsed, Termination):
            if self.parsed.job_id:
                parts.append(f"job_id={self.parsed.job_id}")
            parts.append(f"runner_id={self.parsed.runner_id}")
            if self.parsed.correlation_id:
                parts.append(f"correlation_id={self.parsed.correlation_id}")
        elif isinstance(self.parsed, Ignored) and self.parsed.runner_id:
            parts.append(f"runner_id={self.parsed.runner_id}")
        return " ".join(parts)


class VisibilityKeeper:
    """Keeps messages invisible while they are worked on: extends any held longer than half the timeout.

    Runs a daemon thread that wakes every few seconds; ``hold`` and ``release`` are
    thread-safe. Extensions go 10 per ChangeMessageVisibilityBatch call.
    """

    def __init__(self, sqs: Any, url: str, visibility_timeout: int, log: Any = logger) -> None:
        self._sqs, self._url, self._timeout, self._log = sqs, url, visibility_timeout, log
        self._held: dict[str, float] = {}  # receipt handle -> when it was last made invisible
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick = max(0.2, min(5.0, visibility_timeout / 4))
        self._thread = threading.Thread(target=self._run, name="termination-visibility", daemon=True)
        self.extensions = 0
        self.errors: list[str] = []

    def __enter__(self) -> VisibilityKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def hold(self, receipt_handles: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for handle in receipt_handles:
                self._held[handle] = now

    def release(self, receipt_handles: list[str]) -> None:
        with self._lock:
            for handle in receipt_handles:
                self._held.pop(handle, None)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.extend_due()
            except Exception as error:  # the next tick tries again; the worst case is a redelivery
                self._note(describe_error(error))

    def _note(self, error: str) -> None:
        if len(self.errors) < 100:  # bounded: a long run must not grow without limit
            self.errors.append(error)

    def extend_due(self) -> int:
        """Extend every held message made invisible more than half a timeout ago; returns calls made."""
        now = time.monotonic()
        with self._lock:
            due = [h for h, since in self._held.items() if now - since >= self._timeout / 2]
        calls = 0
        for batch in chunks(due, SQS_BATCH):
            response = self._sqs.change_message_visibility_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": self._timeout}
                         for i, h in enumerate(batch)],
            )
            calls += 1
            with self._lock:
                for ok in response.get("Successful", []):
                    handle = batch[int(ok["Id"])]
                    if handle in self._held:
                        self._held[handle] = now
                for bad in response.get("Failed", []):
                    # An expired receipt handle: the message may be redelivered; stop extending it.
                    self._held.pop(batch[int(bad["Id"])], None)
                    self._note(f"{bad.get('Code')}: visibility not extended")
        self.extensions += calls
        return calls


def drain_terminations(
    aws: Any, settings: FleetSettings, options: DrainOptions, *, log: Any = logger,
    stop: threading.Event | None = None,
) -> DrainReport:
    """Receive up to ``options.max_messages`` termination messages and process them, batch by batch.

    Stops at the first empty long poll (a 1-second one once the messages waiting at the start
    are in: ``receive_wait``), at ``max_messages``, or when ``stop`` is set.
    Raises only when the termination queue itself cannot be reached (nothing is lost then:
    unfinished messages return after their visibility timeout).
    """
    report = DrainReport()
    url = queue_url(aws.sqs, settings.termination_queue)
    waiting = queue_depth(aws.sqs, url)
    progress = Progress(log, "termination drain", min(waiting, options.max_messages) if waiting else None,
                        unit="message")
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="termination") as executor, \
            VisibilityKeeper(aws.sqs, url, options.visibility_timeout, log) as keeper:
        drained = False
        while not drained and report.received < options.max_messages and not (stop and stop.is_set()):
            # Receive 10 at a time until a work batch is full: the tracking-table, metric and
            # parameter calls of a work batch then go at (or near) their batch limits.
            raw: list[dict[str, Any]] = []
            handles: list[str] = []
            try:
                while len(raw) < options.batch_size and report.received < options.max_messages:
                    wanted = min(SQS_BATCH, options.batch_size - len(raw), options.max_messages - report.received)
                    got = aws.sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=wanted, WaitTimeSeconds=receive_wait(options, waiting, report),
                        VisibilityTimeout=options.visibility_timeout,
                        AttributeNames=["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"],
                        MessageAttributeNames=["All"],
                    ).get("Messages", [])
                    if not got:
                        drained = True
                        break
                    raw += got
                    report.received += len(got)
                    keeper.hold([m["ReceiptHandle"] for m in got])
                    handles += [m["ReceiptHandle"] for m in got]
                if not raw:
                    break
                report.batches += 1
                messages = [_read(m, settings) for m in raw]
                done = _process_batch(aws, settings, messages, report, executor, options, log)
                # One Dagster event per work batch (each costs a storage write); the routine line
                # per message goes to this module's Python logger, with ids, never a body.
                log.info(f"batch {report.batches}: {len(messages)} message(s), {len(done)} handled, "
                         f"{len(messages) - len(done)} left for a retry")
                _delete(aws.sqs, url, done, report, log)
                progress.update(report.received)
            finally:
                keeper.release(handles)
        report.visibility_extensions = keeper.extensions
    for error in keeper.errors[:20]:
        log.warning(f"visibility extension: {error}")
    if report.failed:
        report.max_receives = max_receive_count(aws.sqs, url, log)
    return report


TAIL_WAIT_SECONDS = 1


def receive_wait(options: DrainOptions, waiting: int | None, report: DrainReport) -> int:
    """The long poll of the next receive: the full wait while the messages the run saw waiting at its
    start are still coming, then a short one, so a run ends a second after its work instead of five.

    Still a long poll (1 s): it asks every SQS server, so an empty answer means empty, unlike a
    short poll's sample; messages arriving meanwhile keep the run going, as before. When the
    depth could not be read, the full wait throughout.
    """
    if waiting is None or report.received < waiting:
        return options.wait_seconds
    return min(options.wait_seconds, TAIL_WAIT_SECONDS)


def queue_depth(sqs: Any, url: str) -> int | None:
    """Messages visible in the queue now (approximate): the drain's progress total; None if unreadable."""
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    except (ClientError, BotoCoreError, KeyError, ValueError):
        return None  # only the progress lines' total and ETA depend on it


def max_receive_count(sqs: Any, url: str, log: Any = logger) -> int | None:
    """The queue's redrive ``maxReceiveCount`` (after that many receives SQS moves a message to the DLQ).

    None when the queue has no redrive policy or it cannot be read: the run cannot tell
    which failed messages are on their last receive, so it treats them all as if they were.
    """
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        return int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"])
    except Exception as error:  # uncertainty: the outcome then says "to the DLQ", the louder answer
        log.warning(f"could not read the termination queue's redrive policy: {describe_error(error)}")
        return None


def _read(message: dict[str, Any], settings: FleetSettings) -> _Message:
    attributes = message.get("Attributes", {})
    correlation = message.get("MessageAttributes", {}).get("correlation_id", {}).get("StringValue")
    try:
        sent_at = datetime.fromtimestamp(int(attributes["SentTimestamp"]) / 1000, timezone.utc)
    except (KeyError, ValueError):
        sent_at = datetime.now(timezone.utc)
    count = attributes.get("ApproximateReceiveCount")
    return _Message(
        message_id=message["MessageId"], receipt_handle=message["ReceiptHandle"],
        receive_count=int(count) if count and count.isdigit() else None, sent_at=sent_at,
        parsed=parse_message(message.get("Body", ""), ecs_cluster=settings.ecs_cluster, correlation_id=correlation),
    )


def _process_batch(
    aws: Any, settings: FleetSettings, messages: list[_Message], report: DrainReport,
    executor: ThreadPoolExecutor, options: DrainOptions, log: Any,
) -> list[_Message]:
    """Act on one batch; returns the messages that are fully handled (safe to delete)."""
    for m in messages:
        if isinstance(m.parsed, Invalid):
            m.error = f"invalid message: {m.parsed.reason}"
        elif isinstance(m.parsed, Ignored):
            logger.info(f"ignored {m.ids}: {m.parsed.reason}")

    # Mark jobs done, in parallel across jobs: each is its own conditional UpdateItem. Two
    # messages for one job (a repeat in the same batch) go in order, so the second one
    # reliably finds the first's result.
    by_job: dict[str, list[_Message]] = {}
    for m in messages:
        if isinstance(m.parsed, Termination) and m.parsed.source == "agent":
            by_job.setdefault(m.parsed.job_id or "", []).append(m)

    def update(group: list[_Message]) -> None:
        for m in group:
            try:
                m.job = mark_job_done(aws.dynamodb, settings.jobs_table, m.parsed, received_at=m.sent_at)  # type: ignore[arg-type]
            except Exception as error:  # reported per message; its message stays for a retry
                m.error = f"job update failed: {describe_error(error)}"

    list(executor.map(update, by_job.values()))

    # Clean up every runner whose message is good so far (a job not in the table included).
    to_clean = [m for m in messages if isinstance(m.parsed, Termination) and m.error is None]
    cleanups: dict[str, RunnerCleanup] = clean_up_runners(
        aws, settings, (m.parsed.runner_id for m in to_clean), now=datetime.now(timezone.utc),  # type: ignore[union-attr]
        hold_seconds=max(60, options.visibility_timeout), executor=executor,
    )
    for cleanup in cleanups.values():
        report.parameters_deleted += int(cleanup.parameter_deleted)
        if cleanup.queues:
            report.messages_archived += cleanup.queues.messages_archived
            report.queues_deleted += len(cleanup.queues.queues_deleted)
    for m in to_clean:
        cleanup = cleanups[m.parsed.runner_id]  # type: ignore[union-attr]
        if cleanup.error:
            m.error = f"runner cleanup incomplete: {cleanup.error}"

    _publish_job_metrics(aws, settings, messages, report, executor, log)

    done: list[_Message] = []
    for m in messages:
        if m.error:
            failure = MessageFailure(
                message_id=m.message_id, reason=m.error, receive_count=m.receive_count,
                runner_id=getattr(m.parsed, "runner_id", None), job_id=getattr(m.parsed, "job_id", None),
            )
            report.fail(failure)
            log.warning(f"left in queue {m.ids} (receive {m.receive_count}): {m.error}")
            continue
        done.append(m)
        if isinstance(m.parsed, Ignored):
            report.ignored += 1
            continue
        assert isinstance(m.parsed, Termination)
        if m.job is None:  # an ECS stop: the event names no job
            report.processed += 1
            logger.info(f"cleaned up stopped ECS task {m.ids}: {m.parsed.stopped_reason or 'no reason given'}")
            continue
        outcome = m.job.outcome
        if outcome == "marked_done":
            report.processed += 1
            logger.info(f"job marked {m.parsed.status} {m.ids} pool={m.job.pool}; runner cleaned up")
        elif outcome == "already_done":
            report.already_done += 1
            caught_up = "; its metrics published now (an earlier attempt did not)" if m.job.metrics_due else ""
            logger.info(f"job already {m.job.previous_status} {m.ids}: a repeat; runner cleaned up{caught_up}")
        elif outcome == "unknown_job":
            report.unknown_job += 1
            # No record: no pool, and nowhere to remember a publication (a redelivery would count
            # the job again; a job archived and deleted was counted when it finished). No metrics.
            log.warning(f"job not in {settings.jobs_table} {m.ids}; runner cleaned up anyway, no job metrics")
        else:
            report.not_running += 1
            log.warning(f"job is {m.job.previous_status}, not running {m.ids}: left as is; runner cleaned up")
    return done


def job_metrics(job: JobUpdate) -> list[Metric]:
    """A finished job's metrics: JobSuccess (completed) or JobFailure (any other end), and JobDuration when known."""
    out = [Metric("JobSuccess" if job.status == "completed" else "JobFailure", 1, "Count", job.pool)]
    if job.duration_seconds is not None:
        out.append(Metric("JobDuration", job.duration_seconds, "Seconds", job.pool))
    return out


def _publish_job_metrics(
    aws: Any, settings: FleetSettings, messages: list[_Message], report: DrainReport,
    executor: ThreadPoolExecutor, log: Any,
) -> None:
    """Publish the metrics of every completion in the batch that has none published, then record them.

    Before any message is deleted, and whether or not the runner's cleanup finished: the job
    has ended either way, and the record's flag keeps a retry of a message whose cleanup
    failed from publishing twice. One datum set per completion, however many messages of the
    batch name it. A failed PutMetricData keeps every message it covered in the queue (their
    retry finds the flag missing and publishes); a failed flag update does not (the metrics
    are out; a redelivery may publish them once more: at least once).
    """
    due: dict[tuple[str, str], list[_Message]] = {}
    for m in messages:
        if m.job is not None and m.job.metrics_due and m.job.status and m.job.completed_at:
            due.setdefault((m.job.job_id, m.job.completed_at), []).append(m)
    if not due:
        return
    metrics = [metric for group in due.values() for metric in job_metrics(group[0].job)]  # type: ignore[arg-type]
    try:
        put_metrics(aws.cloudwatch, settings.metrics_namespace, metrics)
    except Exception as error:
        report.metric_failures += len(metrics)
        log.error(f"{len(metrics)} job metric(s) of {len(due)} job(s) not published, their messages stay: "
                  f"{describe_error(error)}")
        for group in due.values():
            for m in group:
                m.error = m.error or f"metrics not published: {describe_error(error)}"
        return
    report.metrics_published += len(metrics)
    report.jobs_metrics_published += len(due)
    report.metrics_caught_up += sum(1 for group in due.values() if group[0].job.outcome == "already_done")  # type: ignore[union-attr]

    def remember(group: list[_Message]) -> str | None:
        job = group[0].job
        assert job is not None and job.status and job.completed_at
        try:
            mark_metrics_published(aws.dynamodb, settings.jobs_table, job.job_id, status=job.status,
                                   completed_at=job.completed_at)
            return None
        except Exception as error:
            return f"{group[0].ids}: {describe_error(error)}"

    for problem in executor.map(remember, due.values()):
        if problem:
            report.metric_flag_failures += 1
            log.warning(f"metrics published but not recorded on the job record {problem}; "
                        "a redelivery may publish them once more")


def _delete(sqs: Any, url: str, done: list[_Message], report: DrainReport, log: Any) -> None:
    """Delete fully handled messages 10 a call; a failed delete only means a harmless redelivery."""
    for batch in chunks(done, SQS_BATCH):
        try:
            response = sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(batch)]
            )
        except Exception as error:
            report.delete_failures += len(batch)
            log.error(f"could not delete {len(batch)} handled message(s); they will be redelivered and "
                      f"found done: {describe_error(error)}")
            continue
        report.messages_deleted += len(response.get("Successful", []))
        for bad in response.get("Failed", []):
            report.delete_failures += 1
            log.error(f"could not delete handled {batch[int(bad['Id'])].ids}: {bad.get('Code')}; "
                      "it will be redelivered and found done")
