"""The Dagster layer of termination processing: ``process_terminations`` and ``redrive_termination_dlq``.

Thin on purpose: config, resources, logs and run metadata around ``drain.drain_terminations``
and ``redrive.redrive_dlq``, which hold the rules.
"""


import time
from typing import Any

from dagster import Config, Failure, MetadataValue, OpExecutionContext, Output, job, op
from pydantic import Field

from pipelines.common.fleets import FLEET_PARTITIONS
from pipelines.common.tables import column, table
from pipelines.common.safety import is_dry_run
from pipelines.termination.drain import DrainOptions, DrainReport, drain_terminations
from pipelines.termination.outcome import (
    DrainOutcome, drain_outcome, failed_messages_table, failed_reasons_table, on_last_receive,
)
from pipelines.termination.redrive import redrive_dlq
from resources.aws import AwsClients
from resources.settings import FleetSettings

# Every run carries runs-fleet/exclusive=<job name>; the instance's run queue
# (infra/dagster.yaml, sandbox/dagster.yaml) starts one run per value at a time, whoever
# launched it (the sensor, the UI, the CLI): at most one drain, at most one replay.
EXCLUSIVE_TAG = "runs-fleet/exclusive"
CAPABILITY_TAGS = {"runs-fleet/capability": "termination"}
# A DLQ replay's failures: the message left in the DLQ (or replayed and not deleted) and why.
REPLAY_FAILURE_COLUMNS = [column("message id"), column("why")]
# A drain whose messages go to the DLQ fails (report_drain_outcome); re-running it would not
# help — SQS already redelivers what can be retried — so Dagster must never retry it for an
# op failure, whatever the instance's run_retries default says. A crashed run is still retried.
NO_RETRY_ON_OP_FAILURE = {"dagster/retry_on_asset_or_op_failure": "false"}


class ProcessTerminationsConfig(Config):
    """How much one drain run takes on and how it holds messages."""

    max_messages: int = Field(default=1000, ge=1, le=100_000, description="Receive at most this many messages in one run.")
    wait_seconds: int = Field(
        default=5, ge=0, le=20,
        description="Long-polling wait per receive; the run ends at the first receive that returns nothing.",
    )
    visibility_timeout_seconds: int = Field(
        default=120, ge=1, le=43_200,
        description="How long a received message stays hidden; extended while it is worked on. "
        "A message that fails returns after this long.",
    )
    workers: int = Field(default=10, ge=1, le=50, description="Parallel AWS calls within a work batch.")
    batch_size: int = Field(
        default=100, ge=1, le=1000,
        description="Messages acted on together (received 10 a call): their tracking-table, parameter and "
        "metric calls are batched, and they are deleted once all their work is done.",
    )


@op(description="Drain the termination queue: mark jobs done, clean up runners, publish metrics, then delete.")
def drain_termination_queue(
    context: OpExecutionContext, config: ProcessTerminationsConfig, aws: AwsClients, settings: FleetSettings
) -> Output[dict[str, Any]]:
    """Receive termination messages 10 a call, act on them in work batches, and process each at least once.

    Per message: validate; mark its job done with a conditional update from `running` (or
    from `interrupted` set by the stuck jobs sweep; a repeat is success, an unknown job a
    warning); delete the runner's SSM parameter; archive then delete its three queues and
    tracking record; publish JobDuration and JobSuccess/JobFailure by pool once per job
    completion; only then delete the message. A message that fails stays in the queue and
    reaches the DLQ after 3 receives. Tags the run runs-fleet/outcome=ok|partial|dlq.
    """
    started = time.monotonic()
    options = DrainOptions(
        max_messages=config.max_messages, wait_seconds=config.wait_seconds,
        visibility_timeout=config.visibility_timeout_seconds, workers=config.workers,
        batch_size=config.batch_size,
    )
    report = drain_terminations(aws, settings, options, log=context.log)
    elapsed = time.monotonic() - started
    context.log.info(
        f"drained {report.received} message(s) in {elapsed:.1f}s "
        f"({report.received / elapsed if elapsed else 0:.1f}/s): {report.processed} processed, "
        f"{report.already_done} already done, {report.unknown_job} unknown job, {report.failed} failed"
    )
    outcome = drain_outcome(report.failed_by_receive, max_receives=report.max_receives,
                            deleted=report.messages_deleted)
    # On the run itself, so the Runs list shows a drain that left messages behind without a click.
    context.instance.add_run_tags(context.run_id, outcome.tags())
    summary: dict[str, Any] = {
        **_summary(report), "outcome": outcome.name, "messages_to_dlq": outcome.to_dlq,
        "last_receive": _last_receive(report),
    }
    return Output(summary, metadata={**_metadata(report, elapsed), "outcome": MetadataValue.text(outcome.name),
                                     "messages_to_dlq": MetadataValue.int(outcome.to_dlq)})


def _last_receive(report: DrainReport) -> list[dict[str, Any]]:
    """The reported failures that go to the DLQ now: ids, receive count and reason (never a body)."""
    return [
        {"message_id": f.message_id, "runner_id": f.runner_id, "job_id": f.job_id, "receive_count": f.receive_count,
         "reason": f.reason}
        for f in report.failures if on_last_receive(f.receive_count, report.max_receives)
    ]


@op(description="Fail the run when a message goes to the DLQ; warn when messages were left for a retry.")
def report_drain_outcome(context: OpExecutionContext, drained: dict[str, Any]) -> None:
    """Turn the drain's outcome into what the run page shows, after the drain deleted everything it finished.

    `ok`: nothing to say. `partial`: messages were left in the queue and SQS delivers them
    again; a warning, the run succeeds. `dlq`: a message failed on its last receive and the
    queue's redrive moves it to the DLQ, where nothing retries it: the run fails (without a
    Dagster retry) naming the message ids and reasons, so an operator fixes the cause and
    replays it with redrive_termination_dlq.
    """
    outcome = DrainOutcome(name=drained["outcome"], failed=drained["failed"], to_dlq=drained["messages_to_dlq"],
                           deleted=drained["messages_deleted"])
    if outcome.name == "ok":
        context.log.info(f"drain complete: {outcome.deleted} message(s) handled and deleted, none left behind")
        return
    if outcome.name == "partial":
        context.log.warning(
            f"drain partial: {outcome.failed} message(s) left in the queue for a retry (SQS delivers them again "
            f"after their visibility timeout); {outcome.deleted} handled and deleted. See failed_messages."
        )
        return
    listed = drained["last_receive"]
    raise Failure(
        description=(
            f"{outcome.to_dlq} termination message(s) failed on their last receive and go to the DLQ "
            f"({outcome.failed} left in the queue in all; {outcome.deleted} handled messages were deleted). "
            "Fix the cause, then replay them with redrive_termination_dlq."
        ),
        metadata={
            "outcome": MetadataValue.text(outcome.name),
            "messages_to_dlq": MetadataValue.int(outcome.to_dlq),
            "messages_failed": MetadataValue.int(outcome.failed),
            "messages_deleted": MetadataValue.int(outcome.deleted),
            "dlq_messages": failed_messages_table(listed, total=outcome.to_dlq),
        },
        allow_retries=False,
    )


def _summary(report: DrainReport) -> dict[str, int]:
    return {
        "received": report.received, "processed": report.processed, "already_done": report.already_done,
        "unknown_job": report.unknown_job, "not_running": report.not_running, "ignored": report.ignored,
        "failed": report.failed, "messages_deleted": report.messages_deleted,
        "messages_archived": report.messages_archived, "queues_deleted": report.queues_deleted,
        "parameters_deleted": report.parameters_deleted, "metrics_published": report.metrics_published,
        "jobs_metrics_published": report.jobs_metrics_published, "metrics_caught_up": report.metrics_caught_up,
    }


def _metadata(report: DrainReport, elapsed: float) -> dict[str, Any]:
    return {
        **{k: MetadataValue.int(v) for k, v in _summary(report).items()},
        "delete_failures": MetadataValue.int(report.delete_failures),
        "metric_failures": MetadataValue.int(report.metric_failures),
        "metric_flag_failures": MetadataValue.int(report.metric_flag_failures),
        "visibility_extensions": MetadataValue.int(report.visibility_extensions),
        "failed_reasons": failed_reasons_table(report.failure_reasons),
        "failed_messages": failed_messages_table(report.failures, total=report.failed),
        "seconds": MetadataValue.float(round(elapsed, 3)),
        "messages_per_second": MetadataValue.float(round(report.received / elapsed, 2) if elapsed else 0.0),
    }



@job(
    description="Process runner terminations from the termination FIFO queue (woken by termination_queue_sensor).",
    partitions_def=FLEET_PARTITIONS,
    tags={EXCLUSIVE_TAG: "process_terminations", **CAPABILITY_TAGS, **NO_RETRY_ON_OP_FAILURE},
)
def process_terminations() -> None:
    """Drain the termination queue: at least once, nothing lost; at most one run at a time."""
    report_drain_outcome(drain_termination_queue())


class RedriveConfig(Config):
    """Which DLQ messages to replay."""

    max_messages: int = Field(default=100, ge=1, le=100_000, description="Replay at most this many messages.")
    dry_run: bool = Field(default=False, description="Only count and list what would be replayed.")


@op(description="Replay termination DLQ messages back to the termination queue.")
def replay_termination_dlq(
    context: OpExecutionContext, config: RedriveConfig, aws: AwsClients, settings: FleetSettings
) -> Output[dict[str, int]]:
    """Move DLQ messages back to the termination FIFO queue, keeping each message's group.

    Run it after fixing what made the messages fail. Sends 10 per call and deletes from the
    DLQ only what was sent. Dry run (config, or RUNS_FLEET_DRY_RUN=true) only counts.
    """
    dry_run = is_dry_run(config.dry_run, settings)
    report = redrive_dlq(aws.sqs, settings.termination_queue, max_messages=config.max_messages,
                         dry_run=dry_run, log=context.log)
    verb = "would replay" if dry_run else "replayed"
    context.log.info(f"{verb} {report.found if dry_run else report.sent} of {report.dlq_depth} DLQ message(s) "
                     f"from {report.dlq_url}")
    summary = {"dlq_depth": report.dlq_depth, "found": report.found, "sent": report.sent, "deleted": report.deleted,
               "failed": len(report.failed)}
    return Output(summary, metadata={
        **{k: MetadataValue.int(v) for k, v in summary.items()},
        "dry_run": MetadataValue.bool(dry_run),
        "groups": MetadataValue.int(len(report.groups)),
        "dlq_url": MetadataValue.url(report.dlq_url),
        "failures": table(REPLAY_FAILURE_COLUMNS, (dict(zip(("message id", "why"), f.split(": ", 1)))
                                                   for f in report.failed)),
    })


@job(
    description="Operator job: replay the termination DLQ into the termination queue (config: max_messages, dry_run).",
    partitions_def=FLEET_PARTITIONS,
    tags={EXCLUSIVE_TAG: "redrive_termination_dlq", **CAPABILITY_TAGS},
)
def redrive_termination_dlq() -> None:
    """Replay termination DLQ messages after their cause is fixed."""
    replay_termination_dlq()
