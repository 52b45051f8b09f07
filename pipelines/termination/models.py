"""The termination queue's boundary: its two message shapes as strict pydantic models, and why one is refused.

``TERMINATION_QUEUE_MESSAGE`` validates a decoded JSON object as one of two models, chosen by its
shape (see shared/fleet-contract.md):

- ``AgentMessage``: the runner agent's termination message (``instance_id``, ``job_id``, ``status``
  required; unknown fields ignored);
- ``EcsTaskStateChange``: EventBridge's ECS Task State Change, whenever it says ``source: aws.ecs``
  or has a ``detail-type``.

Strict means no coercion: ``"0"`` is no exit code, ``true`` no number, a list no job id. Each
value has one validator, built from the contract's vocabulary (``is_runner_id``,
``plain_token``, ``parse_utc_time``, ``FINISHED_STATUSES``, ``loggable``). ``refusal`` turns a
``ValidationError`` into one reason that names the field and never quotes the body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

from pipelines.common.contract import (
    FINISHED_STATUSES,
    JOB_ID_MAX,
    is_runner_id,
    iso,
    loggable,
    parse_iso,
    parse_utc_time,
    plain_token,
)

ECS_SOURCE = "aws.ecs"
ECS_DETAIL_TYPE = "ECS Task State Change"
RUNNER_ID_RULE = "letters, digits, '-' or '_', at most 64"
TIME_EXAMPLE = "2026-11-22T10:05:14Z"


# ---- the values ------------------------------------------------------------------------------

def _required(value: Any) -> Any:
    # A required field that is null or "" is as missing as one that is absent.
    if value is None or value == "":
        raise PydanticKnownError("missing")
    return value


def _runner_id(value: str) -> str:
    if not is_runner_id(value):
        raise PydanticCustomError("runner_id", "is not a runner id")
    return value


def _job_id_digits(value: Any) -> Any:
    # A job id may arrive as a JSON integer (the contract's example is "8812"): its digits are the id.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _job_id_token(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("job_id_blank", "is blank")
    if not plain_token(value):
        raise PydanticCustomError("job_id_characters", "holds a space, control, format or surrogate character")
    return value


def _utc_time(value: str) -> str:
    try:
        parse_utc_time(value)
    except (ValueError, OverflowError):
        raise PydanticCustomError("utc_time", "is not an ISO 8601 UTC time") from None
    return value  # kept as written: the job record stores the runner's own text


def _text(limit: int, *, empty_is_absent: bool):
    """Free text the contract does not require (a correlation id, a stop reason): kept log-safe, and
    anything but a string is as if absent, never a reason to refuse the message."""
    def clean(value: Any) -> str | None:
        if not isinstance(value, str) or (empty_is_absent and not value):
            return None
        return loggable(value, limit)
    return BeforeValidator(clean)


def _time_or_none(value: Any) -> str | None:
    # ECS's stoppedAt, in the contract's format; an unreadable one is as if absent (the drain uses "now").
    if not isinstance(value, str):
        return None
    try:
        return iso(parse_iso(value))
    except (ValueError, OverflowError):
        return None


RunnerId = Annotated[str, BeforeValidator(_required), AfterValidator(_runner_id)]
JobId = Annotated[str, BeforeValidator(_required), BeforeValidator(_job_id_digits),
                  StringConstraints(max_length=JOB_ID_MAX), AfterValidator(_job_id_token)]
FinishedStatus = Annotated[Literal[FINISHED_STATUSES], BeforeValidator(_required)]  # type: ignore[valid-type]
ExitCode = int  # strict: a bool, a float or "0" is refused
Duration = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # strict: an int is taken, a bool or "314" is not
UtcTime = Annotated[str, AfterValidator(_utc_time)]
CorrelationId = Annotated[str | None, _text(128, empty_is_absent=True)]  # "" falls back to the attribute
StopReason = Annotated[str | None, _text(256, empty_is_absent=False)]
StopTime = Annotated[str | None, BeforeValidator(_time_or_none)]


class _Strict(BaseModel):
    # No coercion; fields the contract does not name are ignored, as it says.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Message(_Strict):
    correlation_id: CorrelationId = None


# ---- the runner agent's message --------------------------------------------------------------

class AgentMessage(_Message):
    """The runner agent's last act: which runner ended, which job, and how."""

    instance_id: RunnerId
    job_id: JobId
    status: FinishedStatus
    exit_code: ExitCode | None = None
    duration_seconds: Duration | None = None
    started_at: UtcTime | None = None
    completed_at: UtcTime | None = None

    @model_validator(mode="after")
    def _in_order(self) -> AgentMessage:
        duration = self.duration
        if duration is not None and duration < 0:
            raise PydanticCustomError("time_order", "completed_at is before started_at")
        return self

    @property
    def duration(self) -> float | None:
        """The message's duration, else completed_at − started_at when it gives both."""
        if self.duration_seconds is not None:
            return float(self.duration_seconds)
        if self.started_at and self.completed_at:
            return (parse_utc_time(self.completed_at) - parse_utc_time(self.started_at)).total_seconds()
        return None


# ---- EventBridge's ECS task state change -----------------------------------------------------

def _task_arn(value: str) -> str:
    if ":task/" not in value:
        raise PydanticCustomError("task_arn", "not of the form")
    if not is_runner_id(value.split(":task/", 1)[1].split("/")[-1]):
        raise PydanticCustomError("task_id", "taskArn does not end in a task id")
    return value


class EcsTaskDetail(_Strict):
    """The event's ``detail``: the task, its cluster and its state."""

    task_arn: Annotated[str, AfterValidator(_task_arn)] = Field(alias="taskArn")
    # The task's cluster: clusterArn's, else the long task ARN format's (task/CLUSTER/ID).
    cluster: Any = Field(default=None, alias="clusterArn", validate_default=True)
    last_status: Annotated[str, StringConstraints(min_length=1)] = Field(alias="lastStatus")
    stopped_reason: StopReason = Field(default=None, alias="stoppedReason")
    stopped_at: StopTime = Field(default=None, alias="stoppedAt")

    @field_validator("cluster")
    @classmethod
    def _fleet_cluster(cls, cluster_arn: Any, info: ValidationInfo) -> str | None:
        # Checked before lastStatus: another cluster's task ids are not this fleet's runners.
        task_arn = info.data.get("task_arn")
        if task_arn is None:
            return None  # the taskArn's own refusal says why
        path = task_arn.split(":task/", 1)[1].split("/")
        if isinstance(cluster_arn, str) and ":cluster/" in cluster_arn:
            cluster = cluster_arn.split(":cluster/", 1)[1]
        elif len(path) == 2:
            cluster = path[0]
        else:
            raise PydanticCustomError("no_cluster", "ECS event names no cluster (short taskArn and no clusterArn)")
        fleet_cluster = (info.context or {}).get("ecs_cluster")
        if fleet_cluster is not None and cluster != fleet_cluster:
            raise PydanticCustomError(
                "other_cluster", "ECS event is for cluster {cluster}, not the fleet's cluster {fleet}",
                {"cluster": repr(cluster[:64]), "fleet": repr(fleet_cluster)})
        return cluster

    @property
    def task_id(self) -> str:
        """The runner id: the last segment of the task ARN."""
        return self.task_arn.split(":task/", 1)[1].split("/")[-1]

    @property
    def stopped(self) -> bool:
        """Only STOPPED asks for anything; other states are acknowledged and left alone."""
        return self.last_status == "STOPPED"


class EcsTaskStateChange(_Message):
    """EventBridge's ECS Task State Change, forwarded to the termination queue."""

    source: Literal["aws.ecs"]
    detail_type: Literal["ECS Task State Change"] = Field(alias="detail-type")
    detail: EcsTaskDetail


# ---- the boundary ----------------------------------------------------------------------------

def _shape(data: Any) -> str:
    if isinstance(data, dict) and (data.get("source") == ECS_SOURCE or "detail-type" in data):
        return "ecs"
    return "agent"


TerminationQueueMessage = Annotated[
    Union[Annotated[AgentMessage, Tag("agent")], Annotated[EcsTaskStateChange, Tag("ecs")]],
    Discriminator(_shape),
]
TERMINATION_QUEUE_MESSAGE: TypeAdapter[AgentMessage | EcsTaskStateChange] = TypeAdapter(TerminationQueueMessage)


def validate_message(data: dict[str, Any], *, ecs_cluster: str) -> AgentMessage | EcsTaskStateChange:
    """``data`` (a decoded JSON object) as one of the two models; raises ValidationError."""
    return TERMINATION_QUEUE_MESSAGE.validate_python(data, context={"ecs_cluster": ecs_cluster})


# ---- why a message is refused ----------------------------------------------------------------

def _kind(value: Any) -> str:
    return type(value).__name__


def _shown(value: Any) -> str:
    # A short string is shown (repr escapes what is hidden); anything else only by its type.
    return repr(value if isinstance(value, str) and len(value) <= 32 else f"<{_kind(value)}>")


def _agent_reason(field: str, error: dict[str, Any]) -> str:
    kind, value = error["type"], error["input"]
    if field == "instance_id":
        return f"instance_id is not a runner id ({RUNNER_ID_RULE})"
    if field == "status":
        return f"status {_shown(value)} is not one of {', '.join(FINISHED_STATUSES)}"
    if field in ("started_at", "completed_at"):
        return f"{field} is not an ISO 8601 UTC time (e.g. {TIME_EXAMPLE})"
    if field == "exit_code":
        return f"exit_code is a {_kind(value)}, not an integer"
    if field == "duration_seconds":
        return "duration_seconds is negative" if kind == "greater_than_equal" else "duration_seconds is not a number"
    if field == "job_id":
        if kind == "string_type":
            return f"job_id is a {_kind(value)}, not a string"
        if kind in ("string_too_long", "too_long", "job_id_blank"):
            return f"job_id is blank or longer than {JOB_ID_MAX} characters"
        return f"job_id {error['msg']}"
    return error["msg"]  # the model's own checks (time order) say it whole


def _ecs_reason(field: str, error: dict[str, Any]) -> str:
    if field in ("source", "detail-type"):
        return f"event is not an {ECS_DETAIL_TYPE!r} from {ECS_SOURCE}"
    if field == "detail":
        return "ECS event has no 'detail' object"
    if field == "taskArn" and error["type"] != "task_id":
        return "ECS event has no taskArn of the form arn:aws:ecs:…:task/CLUSTER/TASK_ID"
    if field == "lastStatus":
        return "ECS event has no lastStatus"
    return error["msg"]  # the task id and cluster checks say it whole


def refusal(error: ValidationError) -> str:
    """One reason for a refused message, naming the field; never a value longer than 64 characters."""
    errors = error.errors(include_url=False)
    shape = errors[0]["loc"][0] if errors and errors[0]["loc"] else "agent"
    if shape == "ecs":
        first = errors[0]
        return _ecs_reason(str(first["loc"][-1]) if len(first["loc"]) > 1 else "", first)
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and len(e["loc"]) == 2]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    first = errors[0]
    return _agent_reason(str(first["loc"][1]) if len(first["loc"]) > 1 else "", first)
