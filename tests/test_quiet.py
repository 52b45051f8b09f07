"""No noise for the operator: loading the code location prints no warning, and the sandbox's help
offers only the commands it accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_loading_the_code_location_prints_no_owners_beta_warning(tmp_path):
    # A fresh process, with Python's default warning filters (pytest's config silences BetaWarning here).
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-c", "from definitions import defs; defs.get_repository_def()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "owners" not in done.stderr and "BetaWarning" not in done.stderr, done.stderr


def test_the_sandbox_help_offers_only_commands_it_accepts():
    done = subprocess.run([sys.executable, "-m", "sandbox", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    (choices,) = re.findall(r"\{([a-z,]+)\}", done.stdout)[:1]
    offered = set(re.findall(r"\b(run|serve|stop|status|validate)\b", done.stdout))
    assert offered <= set(choices.split(",")), done.stdout
