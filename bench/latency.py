"""AWS's latency and documented rate limits, put in front of the moto server for benchmarks.

Attached to the project's own boto3 clients through botocore's event system (register it
with ``resources.aws.add_client_observer(model.attach)``; botocore's ``before-parameter-build``,
``before-send`` and ``response-received`` events): nothing in the product changes.

* **Latency.** Every HTTP attempt takes at least a modelled round trip: uniform between the
  service's ``lo`` and ``hi`` milliseconds (``LATENCY_MS``, seeded). The attempt is sent to
  moto at once and, when moto answers sooner, the rest of the round trip is slept after the
  answer, so a call costs ``max(modelled latency, moto's own time)``; the calls where moto
  was slower are counted (``moto_over``) and their excess summed, so a run slowed by the
  stand-in says so.
* **Rate limits.** AWS's token buckets (``LIMITS``, each with its source): a request takes
  one token from its request bucket and, for resource-rated APIs (EC2 TerminateInstances:
  instances), as many tokens as it names from its resource bucket; DynamoDB charges
  capacity units per table. An empty bucket answers the attempt as AWS does, after a round
  trip, with the service's throttling error (``RequestLimitExceeded`` for EC2,
  ``ThrottlingException`` for the JSON services, ``ThrottlingException`` (CBOR) for CloudWatch,
  ``ProvisionedThroughputExceededException`` for DynamoDB, ``SlowDown`` for S3), so the
  project's botocore retry configuration (standard mode, 5 attempts) handles it for real.
* **Floor.** :func:`floor` is the least wall time those limits allow for a given set of
  calls: per API, its calls over the concurrency the code used times the mean latency, or
  its bucket's time to serve them (burst first, then the refill rate), whichever is longer;
  summed over the APIs, since every piece calls its APIs phase after phase (find, then
  act).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.awsrequest import AWSResponse

EC2_THROTTLING = "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"
ECS_THROTTLING = "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html"
SSM_QUOTAS = "https://docs.aws.amazon.com/general/latest/gr/ssm.html#limits_ssm"
SQS_QUOTAS = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html"
DDB_ON_DEMAND = "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode.html"
CW_QUOTAS = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_limits.html"
S3_PERFORMANCE = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html"

# Round trip per attempt, milliseconds, uniform in [lo, hi]. AWS publishes no latency
# figures: these are assumed typical in-region round trips (the issue's 20-60 ms), EC2's
# describe calls slower, DynamoDB faster (single-digit-millisecond service time plus the
# network).
LATENCY_MS: dict[str, tuple[float, float]] = {
    "ec2": (40, 120), "ecs": (20, 60), "ssm": (20, 60), "sqs": (10, 30), "dynamodb": (5, 15),
    "s3": (20, 60), "cloudwatch": (20, 60),
}
DEFAULT_LATENCY_MS = (20, 60)


@dataclass(frozen=True)
class Limit:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` a second; what one call takes is ``unit``."""

    bucket: str  # the bucket's name; APIs naming the same bucket share it
    apis: tuple[str, ...]  # "service:Operation"
    burst: float
    rate: float
    unit: str  # "request", "instances", "write units", "read units"
    source: str
    note: str = ""


LIMITS: tuple[Limit, ...] = (
    Limit("ec2:DescribeInstances", ("ec2:DescribeInstances",), 100, 20, "request", EC2_THROTTLING,
          "non-mutating actions"),
    Limit("ec2:TerminateInstances", ("ec2:TerminateInstances",), 100, 5, "request", EC2_THROTTLING,
          "request tokens of TerminateInstances"),
    Limit("ec2:TerminateInstances/instances", ("ec2:TerminateInstances",), 1000, 20, "instances", EC2_THROTTLING,
          "resource tokens: one per instance named"),
    Limit("ecs:task reads", ("ecs:ListTasks", "ecs:DescribeTasks"), 50, 20, "request", ECS_THROTTLING,
          "assumed equal to the page's example (cluster read actions, 50 burst / 20 s)"),
    Limit("ssm:DeleteParameters", ("ssm:DeleteParameters",), 5, 5, "request", SSM_QUOTAS,
          "issue #15: ~5 per s (not in the quota table; the page lists only the Get* throughput)"),
    Limit("ssm:DescribeParameters", ("ssm:DescribeParameters",), 40, 40, "request", SSM_QUOTAS,
          "assumed the default Parameter Store throughput (40 TPS, published for GetParameter(s)/ByPath)"),
    Limit("sqs:fifo SendMessage(Batch) per queue", ("sqs:SendMessage", "sqs:SendMessageBatch"), 300, 300,
          "request", SQS_QUOTAS, "FIFO queues: 300 calls a second per action, per queue (without high throughput)"),
    Limit("sqs:fifo ReceiveMessage per queue", ("sqs:ReceiveMessage",), 300, 300, "request", SQS_QUOTAS,
          "FIFO only; standard queues: nearly unlimited"),
    Limit("sqs:fifo DeleteMessage(Batch) per queue", ("sqs:DeleteMessage", "sqs:DeleteMessageBatch"), 300, 300,
          "request", SQS_QUOTAS, "FIFO only"),
    Limit("dynamodb:table writes", ("dynamodb:BatchWriteItem", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem",
                                    "dynamodb:PutItem", "dynamodb:DeleteItem"), 4000, 4000, "write units",
          DDB_ON_DEMAND, "a new on-demand table: 4,000 write request units a second (1 KB items; 2 a transactional write)"),
    Limit("dynamodb:table reads", ("dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:GetItem"),
          12000, 12000, "read units", DDB_ON_DEMAND,
          "a new on-demand table: 12,000 read request units a second (eventually consistent: 0.5 per 4 KB)"),
    Limit("cloudwatch:PutMetricData", ("cloudwatch:PutMetricData",), 500, 500, "request", CW_QUOTAS, "500 TPS"),
    Limit("cloudwatch:GetMetricData", ("cloudwatch:GetMetricData",), 50, 50, "request", CW_QUOTAS, "50 TPS"),
    Limit("s3:writes", ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjects"), 3500, 3500, "request", S3_PERFORMANCE,
          "3,500 PUT/COPY/POST/DELETE a second per prefix"),
    Limit("s3:reads", ("s3:GetObject", "s3:HeadObject", "s3:ListObjectsV2"), 5500, 5500, "request", S3_PERFORMANCE,
          "5,500 GET/HEAD a second per prefix"),
)

# Per-queue buckets: FIFO limits apply to each queue on its own.
PER_QUEUE = {lim.bucket for lim in LIMITS if lim.bucket.startswith("sqs:fifo")}


class TokenBucket:
    def __init__(self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.clock = burst, rate, clock
        self.tokens, self.at = burst, clock()
        self.lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: float) -> bool:
        """Take ``n`` tokens if there are (a call larger than the bucket waits for a full one)."""
        with self.lock:
            self._refill()
            if self.tokens >= min(n, self.burst):
                self.tokens -= n  # may go below zero for a call larger than the burst
                return True
            return False

    def charge(self, n: float) -> None:
        """Charge after the fact (read units known from the answer); the debt delays later calls."""
        with self.lock:
            self._refill()
            self.tokens -= n


def bucket_time(units: float, burst: float, rate: float) -> float:
    """Least seconds a full bucket needs to serve ``units``: the burst at once, the rest at the refill rate."""
    return max(0.0, units - burst) / rate


# --- answering throttling as AWS does --------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any):
        yield self.body


def _cbor_text(value: str) -> bytes:
    data = value.encode()
    if len(data) < 24:
        return bytes([0x60 + len(data)]) + data
    return bytes([0x78, len(data)]) + data


def throttle_response(url: str, protocol: str, service: str) -> AWSResponse:
    """The service's own throttling answer, in its protocol, for botocore to parse and retry."""
    if protocol == "ec2":
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>bench</RequestID></Response>")
        status, headers = 503, {"content-type": "text/xml"}
    elif protocol == "rest-xml":
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        status, headers = 503, {"content-type": "application/xml"}
    elif protocol == "smithy-rpc-v2-cbor":
        body = bytes([0xA2]) + _cbor_text("__type") + _cbor_text("Throttling") + _cbor_text("message") + \
            _cbor_text("Rate exceeded")
        status, headers = 400, {"content-type": "application/cbor", "smithy-protocol": "rpc-v2-cbor",
                                "x-amzn-query-error": "Throttling;Sender"}
    else:  # json
        code = "ProvisionedThroughputExceededException" if service == "dynamodb" else "ThrottlingException"
        body = json.dumps({"__type": code, "message": "Rate exceeded"}).encode()
        status, headers = 400, {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "bench"}
        if service == "sqs":
            headers["x-amzn-query-error"] = "ThrottlingException;Sender"
    return AWSResponse(url, status, headers, _Raw(body))


# --- what a call costs ---------------------------------------------------------------


def _write_units(op: str, params: dict) -> float:
    if op == "BatchWriteItem":
        return float(sum(len(v) for v in params.get("RequestItems", {}).values()))
    if op == "TransactWriteItems":
        return 2.0 * len(params.get("TransactItems", []))
    return 1.0


def units_for(api: str, params: dict, limit: Limit) -> float:
    if limit.unit == "instances":
        return float(len(params.get("InstanceIds", [])))
    if limit.unit == "write units":
        return _write_units(api.split(":", 1)[1], params)
    if limit.unit == "read units":
        if api.endswith("BatchGetItem"):
            return 0.5 * sum(len(v.get("Keys", [])) for v in params.get("RequestItems", {}).values())
        return 0.5  # Scan / Query / GetItem: the least; the rest is charged from the answer's size
    return 1.0


def _table_of(params: dict) -> str:
    if "TableName" in params:
        return params["TableName"]
    items = params.get("RequestItems") or {}
    if items:
        return next(iter(items))
    for item in params.get("TransactItems", []):
        for op in item.values():
            return op.get("TableName", "")
    return ""


@dataclass
class ApiStats:
    attempts: int = 0
    throttled: int = 0
    units: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    latency: float = 0.0
    moto_over: int = 0
    moto_excess: float = 0.0


@dataclass
class LatencyModel:
    """Per-call latency and AWS's token buckets on every client it is attached to."""

    seed: int = 15
    limits: tuple[Limit, ...] = LIMITS
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(LATENCY_MS))
    enabled: bool = True

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._rng_lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._buckets_lock = threading.Lock()
        self._by_api: dict[str, list[Limit]] = defaultdict(list)
        for limit in self.limits:
            for api in limit.apis:
                self._by_api[api].append(limit)
        self._local = threading.local()
        self._stats_lock = threading.Lock()
        self.stats: dict[str, ApiStats] = defaultdict(ApiStats)

    # -- bookkeeping
    def reset_stats(self) -> None:
        with self._stats_lock:
            self.stats = defaultdict(ApiStats)

    def reset_buckets(self) -> None:
        """Full buckets again (a new run after an idle spell)."""
        with self._buckets_lock:
            self._buckets.clear()

    def _bucket(self, limit: Limit, scope: str) -> TokenBucket:
        key = (limit.bucket, scope)
        with self._buckets_lock:
            if key not in self._buckets:
                self._buckets[key] = TokenBucket(limit.burst, limit.rate)
            return self._buckets[key]

    def _latency(self, service: str) -> float:
        lo, hi = self.latency_ms.get(service, DEFAULT_LATENCY_MS)
        with self._rng_lock:
            return self._rng.uniform(lo, hi) / 1000.0

    def mean_latency(self, service: str) -> float:
        lo, hi = self.latency_ms.get(service, DEFAULT_LATENCY_MS)
        return (lo + hi) / 2000.0

    # -- the hooks
    def attach(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        protocol = client.meta.service_model.resolved_protocol if hasattr(
            client.meta.service_model, "resolved_protocol") else client.meta.service_model.protocol
        events = client.meta.events

        def before_parameter_build(params, model, **_):
            # The API's own parameters (``before-call`` sees the serialised request instead).
            self._local.call = (f"{service}:{model.name}", params)

        def before_send(request, **kwargs):
            if not self.enabled:
                return None
            api, params = getattr(self._local, "call", (None, {}))
            op = kwargs["event_name"].rsplit(".", 1)[-1]
            if api is None or not api.endswith(":" + op):
                api, params = f"{service}:{op}", {}
            latency = self._latency(service)
            throttled = False
            charged: list[tuple[TokenBucket, float]] = []
            work = 1.0  # what the floor counts: instances or capacity units where a bucket does, else calls
            for limit in self._by_api.get(api, ()):
                scope = ""
                if limit.bucket in PER_QUEUE:
                    url = params.get("QueueUrl", "")
                    if not url.endswith(".fifo"):
                        continue
                    scope = url
                elif service == "dynamodb":
                    scope = _table_of(params)
                bucket = self._bucket(limit, scope)
                units = units_for(api, params, limit)
                if limit.unit != "request":
                    work = units
                if bucket.take(units):
                    charged.append((bucket, units))
                else:
                    throttled = True
                    break
            if throttled:  # AWS takes no tokens for a throttled request
                for bucket, units in charged:
                    bucket.charge(-units)
            with self._stats_lock:
                s = self.stats[api]
                s.attempts += 1
                s.in_flight += 1
                s.max_in_flight = max(s.max_in_flight, s.in_flight)
                if throttled:
                    s.throttled += 1
                else:
                    s.units += work
            self._local.sent = (api, time.perf_counter(), latency, throttled, params)
            if throttled:
                time.sleep(latency)
                return throttle_response(request.url, protocol, service)
            return None

        def response_received(response_dict=None, **_):
            sent = getattr(self._local, "sent", None)
            if sent is None:
                return
            self._local.sent = None
            api, started, latency, throttled, params = sent
            elapsed = time.perf_counter() - started
            if not throttled:
                if elapsed < latency:
                    time.sleep(latency - elapsed)
                if service == "dynamodb" and api.rsplit(":", 1)[1] in ("Scan", "Query") and response_dict:
                    size = len(response_dict.get("body") or b"")
                    extra = 0.5 * math.ceil(size / 4096) - 0.5
                    for limit in self._by_api.get(api, ()):
                        if extra > 0:
                            self._bucket(limit, _table_of(params)).charge(extra)
            with self._stats_lock:
                s = self.stats[api]
                s.in_flight -= 1
                s.latency += max(elapsed, latency)
                if not throttled and elapsed > latency:
                    s.moto_over += 1
                    s.moto_excess += elapsed - latency

        events.register("before-parameter-build", before_parameter_build)
        events.register("before-send", before_send)
        events.register("response-received", response_received)

    # -- reporting
    def calls(self) -> Counter:
        """Successful calls (attempts less throttled answers) by ``service:Operation``."""
        return Counter({api: s.attempts - s.throttled for api, s in self.stats.items() if s.attempts})

    def summary(self) -> dict:
        with self._stats_lock:
            return {
                "attempts": sum(s.attempts for s in self.stats.values()),
                "throttled": sum(s.throttled for s in self.stats.values()),
                "moto_over": sum(s.moto_over for s in self.stats.values()),
                "moto_excess_s": round(sum(s.moto_excess for s in self.stats.values()), 1),
            }

    def floor(self, minimum: dict[str, int], units: dict[str, float] | None = None,
              concurrency: dict[str, int] | None = None) -> tuple[float, dict[str, float]]:
        """Least wall seconds for ``minimum`` calls by API (see the module docstring).

        ``units``: resource or capacity units per API where a bucket counts more than calls
        (default: what this model saw succeed); ``concurrency``: calls in flight at once per
        API (default: the most this model saw).
        """
        units = dict(units or {})
        concurrency = dict(concurrency or {})
        for api, s in self.stats.items():
            units.setdefault(api, s.units)
            concurrency.setdefault(api, max(1, s.max_in_flight))
        per_api: dict[str, float] = {}
        for api, n in minimum.items():
            if n <= 0:
                continue
            service = api.split(":", 1)[0]
            waves = math.ceil(n / max(1, concurrency.get(api, 1)))
            seconds = waves * self.mean_latency(service)
            for limit in self._by_api.get(api, ()):
                if limit.bucket in PER_QUEUE:
                    continue  # per-queue buckets: spread over many queues, or one queue's few calls
                need = n if limit.unit == "request" else units.get(api, n)
                seconds = max(seconds, bucket_time(need, limit.burst, limit.rate))
            per_api[api] = seconds
        return sum(per_api.values()), per_api


def limits_table() -> str:
    """Markdown rows of every modelled limit (for bench/README.md)."""
    rows = ["| bucket | APIs | burst | refill / s | unit | source | note |", "|---|---|---|---|---|---|---|"]
    for lim in LIMITS:
        rows.append(f"| {lim.bucket} | {', '.join(lim.apis)} | {lim.burst:g} | {lim.rate:g} | {lim.unit} | "
                    f"{lim.source} | {lim.note} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(limits_table())
    print("\nlatency (ms, uniform):", LATENCY_MS)
