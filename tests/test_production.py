"""The production shape on this machine, on real parts (docs/deploy.md, "How the test mirrors it").

What runs, each its own process, as in infra/ (ECS) and infra/helm/ (Kubernetes):

- a real PostgreSQL server (from the pgserver wheel) holding runs, event logs and schedules;
- a gRPC code server for this project (``dagster code-server start``), the only process that
  loads the project's code besides the runs;
- ``dagster-daemon run`` and ``dagster-webserver``, both on infra/workspace.yaml (the gRPC
  server), with infra/dagster.yaml as the instance, changed in two places only: the run
  launcher is sandbox.launcher.LocalProcessRunLauncher (each run its own process, started by
  the daemon, as ECS tasks are) and run monitoring polls every 2 s instead of every 60 s;
- ``DAGSTER_DEPLOYMENT=prod``: the S3 IO manager, on the moto server's S3.

The code server serves tests/production/location.py: the project's definitions plus one
test schedule ticking every minute. Everything started here is stopped at the end: the
services' and run workers' process groups, and the Postgres server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from sandbox.launcher import PID_TAG
from sandbox.server import reset_moto, sandbox_env
from tests.production.postgres import Postgres, start_postgres

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "runs-fleet-housekeeping"
TEST_LOCATION_FILE = ROOT / "tests" / "production" / "location.py"
FIRST_TERMINATIONS = 4
CRASH_MESSAGES = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def production_instance_yaml() -> dict[str, Any]:
    """infra/dagster.yaml with the two documented changes, and nothing else."""
    config = yaml.safe_load((ROOT / "infra" / "dagster.yaml").read_text())
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    config["run_launcher"] = {"module": "sandbox.launcher", "class": "LocalProcessRunLauncher"}
    config["run_monitoring"]["poll_interval_seconds"] = 2
    return config


@dataclass
class Deployment:
    env: dict[str, str]
    home: Path
    web_port: int
    logs: Path
    instance: Any
    repository: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        assert "errors" not in body, body["errors"]
        return body["data"]

    def launch(self, job: str, run_config: dict | None = None, assets: list[str] | None = None) -> str:
        """Launch through the webserver, as the UI does; the daemon's run queue starts it.

        The test's own launches execute their steps in the run worker's process (the sensor's
        and the schedule's keep the default multiprocess executor): on two cores, a process per
        step would double each run's start-up, and one process per run is what is being shown.
        """
        selector = {"repositoryLocationName": LOCATION, "repositoryName": self.repository, "jobName": job}
        if assets:
            selector["assetSelection"] = [{"path": [a]} for a in assets]
        config = {**(run_config or {}), "execution": {"config": {"in_process": {}}}}
        result = self.graphql(LAUNCH, {"params": {"selector": selector, "runConfigData": config}})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def run(self, run_id: str):
        return self.instance.get_run_by_id(run_id)

    def wait_finished(self, run_id: str, timeout_s: float = 120) -> str:
        def finished():
            run = self.run(run_id)
            return run.status.value if run and run.is_finished else None

        return wait_for(finished, timeout_s, f"run {run_id} to finish")

    def log_tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


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

WORKSPACE = """
query { workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
  __typename ... on PythonError { message } ... on RepositoryLocation { repositories { name } } } } } } }
"""


def _start(name: str, command: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_groups(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM every process group at once, SIGKILL what is left after ``grace_s``."""
    def signal_all(sig: int) -> list[int]:
        alive = []
        for pid in pids:
            try:
                os.killpg(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        return alive

    pids = signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = signal_all(0)
    signal_all(signal.SIGKILL)


@pytest.fixture(scope="module")
def deployment(moto_url, tmp_path_factory) -> Iterator[Deployment]:
    from dagster import DagsterInstance
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._utils.error import SerializableErrorInfo

    from resources import load_aws_clients, load_settings
    from sandbox.deploy import deploy_stack
    from sandbox.seed import FleetSpec, PoolSpec, seed_fleet

    reset_moto(moto_url)
    aws, settings = load_aws_clients(), load_settings()
    deploy_stack(aws.client("cloudformation"), aws.dynamodb)
    seed_fleet(aws, settings, FleetSpec(pools=(PoolSpec("linux-small", "t3.medium", 30, 60),), busy=FIRST_TERMINATIONS + 2,
                                        idle=1, stopped=1, orphaned=2, termination_messages=FIRST_TERMINATIONS))

    tmp = tmp_path_factory.mktemp("production")
    home, logs = tmp / "dagster_home", tmp / "logs"
    home.mkdir()
    logs.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(production_instance_yaml()))
    code_port, web_port = free_port(), free_port()

    with ExitStack() as stack:
        postgres: Postgres = start_postgres(free_port())
        stack.callback(postgres.stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNS_FLEET_", "DAGSTER_"))}
        env.update(sandbox_env(moto_url))
        env.update({
            "DAGSTER_HOME": str(home), "DAGSTER_DEPLOYMENT": "prod",
            "DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
            "DAGSTER_PG_USERNAME": postgres.user, "DAGSTER_PG_PASSWORD": postgres.password,
            "DAGSTER_PG_DB": postgres.db,
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1", "DAGSTER_CODE_SERVER_PORT": str(code_port),
            # The run launcher lives in sandbox/, which the editable install already puts on the path.
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        })
        with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")}):
            instance = stack.enter_context(DagsterInstance.from_config(str(home)))
        deployment = Deployment(env=env, home=home, web_port=web_port, logs=logs, instance=instance)

        def stop_everything() -> None:
            # Run workers are process groups of their own (as ECS tasks outlive the daemon).
            workers = [int(r.dagster_run.tags[PID_TAG]) for r in instance.get_run_records()
                       if r.dagster_run.tags.get(PID_TAG)]
            _stop_groups([p.pid for p in deployment.processes] + workers)
            for process in deployment.processes:
                process.wait(timeout=30)  # reap

        stack.callback(stop_everything)

        code_server = _start("code-server", [
            str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port),
            "-f", str(TEST_LOCATION_FILE), "-d", str(ROOT), "--location-name", LOCATION,
        ], env, logs)
        deployment.processes.append(code_server)
        client = DagsterGrpcClient(port=code_port, host="127.0.0.1")

        def code_loaded() -> bool:
            assert code_server.poll() is None, deployment.log_tail("code-server")
            try:
                response = client.list_repositories()
            except Exception:  # not listening yet
                return False
            assert not isinstance(response, SerializableErrorInfo), response.to_string()
            return True

        wait_for(code_loaded, 90, "the code server to load the code location")
        for name, command in (
            ("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "infra" / "workspace.yaml")]),
            ("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                           "-w", str(ROOT / "infra" / "workspace.yaml")]),
        ):
            deployment.processes.append(_start(name, command, env, logs))

        def web_up() -> bool:
            for process, name in zip(deployment.processes, ("code-server", "daemon", "webserver")):
                assert process.poll() is None, f"{name} exited:\n{deployment.log_tail(name)}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/server_info", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(web_up, 90, "the webserver")
        (entry,) = deployment.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        (repository,) = entry["locationOrLoadError"]["repositories"]
        deployment.repository = repository["name"]
        yield deployment


def test_definitions_validate_against_the_code_server(deployment):
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(ROOT / "infra" / "workspace.yaml")],
        cwd=ROOT, env=deployment.env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Validation successful" in result.stdout + result.stderr


def test_the_daemon_ticks_the_termination_sensor_which_drains_the_queue(deployment):
    from dagster import RunsFilter
    from resources import load_aws_clients, load_settings

    aws, settings = load_aws_clients(), load_settings()
    url = aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]

    def drained_by_the_sensor():
        records = deployment.instance.get_run_records(RunsFilter(
            job_name="process_terminations", tags={"runs-fleet/trigger": "termination_queue_sensor"}))
        return [r for r in records if r.dagster_run.status.value == "SUCCESS"]

    (record, *_) = wait_for(drained_by_the_sensor, 120, "a successful process_terminations run the sensor started")
    attributes = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    items = aws.dynamodb.scan(TableName=settings.jobs_table)["Items"]
    finished = [i for i in items if i["status"]["S"] in ("completed", "failed") and "completed_at" in i]
    assert len(finished) >= FIRST_TERMINATIONS
    # The drain ran in its own process, with the S3 IO manager (its output is in S3).
    run = record.dagster_run
    assert run.tags.get(PID_TAG) and int(run.tags[PID_TAG]) != os.getpid()
    keys = aws.s3.list_objects_v2(Bucket=settings.archive_bucket, Prefix=f"dagster-io/storage/{run.run_id}/")
    assert keys.get("KeyCount", 0) >= 1


def test_two_runs_of_one_job_requested_together_run_one_at_a_time(deployment):
    first = deployment.launch("queue_health_job")
    second = deployment.launch("queue_health_job")
    assert {deployment.wait_finished(first), deployment.wait_finished(second)} == {"SUCCESS"}
    stats = [deployment.instance.get_run_stats(run_id) for run_id in (first, second)]
    (earlier, later) = sorted(stats, key=lambda s: s.start_time)
    # The daemon's run queue held the second until the first ended (runs-fleet/exclusive limit).
    assert later.start_time >= earlier.end_time, "the two runs overlapped"


def test_pool_cost_report_materializes_alone_from_the_inventory_in_s3(deployment):
    from dagster import AssetKey

    from resources import load_aws_clients, load_settings

    aws, settings = load_aws_clients(), load_settings()
    inventory = deployment.launch("pool_audit_job", assets=["pool_inventory"])
    assert deployment.wait_finished(inventory) == "SUCCESS"
    report = deployment.launch("pool_audit_job", assets=["pool_cost_report"])
    assert deployment.wait_finished(report) == "SUCCESS"
    assert deployment.run(report).asset_selection == {AssetKey("pool_cost_report")}
    assert aws.s3.head_object(Bucket=settings.archive_bucket, Key="dagster-io/pool_inventory")
    latest = deployment.instance.get_latest_materialization_event(AssetKey("pool_cost_report"))
    assert latest.run_id == report


STOP_SENSOR = """
mutation($id: String) { stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } } } }
"""
SENSOR = """
query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { id } } }
"""


def _send_crash_messages(aws, settings) -> list[str]:
    """CRASH_MESSAGES runners finishing now: a running job each, one termination message each."""
    from pipelines.common.aws import batch_write_with_retry

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    job_ids = [f"crash-{n:04d}" for n in range(CRASH_MESSAGES)]
    batch_write_with_retry(aws.dynamodb, settings.jobs_table, [
        {"PutRequest": {"Item": {"job_id": {"S": j}, "status": {"S": "running"}, "pool": {"S": "linux-small"},
                                  "instance_id": {"S": f"i-crash{n:012d}"}, "started_at": {"S": now}}}}
        for n, j in enumerate(job_ids)
    ])
    url = aws.sqs.get_queue_url(QueueName=settings.termination_queue)["QueueUrl"]
    for start in range(0, CRASH_MESSAGES, 10):
        entries = [{
            "Id": str(n), "MessageGroupId": f"i-crash{n:012d}",
            "MessageBody": json.dumps({"instance_id": f"i-crash{n:012d}", "job_id": job_ids[n], "status": "completed",
                                       "exit_code": 0, "duration_seconds": 60, "started_at": now, "completed_at": now}),
        } for n in range(start, min(start + 10, CRASH_MESSAGES))]
        assert len(aws.sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]) == len(entries)
    return job_ids


def test_a_killed_run_is_detected_by_run_monitoring_retried_and_converges(deployment):
    from dagster import DagsterEventType, RunsFilter
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    from resources import load_aws_clients, load_settings

    aws, settings = load_aws_clients(), load_settings()
    # The sensor would start drains of its own; this test starts and kills its own.
    sensor = deployment.graphql(SENSOR, {"selector": {
        "repositoryLocationName": LOCATION, "repositoryName": deployment.repository,
        "sensorName": "termination_queue_sensor"}})["sensorOrError"]
    stopped = deployment.graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
    assert stopped["instigationState"]["status"] == "STOPPED", stopped
    wait_for(lambda: not deployment.instance.get_run_records(RunsFilter(
        job_name="process_terminations", statuses=NOT_FINISHED_STATUSES)), 60, "no drain run in flight")

    job_ids = _send_crash_messages(aws, settings)
    # Small work batches, one worker: slow enough to kill half-way. Messages held 5 s, so the
    # retry finds them again soon; it long-polls 20 s for them to return.
    config = {"ops": {"drain_termination_queue": {"config": {
        "batch_size": 10, "workers": 1, "visibility_timeout_seconds": 5, "wait_seconds": 20}}}}
    crashed = deployment.launch("process_terminations", run_config=config)

    def done_jobs() -> int:
        items = aws.dynamodb.scan(TableName=settings.jobs_table, FilterExpression="begins_with(job_id, :p)",
                                  ExpressionAttributeValues={":p": {"S": "crash-"}})["Items"]
        return sum(1 for i in items if i["status"]["S"] == "completed")

    wait_for(lambda: done_jobs() >= 10, 90, "the drain to finish its first work batch", every_s=0.1)
    pid = int(deployment.run(crashed).tags[PID_TAG])
    os.killpg(pid, signal.SIGKILL)  # the whole run worker, as when an ECS task dies
    at_kill = done_jobs()
    assert at_kill < CRASH_MESSAGES, "the run finished before it could be killed"

    assert deployment.wait_finished(crashed, 60) == "FAILURE"
    (failure,) = deployment.instance.all_logs(crashed, of_type=DagsterEventType.RUN_FAILURE)
    assert "Detected run worker status FAILED" in failure.message, failure.message  # run monitoring's words

    def retry():
        records = deployment.instance.get_run_records(RunsFilter(tags={"dagster/parent_run_id": crashed}))
        return records[0].dagster_run.run_id if records else None

    retry_id = wait_for(retry, 60, "run retries to re-launch the killed run")
    assert deployment.run(retry_id).tags.get("dagster/retry_number") == "1"
    assert deployment.wait_finished(retry_id, 120) == "SUCCESS"

    # Converged, nothing lost: every job recorded once, no message left or dead-lettered.
    assert done_jobs() == CRASH_MESSAGES
    for name in (settings.termination_queue, "runs-fleet-termination-dlq.fifo"):
        url = aws.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0"), name
    assert len(job_ids) == CRASH_MESSAGES


def test_a_schedule_tick_launches_a_sweep(deployment):
    from dagster import RunsFilter

    from tests.production.location import TEST_SCHEDULE

    def ticked():
        records = deployment.instance.get_run_records(RunsFilter(
            job_name="orphaned_instances_sweep", tags={"dagster/schedule_name": TEST_SCHEDULE}))
        return records[0].dagster_run.run_id if records else None

    # Every minute on the minute: at most ~60 s after the daemon started, usually already done.
    run_id = wait_for(ticked, 100, "the every-minute schedule to launch orphaned_instances_sweep")
    assert deployment.wait_finished(run_id) == "SUCCESS"


RUNS = """
query { runsOrError(limit: 100) { __typename ... on Runs { results { runId jobName status tags { key value } } } } }
"""


def test_the_webserver_answers_with_the_runs(deployment):
    runs = deployment.graphql(RUNS)["runsOrError"]
    assert runs["__typename"] == "Runs"
    by_job: dict[str, set[str]] = {}
    for run in runs["results"]:
        by_job.setdefault(run["jobName"], set()).add(run["status"])
    assert "SUCCESS" in by_job["process_terminations"] and "FAILURE" in by_job["process_terminations"]
    assert by_job["queue_health_job"] == {"SUCCESS"}
    assert by_job["pool_audit_job"] == {"SUCCESS"}
    assert "SUCCESS" in by_job["orphaned_instances_sweep"]
    stored = {r.dagster_run.run_id for r in deployment.instance.get_run_records()}
    assert {r["runId"] for r in runs["results"]} == stored
