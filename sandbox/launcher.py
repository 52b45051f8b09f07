"""``LocalProcessRunLauncher``: the ECS run launcher's shape on one machine, for tests/test_production.py.

Production (infra/dagster.yaml) launches each run as its own ECS task running
``dagster api execute_run``, started by the daemon, and run monitoring asks ECS whether that
task still lives. Dagster's ``DefaultRunLauncher`` instead has the code server fork the run,
and cannot answer run monitoring's health check. This launcher keeps production's shape:
the daemon starts each run as its own process (its own process group, like a task), the
run carries that process id as a tag, and ``check_run_worker_health`` reports a process
that died without finishing its run as FAILED, so run monitoring and run retries act as
they do on ECS. Only the test swaps it in; nothing in production uses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

from dagster import _check as check
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

PID_TAG = "runs-fleet/run-worker-pid"


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a killed child not yet reaped still answers kill 0)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Each run in its own process group, started by the daemon; health from that process."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]) -> LocalProcessRunLauncher:
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = check.not_none(context.job_code_origin)
        command = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        process = subprocess.Popen(list(command.get_command_args()), start_new_session=True)
        with self._lock:
            self._processes[run.run_id] = process
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(process.pid)})
        self._instance.report_engine_event(f"Launched run worker process {process.pid}", run, cls=self.__class__)

    def _pid(self, run_id: str) -> int | None:
        run = self._instance.get_run_by_id(run_id)
        value = run.tags.get(PID_TAG) if run else None
        return int(value) if value else None

    def terminate(self, run_id: str) -> bool:
        pid = self._pid(run_id)
        if pid is None or not _alive(pid):
            return False
        run = self._instance.get_run_by_id(run_id)
        if run:
            self._instance.report_run_canceling(run)
        os.killpg(pid, signal.SIGTERM)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        with self._lock:
            process = self._processes.get(run.run_id)
        if process is not None:
            code = process.poll()  # also reaps it
            if code is None:
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            status = WorkerStatus.SUCCESS if code == 0 else WorkerStatus.FAILED
            return CheckRunHealthResult(status, f"run worker process {process.pid} exited with {code}")
        pid = self._pid(run.run_id)  # launched by another daemon process (restarted since)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker process recorded")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone")
