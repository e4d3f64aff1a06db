"""Sweeps that survive their failures: a failed job leaves `failed.json`, and the sweep ends with a report."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from asg.results import write_json_atomic

log = logging.getLogger(__name__)

FAILED = "failed.json"
REPORT = "sweep_report.json"


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(job: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job; inside a multirun, record an exception in `<run dir>/failed.json` instead of raising it."""
    try:
        return job(cfg)
    except Exception as err:
        if not _in_multirun():
            raise
        out = Path(HydraConfig.get().runtime.output_dir)
        overrides = list(HydraConfig.get().overrides.task)
        write_json_atomic(
            out / FAILED,
            {"error": f"{type(err).__name__}: {err}", "overrides": overrides, "traceback": traceback.format_exc()},
        )
        log.exception("job failed (%s); the sweep goes on, details in %s", " ".join(overrides), out / FAILED)
        return None


def sweep_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Succeeded and failed jobs of a sweep dir, from the files each job left."""
    root = Path(sweep_dir)
    # every job saved its config in <job dir>/.hydra; job dirs may nest when an override value holds a "/"
    jobs = sorted(p.parent for p in root.rglob(".hydra") if p.is_dir())
    report: dict[str, Any] = {"sweep_dir": str(root), "succeeded": [], "failed": [], "unfinished": []}
    for job in jobs:
        name = str(job.relative_to(root))
        if (job / "metrics.json").is_file():
            report["succeeded"].append(name)
        elif (job / FAILED).is_file():
            failure = json.loads((job / FAILED).read_text())
            report["failed"].append({"job": name, "error": failure["error"], "overrides": failure["overrides"]})
        else:
            report["unfinished"].append(name)
    return report


class SweepReport(Callback):
    """Hydra callback: at the end of a multirun, list failed and unfinished jobs and write `sweep_report.json`."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        report = sweep_report(sweep_dir)
        write_json_atomic(sweep_dir / REPORT, report)
        done = len(report["succeeded"])
        total = done + len(report["failed"]) + len(report["unfinished"])
        log.info("sweep finished: %d of %d jobs succeeded; report in %s", done, total, sweep_dir / REPORT)
        for failure in report["failed"]:
            log.error("FAILED %s: %s", failure["job"], failure["error"])
        for job in report["unfinished"]:
            log.error("UNFINISHED %s (no metrics.json and no failed.json: killed?)", job)
