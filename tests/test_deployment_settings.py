"""Deployment settings win: no run config can turn RUNS_FLEET_DRY_RUN off or point a run elsewhere.

Driven through the code location's own ``defs`` (definitions.py reloaded with the variable
set), the way a Launchpad run, a schedule or a housekeeping request hands Dagster its run config.
"""

from __future__ import annotations

import importlib

import pytest
from dagster import DagsterInvalidConfigError

from tests.builders import launch


@pytest.fixture()
def dry_defs(aws, monkeypatch):
    monkeypatch.setenv("RUNS_FLEET_DRY_RUN", "true")
    import definitions

    yield importlib.reload(definitions).defs
    monkeypatch.delenv("RUNS_FLEET_DRY_RUN")
    importlib.reload(definitions)


def running(aws, ids):
    found = aws.ec2.describe_instances(InstanceIds=list(ids))
    return {i["InstanceId"] for r in found["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "running"}


@pytest.mark.parametrize(
    "resources_config",
    [
        {"settings": {"config": {"dry_run": False}}},
        {"settings": {"config": {"dry_run": "false"}}},
        {"settings": {"config": {"jobs_table": "someone-elses-jobs"}}},
        {"aws": {"config": {"endpoint_url": "http://127.0.0.1:1"}}},
        {"aws": {"config": {"region_name": "ap-south-1"}}},
        {"io_manager": {"config": {"base_dir": "/tmp/elsewhere"}}},
    ],
)
def test_run_config_cannot_change_a_deployment_setting(dry_defs, aws, resources_config):
    orphans = [launch(aws, 1000) for _ in range(3)]
    job = dry_defs.get_job_def("orphaned_instances_sweep")
    with pytest.raises(DagsterInvalidConfigError, match="unexpected config entry"):
        job.execute_in_process(run_config={"resources": resources_config,
                                           "ops": {"terminate_orphaned_instances": {"config": {"max_fraction": 1.0}}}})
    assert running(aws, orphans) == set(orphans)


def test_op_config_dry_run_false_does_not_lift_the_deployment_dry_run(dry_defs, aws):
    orphans = [launch(aws, 1000) for _ in range(3)]
    result = dry_defs.get_job_def("orphaned_instances_sweep").execute_in_process(
        run_config={"ops": {"terminate_orphaned_instances": {"config": {"dry_run": False, "max_fraction": 1.0,
                                                                       "confirm_after_minutes": 0}}}})
    assert result.success
    assert running(aws, orphans) == set(orphans)
    (output,) = [e for e in result.all_events
                 if e.event_type_value == "STEP_OUTPUT" and e.step_key == "terminate_orphaned_instances"]
    assert output.event_specific_data.metadata["dry_run"].value is True
    assert output.event_specific_data.metadata["would_act"].value == 3


def test_every_job_refuses_settings_in_run_config(dry_defs):
    for job in dry_defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        with pytest.raises(DagsterInvalidConfigError):
            job.execute_in_process(run_config={"resources": {"settings": {"config": {"dry_run": False}}}})
