"""W&B is real (offline without a key), its run is closed even when training fails, and a resumed run's step
history has no duplicates."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import wandb

from asg.loggers import wandb_api_key_available, wandb_logger
from tests import wandb_files
from tests.test_pipeline import tiny_run


def test_offline_auto_without_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert not wandb_api_key_available()
    logger = wandb_logger(offline="auto", save_dir=str(tmp_path), project="asg-test")
    assert logger._offline is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_api_key_available()


def test_wandb_run_is_logged_offline_and_finished(tmp_path, tiny_dirs, shared_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, "mbert", "logger=wandb")
    assert wandb.run is None, "the W&B run was left open"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert "test/avg/f1" in metrics["scores"]


def test_wandb_is_finished_when_training_fails(tmp_path, tiny_dirs, shared_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken_fit(self, *args, **kwargs):
        raise RuntimeError("simulated crash in fit")

    monkeypatch.setattr(pl.Trainer, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_run(tmp_path, tiny_dirs, shared_data, "mbert", "logger=wandb")
    assert wandb.run is None, "a failed job must not leave its W&B run open for the next job of a sweep"
    assert not (tmp_path / "metrics.json").exists()


def test_resumed_run_drops_the_steps_it_logged_before(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # the second attempt resumes from a checkpoint at step 2, after the first had logged steps 0-3
    for steps in (range(0, 4), range(2, 6)):
        logger = wandb_logger(save_dir=str(tmp_path), project="asg-test")
        for step in steps:
            logger.log_metrics({"loss": float(10 * step)}, step=step)
        wandb.finish()
    rows = wandb_files.history(tmp_path)
    assert len(wandb_files.offline_runs(tmp_path)) == 2
    assert [row["trainer/global_step"] for row in rows] == [0, 1, 2, 3, 4, 5]
    assert [row["_step"] for row in rows] == [0, 1, 2, 3, 4, 5], "offline, W&B's own step would restart at 0"
    assert [row["loss"] for row in rows] == [0, 10, 20, 30, 40, 50]
