"""The multi-fleet suite (tests/fleets), run in its own pytest process.

Fleets are read when the code location is imported; this session imported it with one fleet,
so the suite with RUNS_FLEET_FLEETS runs apart, with its own moto server. Its output is shown
when it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_multi_fleet_suite_passes_in_its_own_process():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNS_FLEET_", "AWS_"))}
    env["RUNS_FLEET_FLEETS_SUITE"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fleets"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
    assert result.returncode == 0, tail
    # pytest exits 0 only with tests run and passed; make sure it ran the suite, not nothing.
    assert " passed" in result.stdout and "8 passed" in result.stdout, tail
