"""``housekeeping_queue_sensor``: a request on the housekeeping queue starts the named job.

A request is ``{"task_type": "...", "timestamp": "...", "params": {...}}``. Each capability
that can be requested exports ``REQUESTS`` (a list of ``RequestableJob``) and ``JOBS`` (the job
definitions they name; without ``JOBS`` they are looked up in its ``defs``); the module is
listed once in ``REQUEST_MODULES`` below.

How "delete the request only once its run was launched" works with a sensor: a sensor
only *returns* RunRequests; the daemon launches them after the tick. So:

1. A valid request becomes a RunRequest whose ``run_key`` is derived from the SQS message id
   (``housekeeping-<message id>``). Dagster never launches two runs with the same run key
   for a sensor, so a redelivered request cannot start a second run.
2. The message is *not* deleted in that tick. Its receipt handle is kept in the sensor's
   cursor, and the message stays invisible for ``HOLD_SECONDS`` (the receive's visibility
   timeout: ten 30-second ticks, ample time for the daemon to launch the run).
3. On a later tick the sensor looks up runs tagged ``dagster/run_key`` with those keys in
   the instance; a message whose run exists is deleted (DeleteMessageBatch, 10 a call).
   A message whose receipt expired comes back, is recognised by its run key (a run exists:
   delete it; none yet: request again under the same key), so nothing is lost or doubled.

An unparseable body, an unknown ``task_type`` or bad ``params`` is logged (message id and
the problem, never the body) and the message is left alone: it returns after the
visibility timeout and the queue's redrive policy moves it to the DLQ after 3 receives.
"""


import importlib
import json
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import DefaultSensorStatus, RunRequest, RunsFilter, SensorResult, SkipReason, sensor

from pipelines.common.aws import SQS_BATCH, chunks, error_code, queue_url
from pipelines.common.requests import BadParams, RequestableJob
from resources.aws import AwsClients
from resources.settings import FleetSettings

# One line per capability that can be requested: the module exports REQUESTS and JOBS.
REQUEST_MODULES: list[str] = [
    "pipelines.sweeps",  # orphaned_instances, stale_ssm, orphaned_queues, stuck_jobs
    "pipelines.archival",  # old_jobs
    "pipelines.audit",  # pool_audit, queue_health
]

RUN_KEY_TAG = "dagster/run_key"
RUN_KEY_PREFIX = "housekeeping-"
MESSAGE_TAG = "runs-fleet/request-message-id"
TASK_TAG = "runs-fleet/task-type"
HOLD_SECONDS = 300  # receive visibility: the daemon launches within a tick or two (30 s each)
RECEIVE_ROUNDS = 5  # up to 50 requests a tick; the rest wait for the next tick


def collect(modules: Iterable[str]) -> tuple[dict[str, RequestableJob], list[Any]]:
    """The task registry (task_type -> RequestableJob) and every job it can target, from ``modules``.

    Fails at load, naming the module, when a task type is registered twice or names a job
    its module does not export: such a mistake should stop the code location loading, not
    surface as a request that can never run.
    """
    registry: dict[str, RequestableJob] = {}
    jobs: dict[str, Any] = {}
    for path in modules:
        module = importlib.import_module(path)
        module_jobs = {job.name: job for job in getattr(module, "JOBS", None) or module.defs.jobs}
        for request in module.REQUESTS:
            if request.task_type in registry:
                raise ValueError(f"{path}: task_type {request.task_type!r} is already registered")
            if request.job_name not in module_jobs:
                raise ValueError(
                    f"{path}: task_type {request.task_type!r} names job {request.job_name!r}, not in its JOBS"
                )
            registry[request.task_type] = request
            jobs[request.job_name] = module_jobs[request.job_name]
    return registry, list(jobs.values())


REGISTRY, TARGET_JOBS = collect(REQUEST_MODULES)


def run_key(message_id: str) -> str:
    return f"{RUN_KEY_PREFIX}{message_id}"


class RejectedRequest(ValueError):
    """A request that cannot become a run; the text names what is wrong (never the whole body)."""


@dataclass(frozen=True)
class ParsedRequest:
    task: RequestableJob
    run_config: dict[str, Any]
    partition_key: str | None
    params: Mapping[str, Any]


def parse_request(body: str, registry: Mapping[str, RequestableJob]) -> ParsedRequest:
    """Validate a request body into the job, run config and partition it asks for; raises RejectedRequest."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RejectedRequest(f"body is not JSON ({error.msg if hasattr(error, 'msg') else error})") from None
    if not isinstance(request, dict):
        raise RejectedRequest(f"body is a JSON {type(request).__name__}, not an object")
    task_type = request.get("task_type")
    if not isinstance(task_type, str) or task_type not in registry:
        shown = repr(task_type)[:60]
        raise RejectedRequest(f"unknown task_type {shown} (known: {', '.join(sorted(registry))})")
    params = request.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RejectedRequest(f"params must be a JSON object, got {type(params).__name__}")
    task = registry[task_type]
    try:
        run_config = task.build_run_config(params)
        partition = task.partition_key(params)
    except BadParams as error:
        raise RejectedRequest(f"bad params for {task_type}: {error}") from None
    except Exception as error:  # a capability's builder tripping over odd params must not crash the sensor
        raise RejectedRequest(f"bad params for {task_type}: {type(error).__name__}: {error}") from None
    return ParsedRequest(task, run_config, partition, params)


REASON_MAX_CHARS = 300


def _bounded(reason: str) -> str:
    """A rejection reason fit for one log line. Reasons may quote a bad value or param name, which can be
    256 KiB long or hold a newline (that would forge a log line): cut, and control/separator characters as '?'."""
    cut = reason if len(reason) <= REASON_MAX_CHARS else f"{reason[:REASON_MAX_CHARS]}… ({len(reason)} characters)"
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else "?" for c in cut)


def launched_run_keys(instance: Any, keys: Sequence[str], log: Any) -> set[str]:
    """Which of ``keys`` already have a run in the instance (any status: launched is launched).

    If the run storage cannot be read, none count as launched: nothing is deleted this tick,
    and a RunRequest sent again under the same run key cannot start a second run.
    """
    found: set[str] = set()
    try:
        for batch in chunks(sorted(set(keys)), 100):
            for run in instance.get_runs(filters=RunsFilter(tags={RUN_KEY_TAG: batch})):
                found.add(run.tags.get(RUN_KEY_TAG, ""))
    except Exception as error:  # the sensor must not crash on a storage hiccup
        log.warning(f"housekeeping: could not look up runs by run key ({type(error).__name__}); retried next tick")
        return set()
    return found & set(keys)


def delete_messages(sqs: Any, url: str, receipts: Mapping[str, str], log: Any) -> set[str]:
    """DeleteMessageBatch (10 a call); returns the message ids deleted or no longer deletable with this receipt."""
    settled: set[str] = set()
    for batch in chunks(sorted(receipts.items()), SQS_BATCH):
        entries = [{"Id": str(n), "ReceiptHandle": receipt} for n, (_, receipt) in enumerate(batch)]
        try:
            response = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            log.warning(f"housekeeping: DeleteMessageBatch failed ({error_code(error) or error}); retried next tick")
            continue
        for ok in response.get("Successful", []):
            settled.add(batch[int(ok["Id"])][0])
        for failed in response.get("Failed", []):
            message_id = batch[int(failed["Id"])][0]
            if failed.get("Code") == "ReceiptHandleIsInvalid":
                # The receipt expired and the message was received again: it will be
                # recognised by its run key and deleted with its new receipt.
                settled.add(message_id)
            log.warning(f"housekeeping: could not delete message_id={message_id}: {failed.get('Code')}")
    return settled


def load_cursor(raw: str | None, log: Any) -> dict[str, dict[str, Any]]:
    if not raw:
        return {}
    try:
        pending = json.loads(raw)
        return {k: v for k, v in pending.items() if isinstance(v, dict) and "receipt" in v}
    except (json.JSONDecodeError, AttributeError):
        log.warning("housekeeping: unreadable cursor; pending requests will be found again by their run keys")
        return {}


def evaluate(context: Any, aws: AwsClients, settings: FleetSettings,
             registry: Mapping[str, RequestableJob] | None = None, now: float | None = None) -> SensorResult | SkipReason:
    """One tick: settle launched requests, receive new ones, turn the valid ones into RunRequests."""
    registry = REGISTRY if registry is None else registry
    log = context.log
    now = time.time() if now is None else now
    pending = load_cursor(context.cursor, log)
    try:
        url = queue_url(aws.sqs, settings.housekeeping_queue)
    except (ClientError, BotoCoreError) as error:
        return SkipReason(f"housekeeping queue {settings.housekeeping_queue} unreachable: {error_code(error) or error}")

    # 1. Delete the requests whose runs the daemon has launched since an earlier tick.
    keys = [v["run_key"] for v in pending.values()]
    launched = launched_run_keys(context.instance, keys, log) if keys else set()
    to_delete = {m: v["receipt"] for m, v in pending.items() if v["run_key"] in launched}
    for message_id, entry in list(pending.items()):
        if message_id not in to_delete and now - entry.get("at", now) > HOLD_SECONDS:
            # The receipt has expired: the message is visible again and is handled when received.
            log.warning(f"housekeeping: run for message_id={message_id} not launched within {HOLD_SECONDS} s")
            del pending[message_id]

    # 2. Receive new requests.
    received: list[dict[str, Any]] = []
    try:
        for _ in range(RECEIVE_ROUNDS):
            batch = aws.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=SQS_BATCH, VisibilityTimeout=HOLD_SECONDS, WaitTimeSeconds=0,
                AttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            received += batch
            if len(batch) < SQS_BATCH:
                break
    except (ClientError, BotoCoreError) as error:
        log.error(f"housekeeping: ReceiveMessage failed ({error_code(error) or error}); retried next tick")

    keys = [run_key(m["MessageId"]) for m in received]
    already = launched_run_keys(context.instance, keys, log) if keys else set()
    run_requests: list[RunRequest] = []
    rejected = 0
    for message in received:
        message_id = message["MessageId"]
        key = run_key(message_id)
        if key in already:
            # Redelivered after its run was launched (e.g. an earlier delete failed): just delete it.
            to_delete[message_id] = message["ReceiptHandle"]
            pending.pop(message_id, None)
            continue
        try:
            request = parse_request(message.get("Body", ""), registry)
        except RejectedRequest as error:
            rejected += 1
            receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            log.error(f"housekeeping: rejected message_id={message_id} (receive {receives}): {_bounded(str(error))}; "
                      "left on the queue for the DLQ redrive")
            continue
        task = request.task
        log.info(f"housekeeping: message_id={message_id} requests {task.task_type} -> {task.job_name} "
                 f"(params: {', '.join(sorted(request.params)) or 'none'})")
        run_requests.append(RunRequest(
            run_key=key, job_name=task.job_name, run_config=request.run_config,
            partition_key=request.partition_key,
            tags={MESSAGE_TAG: message_id, TASK_TAG: task.task_type},
        ))
        pending[message_id] = {"receipt": message["ReceiptHandle"], "run_key": key, "at": now}

    # 3. Delete what is settled; keep the rest pending for the next tick.
    if to_delete:
        for message_id in delete_messages(aws.sqs, url, to_delete, log):
            pending.pop(message_id, None)
            log.info(f"housekeeping: deleted message_id={message_id} (its run was launched)")
    cursor = json.dumps(pending, sort_keys=True)
    if run_requests:
        return SensorResult(run_requests=run_requests, cursor=cursor)
    reason = f"no new requests ({rejected} rejected, {len(pending)} awaiting launch)"
    return SensorResult(skip_reason=SkipReason(reason), cursor=cursor)


@sensor(
    name="housekeeping_queue_sensor",
    minimum_interval_seconds=30,
    jobs=TARGET_JOBS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 30 s: each request on the housekeeping queue starts the named job (params become its run "
    "config); a request is deleted only once its run was launched, a bad one is left for the DLQ.",
)
def housekeeping_queue_sensor(context, aws: AwsClients, settings: FleetSettings) -> Any:
    """Every 30 s: each request on the housekeeping queue ({"task_type", "params"}) starts the named job
    (params → run config). A request is deleted only once its run was launched; an unknown task_type or
    bad params is logged and left for the DLQ redrive."""
    return evaluate(context, aws, settings)
