"""The UI as a user sees it: `make run`'s pieces started for real, asked through the webserver's GraphQL API.

A sandbox fleet is seeded into the session's moto server, `dagster dev` is started on a free
port with the same environment `make run` gives it, and the test checks that the code
location loaded without errors, that every job, sensor, schedule and asset of the contract is
there, and that a dry-run sweep launched through the UI's API succeeds. Everything it starts
is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sandbox.__main__ import dagster_dev_command, dagster_env
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet

CONTRACT_JOBS = {
    "process_terminations", "redrive_termination_dlq", "orphaned_instances_sweep", "stale_ssm_sweep",
    "orphaned_queues_sweep", "archive_old_jobs", "restore_archived_jobs",
}
CONTRACT_SENSORS = {"termination_queue_sensor", "housekeeping_queue_sensor"}
SCHEDULED_JOBS = {"orphaned_instances_sweep", "stale_ssm_sweep", "orphaned_queues_sweep", "archive_old_jobs"}
CONTRACT_ASSETS = {"pool_inventory", "pool_cost_report", "queue_health", "job_archive"}

WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              sensors { name }
              schedules { name pipelineName }
              assetNodes { assetKey { path } }
            }
          }
        }
      }
    }
  }
}
"""

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def webserver(moto_url, tmp_path_factory):
    from resources import load_aws_clients, load_settings
    from sandbox.deploy import deploy_stack
    from sandbox.server import reset_moto

    reset_moto(moto_url)
    aws, settings = load_aws_clients(), load_settings()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    seed_fleet(aws, settings, FleetSpec(pools=(PoolSpec("linux-small", "t3.medium", 30, 60),), busy=2, orphaned=2,
                                        finished_jobs=20, dead_runner_parameters=2))
    tmp_path = tmp_path_factory.mktemp("ui")
    port = free_port()
    log = (tmp_path / "dagster-dev.log").open("wb")
    process = subprocess.Popen(
        dagster_dev_command(port), env=dagster_env(moto_url, tmp_path / "dagster_home"),
        cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 180, "the Dagster webserver")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_ui_shows_the_contract_and_runs_a_dry_run_sweep(webserver):
    def loaded():
        data = graphql(webserver, WORKSPACE_QUERY)["workspaceOrError"]
        entries = data.get("locationEntries", [])
        return entries if entries and all(e["locationOrLoadError"] for e in entries) else None

    (entry,) = wait_for(loaded, 120, "the code location to load")
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location.get("message")
    (repository,) = location["repositories"]
    assert CONTRACT_JOBS <= {j["name"] for j in repository["jobs"]}
    assert CONTRACT_SENSORS <= {s["name"] for s in repository["sensors"]}
    assert SCHEDULED_JOBS <= {s["pipelineName"] for s in repository["schedules"]}
    assert CONTRACT_ASSETS <= {"/".join(a["assetKey"]["path"]) for a in repository["assetNodes"]}

    from pipelines.sweeps import REQUESTS

    (request,) = [r for r in REQUESTS if r.task_type == "orphaned_instances"]
    params = {
        "selector": {"repositoryLocationName": entry["name"], "repositoryName": repository["name"],
                     "jobName": request.job_name},
        "runConfigData": request.build_run_config({"dry_run": True}),
    }
    launched = graphql(webserver, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        status = graphql(webserver, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    assert wait_for(finished, 180, f"run {run_id}") == "SUCCESS"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "asset-graph.png"


@pytest.mark.skipif(CHROMIUM is None, reason="optional: Debian's chromium is not installed")
def test_asset_graph_screenshot(webserver, tmp_path):
    """Open the pool audit asset graph headless, as a user would, and keep the picture under docs/."""
    SCREENSHOT.unlink(missing_ok=True)
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000", "--virtual-time-budget=30000",
         f"--screenshot={SCREENSHOT}",
         f"http://127.0.0.1:{webserver}/locations/runs-fleet-housekeeping/asset-groups/pool_audit"],
        capture_output=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = SCREENSHOT.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a rendered page, not a blank one
