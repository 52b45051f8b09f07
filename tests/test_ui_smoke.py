"""The UI as a user sees it: `make run`'s pieces started for real, asked through the webserver's GraphQL API.

A sandbox fleet is seeded into the session's moto server, `dagster dev` is started on a free
port with the same environment `make run` gives it, and the test checks that the code
location loaded without errors, that every job, sensor, schedule and asset of the contract is
there, and that a dry-run sweep and the pool audit launched through the UI's API succeed.
Everything it starts is stopped at the end.

With a Chromium (on PATH, or installed by the test setup where it can be: tests/ui_browser.py),
a headless browser opens the cost report and a sweep's plan at 1600×1000 and checks that the
columns an operator opens them for are visible without scrolling, and the asset graph is
saved as docs/asset-graph.png. Without one, those tests are skipped, saying what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sandbox.__main__ import dagster_dev_command, dagster_env
from sandbox.seed import FleetSpec, PoolSpec, seed_fleet
from tests.ui_browser import chromium_or_reason, hidden_headers, open_settled

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


def loaded_location(port: int) -> dict:
    """The code location's workspace entry, once it has loaded (or failed to)."""
    def loaded():
        data = graphql(port, WORKSPACE_QUERY)["workspaceOrError"]
        entries = data.get("locationEntries", [])
        return entries if entries and all(e["locationOrLoadError"] for e in entries) else None

    (entry,) = wait_for(loaded, 120, "the code location to load")
    return entry


def dry_run_sweep_job() -> tuple[str, dict]:
    from pipelines.sweeps import REQUESTS

    (request,) = [r for r in REQUESTS if r.task_type == "orphaned_instances"]
    return request.job_name, request.build_run_config({"dry_run": True})


@pytest.fixture(scope="module")
def ui_runs(webserver) -> dict[str, str]:
    """A dry-run sweep and the pool audit, launched together through the UI's API; each job's final status."""
    entry = loaded_location(webserver)
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location.get("message")
    (repository,) = location["repositories"]
    sweep_job, sweep_config = dry_run_sweep_job()
    run_ids = {}
    for job_name, run_config in ((sweep_job, sweep_config), ("pool_audit_job", {})):
        params = {
            "selector": {"repositoryLocationName": entry["name"], "repositoryName": repository["name"],
                         "jobName": job_name},
            "runConfigData": run_config,
        }
        launched = graphql(webserver, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_ids[job_name] = launched["run"]["runId"]

    def finished(run_id: str):
        status = graphql(webserver, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    return {job: wait_for(lambda: finished(run_id), 240, f"{job} run {run_id}") for job, run_id in run_ids.items()}


def test_ui_shows_the_contract_and_runs_a_dry_run_sweep(webserver, ui_runs):
    location = loaded_location(webserver)["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location.get("message")
    (repository,) = location["repositories"]
    assert CONTRACT_JOBS <= {j["name"] for j in repository["jobs"]}
    assert CONTRACT_SENSORS <= {s["name"] for s in repository["sensors"]}
    assert SCHEDULED_JOBS <= {s["pipelineName"] for s in repository["schedules"]}
    assert CONTRACT_ASSETS <= {"/".join(a["assetKey"]["path"]) for a in repository["assetNodes"]}
    sweep_job, _ = dry_run_sweep_job()
    assert ui_runs[sweep_job] == "SUCCESS"
    assert ui_runs["pool_audit_job"] == "SUCCESS"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The path of a headless-capable Chromium, installed by the test setup where it can be; else a skip saying why."""
    path, reason = chromium_or_reason()
    if path is None:
        pytest.skip(f"optional browser test: {reason}")
    return path


VIEWPORT = {"width": 1600, "height": 1000}
# What an operator opens each page for. The cost report: its cost columns (pipelines/audit/pool_audit.py,
# REPORT_TABLE_COLUMNS). A plan has no cost: what the sweep would do to which resource, and why.
FIRST_SCREEN = {
    "pool_cost_report": ["idle cost ($/h)", "compute cost ($)", "utilisation (%)"],
    "orphaned_instances_sweep_plan": ["resource", "outcome", "reason", "pool"],
}


def test_cost_columns_are_visible_without_scrolling(chromium, webserver, ui_runs, tmp_path):
    """Headless Chromium at 1600×1000 on each asset page: the table's key header cells lie whole on the first screen.

    No click is needed: an asset's Overview tab (the page it opens on) lists the latest
    materialization's metadata, and draws table metadata inline, headers included. A cell
    counts as visible only if it is inside the viewport and inside the metadata panel (which
    scrolls sideways), nothing covers it, and nothing was scrolled (tests/ui_browser.py).
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="optional browser test: the playwright package "
                                   "is not installed (pip install -e '.[dev]')")
    assert set(ui_runs.values()) == {"SUCCESS"}, ui_runs
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            for asset, headers in FIRST_SCREEN.items():
                open_settled(page, f"http://127.0.0.1:{webserver}/assets/{asset}", headers)
                hidden = hidden_headers(page, headers)
                if hidden:
                    page.screenshot(path=tmp_path / f"{asset}.png")
                assert not hidden, f"{asset}: not visible without scrolling at 1600x1000: {hidden} " \
                                   f"(screenshot: {tmp_path / f'{asset}.png'})"
        finally:
            browser.close()


DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "asset-graph.png"


def test_asset_graph_screenshot(chromium, webserver, tmp_path):
    """Open the pool audit asset graph headless, as a user would. The picture goes to a temporary
    folder, so a test run leaves the checkout clean; UPDATE_DOCS_SCREENSHOT=1 keeps it as docs/asset-graph.png."""
    SCREENSHOT = tmp_path / "asset-graph.png"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000", "--virtual-time-budget=30000",
         f"--screenshot={SCREENSHOT}",
         f"http://127.0.0.1:{webserver}/locations/runs-fleet-housekeeping/asset-groups/pool_audit"],
        capture_output=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = SCREENSHOT.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a rendered page, not a blank one
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes(png)
