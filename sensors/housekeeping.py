"""``housekeeping_queue_sensor``: a request on the housekeeping queue starts the named job.

A request is ``{"task_type": "...", "timestamp": "...", "params": {...}}``. Each capability
that can be requested exports ``REQUESTS`` (a list of ``RequestableJob``) and ``JOBS`` (the job
definitions they name); ``definitions.py`` hands both to ``build_housekeeping_sensor``. This
module imports no capability.

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


import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from dagster import DefaultSensorStatus, RunRequest, RunsFilter, SensorDefinition, SensorResult, SkipReason, sensor

from pipelines.common.aws import SQS_BATCH, chunks, error_code, queue_url
from pipelines.common.contract import loggable
from pipelines.common.requests import BadParams, RequestableJob
from pipelines.common.fleets import exclusive, partition_key
from resources.aws import AwsClients
from resources.fleets import SINGLE, Fleets, fleet_clients, fleet_settings
from resources.settings import FleetSettings

RUN_KEY_TAG = "dagster/run_key"
RUN_KEY_PREFIX = "housekeeping-"
MESSAGE_TAG = "runs-fleet/request-message-id"
TASK_TAG = "runs-fleet/task-type"
HOLD_SECONDS = 300  # receive visibility: the daemon launches within a tick or two (30 s each)
RECEIVE_ROUNDS = 5  # up to 50 requests a tick; the rest wait for the next tick


def build_registry(requests: Iterable[RequestableJob], jobs: Iterable[Any]) -> dict[str, RequestableJob]:
    """task_type -> RequestableJob, checked: fails at load when a task type is registered twice or
    names a job not handed in, so such a mistake stops the code location loading instead of
    surfacing as a request that can never run."""
    job_names = {job.name for job in jobs}
    registry: dict[str, RequestableJob] = {}
    for request in requests:
        if request.task_type in registry:
            raise ValueError(f"housekeeping: task_type {request.task_type!r} is registered twice")
        if request.job_name not in job_names:
            raise ValueError(f"housekeeping: task_type {request.task_type!r} names job {request.job_name!r}, "
                             "which is not among the jobs handed to the sensor")
        registry[request.task_type] = request
    return registry


def run_key(message_id: str, fleet: str | None = None) -> str:
    """The run key of a request: its message id, and with a fleet list its fleet (each fleet has its queue)."""
    return f"{RUN_KEY_PREFIX}{message_id}" if fleet is None else f"{RUN_KEY_PREFIX}{fleet}-{message_id}"


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
    return loggable(cut, len(cut))


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
             registry: Mapping[str, RequestableJob], now: float | None = None,
             fleet: str | None = None) -> SensorResult | SkipReason:
    """One tick: settle launched requests, receive new ones, turn the valid ones into RunRequests.

    ``fleet`` (with a fleet list): the fleet whose queue this is; its requests start runs of that
    fleet's partition, exclusive per (job, fleet)."""
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

    keys = [run_key(m["MessageId"], fleet) for m in received]
    already = launched_run_keys(context.instance, keys, log) if keys else set()
    run_requests: list[RunRequest] = []
    rejected = 0
    for message in received:
        message_id = message["MessageId"]
        key = run_key(message_id, fleet)
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
            partition_key=partition_key(fleet, request.partition_key) if fleet else request.partition_key,
            tags={MESSAGE_TAG: message_id, TASK_TAG: task.task_type, **exclusive(task.job_name, fleet)},
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


def evaluate_fleets(context: Any, aws: AwsClients, settings: FleetSettings, registry: Mapping[str, RequestableJob],
                    fleets: Fleets, now: float | None = None) -> SensorResult:
    """One tick over every fleet's housekeeping queue. The cursor holds each fleet's pending requests
    apart; a fleet that cannot be reached is skipped (logged, naming it) and the others go on."""
    try:
        cursors = json.loads(context.cursor) if context.cursor else {}
    except json.JSONDecodeError:
        cursors = {}
    cursors = cursors if isinstance(cursors, dict) else {}
    run_requests: list[RunRequest] = []
    reasons: list[str] = []
    for fleet in fleets.fleets:
        view = _FleetTick(context, fleet.name, cursors.get(fleet.name))
        result = evaluate(view, fleet_clients(aws, fleet), fleet_settings(settings, fleet), registry, now,
                          fleet=fleet.name)
        if isinstance(result, SkipReason):
            reasons.append(f"{fleet.name}: {result.skip_message}")
            continue
        cursors[fleet.name] = result.cursor
        run_requests += result.run_requests or []
        if result.skip_reason is not None:
            reasons.append(f"{fleet.name}: {result.skip_reason.skip_message}")
    cursor = json.dumps(cursors, sort_keys=True)
    if run_requests:
        return SensorResult(run_requests=run_requests, cursor=cursor)
    return SensorResult(skip_reason=SkipReason("; ".join(reasons)), cursor=cursor)


class _FleetTick:
    """The sensor context as one fleet's tick sees it: its own cursor, log lines naming the fleet."""

    def __init__(self, context: Any, fleet: str, cursor: str | None) -> None:
        self.instance = context.instance
        self.cursor = cursor
        self.log = _Prefixed(context.log, {"prefix": f"[fleet {fleet}] "})


class _Prefixed(logging.LoggerAdapter):
    """The sensor's log (a ``logging.Logger``), each line starting with its fleet."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.extra['prefix']}{msg}", kwargs


def build_housekeeping_sensor(requests: Sequence[RequestableJob], jobs: Sequence[Any],
                              fleets: Fleets = SINGLE) -> SensorDefinition:
    """The housekeeping queue sensor for these requestable tasks and the jobs they start (each fleet's
    queue, with a fleet list)."""
    registry = build_registry(requests, jobs)
    targets = [job for job in jobs if job.name in {r.job_name for r in registry.values()}]

    @sensor(
        name="housekeeping_queue_sensor",
        minimum_interval_seconds=30,
        jobs=targets,
        default_status=DefaultSensorStatus.RUNNING,
        description="Every 30 s: each request on the housekeeping queue starts the named job (params become its "
        f"run config; task types: {', '.join(sorted(registry))}); a request is deleted only once its run was "
        "launched, a bad one is left for the DLQ.",
    )
    def housekeeping_queue_sensor(context, aws: AwsClients, settings: FleetSettings) -> Any:
        """Every 30 s: each request on the housekeeping queue ({"task_type", "params"}) starts the named job
        (params → run config). A request is deleted only once its run was launched; an unknown task_type or
        bad params is logged and left for the DLQ redrive."""
        if fleets.listed:
            return evaluate_fleets(context, aws, settings, registry, fleets)
        return evaluate(context, aws, settings, registry)

    return housekeeping_queue_sensor
