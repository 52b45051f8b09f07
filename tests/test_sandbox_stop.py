"""`make stop` stops what `make run` started: the Dagster UI found by its pid file, never another process."""

from __future__ import annotations

import json
import subprocess
import time

import sandbox.__main__ as sandbox_cli


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
