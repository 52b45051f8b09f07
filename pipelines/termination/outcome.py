"""What one drain run's outcome is, for the operator: ``ok``, ``partial`` or ``dlq``.

- ``ok``: every message received was handled and deleted (or there was nothing to do).
- ``partial``: some messages were left in the queue and will be received again (SQS
  redelivers them after their visibility timeout). Usually transient — throttling that
  outlasted the retries, a runner queue with a message still in flight. The run succeeds
  and says so in its tags; the next runs retry.
- ``dlq``: at least one message failed on its last receive, so the queue's redrive moves it
  to the DLQ: nothing retries it any more and an operator has to look, fix the cause and
  replay it (``redrive_termination_dlq``). The run fails.

The verdict is Dagster-free: the op turns it into run tags and, for ``dlq``, a
``dagster.Failure``. The failure lists the run page shows (every failed message, the reasons
counted, the messages going to the DLQ) are Dagster table metadata, built at the end of this
module: sortable on the run page without a "Show Markdown" click; ids and reasons only, never
a message body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dagster import TableMetadataValue

from pipelines.common.tables import column, table

OUTCOME_TAG = "runs-fleet/outcome"
FAILED_TAG = "runs-fleet/messages_failed"
TO_DLQ_TAG = "runs-fleet/messages_to_dlq"
DELETED_TAG = "runs-fleet/messages_deleted"

Name = Literal["ok", "partial", "dlq"]


def on_last_receive(receive_count: int | None, max_receives: int | None) -> bool:
    """Will SQS move this failed message to the DLQ instead of delivering it again?

    It does once a message has been received ``maxReceiveCount`` times. When either number
    is unknown the answer is yes: the louder outcome is the safe one (an operator looks).
    """
    if receive_count is None or max_receives is None:
        return True
    return receive_count >= max_receives


@dataclass(frozen=True)
class DrainOutcome:
    """The run's verdict and the counts behind it."""

    name: Name
    failed: int  # messages left in the queue
    to_dlq: int  # of those, on their last receive
    deleted: int

    def tags(self) -> dict[str, str]:
        """Run tags (the Runs list shows them; values are plain tokens, as Dagster's tag rules want)."""
        return {OUTCOME_TAG: self.name, FAILED_TAG: str(self.failed), TO_DLQ_TAG: str(self.to_dlq),
                DELETED_TAG: str(self.deleted)}


def drain_outcome(failed_by_receive: Mapping[int | None, int], *, max_receives: int | None, deleted: int) -> DrainOutcome:
    """Grade a drain from its failures (counted by receive count) and the queue's ``maxReceiveCount``."""
    failed = sum(failed_by_receive.values())
    to_dlq = sum(n for count, n in failed_by_receive.items() if on_last_receive(count, max_receives))
    name: Name = "ok" if failed == 0 else ("dlq" if to_dlq else "partial")
    return DrainOutcome(name=name, failed=failed, to_dlq=to_dlq, deleted=deleted)


# --- what the run page shows ----------------------------------------------------------------

FAILED_MESSAGE_COLUMNS = [
    column("message id"), column("runner id"), column("job id"),
    column("receive", "int", "the message's ApproximateReceiveCount; at the queue's maxReceiveCount (3) SQS moves "
           "it to the DLQ; empty: unknown"),
    column("reason", description="why it was left in the queue (never the message body)"),
]
REASON_COLUMNS = [column("reason"), column("messages", "int")]


def _field(failure: Any, name: str) -> Any:
    return failure.get(name) if isinstance(failure, Mapping) else getattr(failure, name, None)


def failed_messages_table(failures: Iterable[Any], total: int) -> TableMetadataValue:
    """One row per failed message (objects or dicts with message_id, runner_id, job_id, receive_count, reason);
    ``total`` failed in all: the ones not listed are counted in a last row (their lines are in the run logs)."""
    rows = [{
        "message id": _field(f, "message_id"), "runner id": _field(f, "runner_id"), "job id": _field(f, "job_id"),
        "receive": _field(f, "receive_count"), "reason": " ".join(str(_field(f, "reason") or "").split()),
    } for f in failures]
    return table(FAILED_MESSAGE_COLUMNS, rows, more=total - len(rows))


def failed_reasons_table(reasons: Counter) -> TableMetadataValue:
    """Failed messages counted by reason, the commonest first."""
    return table(REASON_COLUMNS, ({"reason": " ".join(str(r).split()), "messages": n} for r, n in reasons.most_common()))
