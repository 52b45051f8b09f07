"""The code location loads as Dagster loads it, and every job resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from definitions import defs

ROOT = Path(__file__).resolve().parent.parent


def test_defs_is_one_definitions_object_with_both_resources():
    assert isinstance(defs, Definitions)
    repo = defs.get_repository_def()
    assert {"aws", "settings"} <= set(repo.get_top_level_resources())


def test_every_job_resolves():
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        assert job.execute_in_process is not None
        assert defs.resolve_job_def(job.name).name == job.name


def test_workspace_validates_with_the_dagster_cli(tmp_path):
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runs-fleet-housekeeping" in result.stdout + result.stderr


CONTRACT_JOBS = {
    "process_terminations", "redrive_termination_dlq", "orphaned_instances_sweep", "stale_ssm_sweep",
    "orphaned_queues_sweep", "stuck_jobs_sweep", "archive_old_jobs", "restore_archived_jobs",
}


def test_the_contract_names_are_all_there():
    repo = defs.get_repository_def()
    assert CONTRACT_JOBS <= {job.name for job in repo.get_all_jobs()}
    assert {"termination_queue_sensor", "housekeeping_queue_sensor"} <= {s.name for s in repo.sensor_defs}
    assets = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"pool_inventory", "pool_cost_report", "queue_health", "job_archive"} <= assets


def test_everything_the_ui_shows_has_a_description():
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        if job.name.startswith("__"):  # Dagster's implicit asset job
            continue
        assert job.description, f"job {job.name} has no docstring/description"
        for node in job.nodes:
            assert node.definition.description, f"op {node.name} of {job.name} has no docstring"
    for sensor in repo.sensor_defs:
        assert sensor.description, f"sensor {sensor.name} has no description"
    for schedule in repo.schedule_defs:
        assert schedule.description, f"schedule {schedule.name} has no description"
    for key in repo.asset_graph.get_all_asset_keys():
        node = repo.asset_graph.get(key)
        assert node.description, f"asset {key.to_user_string()} has no description"


def test_every_job_runs_one_at_a_time():
    """infra/dagster.yaml limits runs-fleet/exclusive to one run per value: each job tags its own name."""
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        if job.name.startswith("__"):
            continue
        assert job.tags.get("runs-fleet/exclusive") == job.name, job.name


def test_loading_the_code_location_does_not_import_pandas():
    """Every run process imports definitions.py; only audit and ledger runs build DataFrames (issue #15)."""
    import subprocess
    import sys

    code = ("import sys, definitions; loaded = [m for m in ('pandas', 'numpy', 'matplotlib') if m in sys.modules]; "
            "print(','.join(loaded) or 'none')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "none"


def test_a_lazy_module_imports_on_first_use_only():
    from pipelines.common.lazy import LazyModule

    lazy = LazyModule("colorsys")  # a stdlib module nothing here imports
    import sys

    sys.modules.pop("colorsys", None)
    assert "not imported yet" in repr(lazy) and "colorsys" not in sys.modules
    assert lazy.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    assert "colorsys" in sys.modules and "(imported)" in repr(lazy)
