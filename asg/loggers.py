"""Experiment loggers built from the `logger` config group."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)


def wandb_api_key_available() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(*, offline: bool | str = "auto", save_dir: str, **kwargs: Any) -> WandbLogger:
    """A WandbLogger that goes offline by itself when no API key is configured."""
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_available()
    if offline:
        log.info("W&B runs offline (no API key); upload later with `wandb sync %s/wandb`", save_dir)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(offline=bool(offline), save_dir=save_dir, **kwargs)


def finish_wandb(loggers: list[Logger], *, failed: bool) -> None:
    """Close the W&B run (also after a failure) so the next job of a multirun starts cleanly."""
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
