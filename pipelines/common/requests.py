"""How a housekeeping request (`task_type` + `params`) becomes a run of a capability's job.

One schema per boundary: a task's ``params`` are validated by one strict pydantic model
built from the very ``Config`` classes of the ops they configure, so a value has one name
and one validator (its field on the op's config, with its bounds). Strict on purpose:
``"dry_run": "false"`` is a non-empty string, and coercing it would turn an operator's dry
run into a destructive one (or the reverse); an unknown key is most likely a typo of a
limit the operator meant to set, so it is refused too.

Each capability that can be requested exports ``REQUESTS`` (``RequestableJob``s);
``definitions.py`` hands them to ``sensors.housekeeping.build_housekeeping_sensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class BadParams(ValueError):
    """A housekeeping request's params cannot become run config; the message names the field."""


def params_model(task_type: str, configs: Mapping[str, type[BaseModel]],
                 extra: Mapping[str, tuple[Any, Any]] | None = None) -> tuple[type[BaseModel], dict[str, str]]:
    """A strict model of a task's params from its ops' config classes; returns it and param -> op.

    ``configs`` maps an op name to its ``Config`` class; ``extra`` holds params that are not
    op config (e.g. archival's ``date``, which picks the partition), as pydantic field specs.
    """
    fields: dict[str, tuple[Any, Any]] = {}
    routes: dict[str, str] = {}
    for op_name, config in configs.items():
        for name, info in config.model_fields.items():
            if name in fields:
                raise ValueError(f"{task_type}: param {name!r} is config of two ops")
            fields[name] = (info.annotation, info)
            routes[name] = op_name
    fields.update(extra or {})
    model = create_model(f"{task_type}_params", __config__=ConfigDict(strict=True, extra="forbid"), **fields)
    return model, routes


def _describe(error: ValidationError, known: list[str]) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "params"
    if first["type"] == "extra_forbidden":
        return f"params.{name} is not a parameter of this task (known: {', '.join(known) or 'none'})"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 80 else shown[:80] + "…"
    return f"params.{name}: {first['msg']} (got {shown})"


def _no_partition(params: BaseModel) -> str | None:
    return None


@dataclass(frozen=True)
class RequestableJob:
    """A contract task type, the job it starts, and the one schema of its params."""

    task_type: str  # the contract's task_type, e.g. "orphaned_instances"
    job_name: str  # the Dagster job it starts
    params: type[BaseModel]  # strict: built by ``params_model``
    routes: Mapping[str, str] = field(default_factory=dict)  # param -> the op whose config it is
    partition: Callable[[BaseModel], str | None] = _no_partition

    def parse(self, params: Any) -> BaseModel:
        """Validate raw params (None means none); raises BadParams naming the first bad field."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise BadParams(f"params must be a JSON object, got {type(params).__name__}")
        try:
            return self.params.model_validate(dict(params))
        except ValidationError as error:
            raise BadParams(_describe(error, sorted(self.params.model_fields))) from None

    def build_run_config(self, params: Any) -> dict[str, Any]:
        """The job's run config: each param given lands in its op's config; raises BadParams."""
        parsed = self.parse(params)
        self.partition(parsed)  # a bad partition param fails here too, whichever the caller asks first
        ops: dict[str, dict[str, Any]] = {}
        for name, value in parsed.model_dump(exclude_unset=True).items():
            if name in self.routes:
                ops.setdefault(self.routes[name], {"config": {}})["config"][name] = value
        return {"ops": ops} if ops else {}

    def partition_key(self, params: Any) -> str | None:
        return self.partition(self.parse(params))


def requestable(task_type: str, job_name: str, configs: Mapping[str, type[BaseModel]],
                extra: Mapping[str, tuple[Any, Any]] | None = None,
                partition: Callable[[BaseModel], str | None] = _no_partition) -> RequestableJob:
    """A ``RequestableJob`` whose params are exactly the given ops' config (plus ``extra``)."""
    model, routes = params_model(task_type, configs, extra)
    return RequestableJob(task_type, job_name, model, routes, partition)
