"""DDP on CPU (2 processes, gloo): one k-means fit, one writer, the code table never re-sent, a fit failure that
stops every rank at once, and no DDP inside a local multirun."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl

import asg.surgery
from tests.test_runs import run_py, tiny_overrides


class RecordBroadcasts(pl.Callback):
    """Writes `broadcasts_rank<N>.json`: whether DDP sent the code table, or any buffer, during the training steps."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ddp = trainer.strategy.model
        send = ddp._distributed_broadcast_coalesced  # what DDP's buffer sync before each forward goes through
        self.sent: list[int] = []

        def recording(tensors, *args, **kwargs):
            self.sent += [t.data_ptr() for t in tensors]
            return send(tensors, *args, **kwargs)

        ddp._distributed_broadcast_coalesced = recording

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        codes = pl_module.model.get_input_embeddings().codes
        record = {"codes_sent": codes.data_ptr() in self.sent, "tensors_sent": len(self.sent)}
        out = Path(trainer.default_root_dir) / f"broadcasts_rank{trainer.global_rank}.json"
        out.write_text(json.dumps(record))


class BreakFitOnRankZero(pl.Callback):
    """Makes the k-means fit raise on rank 0 only (the other ranks never fit: they wait for its result)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank == 0:

            def broken(*args: object, **kwargs: object) -> None:
                raise RuntimeError("simulated k-means failure")

            asg.surgery.fit_compression = broken


def ddp_overrides(tiny_dirs, shared_data, *extra: str) -> list[str]:
    return tiny_overrides(
        tiny_dirs, shared_data, "trainer.max_steps=2", "logger=csv", "trainer.strategy=ddp", "trainer.devices=2", *extra
    )


def test_ddp_on_cpu_fits_once_writes_once_and_never_resends_the_code_table(tmp_path, tiny_dirs, shared_data):
    run_dir = tmp_path / "ddp"
    result = run_py(
        *ddp_overrides(tiny_dirs, shared_data),
        "+callbacks.broadcasts._target_=tests.test_ddp.RecordBroadcasts",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-5000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["compression"]["method"] == "pq"
    rank0_log = (run_dir / "run.log").read_text()
    rank1_log = (run_dir / "train_ddp_process_1.log").read_text()
    assert rank0_log.count("PQ of") == 1, "rank 0 fits k-means exactly once"
    assert "PQ of" not in rank1_log, "rank 1 must receive the codebooks, not fit its own"
    # one run dir: no per-rank copies of the Hydra output next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    assert [p.name for p in run_dir.rglob("config.yaml")] == ["config.yaml"]
    for rank in (0, 1):
        record = json.loads((run_dir / f"broadcasts_rank{rank}.json").read_text())
        assert record["codes_sent"] is False, f"rank {rank}: DDP broadcast the code table during training"


def test_fit_failure_on_rank_zero_ends_every_rank_within_seconds(tmp_path, tiny_dirs, shared_data):
    started = time.monotonic()
    result = run_py(
        *ddp_overrides(tiny_dirs, shared_data),
        "+callbacks.break_fit._target_=tests.test_ddp.BreakFitOnRankZero",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        timeout=300,  # the process group's own timeout is 30 minutes
    )
    elapsed = time.monotonic() - started  # both ranks: the run returns when every process has closed its output
    assert result.returncode != 0
    assert "simulated k-means failure" in result.stderr
    # rank 1 stops on rank 0's own message: on one machine gloo would also notice rank 0's exit, but under NCCL or
    # across SLURM nodes a rank waiting in the broadcast only learns of a dead peer at the timeout
    assert "the compression fit failed on rank 0 (RuntimeError: simulated k-means failure)" in result.stderr
    assert elapsed < 120, f"the ranks took {elapsed:.0f}s to stop"
    assert not (tmp_path / "ddp" / "metrics.json").exists()


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_local_multirun_refuses_ddp_before_any_job(tmp_path, tiny_dirs, shared_data, launcher):
    sweep_dir = tmp_path / "sweep"
    result = run_py(
        "-m",
        *ddp_overrides(tiny_dirs, shared_data),
        "asg.m=4,8",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1
    assert "trainer.devices=2 trainer.num_nodes=1 inside a local multirun" in result.stderr
    assert "hydra/launcher=slurm" in result.stderr and "without -m" in result.stderr
    assert "Launching" not in result.stdout + result.stderr
    assert not sweep_dir.exists() or not any(sweep_dir.rglob(".hydra"))


def test_swept_devices_are_refused_in_the_job_that_asks_for_two(tmp_path, tiny_dirs, shared_data):
    sweep_dir = tmp_path / "sweep"
    overrides = tiny_overrides(tiny_dirs, shared_data, "trainer.max_steps=1", "logger=csv", "trainer.strategy=ddp")
    result = run_py("-m", *overrides, "trainer.devices=1,2", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 1
    report = json.loads((sweep_dir / "sweep_report.json").read_text())
    assert report["succeeded"] == ["0"] and [f["job"] for f in report["failed"]] == ["1"]
    assert "inside a local multirun" in report["failed"][0]["error"]
    assert result.stdout.count("Launching 2 jobs") + result.stderr.count("Launching 2 jobs") == 1
