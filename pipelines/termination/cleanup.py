"""Clean up what ended runners left behind: their SSM parameters, queues and tracking records."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipelines.common.aws import SSM_DELETE_BATCH, chunks
from pipelines.common.runner_queues import RunnerQueueCleanup, archive_and_delete_many
from resources.settings import FleetSettings


@dataclass
class ParameterCleanup:
    """DeleteParameters outcome: deleted, already gone, or failed (name -> why)."""

    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def delete_runner_parameters(ssm: Any, names: Iterable[str]) -> ParameterCleanup:
    """Delete parameters 10 a call; a parameter already gone is fine (SSM lists it as invalid)."""
    result = ParameterCleanup()
    for batch in chunks(dict.fromkeys(names), SSM_DELETE_BATCH):
        try:
            response = ssm.delete_parameters(Names=batch)
        except Exception as error:  # reported per name; the caller keeps those messages for a retry
            for name in batch:
                result.failed[name] = f"DeleteParameters failed: {describe_error(error)}"
            continue
        result.deleted += response.get("DeletedParameters", [])
        result.already_gone += response.get("InvalidParameters", [])
    return result


@dataclass
class RunnerCleanup:
    """Everything done for one runner; ``error`` says why it is not finished (None when it is)."""

    runner_id: str
    parameter: str
    parameter_deleted: bool = False
    queues: RunnerQueueCleanup | None = None
    error: str | None = None


def clean_up_runners(
    aws: Any, settings: FleetSettings, runner_ids: Iterable[str], *, now: datetime,
    hold_seconds: int = 300, executor: ThreadPoolExecutor | None = None,
) -> dict[str, RunnerCleanup]:
    """Delete each runner's SSM parameter, then archive and delete its queues and tracking record.

    Batched across runners: one DeleteParameters per 10 runners, one BatchGetItem and one
    BatchWriteItem for the tracking records. A runner is finished only when its parameter
    is gone and every queue was archived and deleted; otherwise ``error`` says why.
    """
    ids = list(dict.fromkeys(runner_ids))
    results = {r: RunnerCleanup(runner_id=r, parameter=settings.ssm_parameter_name(r)) for r in ids}
    if not ids:
        return results
    parameters = delete_runner_parameters(aws.ssm, (c.parameter for c in results.values()))
    for cleanup in results.values():
        if cleanup.parameter in parameters.failed:
            cleanup.error = parameters.failed[cleanup.parameter]
        else:
            cleanup.parameter_deleted = True
    try:
        queues = archive_and_delete_many(
            aws.sqs, aws.s3, aws.dynamodb, runner_ids=ids, queue_names_of=settings.runner_queue_names,
            bucket=settings.archive_bucket, tracking_table=settings.queue_tracking_table, now=now,
            hold_seconds=hold_seconds, executor=executor,
        )
    except Exception as error:  # the tracking table itself failed: every runner of the batch is retried
        for cleanup in results.values():
            cleanup.error = cleanup.error or f"queue cleanup failed: {describe_error(error)}"
        return results
    for runner_id, outcome in queues.items():
        cleanup = results[runner_id]
        if isinstance(outcome, Exception):
            cleanup.error = cleanup.error or f"queue cleanup failed: {describe_error(outcome)}"
            continue
        cleanup.queues = outcome
        if not outcome.complete and cleanup.error is None:
            kept = "; ".join(f"{name}: {why}" for name, why in outcome.queues_kept.items())
            cleanup.error = f"queue(s) kept: {kept}"
    return results


def describe_error(error: BaseException) -> str:
    code = getattr(error, "response", {}).get("Error", {}).get("Code") if hasattr(error, "response") else None
    text = str(error)
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{code or type(error).__name__}: {text}"
