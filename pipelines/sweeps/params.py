"""Housekeeping request ``params`` → a sweep's run config, strictly: a wrong type or unknown key is BadParams.

Strict on purpose: ``"dry_run": "false"`` is a non-empty string, and coercing it would turn
an operator's dry run into a destructive one (or the reverse); an unknown key is most likely
a typo of a limit the operator meant to set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipelines.common.requests import BadParams


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadParams(f"params.{name} must be true or false, got {type(value).__name__}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadParams(f"params.{name} must be a whole number >= 0, got {value!r}")
    return value


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadParams(f"params.{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


# Each request parameter: how it is checked, and which op's config it lands in ("act" or "plan").
SWEEP_PARAMS: dict[str, tuple[Callable[[str, Any], Any], str]] = {
    "dry_run": (_bool, "act"),
    "max_actions": (_count, "act"),
    "max_fraction": (_fraction, "act"),
}


def sweep_run_config(
    params: Mapping[str, Any],
    *,
    plan_op: str,
    act_op: str,
    plan_params: Mapping[str, Callable[[str, Any], Any]] | None = None,
) -> dict[str, Any]:
    """Run config for a plan-op → act-op sweep job from request params; raises BadParams naming the field."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise BadParams(f"params must be a JSON object, got {type(params).__name__}")
    known: dict[str, tuple[Callable[[str, Any], Any], str]] = dict(SWEEP_PARAMS)
    for name, check in (plan_params or {}).items():
        known[name] = (check, "plan")
    configs: dict[str, dict[str, Any]] = {"plan": {}, "act": {}}
    for name, value in params.items():
        if name not in known:
            raise BadParams(f"params.{name} is not a parameter of this task (known: {', '.join(sorted(known))})")
        check, where = known[name]
        configs[where][name] = check(name, value)
    ops: dict[str, Any] = {act_op: {"config": configs["act"]}}
    if plan_params is not None:
        ops[plan_op] = {"config": configs["plan"]}
    return {"ops": ops}


def minutes(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadParams(f"params.{name} must be a whole number of minutes >= 1, got {value!r}")
    return value
