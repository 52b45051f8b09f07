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
