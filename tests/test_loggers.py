"""W&B is real (offline without a key), and its run is closed even when training fails."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import wandb

from asg.loggers import wandb_api_key_available, wandb_logger
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
