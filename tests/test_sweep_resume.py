"""A sweep a scheduler can trust: a failed job makes the multirun exit non-zero, the sweep continues in its dir with
resume_sweep=true (finished jobs reused, only the others run), and each job is its own, named W&B run."""

from __future__ import annotations

import json
import os

import pytorch_lightning as pl

from tests import wandb_files
from tests.test_runs import run_py, tiny_overrides

FAIL_K = "ASG_TEST_FAIL_K"


class FailForK(pl.Callback):
    """Fails the job whose asg.k is in $ASG_TEST_FAIL_K: a failure that goes away without changing the sweep."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if str(pl_module.asg_cfg["k"]) == os.environ.get(FAIL_K):
            raise RuntimeError(f"simulated failure of the job with asg.k={pl_module.asg_cfg['k']}")


def test_failed_job_fails_the_sweep_and_a_resume_runs_only_that_job(tmp_path, tiny_dirs, shared_data):
    sweep_dir = tmp_path / "sweep"
    sweep = [
        "-m",
        *tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=1", "logger=wandb"),
        "asg.k=8,16,32",
        "+callbacks.fail._target_=tests.test_sweep_resume.FailForK",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    first = run_py(*sweep, env={FAIL_K: "16"})
    assert first.returncode == 1, first.stderr[-3000:]
    assert "FAILED 1: RuntimeError: simulated failure of the job with asg.k=16" in first.stdout + first.stderr
    report = json.loads((sweep_dir / "sweep_report.json").read_text())
    assert (report["succeeded"], [f["job"] for f in report["failed"]]) == (["0", "2"], ["1"])
    finished = {job: (sweep_dir / job / "metrics.json").read_bytes() for job in ("0", "2")}

    # one W&B run per job, named by its overrides, all three in the sweep's group
    names = {}
    for job in ("0", "1", "2"):
        (attempt,) = wandb_files.offline_runs(sweep_dir / job)
        info = wandb_files.run_info(attempt)
        names[job] = info.display_name
        assert info.run_group == str(sweep_dir)
    assert [f"asg.k={k}" in names[job] for job, k in (("0", 8), ("1", 16), ("2", 32))] == [True] * 3
    assert "data.dir" not in names["0"], "paths are left out of the names"

    again = run_py(*sweep)
    assert again.returncode == 1 and "resume_sweep=true" in again.stderr, "an existing sweep dir needs the flag"
    assert "Launching" not in again.stdout + again.stderr

    resumed = run_py(*sweep, "resume_sweep=true")  # the failure is gone
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads((sweep_dir / "sweep_report.json").read_text())
    assert (report["succeeded"], report["reused"], report["failed"], report["unfinished"]) == (
        ["1"],
        ["0", "2"],
        [],
        [],
    )
    output = resumed.stdout + resumed.stderr
    assert output.count("its metrics.json is reused") == 2 and output.count("Result summary") == 1
    assert all((sweep_dir / job / "metrics.json").read_bytes() == data for job, data in finished.items())
    assert not (sweep_dir / "1" / "failed.json").exists()

    # the same sweep with its values in another order maps other jobs to the finished dirs: refused, job by job
    reordered = [arg if arg != "asg.k=8,16,32" else "asg.k=32,16,8" for arg in sweep]
    shifted = run_py(*reordered, "resume_sweep=true")
    assert shifted.returncode == 1
    report = json.loads((sweep_dir / "sweep_report.json").read_text())
    assert [f["job"] for f in report["failed"]] == ["0", "2"] and report["reused"] == ["1"]
    assert "differs in: asg" in report["failed"][0]["error"] and "asg.k=8" in report["failed"][0]["error"]
