"""Runs as users start them, through `run.py` in fresh processes: resume after a kill, sweeps that survive a
failed job, parallel and SLURM launchers, and DDP on CPU (2 processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir

from tests.test_pipeline import CONF

ROOT = CONF.parent


class KillAfterSteps(pl.Callback):
    """Kills its own process (SIGKILL: no cleanup, like a preempted node) once `steps` optimizer steps are done."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


def tiny_overrides(tiny_dirs, shared_data, *extra: str) -> list[str]:
    return [
        "model=mbert",
        f"model.name_or_path={tiny_dirs['mbert']}",
        "task=wikiann",
        "transfer.eval_langs=[de]",
        f"data.dir={shared_data}",
        "data.max_train_samples=32",
        "data.max_eval_samples=8",
        "data.batch_size=4",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "asg.iters=2",
        "asg.k=16",
        "asg.m=4",
        *extra,
    ]


def run_py(*args: str) -> subprocess.CompletedProcess:
    # a fresh process as a user starts it: not attached to the W&B service of this pytest process (which
    # still holds the killed run's id as active)
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    env |= {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_killed_run_resumes_with_one_override_and_the_same_wandb_run(tmp_path, tiny_dirs, shared_data):
    run_dir = tmp_path / "run"
    common = tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=6", "checkpoint.every_n_steps=2", "logger=wandb")
    killed = run_py(
        *common,
        f"hydra.run.dir={run_dir}",
        "+callbacks.kill._target_=tests.test_runs.KillAfterSteps",
        "+callbacks.kill.steps=3",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    run_id = (run_dir / "wandb_run_id").read_text()

    resumed = run_py(*common, f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6, "the resumed run must cover the whole run, not only the steps after the kill"
    assert metrics["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert "test/de/f1" in metrics["scores"]
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(p.name.endswith(run_id) for p in offline_runs), offline_runs


def test_resume_refuses_a_different_configuration(tmp_path, tiny_dirs, shared_data):
    run_dir = tmp_path / "run"
    first = run_py(
        *tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=2", "logger=csv"), f"hydra.run.dir={run_dir}"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    changed = run_py(
        *tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=2", "logger=csv", "asg.m=8"), f"resume={run_dir}"
    )
    assert changed.returncode != 0
    assert "differs in: asg" in changed.stderr and "asg.m=4" in changed.stderr


def test_resume_without_checkpoint_names_the_fix(tmp_path, tiny_dirs, shared_data):
    result = run_py(*tiny_overrides(tiny_dirs, shared_data, "logger=csv"), f"resume={tmp_path / 'nothing'}")
    assert result.returncode != 0 and "no checkpoint at" in result.stderr


def test_parallel_sweep_survives_a_failed_job_and_reports_it(tmp_path, tiny_dirs, shared_data):
    sweep_dir = tmp_path / "sweep"
    result = run_py(
        "-m",
        *tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=1", "logger=csv", "checkpoint.keep=false"),
        "asg.m=4,7",  # 7 does not divide the hidden size: that job fails, the other must still finish
        "hydra/launcher=local",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((sweep_dir / "sweep_report.json").read_text())
    assert report["succeeded"] == ["0"]
    assert [f["job"] for f in report["failed"]] == ["1"]
    assert "asg.m=7" in report["failed"][0]["overrides"]
    assert "does not divide hidden size" in report["failed"][0]["error"]
    assert "FAILED 1: ValueError: asg.m=7" in result.stdout + result.stderr
    assert (sweep_dir / "0" / "metrics.json").is_file()
    assert not (sweep_dir / "0" / "checkpoints").exists(), "checkpoint.keep=false must delete it"


def test_ddp_on_cpu_fits_once_and_writes_once(tmp_path, tiny_dirs, shared_data):
    run_dir = tmp_path / "ddp"
    result = run_py(
        *tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=1", "logger=csv"),
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "asg.cache_dir=null",  # a cached fit would skip k-means, and this test counts the fits
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-5000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["compression"]["method"] == "pq"
    rank0_log = (run_dir / "run.log").read_text()
    rank1_log = (run_dir / "train_ddp_process_1.log").read_text()
    assert rank0_log.count("PQ of") == 1, "rank 0 fits k-means exactly once"
    assert "PQ of" not in rank1_log, "rank 1 must receive the codebooks, not fit its own"
    # one run dir: no per-rank copies of the Hydra output next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    assert [p.name for p in run_dir.rglob("config.yaml")] == ["config.yaml"]


def test_slurm_launcher_composes_for_ddp():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.max_num_timeout > 0


def test_experiment_presets_open_with_their_command():
    presets = sorted((CONF / "experiment").glob("paper_*.yaml")) + sorted((CONF / "experiment").glob("ablation*.yaml"))
    assert len(presets) >= 4
    for preset in presets:
        lines = preset.read_text().splitlines()
        assert lines[0] == "# @package _global_", preset  # Hydra reads the package only from the first lines
        assert lines[1].startswith("# python run.py -m experiment=" + preset.stem), preset
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={preset.stem}"], return_hydra_config=True)
        assert cfg.hydra.sweeper.params, f"{preset.name} sweeps nothing"
