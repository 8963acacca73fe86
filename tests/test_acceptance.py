"""The shared acceptance scenarios, run through `relay check` exactly as CI's contract says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, SHARED


def test_every_acceptance_scenario_passes() -> None:
    runner = SHARED / "acceptance" / "run.py"
    assert runner.exists(), f"missing {runner}: the shared/ folder must sit beside the project"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, str(runner)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), last
