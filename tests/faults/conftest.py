"""Fault injection on the project's real boto3 clients, through botocore's event system.

Nothing of the project is patched: ``resources.aws.add_client_observer`` hands us every
client the project creates, and we register botocore event handlers on it:

- transient errors (``before-send``): every Nth HTTP request (any service) is
  answered with a throttling error (in the service's own wire format) or an HTTP 500,
  without reaching moto, so botocore's own retry logic (standard mode, backoff with
  jitter) sees exactly what AWS would send;
- partial batch failures (``provide-client-params`` + ``after-call``): some entries of a
  batch call are really dropped from the request before it is sent, and the answer reports
  them as not processed (``UnprocessedItems``/``UnprocessedKeys``, ``Failed`` entries,
  ``InvalidParameters``), so an entry the code believes done really is done. A transaction
  (``TransactWriteItems``) is all or nothing, so its partial failure is the one AWS sends:
  every other call is answered (``before-call``, nothing reaches moto) with a
  ``TransactionCanceledException`` whose ``CancellationReasons`` name a
  ``TransactionConflict`` for the second half of the actions and ``None`` for the rest;
- crashes (``provide-client-params``, before the call is built or sent): the Nth call of one
  operation raises ``InjectedCrash``, a ``BaseException`` like the ``SystemExit`` or
  ``KeyboardInterrupt`` of a killed worker, so no ``except Exception`` in the code can
  swallow it: nothing after that point runs.

Faults are armed only while a test says so (``with faults.armed():``), so seeding and
reading the end state use the same clients untouched.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from resources.aws import add_client_observer
from sandbox.server import MOTO_ACCOUNT_ID


class InjectedCrash(BaseException):
    """The process dies here (a BaseException, as SystemExit would be: `except Exception` does not catch it)."""


class _Raw:
    """Just enough of urllib3's response for botocore to read an injected body."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _throttle_response(protocol: str, url: str) -> AWSResponse:
    """A throttling error as each wire protocol carries it (botocore retries these codes with backoff)."""
    if protocol == "json":
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded (injected)"}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-query-error": "ThrottlingException;Sender"}
        return AWSResponse(url, 400, headers, _Raw(body))
    if protocol == "ec2":
        body = (b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded "
                b"(injected)</Message></Error></Errors><RequestID>injected</RequestID></Response>")
        return AWSResponse(url, 503, {"Content-Type": "text/xml"}, _Raw(body))
    if protocol == "rest-xml":  # S3
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected)</Message></Error>"
        return AWSResponse(url, 503, {"Content-Type": "application/xml"}, _Raw(body))
    # query (and anything else): a 503 carries the throttling code in XML; botocore retries 503 regardless
    body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded (injected)"
            b"</Message></Error><RequestId>injected</RequestId></ErrorResponse>")
    return AWSResponse(url, 503, {"Content-Type": "text/xml"}, _Raw(body))


def _server_error_response(url: str) -> AWSResponse:
    return AWSResponse(url, 500, {}, _Raw(b""))


# ---- partial batch failures: drop entries from the request, report them as not processed --------

def _split(entries: list[Any]) -> tuple[list[Any], list[Any]]:
    """Keep the first half (at least one), drop the rest: the call always makes progress."""
    keep = max(1, (len(entries) + 1) // 2)
    return entries[:keep], entries[keep:]


def _drop_batch_write(params: dict[str, Any]) -> Any:
    dropped = {}
    for table, requests in list(params["RequestItems"].items()):
        kept, rest = _split(requests)
        params["RequestItems"][table] = kept
        if rest:
            dropped[table] = rest
    return dropped


def _report_batch_write(parsed: dict[str, Any], dropped: Any) -> int:
    if dropped:
        merged = dict(parsed.get("UnprocessedItems") or {})
        for table, rest in dropped.items():
            merged[table] = list(merged.get(table, [])) + rest
        parsed["UnprocessedItems"] = merged
    return sum(len(r) for r in dropped.values())


def _drop_batch_get(params: dict[str, Any]) -> Any:
    dropped = {}
    for table, spec in list(params["RequestItems"].items()):
        kept, rest = _split(spec["Keys"])
        params["RequestItems"][table] = {**spec, "Keys": kept}
        if rest:
            dropped[table] = {**spec, "Keys": rest}
    return dropped


def _report_batch_get(parsed: dict[str, Any], dropped: Any) -> int:
    if dropped:
        merged = dict(parsed.get("UnprocessedKeys") or {})
        for table, spec in dropped.items():
            merged[table] = spec
        parsed["UnprocessedKeys"] = merged
    return sum(len(s["Keys"]) for s in dropped.values())


def _drop_entries(params: dict[str, Any]) -> Any:
    kept, rest = _split(params["Entries"])
    params["Entries"] = kept
    return rest


def _report_failed_entries(parsed: dict[str, Any], dropped: Any) -> int:
    if dropped:
        parsed["Failed"] = list(parsed.get("Failed", [])) + [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected partial failure"}
            for e in dropped
        ]
    return len(dropped)


def _drop_names(params: dict[str, Any]) -> Any:
    kept, rest = _split(params["Names"])
    params["Names"] = kept
    return rest


def _report_invalid_names(parsed: dict[str, Any], dropped: Any) -> int:
    if dropped:
        parsed["InvalidParameters"] = list(parsed.get("InvalidParameters", [])) + dropped
    return len(dropped)


TRANSACTION = ("dynamodb", "TransactWriteItems")  # partial failure: a cancellation (see the module docstring)

PARTIAL: dict[tuple[str, str], tuple[Callable[[dict], Any], Callable[[dict, Any], int]]] = {
    ("dynamodb", "BatchWriteItem"): (_drop_batch_write, _report_batch_write),
    ("dynamodb", "BatchGetItem"): (_drop_batch_get, _report_batch_get),
    ("sqs", "DeleteMessageBatch"): (_drop_entries, _report_failed_entries),
    ("sqs", "ChangeMessageVisibilityBatch"): (_drop_entries, _report_failed_entries),
    ("sqs", "SendMessageBatch"): (_drop_entries, _report_failed_entries),
    ("ssm", "DeleteParameters"): (_drop_names, _report_invalid_names),
}


@dataclass
class Faults:
    """The fault plan of one test; handlers are on every client, faults fire only while armed."""

    transient_every: int = 0  # every Nth request of any armed service fails (0: off)
    partial_ops: set[tuple[str, str]] = field(default_factory=set)
    crash_op: tuple[str, str] | None = None  # (service, Operation)
    crash_on_call: int = 1
    crash_when: Callable[[dict[str, Any]], bool] = lambda params: True

    _armed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    sends: int = 0
    injected: Counter = field(default_factory=Counter)  # what was injected, by kind
    _crash_calls: int = 0
    _pending: dict[tuple[int, str], Any] = field(default_factory=dict)  # (thread, operation) -> dropped entries
    _transactions: int = 0

    @contextmanager
    def armed(self) -> Iterator[Faults]:
        self._armed = True
        try:
            yield self
        finally:
            self._armed = False

    # -- handlers (botocore passes keyword arguments) --

    def _before_send(self, request: Any, model: Any = None, **_: Any) -> AWSResponse | None:
        if not self._armed or not self.transient_every:
            return None
        with self._lock:
            self.sends += 1
            n = self.sends
        if n % self.transient_every:
            return None
        protocol = model.metadata.get("protocol", "") if model is not None else ""
        # alternate the two kinds so every scenario sees both
        if (n // self.transient_every) % 2:
            self.injected["throttling"] += 1
            return _throttle_response(protocol, request.url)
        self.injected["http_500"] += 1
        return _server_error_response(request.url)

    def _crash_check(self, params: dict[str, Any], event_name: str = "", **_: Any) -> None:
        if not self._armed or self.crash_op is None:
            return
        service, operation = event_name.split(".")[1:3]
        if self.crash_op != (service, operation) or not self.crash_when(params):
            return
        with self._lock:
            self._crash_calls += 1
            fire = self._crash_calls == self.crash_on_call
        if fire:
            self.injected[f"crash before {operation}"] += 1
            raise InjectedCrash(f"injected crash before {service}.{operation} call {self.crash_on_call}")

    def _provide_params(self, key: tuple[str, str]) -> Callable[..., None]:
        drop, _ = PARTIAL[key]

        def handler(params: dict[str, Any], **_: Any) -> None:
            if self._armed and key in self.partial_ops:
                # Set (or replaced) per call, so a call that ended in an exception leaves nothing stale behind.
                self._pending[(threading.get_ident(), key[1])] = drop(params)
            else:
                self._pending.pop((threading.get_ident(), key[1]), None)
        return handler

    def _after_call(self, key: tuple[str, str]) -> Callable[..., None]:
        _, report = PARTIAL[key]

        def handler(parsed: dict[str, Any], **_: Any) -> None:
            dropped = self._pending.pop((threading.get_ident(), key[1]), None)
            if dropped is not None:
                self.injected[f"partial {key[1]}"] += report(parsed, dropped)
        return handler

    def _cancel_transaction(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not self._armed or TRANSACTION not in self.partial_ops:
            return None
        actions = json.loads(params["body"])["TransactItems"]
        kept, rest = _split(actions)
        with self._lock:
            self._transactions += 1
            cancel = bool(rest) and self._transactions % 2 == 1
        if not cancel:
            return None
        self.injected["partial TransactWriteItems"] += len(rest)
        reasons = [{"Code": "None"}] * len(kept) + [
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item (injected)"}] * len(rest)
        parsed = {"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled (injected)"},
                  "CancellationReasons": reasons, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse(params["url"], 400, {}, _Raw(b"")), parsed

    def observe(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        events = client.meta.events
        if service == TRANSACTION[0]:
            events.register(f"before-call.{service}.{TRANSACTION[1]}", self._cancel_transaction)
        events.register("before-send", self._before_send)
        # provide-client-params: the API parameters as the caller passed them, before anything is sent
        events.register("provide-client-params", self._crash_check)
        for key in PARTIAL:
            if key[0] == service:
                events.register(f"provide-client-params.{service}.{key[1]}", self._provide_params(key))
                events.register(f"after-call.{service}.{key[1]}", self._after_call(key))


@pytest.fixture()
def faults(aws) -> Iterator[Faults]:
    """A fault plan hooked into every client created from now on, including the ``aws`` fixture's (created lazily)."""
    plan = Faults()
    remove = add_client_observer(plan.observe)
    try:
        yield plan
    finally:
        remove()


# ---- reading moto's in-process state (never the code under test) -----------------------------------

def sqs_backend(region: str) -> Any:
    from moto.sqs.models import sqs_backends

    return sqs_backends[MOTO_ACCOUNT_ID][region]


def queue_bodies(region: str, name: str) -> list[str]:
    """Every message body a queue holds, visible or in flight, read from moto without receiving it."""
    queue = sqs_backend(region).queues.get(name)
    return [] if queue is None else [m.body for m in queue._messages]


def expire_in_flight(region: str, name: str | None = None) -> int:
    """Make in-flight messages (of one queue, or of every queue) visible now: the visibility
    timeout of a dead or failed consumer has passed.

    This is the clock moving on (as backdating is), not a change to the code under test."""
    backend = sqs_backend(region)
    queues = [backend.queues[name]] if name is not None and name in backend.queues else (
        [] if name is not None else list(backend.queues.values()))
    count = 0
    for queue in queues:
        for message in queue._messages:
            if not message.visible:
                message.visible_at = 0.0
                count += 1
    return count
