"""Runs as users start them, through `run.py` in fresh processes: sweeps that survive a failed job, parallel and
SLURM launchers, the paper presets. Resume, sweep resume and DDP have their own files (test_resume, test_sweep_resume,
test_ddp) built on the helpers here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hydra import compose, initialize_config_dir

from tests.test_pipeline import CONF

ROOT = CONF.parent


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
        "asg.cache_dir=null",  # every run fits its own k-means; nothing is written into the checkout
        *extra,
    ]


def run_py(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    # a fresh process as a user starts it: not attached to the W&B service of this pytest process (which
    # still holds the killed run's id as active)
    environ = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    environ |= {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_parallel_sweep_survives_a_failed_job_and_reports_it(tmp_path, tiny_dirs, shared_data):
    sweep_dir = tmp_path / "sweep"
    result = run_py(
        "-m",
        *tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=1", "logger=csv", "checkpoint.keep=none"),
        "asg.m=4,7",  # 7 does not divide the hidden size: that job fails, the other must still finish
        "hydra/launcher=local",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1, "a sweep with a failed job must fail for the scheduler: " + result.stderr[-3000:]
    assert "1 failed and 0 unfinished of 2 jobs" in result.stderr
    report = json.loads((sweep_dir / "sweep_report.json").read_text())
    assert report["succeeded"] == ["0"]
    assert [f["job"] for f in report["failed"]] == ["1"]
    assert "asg.m=7" in report["failed"][0]["overrides"]
    assert "does not divide hidden size" in report["failed"][0]["error"]
    assert "FAILED 1: ValueError: asg.m=7" in result.stdout + result.stderr
    assert (sweep_dir / "0" / "metrics.json").is_file()
    assert not (sweep_dir / "0" / "checkpoints").exists(), "checkpoint.keep=none must delete it"


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
