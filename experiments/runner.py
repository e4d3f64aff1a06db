"""Run configurations as separate `run.py` processes and collect their metrics.json files."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def run_config(name: str, overrides: list[str], runs_dir: Path) -> dict | None:
    """One run in its own process, so a failure is recorded and the other configurations go on."""
    out = Path(runs_dir) / name
    cmd = [sys.executable, "run.py", *overrides, f"hydra.run.dir={out}"]
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT)
    metrics = out / "metrics.json"
    if proc.returncode or not metrics.is_file():
        print(f"{name} failed (exit {proc.returncode})", flush=True)
        return None
    return json.loads(metrics.read_text())


def command_line(module: str) -> str:
    return f"python -m {module} " + shlex.join(sys.argv[1:])
