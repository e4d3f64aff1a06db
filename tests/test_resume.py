"""Resume in place: a job started again in its run dir continues from its checkpoint, with the same W&B run and a
step history without duplicates; a finished run is reused; a run dir of another configuration is refused."""

from __future__ import annotations

import json
import os
import signal

import pytest
import pytorch_lightning as pl
import torch

from tests import wandb_files
from tests.test_pipeline import make_cfg
from tests.test_runs import run_py, tiny_overrides


class FailAtStep(pl.Callback):
    """Raises before the optimizer step after `step`: a job that crashes there (checkpoints up to `step` are saved)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash after {trainer.global_step} steps")


class KillAfterSteps(pl.Callback):
    """Kills its own process (SIGKILL: no cleanup, like a preempted node) once `steps` optimizer steps are done."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


def two_epochs(tiny_dirs, shared_data, *extra: str) -> list[str]:
    """16 training sentences in batches of 4: 4 steps an epoch, 8 in all, deterministic."""
    return tiny_overrides(
        tiny_dirs,
        shared_data,
        "data.max_train_samples=16",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "trainer.log_every_n_steps=1",
        "checkpoint.every_n_steps=2",
        *extra,
    )


def assert_monotone_history(run_dir) -> None:
    """Both the W&B step and the trainer step rise strictly over the rows of every attempt together."""
    rows = wandb_files.history(run_dir)
    for key in ("_step", "trainer/global_step"):
        steps = [row[key] for row in rows]
        assert steps == sorted(set(steps)), f"{key} repeats or goes back: {steps}"


def test_crashed_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_run(tmp_path, tiny_dirs, shared_data):
    common = two_epochs(tiny_dirs, shared_data, "logger=wandb")
    reference = run_py(*common, f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "run"
    crashed = run_py(
        *common,
        f"hydra.run.dir={run_dir}",
        "+callbacks.crash._target_=tests.test_resume.FailAtStep",
        "+callbacks.crash.step=4",
    )
    assert crashed.returncode == 1 and "simulated crash after 4 steps" in crashed.stderr
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    first_attempt = wandb_files.offline_runs(run_dir)[0]
    assert wandb_files.config(first_attempt)["compression"]["k"] == 16, "compression stats are logged at the fit"

    resumed = run_py(*common, f"hydra.run.dir={run_dir}")  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert metrics["steps"] == expected["steps"] == 8
    assert metrics["scores"] == expected["scores"]
    assert len(metrics["val_history"]) == 2, "the learning curve keeps the validation before the crash"
    assert metrics["val_history"] == expected["val_history"]
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference_weights = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)[
        "state_dict"
    ]
    for name, tensor in reference_weights.items():
        assert torch.equal(weights[name], tensor), f"{name} differs from the uninterrupted run"

    attempts = wandb_files.offline_runs(run_dir)
    assert len(attempts) == 2 and len({wandb_files.run_info(p).run_id for p in attempts}) == 1, attempts
    assert_monotone_history(run_dir)
    assert [row["trainer/global_step"] for row in wandb_files.history(run_dir)] == list(range(9))


def test_killed_run_continues_with_the_same_command(tmp_path, tiny_dirs, shared_data):
    """SIGKILL after 3 steps with a checkpoint at 2: step 2 was logged, is redone, and is not logged again.

    (W&B writes its offline file in the background: rows it had not written when the process was killed stay
    missing from the history, rather than appear twice.)
    """
    run_dir = tmp_path / "run"
    common = tiny_overrides(
        tiny_dirs, shared_data, "trainer.max_steps=6", "checkpoint.every_n_steps=2", "trainer.log_every_n_steps=1"
    )
    common += ["logger=wandb", f"hydra.run.dir={run_dir}"]
    killed = run_py(*common, "+callbacks.kill._target_=tests.test_resume.KillAfterSteps", "+callbacks.kill.steps=3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "wandb_last_step").read_text() == "2", "the test needs a step logged after the checkpoint"

    resumed = run_py(*common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6, "the resumed run must cover the whole run, not only the steps after the kill"
    assert metrics["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    attempts = [p.parent.name for p in wandb_files.offline_runs(run_dir)]  # offline-run-<time>-<run id>
    assert len(attempts) == 2 and all(name.endswith((run_dir / "wandb_run_id").read_text()) for name in attempts)
    assert_monotone_history(run_dir)
    resumed_rows = wandb_files.history(run_dir)  # the killed attempt's file may hold none of its rows
    assert resumed_rows[0]["trainer/global_step"] == 3 and resumed_rows[-1]["trainer/global_step"] == 6


def test_run_dir_of_another_configuration_is_refused(tmp_path, tiny_dirs, shared_data):
    run_dir = tmp_path / "run"
    common = ["trainer.max_steps=2", "logger=csv", f"hydra.run.dir={run_dir}"]
    first = run_py(*tiny_overrides(tiny_dirs, shared_data, *common))
    assert first.returncode == 0, first.stderr[-3000:]
    before = (run_dir / "metrics.json").read_bytes()
    changed = run_py(*tiny_overrides(tiny_dirs, shared_data, *common, "asg.m=8"))
    assert changed.returncode != 0
    assert "differs in: asg" in changed.stderr and "asg.m=4" in changed.stderr
    assert (run_dir / "metrics.json").read_bytes() == before


def test_resume_without_checkpoint_names_the_fix(tmp_path, tiny_dirs, shared_data):
    result = run_py(*tiny_overrides(tiny_dirs, shared_data, "logger=csv"), f"resume={tmp_path / 'nothing'}")
    assert result.returncode != 0 and "no checkpoint at" in result.stderr


def tiny_cfg(run_dir, tiny_dirs, shared_data, *overrides):
    return make_cfg(
        run_dir,
        "model=mbert",
        f"model.name_or_path={tiny_dirs['mbert']}",
        f"data.dir={shared_data}",
        "data.max_train_samples=8",
        "data.max_eval_samples=8",
        "data.batch_size=4",
        "logger=csv",
        "trainer.max_steps=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "asg.iters=2",
        "asg.k=16",
        "asg.cache_dir=null",
        *overrides,
    )


def test_finished_run_is_reused_and_keeps_only_its_weights(tmp_path, tiny_dirs, shared_data, monkeypatch):
    from asg.train import train

    metrics = train(tiny_cfg(tmp_path, tiny_dirs, shared_data))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"state_dict", "asg_compression"} <= set(checkpoint), "what asg.export reads"
    assert "optimizer_states" not in checkpoint, "checkpoint.keep=weights drops the optimizer state"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(pl.Trainer, "fit", no_training)
    assert train(tiny_cfg(tmp_path, tiny_dirs, shared_data)) == json.loads(json.dumps(metrics))


@pytest.mark.parametrize(("keep", "optimizer_state"), [("full", True), ("none", None)])
def test_checkpoint_keep(tmp_path, tiny_dirs, shared_data, keep, optimizer_state):
    from asg.train import train

    train(tiny_cfg(tmp_path, tiny_dirs, shared_data, f"checkpoint.keep={keep}"))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    if optimizer_state is None:
        assert not ckpt.parent.exists()
    else:
        assert "optimizer_states" in torch.load(ckpt, weights_only=True)


def test_unknown_checkpoint_keep_fails_before_training(tmp_path, tiny_dirs, shared_data):
    from asg.train import train

    with pytest.raises(ValueError, match="checkpoint.keep='some': choose one of weights, full, none"):
        train(tiny_cfg(tmp_path, tiny_dirs, shared_data, "checkpoint.keep=some"))
