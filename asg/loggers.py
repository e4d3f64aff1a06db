"""Experiment loggers built from the `logger` config group."""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from asg.results import write_text_atomic
from asg.sweep import in_multirun

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"
LAST_STEP_FILE = "wandb_last_step"


def wandb_api_key_available() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_run_id(save_dir: str | os.PathLike) -> str:
    """The W&B run id of the run dir: made on the first start, read back on every later one (a resume)."""
    path = Path(save_dir) / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:16]
    if rank_zero_only.rank == 0:  # other DDP ranks never log to W&B
        write_text_atomic(path, run_id)
    return run_id


class ResumableWandbLogger(WandbLogger):
    """A WandbLogger whose step history stays monotone, without duplicates, across the attempts of one run.

    A resumed attempt redoes the steps after its checkpoint, which the interrupted attempt may have logged already:
    those are dropped. Each row is logged at W&B step = trainer step, since an offline run resumed cannot learn where
    the run stopped and would count its steps from 0 again.
    """

    def __init__(self, *, save_dir: str, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, **kwargs)
        self._last_step_file = Path(save_dir) / LAST_STEP_FILE
        # the last step an earlier attempt of this run logged (-1: none)
        self._logged_before = int(self._last_step_file.read_text()) if self._last_step_file.is_file() else -1

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            super().log_metrics(metrics)
            return
        if step <= self._logged_before:
            return
        self.experiment.log({**metrics, "trainer/global_step": step}, step=step)
        write_text_atomic(self._last_step_file, str(step))


def wandb_logger(
    *, offline: bool | str = "auto", save_dir: str, name: str | None = None, group: str | None = None, **kwargs: Any
) -> WandbLogger:
    """A WandbLogger that goes offline by itself when no API key is configured.

    The run id lives in the run dir, so a run resumed there continues the same W&B run instead of starting a new
    one. In a multirun each job is named by its overrides (Hydra's `override_dirname`) and grouped by its sweep dir
    unless `group` is set; `name` names a single run.
    """
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_available()
    if offline:
        log.info("W&B runs offline (no API key); upload later with `wandb sync %s/wandb`", save_dir)
    if in_multirun():
        hydra = HydraConfig.get()
        name, group = hydra.job.override_dirname or name, group or str(hydra.sweep.dir)
    os.makedirs(save_dir, exist_ok=True)
    return ResumableWandbLogger(
        offline=bool(offline),
        save_dir=save_dir,
        id=wandb_run_id(save_dir),
        resume="allow",
        name=name,
        group=group,
        **kwargs,
    )


def finish_wandb(loggers: list[Logger], *, failed: bool) -> None:
    """Close the W&B run (also after a failure) so the next job of a multirun starts cleanly."""
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
