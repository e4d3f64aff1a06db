"""Sweeps a cluster can trust.

A failed job leaves `failed.json` and the others go on; the multirun ends with `sweep_report.json` and exits
non-zero when any job failed or did not finish. `resume_sweep=true` continues a sweep in its dir: finished jobs are
reused, the others run again (unfinished ones from their checkpoints). DDP inside a local multirun is refused.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from asg.results import write_json_atomic

log = logging.getLogger(__name__)

FAILED = "failed.json"
REPORT = "sweep_report.json"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_one_process_per_job(trainer_cfg: DictConfig, launcher_target: str) -> None:
    """Refuse DDP over several devices in a local multirun.

    Lightning starts a local job's extra DDP processes by running the command line again, `-m` included, so every
    process would run the whole sweep. Under SLURM (the submitit launcher) each task is one rank of its own job.
    """
    if "submitit" in launcher_target:
        return
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    one_device = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    if one_device and nodes == 1:
        return
    raise ValueError(
        f"trainer.devices={devices} trainer.num_nodes={nodes} inside a local multirun: Lightning would start each "
        "extra DDP process by running this command again, -m included, so every process would run the whole sweep. "
        "Use hydra/launcher=slurm (one SLURM task per device), or run one configuration per command, without -m."
    )


def run_job(job: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job; inside a multirun, record an exception in `<run dir>/failed.json` instead of raising it."""
    if not in_multirun():
        return job(cfg)  # a single run fails loudly
    hydra = HydraConfig.get()
    out = Path(hydra.runtime.output_dir)
    (out / FAILED).unlink(missing_ok=True)  # left by an earlier attempt of this job; this attempt decides anew
    try:
        check_one_process_per_job(cfg.trainer, hydra.launcher._target_)  # a sweep may set the devices per job
        return job(cfg)
    except Exception as err:
        overrides = list(hydra.overrides.task)
        write_json_atomic(
            out / FAILED,
            {"error": f"{type(err).__name__}: {err}", "overrides": overrides, "traceback": traceback.format_exc()},
        )
        log.exception("job failed (%s); the sweep goes on, details in %s", " ".join(overrides), out / FAILED)
        return None


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The job dirs of a sweep dir: each holds its saved config in `.hydra` (they nest when a value holds a "/")."""
    return sorted(p.parent for p in Path(sweep_dir).rglob(".hydra") if p.is_dir())


def sweep_report(sweep_dir: str | Path, reused: Collection[str] = ()) -> dict[str, Any]:
    """The sweep's jobs by outcome, from the files each left; `reused` names jobs that had finished before."""
    root = Path(sweep_dir)
    report: dict[str, Any] = {"sweep_dir": str(root), "succeeded": [], "reused": [], "failed": [], "unfinished": []}
    for job in job_dirs(root):
        name = str(job.relative_to(root))
        if (job / FAILED).is_file():  # checked first: a job refused for a changed config keeps its old metrics
            failure = json.loads((job / FAILED).read_text())
            report["failed"].append({"job": name, "error": failure["error"], "overrides": failure["overrides"]})
        elif (job / "metrics.json").is_file():
            report["reused" if name in reused else "succeeded"].append(name)
        else:
            report["unfinished"].append(name)
    return report


class SweepReport(Callback):
    """Hydra callback: checks a multirun before its first job, and reports and judges it after the last one.

    Hydra turns exceptions raised in callbacks into warnings, so a refusal or a failed sweep raises SystemExit: the
    process ends with status 1 and the message.
    """

    def __init__(self) -> None:
        self.finished_before: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_one_process_per_job(config.trainer, config.hydra.launcher._target_)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = job_dirs(sweep_dir) if sweep_dir.is_dir() else []
        if jobs and not config.get("resume_sweep"):
            raise SystemExit(
                f"{sweep_dir} already holds {len(jobs)} jobs of a sweep: add resume_sweep=true to continue it "
                "(finished jobs are reused, the others run again), or choose another hydra.sweep.dir"
            )
        self.finished_before = {str(job.relative_to(sweep_dir)) for job in jobs if (job / "metrics.json").is_file()}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        report = sweep_report(sweep_dir, reused=self.finished_before)
        write_json_atomic(sweep_dir / REPORT, report)
        counts = {key: len(report[key]) for key in ("succeeded", "reused", "failed", "unfinished")}
        log.info(
            "sweep finished: %s of %d jobs; report in %s",
            ", ".join(f"{n} {key}" for key, n in counts.items()),
            sum(counts.values()),
            sweep_dir / REPORT,
        )
        for failure in report["failed"]:
            log.error("FAILED %s: %s", failure["job"], failure["error"])
        for job in report["unfinished"]:
            log.error("UNFINISHED %s (no metrics.json and no failed.json: killed?)", job)
        if report["failed"] or report["unfinished"]:
            raise SystemExit(
                f"sweep {sweep_dir}: {counts['failed']} failed and {counts['unfinished']} unfinished of "
                f"{sum(counts.values())} jobs (listed in {sweep_dir / REPORT}); to run only those, repeat the "
                f"command with hydra.sweep.dir={sweep_dir} resume_sweep=true"
            )
