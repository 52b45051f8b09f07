"""Queue health: depth, DLQ depth and oldest-message age of every fleet queue, as the asset `queue_health`.

Which queues: the termination and housekeeping queues, the DLQs their `RedrivePolicy` names,
and every per-runner queue (`ListQueues` by the runner prefix, paged). Per queue, one
`GetQueueAttributes` call reads visible, in flight, delayed and the redrive policy.

The age of the oldest message is **not** an SQS attribute: the only source is the CloudWatch
metric `AWS/SQS ApproximateAgeOfOldestMessage`, which SQS publishes per queue. It is read
with `GetMetricData` (500 queues a call) for the queues that hold messages, taking each
queue's latest datapoint in the lookback window. "Where known" therefore means: a queue with
no messages has no oldest message (`empty`); a queue with messages and a datapoint is
`cloudwatch`; otherwise (no datapoint yet, lookup disabled or denied) it is `unknown`, and
an unknown age is never judged.

Classes, against `QueueHealthConfig` (a value **at** a threshold is in the worse class):
a source queue by its visible depth, its DLQ's depth and its oldest age (per-runner queues
have their own, longer age thresholds: their messages wait for the job to end); a DLQ by
its own depth. Three asset checks judge the whole: DLQ depth, oldest message age, and depth
growth since the previous materialization (read from the Dagster instance); `WARN` when the
worst is degraded, `ERROR` when unhealthy. Two more carry the alert thresholds, DLQ rate and
retry rate over a stated window (``queue_alerts.py``).
"""


import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
else:
    from pipelines.common.lazy import pandas as pd  # imported by the first DataFrame built
from botocore.exceptions import BotoCoreError, ClientError
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    FreshnessPolicy,
    MetadataValue,
    Output,
    TableMetadataValue,
    asset,
)
from pydantic import Field

from pipelines.audit.queue_alerts import rate_outcome, read_activity, window
from pipelines.common.fleets import FLEET_PARTITIONS, own_records
from pipelines.common.aws import METRIC_BATCH, chunks, error_code, queue_name, queue_url
from pipelines.common.contract import QUEUE_GONE_CODES, iso
from pipelines.common.tables import column, table
from resources.aws import AwsClients
from resources.settings import FleetSettings

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
QUEUE_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
]
LIST_PAGE = 1000  # ListQueues' largest page
METRIC_QUERIES_PER_CALL = 500  # GetMetricData's limit
DLQ_KINDS = {"termination_dlq", "housekeeping_dlq", "runner_dlq", "dlq"}
RUNNER_KINDS = {"runner_input", "runner_output", "runner_dlq", "runner_other"}
MISSING = QUEUE_GONE_CODES
MAX_TABLE_ROWS = 200
ASSET = "queue_health"
CHECK_DLQ, CHECK_AGE, CHECK_GROWTH = "dlq_depth", "oldest_message_age", "depth_growth"
CHECK_DLQ_RATE, CHECK_RETRY_RATE = "dlq_rate", "retry_rate"
COLUMNS = ["queue", "kind", "runner_id", "visible", "in_flight", "delayed", "dlq", "dlq_depth",
           "oldest_age_seconds", "age_source", "status", "reasons"]


# --- thresholds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Where healthy ends (``*_degraded``) and unhealthy begins (``*_unhealthy``); at the value counts."""

    depth_degraded: int = 100
    depth_unhealthy: int = 1000
    dlq_degraded: int = 1
    dlq_unhealthy: int = 10
    age_degraded_seconds: float = 300
    age_unhealthy_seconds: float = 1800
    runner_age_degraded_seconds: float = 6 * 3600
    runner_age_unhealthy_seconds: float = 24 * 3600
    growth_degraded: int = 100
    growth_unhealthy: int = 1000

    def __post_init__(self) -> None:
        for name in ("depth", "dlq", "age", "runner_age", "growth"):
            suffix = "_seconds" if "age" in name else ""
            low, high = getattr(self, f"{name}_degraded{suffix}"), getattr(self, f"{name}_unhealthy{suffix}")
            if low <= 0 or high < low:
                raise ValueError(
                    f"thresholds: {name}_degraded{suffix}={low} and {name}_unhealthy{suffix}={high} "
                    "must satisfy 0 < degraded <= unhealthy"
                )


def grade(value: float | None, degraded: float, unhealthy: float) -> str:
    """The class of one measured value; an unknown value is not judged (healthy)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return HEALTHY
    if value >= unhealthy:
        return UNHEALTHY
    if value >= degraded:
        return DEGRADED
    return HEALTHY


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=RANK.__getitem__, default=HEALTHY)


# --- find -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRef:
    name: str
    url: str
    kind: str  # termination | housekeeping | *_dlq | dlq | runner_input | runner_output | runner_dlq | runner_other
    runner_id: str | None = None


@dataclass(frozen=True)
class QueueStats:
    ref: QueueRef
    visible: int
    in_flight: int
    delayed: int
    dlq_name: str | None  # the redrive policy's target, by name
    dlq_account: str | None

    @property
    def holds_messages(self) -> bool:
        return self.visible + self.in_flight + self.delayed > 0


@dataclass
class Survey:
    """What one pass over the fleet's queues found."""

    stats: list[QueueStats] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (queue, why): a named queue that does not exist
    not_deployed: list[str] = field(default_factory=list)  # optional queues (housekeeping) that do not exist
    vanished: list[str] = field(default_factory=list)  # listed, then gone before it was read (a sweep deleted it)


def runner_queue_kind(name: str, prefix: str) -> tuple[str, str | None]:
    rest = name[len(prefix):]
    for part in ("input", "output", "dlq"):
        if rest.startswith(f"{part}-") and len(rest) > len(part) + 1:
            return f"runner_{part}", rest[len(part) + 1:]
    return "runner_other", None


def list_runner_queues(sqs: Any, prefix: str) -> list[QueueRef]:
    """Every per-runner queue (ListQueues by prefix, paged to the end)."""
    refs: list[QueueRef] = []
    pages = sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix, PaginationConfig={"PageSize": LIST_PAGE})
    for page in pages:
        for url in page.get("QueueUrls", []):
            name = queue_name(url)
            kind, runner_id = runner_queue_kind(name, prefix)
            refs.append(QueueRef(name, url, kind, runner_id))
    return refs


def read_queue(sqs: Any, ref: QueueRef) -> QueueStats | None:
    """One GetQueueAttributes call for everything the health of ``ref`` needs; None if the queue is gone."""
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=ref.url, AttributeNames=QUEUE_ATTRIBUTES)["Attributes"]
    except ClientError as error:
        if error_code(error) in MISSING:
            return None
        raise
    dlq_name = dlq_account = None
    policy = attributes.get("RedrivePolicy")
    if policy:
        try:
            arn = json.loads(policy)["deadLetterTargetArn"]
            # arn:aws:sqs:region:account:name
            parts = arn.split(":")
            dlq_account, dlq_name = parts[4], parts[5]
        except (ValueError, KeyError, IndexError, TypeError):
            dlq_name = dlq_account = None  # a malformed policy: report the queue without a DLQ
    return QueueStats(
        ref=ref,
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        dlq_name=dlq_name,
        dlq_account=dlq_account,
    )


def _read_many(sqs: Any, refs: Sequence[QueueRef], workers: int) -> Iterator[tuple[QueueRef, QueueStats | None]]:
    # GetQueueAttributes has no batch form: one call per queue is the minimum, so the calls run
    # concurrently (boto3 clients are thread-safe) to keep thousands of queues within seconds.
    if workers <= 1 or len(refs) <= 1:
        for ref in refs:
            yield ref, read_queue(sqs, ref)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from zip(refs, pool.map(lambda r: read_queue(sqs, r), refs))


def survey_queues(sqs: Any, settings: FleetSettings, *, workers: int = 16) -> Survey:
    """Read every fleet queue once: the two named queues, their DLQs, and the per-runner queues."""
    survey = Survey()
    refs: list[QueueRef] = []
    for kind, configured in (("termination", settings.termination_queue), ("housekeeping", settings.housekeeping_queue)):
        try:
            url = queue_url(sqs, configured)
        except ClientError as error:
            if error_code(error) not in MISSING:
                raise
            _absent(survey, kind, queue_name(configured))
            continue
        refs.append(QueueRef(queue_name(url), url, kind))
    refs += list_runner_queues(sqs, settings.runner_queue_prefix)

    read: dict[str, QueueStats] = {}
    for ref, stats in _read_many(sqs, refs, workers):
        if stats is None:
            if ref.kind in ("termination", "housekeeping"):
                _absent(survey, ref.kind, ref.name)
            else:
                survey.vanished.append(ref.name)
            continue
        read[ref.name] = stats

    # DLQs named by a redrive policy that were not among the listed queues (the named queues'
    # DLQs, or a runner queue redriving outside the prefix): resolve and read each once.
    extra: list[QueueRef] = []
    for stats in list(read.values()):
        if stats.dlq_name and stats.dlq_name not in read and stats.dlq_name not in {r.name for r in extra}:
            try:
                url = sqs.get_queue_url(QueueName=stats.dlq_name, QueueOwnerAWSAccountId=stats.dlq_account)["QueueUrl"]
            except ClientError as error:
                if error_code(error) not in MISSING:
                    raise
                survey.missing.append((stats.dlq_name, f"DLQ of {stats.ref.name} does not exist"))
                continue
            kind = f"{stats.ref.kind}_dlq" if stats.ref.kind in ("termination", "housekeeping") else "dlq"
            extra.append(QueueRef(stats.dlq_name, url, kind))
    for ref, stats in _read_many(sqs, extra, workers):
        if stats is None:
            survey.missing.append((ref.name, "DLQ does not exist"))
        else:
            read[ref.name] = stats
    survey.stats = list(read.values())
    return survey


def _absent(survey: Survey, kind: str, name: str) -> None:
    # The contract makes the housekeeping queue optional: a deployment without it is not sick.
    if kind == "housekeeping":
        survey.not_deployed.append(name)
    else:
        survey.missing.append((name, f"{kind} queue does not exist"))


def oldest_message_ages(
    cloudwatch: Any, queue_names: Sequence[str], now: datetime, *, lookback_minutes: int = 15
) -> dict[str, float]:
    """Latest ``AWS/SQS ApproximateAgeOfOldestMessage`` (seconds) per queue, 500 queues a GetMetricData call.

    A queue without a datapoint in the window is absent from the result (its age is unknown).
    """
    ages: dict[str, float] = {}
    end = now.astimezone(timezone.utc).replace(microsecond=0)
    start = end - timedelta(minutes=lookback_minutes)
    for batch in chunks(queue_names, METRIC_QUERIES_PER_CALL):
        queries = [
            {
                "Id": f"q{n}",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/SQS", "MetricName": "ApproximateAgeOfOldestMessage",
                               "Dimensions": [{"Name": "QueueName", "Value": name}]},
                    "Period": 60,
                    "Stat": "Maximum",
                },
                "ReturnData": True,
            }
            for n, name in enumerate(batch)
        ]
        request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end,
                                   "ScanBy": "TimestampDescending"}
        latest: dict[str, tuple[datetime, float]] = {}
        while True:
            response = cloudwatch.get_metric_data(**request)
            for result in response.get("MetricDataResults", []):
                name = batch[int(result["Id"][1:])]
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", [])):
                    if name not in latest or stamp > latest[name][0]:
                        latest[name] = (stamp, float(value))
            token = response.get("NextToken")
            if not token:
                break
            request["NextToken"] = token
        ages.update({name: value for name, (_, value) in latest.items()})
    return ages


# --- classify -------------------------------------------------------------------------------


def health_frame(survey: Survey, ages: Mapping[str, float], thresholds: Thresholds) -> "pd.DataFrame":
    """One row per queue with its measurements, where its age came from, its class and why."""
    depth_of = {s.ref.name: s.visible for s in survey.stats}
    rows: list[dict[str, Any]] = []
    for s in sorted(survey.stats, key=lambda s: (s.ref.kind in RUNNER_KINDS, s.ref.name)):
        kind = s.ref.kind
        if not s.holds_messages:
            age, age_source = None, "empty"
        elif s.ref.name in ages:
            age, age_source = ages[s.ref.name], "cloudwatch"
        else:
            age, age_source = None, "unknown"
        dlq_depth = depth_of.get(s.dlq_name) if s.dlq_name else None
        reasons: list[tuple[str, str]] = []
        if kind in DLQ_KINDS:
            # A DLQ is judged by what it holds: every message in it is a failure someone must look at.
            reasons.append((grade(s.visible, thresholds.dlq_degraded, thresholds.dlq_unhealthy),
                            f"holds {s.visible} dead letter(s)"))
        else:
            reasons.append((grade(s.visible, thresholds.depth_degraded, thresholds.depth_unhealthy),
                            f"{s.visible} visible"))
            if dlq_depth is not None:
                reasons.append((grade(dlq_depth, thresholds.dlq_degraded, thresholds.dlq_unhealthy),
                                f"DLQ {s.dlq_name} holds {dlq_depth}"))
            if kind in RUNNER_KINDS:
                low, high = thresholds.runner_age_degraded_seconds, thresholds.runner_age_unhealthy_seconds
            else:
                low, high = thresholds.age_degraded_seconds, thresholds.age_unhealthy_seconds
            if age is not None:
                reasons.append((grade(age, low, high), f"oldest message {age:.0f} s old"))
        status = worst(r[0] for r in reasons)
        rows.append({
            "queue": s.ref.name, "kind": kind, "runner_id": s.ref.runner_id, "visible": s.visible,
            "in_flight": s.in_flight, "delayed": s.delayed, "dlq": s.dlq_name, "dlq_depth": dlq_depth,
            "oldest_age_seconds": age, "age_source": age_source, "status": status,
            "reasons": "; ".join(text for level, text in reasons if level != HEALTHY),
        })
    for name, why in survey.missing:
        # A queue the contract names that does not exist cannot deliver anything: unhealthy.
        rows.append({"queue": name, "kind": "missing", "runner_id": None, "visible": None, "in_flight": None,
                     "delayed": None, "dlq": None, "dlq_depth": None, "oldest_age_seconds": None,
                     "age_source": "unknown", "status": UNHEALTHY, "reasons": why})
    return pd.DataFrame(rows, columns=COLUMNS)


def depth_snapshot(frame: "pd.DataFrame", prefix: str) -> dict[str, int]:
    """Depths tracked between materializations: each fleet queue and DLQ, and the per-runner totals."""
    present = frame[frame["kind"] != "missing"]
    fleet = present[~present["kind"].isin(RUNNER_KINDS)]
    snapshot = {row.queue: int(row.visible) for row in fleet.itertuples()}
    runner = present[present["kind"].isin(RUNNER_KINDS - {"runner_dlq"})]
    runner_dlq = present[present["kind"] == "runner_dlq"]
    snapshot[f"{prefix}* (per-runner queues)"] = int(runner["visible"].sum())
    snapshot[f"{prefix}dlq-* (per-runner DLQs)"] = int(runner_dlq["visible"].sum())
    return snapshot


@dataclass(frozen=True)
class CheckOutcome:
    status: str
    description: str
    metadata: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.status == HEALTHY


def dlq_check(frame: "pd.DataFrame", thresholds: Thresholds) -> CheckOutcome:
    """Worst DLQ (fleet and per-runner) by the messages it holds."""
    dlqs = frame[frame["kind"].isin(DLQ_KINDS)]
    if dlqs.empty:
        return CheckOutcome(HEALTHY, "no DLQs found", {"dlqs": 0, "max_depth": 0})
    top = dlqs.sort_values("visible", ascending=False).iloc[0]
    status = grade(int(top["visible"]), thresholds.dlq_degraded, thresholds.dlq_unhealthy)
    nonempty = dlqs[dlqs["visible"] > 0]
    return CheckOutcome(
        status,
        f"deepest DLQ {top['queue']} holds {int(top['visible'])} "
        f"(degraded at {thresholds.dlq_degraded}, unhealthy at {thresholds.dlq_unhealthy})",
        {"dlqs": len(dlqs), "nonempty_dlqs": len(nonempty), "max_depth": int(top["visible"]),
         "deepest": str(top["queue"]), "total_dead_letters": int(dlqs["visible"].sum())},
    )


def age_check(frame: "pd.DataFrame", thresholds: Thresholds) -> CheckOutcome:
    """Worst oldest-message age among source queues whose age is known."""
    sources = frame[~frame["kind"].isin(DLQ_KINDS | {"missing"})]
    known = sources[sources["age_source"] == "cloudwatch"]
    unknown = int((sources["age_source"] == "unknown").sum())
    if known.empty:
        return CheckOutcome(HEALTHY, f"no known ages to judge ({unknown} queue(s) with messages of unknown age)",
                            {"known": 0, "unknown": unknown})
    statuses = []
    for row in known.itertuples():
        if row.kind in RUNNER_KINDS:
            statuses.append(grade(row.oldest_age_seconds, thresholds.runner_age_degraded_seconds,
                                  thresholds.runner_age_unhealthy_seconds))
        else:
            statuses.append(grade(row.oldest_age_seconds, thresholds.age_degraded_seconds,
                                  thresholds.age_unhealthy_seconds))
    known = known.assign(grade=statuses)
    top = known.sort_values(by=["grade", "oldest_age_seconds"], key=lambda c: c.map(RANK) if c.name == "grade" else c,
                            ascending=False).iloc[0]
    return CheckOutcome(
        worst(statuses),
        f"{top['queue']}: oldest message {top['oldest_age_seconds']:.0f} s old ({top['grade']})",
        {"known": len(known), "unknown": unknown, "oldest_seconds": float(known["oldest_age_seconds"].max()),
         "worst_queue": str(top["queue"]), "degraded": statuses.count(DEGRADED),
         "unhealthy": statuses.count(UNHEALTHY)},
    )


def growth_check(previous: Mapping[str, int] | None, current: Mapping[str, int], thresholds: Thresholds) -> CheckOutcome:
    """Largest rise of a tracked depth since the previous materialization."""
    if previous is None:
        return CheckOutcome(HEALTHY, "first materialization: no previous depths to compare", {"compared": 0})
    growth = {name: current[name] - int(previous[name]) for name in current if name in previous}
    if not growth:
        return CheckOutcome(HEALTHY, "no queue in common with the previous materialization", {"compared": 0})
    name, rise = max(growth.items(), key=lambda item: item[1])
    status = grade(rise, thresholds.growth_degraded, thresholds.growth_unhealthy)
    return CheckOutcome(
        status,
        f"largest rise: {name} by {rise} message(s) (degraded at +{thresholds.growth_degraded}, "
        f"unhealthy at +{thresholds.growth_unhealthy})",
        {"compared": len(growth), "max_growth": int(rise), "queue": name,
         "growth": MetadataValue.json({k: int(v) for k, v in growth.items()})},
    )


def queue_metric_data(frame: "pd.DataFrame", prefix: str) -> list[dict[str, Any]]:
    """QueueDepth and DLQDepth, dimension Queue: each fleet queue, plus one total for all per-runner queues.

    Per-runner queues are summed, not published one by one: thousands of short-lived custom
    metrics would cost more than the fleet they describe and say less than the total.
    """
    present = frame[frame["kind"] != "missing"]
    data: list[dict[str, Any]] = []

    def datum(name: str, queue: str, value: int) -> dict[str, Any]:
        return {"MetricName": name, "Value": float(value), "Unit": "Count",
                "Dimensions": [{"Name": "Queue", "Value": queue}]}

    for row in present[~present["kind"].isin(RUNNER_KINDS)].itertuples():
        data.append(datum("DLQDepth" if row.kind in DLQ_KINDS else "QueueDepth", row.queue, int(row.visible)))
    runner = present[present["kind"].isin(RUNNER_KINDS - {"runner_dlq"})]
    runner_dlq = present[present["kind"] == "runner_dlq"]
    data.append(datum("QueueDepth", f"{prefix}*", int(runner["visible"].sum())))
    data.append(datum("DLQDepth", f"{prefix}dlq-*", int(runner_dlq["visible"].sum())))
    return data


def publish(cloudwatch: Any, namespace: str, data: Sequence[dict[str, Any]]) -> int:
    calls = 0
    for batch in chunks(data, METRIC_BATCH):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=batch)
        calls += 1
    return calls


QUEUE_TABLE_COLUMNS = [
    column("queue"),
    column("status", description="healthy, degraded or unhealthy against the run's thresholds"),
    column("kind"),
    column("visible", "int"), column("in flight", "int"), column("delayed", "int"),
    column("DLQ depth", "int", "messages in the DLQ this queue redrives to"),
    column("oldest age (s)", "float", "AWS/SQS ApproximateAgeOfOldestMessage; empty: see age source"),
    column("age source", description="cloudwatch, empty (no messages) or unknown"),
    column("why", description="the measurements past a threshold"),
]


def queues_table(frame: "pd.DataFrame") -> TableMetadataValue:
    """Fleet queues always, then the non-healthy per-runner queues (worst first), capped for the UI."""
    fleet = frame[~frame["kind"].isin(RUNNER_KINDS)]
    runner = frame[frame["kind"].isin(RUNNER_KINDS) & (frame["status"] != HEALTHY)]
    runner = runner.sort_values("status", key=lambda c: c.map(RANK), ascending=False)
    rows = [{
        "queue": r["queue"], "status": r["status"], "kind": r["kind"], "visible": _count(r["visible"]),
        "in flight": _count(r["in_flight"]), "delayed": _count(r["delayed"]), "DLQ depth": _count(r["dlq_depth"]),
        "oldest age (s)": round(float(r["oldest_age_seconds"])) if r["age_source"] == "cloudwatch" else None,
        "age source": r["age_source"], "why": r["reasons"] or None,
    } for r in pd.concat([fleet, runner]).to_dict("records")]
    return table(QUEUE_TABLE_COLUMNS, rows, cap=MAX_TABLE_ROWS, rest="non-healthy in the asset value")


def _count(value: Any) -> int | None:
    # A missing queue's row has no measurements: pandas holds them as NaN in a float column.
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def dead_letters(frame: "pd.DataFrame") -> tuple[int, int]:
    """(messages in every DLQ, the deepest DLQ's depth): the numbers the asset page plots."""
    dlqs = frame[frame["kind"].isin(DLQ_KINDS)]
    if dlqs.empty:
        return 0, 0
    return int(dlqs["visible"].sum()), int(dlqs["visible"].max())


# --- Dagster layer --------------------------------------------------------------------------


class QueueHealthConfig(Config):
    """Thresholds of the health classes (a value at a threshold is in the worse class) and how ages are read."""

    depth_degraded: int = Field(default=100, description="Visible messages at which a queue is degraded.")
    depth_unhealthy: int = Field(default=1000, description="Visible messages at which a queue is unhealthy.")
    dlq_degraded: int = Field(default=1, description="Dead letters at which a DLQ (and its source) is degraded.")
    dlq_unhealthy: int = Field(default=10, description="Dead letters at which a DLQ (and its source) is unhealthy.")
    age_degraded_seconds: float = Field(
        default=300, description="Oldest-message age (s) at which the termination/housekeeping queue is degraded: "
        "their sensors poll every 30 s.")
    age_unhealthy_seconds: float = Field(default=1800, description="… and unhealthy.")
    runner_age_degraded_seconds: float = Field(
        default=6 * 3600, description="Oldest-message age (s) at which a per-runner queue is degraded: its messages "
        "wait for the job, up to the default max runtime (6 h).")
    runner_age_unhealthy_seconds: float = Field(default=24 * 3600, description="… and unhealthy (the orphan age).")
    growth_degraded: int = Field(
        default=100, description="Rise in a tracked depth since the previous materialization at which the growth "
        "check warns.")
    growth_unhealthy: int = Field(default=1000, description="… and at which it errors.")
    oldest_age_from_cloudwatch: bool = Field(
        default=True, description="Read ages from CloudWatch (GetMetricData, only for queues holding messages); "
        "off: every age is unknown.")
    age_lookback_minutes: int = Field(default=15, ge=1, le=1440, description="Window for the latest age datapoint.")
    dlq_rate_percent: float = Field(
        default=5, gt=0, le=100, description="Check dlq_rate fails when a fleet queue's DLQ arrivals exceed this "
        "percentage of the messages it received in the alert window.")
    retry_rate_percent: float = Field(
        default=10, gt=0, le=100, description="Check retry_rate fails when a fleet queue's retries (receives not "
        "followed by a delete) exceed this percentage of its receives in the alert window.")
    alert_window_minutes: int = Field(
        default=60, ge=5, le=1440, description="The window of the dlq_rate and retry_rate checks (whole 5-minute "
        "periods ending now).")
    workers: int = Field(default=16, ge=1, le=16, description="Concurrent GetQueueAttributes calls.")

    def thresholds(self) -> Thresholds:
        return Thresholds(
            depth_degraded=self.depth_degraded, depth_unhealthy=self.depth_unhealthy,
            dlq_degraded=self.dlq_degraded, dlq_unhealthy=self.dlq_unhealthy,
            age_degraded_seconds=self.age_degraded_seconds, age_unhealthy_seconds=self.age_unhealthy_seconds,
            runner_age_degraded_seconds=self.runner_age_degraded_seconds,
            runner_age_unhealthy_seconds=self.runner_age_unhealthy_seconds,
            growth_degraded=self.growth_degraded, growth_unhealthy=self.growth_unhealthy,
        )


def _severity(status: str) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if status == UNHEALTHY else AssetCheckSeverity.WARN


def _check_result(name: str, outcome: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name, passed=outcome.passed, severity=_severity(outcome.status),
        description=outcome.description, metadata={"status": outcome.status, **outcome.metadata},
    )


def _previous_depths(context: AssetExecutionContext) -> Mapping[str, int] | None:
    # The current materialization is stored only after this function yields it, so the
    # latest one on the instance is the previous run's.
    records = context.instance.fetch_materializations(own_records(context), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("depths")
    data = getattr(value, "value", None)
    return data if isinstance(data, dict) else None


@asset(
    name=ASSET,
    group_name="queue_health",
    kinds={"aws", "pandas"},
    partitions_def=FLEET_PARTITIONS,
    # Every 5 minutes: two missed runs are worth a look, four mean the schedule is not running.
    freshness_policy=FreshnessPolicy.time_window(fail_window=timedelta(minutes=20), warn_window=timedelta(minutes=10)),
    check_specs=[
        AssetCheckSpec(CHECK_DLQ, asset=ASSET, description="Deepest DLQ: WARN when degraded, ERROR when unhealthy."),
        AssetCheckSpec(CHECK_AGE, asset=ASSET,
                       description="Oldest message among queues whose age is known: WARN / ERROR by threshold."),
        AssetCheckSpec(CHECK_GROWTH, asset=ASSET,
                       description="Largest depth rise since the previous materialization: WARN / ERROR by threshold."),
        AssetCheckSpec(CHECK_DLQ_RATE, asset=ASSET,
                       description="ERROR when a fleet queue's DLQ arrivals exceed dlq_rate_percent (5 %) of the "
                       "messages it received over the last alert_window_minutes (60 min), from AWS/SQS metrics."),
        AssetCheckSpec(CHECK_RETRY_RATE, asset=ASSET,
                       description="ERROR when a fleet queue's retries (receives not followed by a delete) exceed "
                       "retry_rate_percent (10 %) of its receives over the last alert_window_minutes (60 min)."),
    ],
)
def queue_health(
    context: AssetExecutionContext, config: QueueHealthConfig, aws: AwsClients, settings: FleetSettings
) -> Iterator[Output | AssetCheckResult]:
    """Every fleet queue's visible, in-flight, delayed, DLQ depth and oldest-message age, classed healthy /
    degraded / unhealthy.

    Covers the termination and housekeeping queues, their DLQs and all per-runner queues; one
    GetQueueAttributes per queue, ages from CloudWatch for queues that hold messages. Publishes
    QueueDepth and DLQDepth; the asset checks turn the UI red on DLQ depth, age or growth, and on the alert
    thresholds: DLQ rate and retry rate of the fleet queues over the alert window (AWS/SQS metrics).
    """
    thresholds = config.thresholds()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    previous = _previous_depths(context)
    survey = survey_queues(aws.sqs, settings, workers=config.workers)
    if survey.vanished:
        context.log.info(f"{len(survey.vanished)} per-runner queue(s) were deleted while being read; skipped")

    ages: dict[str, float] = {}
    age_note = "CloudWatch lookup disabled by config"
    if config.oldest_age_from_cloudwatch:
        with_messages = [s.ref.name for s in survey.stats if s.holds_messages]
        try:
            ages = oldest_message_ages(aws.cloudwatch, with_messages, now, lookback_minutes=config.age_lookback_minutes)
            age_note = f"CloudWatch: {len(ages)} of {len(with_messages)} queue(s) with messages had a datapoint"
        except (ClientError, BotoCoreError) as error:
            # Ages are optional evidence: without them the other measurements still stand.
            age_note = f"CloudWatch GetMetricData failed ({error_code(error) or type(error).__name__}): ages unknown"
            context.log.warning(age_note)

    frame = health_frame(survey, ages, thresholds)
    depths = depth_snapshot(frame, settings.runner_queue_prefix)
    publish(aws.cloudwatch, settings.metrics_namespace, queue_metric_data(frame, settings.runner_queue_prefix))
    counts = frame["status"].value_counts().to_dict()
    total_dead, deepest = dead_letters(frame)
    healthy_runner = int((frame["kind"].isin(RUNNER_KINDS) & (frame["status"] == HEALTHY)).sum())
    for row in frame[frame["status"] != HEALTHY].head(50).itertuples():
        context.log.warning(f"queue {row.queue} is {row.status}: {row.reasons}")
    yield Output(frame, metadata={
        "as_of": iso(now),
        # Numbers, so the asset page plots them over its materializations.
        "queues": MetadataValue.int(len(frame)),
        HEALTHY: MetadataValue.int(int(counts.get(HEALTHY, 0))),
        DEGRADED: MetadataValue.int(int(counts.get(DEGRADED, 0))),
        UNHEALTHY: MetadataValue.int(int(counts.get(UNHEALTHY, 0))),
        "dlq_depth_total": MetadataValue.int(total_dead),
        "dlq_depth_max": MetadataValue.int(deepest),
        "oldest_age_source": age_note,
        "optional_queues_not_deployed": MetadataValue.json(survey.not_deployed),
        "depths": MetadataValue.json(depths),
        "queues_table": queues_table(frame),
        "healthy_runner_queues_not_listed": MetadataValue.int(healthy_runner),
        "dagster/row_count": len(frame),
    })
    yield _check_result(CHECK_DLQ, dlq_check(frame, thresholds))
    yield _check_result(CHECK_AGE, age_check(frame, thresholds))
    yield _check_result(CHECK_GROWTH, growth_check(previous, depths, thresholds))
    yield from rate_checks(context, config, aws, survey, now)


def rate_checks(context: AssetExecutionContext, config: QueueHealthConfig, aws: AwsClients, survey: Survey,
                now: datetime) -> Iterator[AssetCheckResult]:
    """The alert thresholds: DLQ rate and retry rate of each fleet queue over the window (queue_alerts.py)."""
    pairs = [(s.ref.name, s.dlq_name) for s in survey.stats
             if s.ref.kind in ("termination", "housekeeping") and s.dlq_name]
    start, end = window(now, config.alert_window_minutes)
    try:
        activity = read_activity(aws.cloudwatch, pairs, start, end)
    except (ClientError, BotoCoreError) as error:
        why = f"GetMetricData failed ({error_code(error) or type(error).__name__}): rates unknown"
        context.log.warning(f"queue alert rates: {why}")
        for name in (CHECK_DLQ_RATE, CHECK_RETRY_RATE):
            yield AssetCheckResult(check_name=name, passed=False, severity=AssetCheckSeverity.WARN, description=why,
                                   metadata={"window_minutes": config.alert_window_minutes})
        return
    for name, kind, threshold in ((CHECK_DLQ_RATE, "dlq", config.dlq_rate_percent),
                                  (CHECK_RETRY_RATE, "retry", config.retry_rate_percent)):
        outcome = rate_outcome(kind, activity, threshold, config.alert_window_minutes, start, end)
        if not outcome.passed:
            context.log.warning(f"{name}: {outcome.description}")
        yield AssetCheckResult(
            check_name=name, passed=outcome.passed, severity=AssetCheckSeverity.ERROR, description=outcome.description,
            metadata={**{k: v for k, v in outcome.metadata.items() if k != "queues"},
                      "queues": MetadataValue.json(outcome.metadata["queues"])},
        )
