"""Experiment loggers built from the `logger` config group."""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from asg.results import write_text_atomic

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"


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


def wandb_logger(*, offline: bool | str = "auto", save_dir: str, **kwargs: Any) -> WandbLogger:
    """A WandbLogger that goes offline by itself when no API key is configured.

    The run id lives in the run dir, so a run resumed there (`resume=RUN_DIR`) continues the same W&B run
    instead of starting a new one.
    """
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_available()
    if offline:
        log.info("W&B runs offline (no API key); upload later with `wandb sync %s/wandb`", save_dir)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(offline=bool(offline), save_dir=save_dir, id=wandb_run_id(save_dir), resume="allow", **kwargs)


def finish_wandb(loggers: list[Logger], *, failed: bool) -> None:
    """Close the W&B run (also after a failure) so the next job of a multirun starts cleanly."""
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
