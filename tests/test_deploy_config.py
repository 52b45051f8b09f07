"""The production instance config (infra/dagster.yaml) and the sandbox's pass Dagster's own config validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
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
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
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
    (limit,) = config["run_queue"]["tag_concurrency_limits"]
    assert limit == {"key": "runs-fleet/exclusive", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def test_sandbox_instance_config_has_the_same_queue_limits(tmp_path):
    sandbox = load(tmp_path, ROOT / "sandbox" / "dagster.yaml")
    production = yaml_load(ROOT / "infra" / "dagster.yaml")
    assert sandbox["run_queue"]["tag_concurrency_limits"] == production["run_queue"]["tag_concurrency_limits"]


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
