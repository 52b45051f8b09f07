"""How a housekeeping request (`task_type` + `params`) becomes a run of a capability's job.

Each capability that can be requested on the housekeeping queue exports a ``RequestableJob``;
``sensors/housekeeping.py`` collects them. ``build_run_config`` turns a request's ``params``
into that job's run config and raises ``BadParams`` naming the bad field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class BadParams(ValueError):
    """A housekeeping request's params cannot become run config; the message names the field."""


def _no_partition(params: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class RequestableJob:
    task_type: str  # the contract's task_type, e.g. "orphaned_instances"
    job_name: str  # the Dagster job it starts
    build_run_config: Callable[[Mapping[str, Any]], dict[str, Any]]
    partition_key: Callable[[Mapping[str, Any]], str | None] = _no_partition
