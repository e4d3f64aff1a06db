"""Run configurations as separate `run.py` processes and collect their metrics.json files."""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from asg.results import fit_version, flatten
from asg.train import RUN_CONFIG, comparable_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CONF = ROOT / "conf"


def run_config(name: str, overrides: list[str], runs_dir: Path) -> dict | None:
    """One run in its own process, so a failure is recorded and the other configurations go on.

    A run whose metrics.json exists is not started again: its metrics are returned, so a study killed or spread
    over several sessions resumes with the runs it lacks. Delete a run's dir to rerun it. A relative `runs_dir`
    is relative to the repository root, where the runs start.
    """
    out = Path(runs_dir) / name
    metrics = ROOT / out / "metrics.json"
    if metrics.is_file():
        _check_same_run(out, overrides)
        print(f"{name}: skipped, {metrics} exists", flush=True)
        return json.loads(metrics.read_text())
    cmd = [sys.executable, "run.py", *overrides, f"hydra.run.dir={out}"]
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode or not metrics.is_file():
        print(f"{name} failed (exit {proc.returncode})", flush=True)
        return None
    return json.loads(metrics.read_text())


def _check_same_run(out: Path, overrides: list[str]) -> None:
    """Refuse a finished run made with other settings: a study whose settings changed, by its overrides or by a
    changed default under them, must not pass an old run off as the new one.

    Keys that only one side has (one added or removed since) are not compared. A run from before run_config.json
    existed is checked by the seed and `asg` settings its metrics.json records."""
    run = ROOT / out
    if (run / RUN_CONFIG).is_file():
        saved = json.loads((run / RUN_CONFIG).read_text())
        if saved["overrides"] != overrides:
            raise ValueError(
                f"{out} finished with other overrides ({shlex.join(saved['overrides'])}), not "
                f"{shlex.join(overrides)}: delete it to rerun, or give the run another name"
            )
        recorded = flatten(saved["config"])
    else:
        metrics = json.loads((run / "metrics.json").read_text())
        recorded = flatten({"seed": metrics["seed"], "asg": metrics["asg"]})
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        wanted = flatten(comparable_config(compose("config", overrides=overrides)))
    differ = sorted(key for key in recorded.keys() & wanted.keys() if recorded[key] != wanted[key])
    if differ:
        raise ValueError(
            f"{out} finished with {', '.join(f'{k}={recorded[k]}' for k in differ)}, but these overrides give "
            f"{', '.join(f'{k}={wanted[k]}' for k in differ)} today: delete it to rerun, or give the "
            "run another name"
        )


def read_run(run_dir: Path) -> dict | None:
    """A finished run's metrics, without starting anything (None where it has not finished)."""
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def mean_std(values: list[float]) -> str:
    """Mean ± sample std of seeds' scores ("—" without any, no ± for one)."""
    if not values:
        return "—"
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{spread}"


def fit_version_notes(groups: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    """Markdown lines to append to a report: a bullet for each group of runs pooled as seeds whose codes came from
    more than one k-means version (`asg.quantize.FIT_VERSION`), naming each version's seeds and fit errors, after a
    blank line; none where no group mixes versions."""
    notes = []
    for label, runs in groups.items():
        by_version: dict[int | None, list[Mapping[str, Any]]] = {}
        for run in runs:
            if "code_bytes" in run.get("compression", {}):  # a code table: the codes came from a k-means fit
                by_version.setdefault(fit_version(run), []).append(run)
        if len(by_version) > 1:
            parts = []
            for version, seeds in sorted(by_version.items(), key=lambda item: (item[0] is None, item[0] or 0)):
                which = f"version {version}" if version is not None else "an unknown version"
                errors = ", ".join(f"{r['compression']['rel_error']:.5f}" for r in seeds)
                named = ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(r["seed"]) for r in seeds)
                parts.append(f"{named} at {which} (fit rel. error {errors})")
            notes.append(f"- {label} pools seeds fitted by different k-means versions: " + "; ".join(parts) + ".")
    return ["", *notes] if notes else []


def command_line(module: str) -> str:
    """The command that makes a study's runs: this process's arguments, less --report-only (which only reads them)."""
    return shlex.join(["python", "-m", module, *(a for a in sys.argv[1:] if a != "--report-only")])
