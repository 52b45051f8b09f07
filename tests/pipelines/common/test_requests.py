"""Housekeeping request params: one strict schema per task, built from its ops' own config classes (no moto)."""

from __future__ import annotations

import pytest

from definitions import REQUESTS, defs
from pipelines.common.requests import BadParams

TASKS = {r.task_type: r for r in REQUESTS}


def test_the_contract_task_types_are_requestable():
    assert set(TASKS) >= {"orphaned_instances", "stale_ssm", "orphaned_queues", "old_jobs", "pool_audit",
                          "queue_health"}


@pytest.mark.parametrize("task_type", sorted(TASKS))
def test_the_run_config_a_request_builds_is_valid_for_its_job(task_type):
    request = TASKS[task_type]
    job = defs.resolve_job_def(request.job_name)
    params = {"dry_run": True, "max_actions": 7}
    config = request.build_run_config(params)
    assert job.run_config_schema.config_type is not None
    from dagster import validate_run_config

    validate_run_config(job, config)
    # Each param lands in exactly the op whose config declares it.
    for op_name, op_config in config.get("ops", {}).items():
        assert set(op_config["config"]) <= set(params)
        assert all(request.routes[name] == op_name for name in op_config["config"])


@pytest.mark.parametrize(("params", "words"), [
    ({"dry_run": "false"}, "params.dry_run: Input should be a valid boolean"),
    ({"dry_run": 0}, "params.dry_run: Input should be a valid boolean"),
    ({"max_actions": True}, "params.max_actions: Input should be a valid integer"),
    ({"max_actions": "5"}, "params.max_actions: Input should be a valid integer"),
    ({"max_actions": 2.0}, "params.max_actions: Input should be a valid integer"),
    ({"max_actions": -1}, "params.max_actions: Input should be greater than or equal to 0"),
    ({"max_fraction": 1.5}, "params.max_fraction: Input should be less than or equal to 1"),
    ({"max_fraction": "0.5"}, "params.max_fraction: Input should be a valid number"),
    ({"min_age_minutes": 0}, "params.min_age_minutes: Input should be greater than or equal to 1"),
    ({"min_age_minute": 5}, "params.min_age_minute is not a parameter of this task"),
    ([1], "params must be a JSON object"),
    ("dry_run", "params must be a JSON object"),
])
def test_strict_params_name_the_bad_field(params, words):
    with pytest.raises(BadParams, match=words.replace(".", r"\.")):
        TASKS["stale_ssm"].build_run_config(params)


def test_good_params_become_the_ops_config():
    request = TASKS["stale_ssm"]
    assert request.build_run_config(None) == {}
    assert request.build_run_config({"max_fraction": 1, "min_age_minutes": 30, "dry_run": False}) == {"ops": {
        "delete_stale_parameters": {"config": {"max_fraction": 1.0, "dry_run": False}},
        "plan_stale_ssm": {"config": {"min_age_minutes": 30}},
    }}
