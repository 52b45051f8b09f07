"""`make stop` stops what `make run` started: the Dagster UI found by its pid file, never another process."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import sandbox.__main__ as sandbox_cli


def test_stop_ui_also_stops_what_the_ui_started_and_left_running(tmp_path, monkeypatch):
    """Seen with `make run`: dagster dev exited on SIGINT and its webserver kept serving port 3000."""
    monkeypatch.setattr(sandbox_cli, "UI_FILE", tmp_path / "ui.json")
    # A stand-in whose child outlives it (a background job of a non-interactive shell ignores SIGINT).
    ui = subprocess.Popen(["bash", "-c", "sleep 300 & exec -a dagster-dev-standin sleep 60"])
    try:
        deadline = time.monotonic() + 10
        while not sandbox_cli._descendants(ui.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = sandbox_cli._descendants(ui.pid)
        (tmp_path / "ui.json").write_text(json.dumps({"pid": ui.pid, "port": 3000}))
        sandbox_cli.stop_ui(grace_s=5)
        assert ui.wait(timeout=10) is not None
        time.sleep(0.2)
        assert not sandbox_cli._pid_alive(child) or _zombie(child)
    finally:
        ui.kill()
        ui.wait()


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return False


def test_stop_ui_stops_the_dagster_process_of_the_pid_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_cli, "UI_FILE", tmp_path / "ui.json")
    ui = subprocess.Popen(["bash", "-c", "exec -a dagster-dev-standin sleep 60"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "ui.json").write_text(json.dumps({"pid": ui.pid, "port": 3000}))
        sandbox_cli.stop_ui(grace_s=5)
        assert ui.wait(timeout=10) is not None
        assert not (tmp_path / "ui.json").exists()
        # A pid file left behind whose pid now belongs to something else: that process is left alone.
        (tmp_path / "ui.json").write_text(json.dumps({"pid": bystander.pid, "port": 3000}))
        sandbox_cli.stop_ui(grace_s=5)
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        for process in (ui, bystander):
            process.kill()
            process.wait()
