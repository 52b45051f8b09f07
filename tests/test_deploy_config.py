"""The production instance config (infra/dagster.yaml) and the sandbox's pass Dagster's own config validation.

Run concurrency is in Dagster 1.13's ``concurrency: runs:`` form; the instance, not only the
YAML, must read "one run per runs-fleet/exclusive value at a time" from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, source: Path) -> dict:
    shutil.copy(source, tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    return dict(config)


def test_production_instance_config_validates(tmp_path, monkeypatch):
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "DAGSTER_PG_PORT"):
        monkeypatch.setenv(var, "x")
    config = load(tmp_path, ROOT / "infra" / "dagster.yaml")
    postgres = config["storage"]["postgres"]
    for storage in (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage):
        assert validate_config(storage.config_type(), postgres).success, storage.__name__
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    result = validate_config(EcsRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert config["run_retries"]["enabled"] is True
    assert "run_queue" not in config, "the legacy run_queue key; use concurrency: runs:"
    (limit,) = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limit == EXCLUSIVE_LIMIT


EXCLUSIVE_LIMIT = {"key": "runs-fleet/exclusive", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def test_sandbox_instance_applies_the_same_run_limits(tmp_path):
    sandbox = load(tmp_path, ROOT / "sandbox" / "dagster.yaml")
    production = yaml_load(ROOT / "infra" / "dagster.yaml")
    assert "run_queue" not in sandbox
    assert sandbox["concurrency"]["runs"]["tag_concurrency_limits"] == production["concurrency"]["runs"]["tag_concurrency_limits"]
    # What the run queue daemon will use, as the instance reads it (not just the YAML).
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    assert queue.tag_concurrency_limits == [EXCLUSIVE_LIMIT]
    assert queue.max_concurrent_runs == sandbox["concurrency"]["runs"]["max_concurrent_runs"]


def test_a_bad_instance_config_is_refused(tmp_path):
    (tmp_path / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: many\n")
    with pytest.raises(Exception, match="max_concurrent_runs"):
        dagster_instance_config(str(tmp_path))


def test_dockerfile_copies_what_exists():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    sources = [path for line in dockerfile.splitlines() if line.startswith("COPY ") for path in line.split()[1:-1]]
    assert "definitions.py" in sources and "infra/dagster.yaml" in sources
    for path in sources:
        assert (ROOT / path).exists(), path


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _snake(values: dict) -> dict:
    """The chart's camelCase instance settings as dagster.yaml keys (what its templates render)."""
    import re

    def key(k: str) -> str:
        return k if k == "applyLimitPerUniqueValue" else re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower()

    if isinstance(values, dict):
        return {key(k): _snake(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_snake(v) for v in values]
    return values


def test_helm_values_say_what_the_ecs_instance_says(tmp_path):
    """infra/helm/values.yaml: the same run limits, monitoring and retries, rendered and validated by Dagster.

    The K8sRunLauncher section needs dagster-k8s, which this project does not install; the
    instance sections the chart renders from these values are validated here offline.
    """
    values = yaml_load(ROOT / "infra" / "helm" / "values.yaml")
    production = yaml_load(ROOT / "infra" / "dagster.yaml")
    daemon = values["dagsterDaemon"]
    rendered = {
        "concurrency": _snake(values["concurrency"]),
        "run_monitoring": _snake(daemon["runMonitoring"]),
        "run_retries": _snake(daemon["runRetries"]),
        "telemetry": values["telemetry"],
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"] == production["concurrency"]
    assert config["run_retries"] == production["run_retries"]
    for name in ("enabled", "start_timeout_seconds", "poll_interval_seconds"):
        assert config["run_monitoring"][name] == production["run_monitoring"][name], name
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert {"name": "DAGSTER_DEPLOYMENT", "value": "prod"} in deployment["env"]
    run_account = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert run_account["serviceAccountName"] == deployment["serviceAccountName"] != values["serviceAccount"]["name"]


def test_production_workspace_points_at_the_code_server():
    workspace = yaml_load(ROOT / "infra" / "workspace.yaml")
    (entry,) = workspace["load_from"]
    assert set(entry) == {"grpc_server"}
    assert entry["grpc_server"]["location_name"] == "runs-fleet-housekeeping"
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "COPY infra/workspace.yaml ./workspace.yaml" in dockerfile
    assert "DAGSTER_DEPLOYMENT=prod" in dockerfile
