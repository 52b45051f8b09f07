"""The UI of a many-fleet deployment: a real `dagster dev` on RUNS_FLEET_FLEETS shows each piece's fleet
partitions (and archival's date x fleet), asked through its GraphQL API as the UI asks."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

from sandbox.__main__ import dagster_dev_command, dagster_env
from tests.fleets.conftest import DENIED, REACHABLE
from tests.test_ui_smoke import free_port, graphql, wait_for

PARTITIONS = """
query { assetNodes(assetKeys: [{path: ["pool_cost_report"]}, {path: ["job_archive"]},
                               {path: ["orphaned_instances_sweep_plan"]}, {path: ["fleets_cost_summary"]}]) {
  assetKey { path } partitionKeysByDimension { name partitionKeys } } }
"""


def test_the_ui_shows_every_piece_per_fleet(moto_url, tmp_path):
    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(dagster_dev_command(port), env=dagster_env(moto_url, tmp_path / "home"),
                                   cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)

    def up() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def loaded():
        nodes = graphql(port, PARTITIONS)["assetNodes"]
        return nodes if len(nodes) == 4 else None

    try:
        wait_for(up, 180, "the Dagster webserver")
        nodes = {"/".join(n["assetKey"]["path"]): n["partitionKeysByDimension"] for n in wait_for(loaded, 120, "assets")}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    fleets = [*REACHABLE, DENIED]
    for key in ("pool_cost_report", "orphaned_instances_sweep_plan"):
        (dimension,) = nodes[key]
        assert dimension["partitionKeys"] == fleets, key
    dims = {d["name"]: d["partitionKeys"] for d in nodes["job_archive"]}
    assert set(dims) == {"date", "fleet"} and dims["fleet"] == fleets and dims["date"][0] == "2024-01-01"
    assert nodes["fleets_cost_summary"] == []  # the fleet-wide summary is one asset, not partitioned
