"""experiments.runner: one run per process; a finished run is reused, so a study resumes across sessions."""

from __future__ import annotations

import json
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from asg.train import comparable_config
from experiments import runner


def finished_run(run_dir, overrides, scores):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"scores": scores}))
    (run_dir / "run_config.json").write_text(json.dumps({"config": {}, "overrides": overrides}))


def test_a_finished_run_is_skipped_and_its_metrics_returned(tmp_path, monkeypatch, capsys):
    finished_run(tmp_path / "runs" / "pq", ["asg.m=8"], {"test/en/f1": 51.5})
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: pytest.fail("a finished run was started again"))
    assert runner.run_config("pq", ["asg.m=8"], tmp_path / "runs") == {"scores": {"test/en/f1": 51.5}}
    assert f"pq: skipped, {tmp_path / 'runs' / 'pq' / 'metrics.json'} exists" in capsys.readouterr().out


def test_a_finished_run_of_other_overrides_is_refused(tmp_path, monkeypatch):
    finished_run(tmp_path / "runs" / "pq", ["asg.m=8"], {})
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: pytest.fail("a finished run was started again"))
    with pytest.raises(ValueError, match=r"pq finished with other overrides \(asg.m=8\), not asg.m=16: delete it"):
        runner.run_config("pq", ["asg.m=16"], tmp_path / "runs")


def test_an_unfinished_run_starts_in_its_dir_and_a_failure_returns_none(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd)
        out = tmp_path / "runs" / "none"
        if "asg=none" in cmd:  # this one finishes; the other fails without metrics
            out.mkdir(parents=True)
            (out / "metrics.json").write_text('{"scores": {"test/en/f1": 60.0}}')
        return subprocess.CompletedProcess(cmd, 0 if "asg=none" in cmd else 1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert runner.run_config("none", ["asg=none"], tmp_path / "runs") == {"scores": {"test/en/f1": 60.0}}
    assert runner.run_config("pq", ["asg=pq"], tmp_path / "runs") is None
    assert [cmd[1:] for cmd in calls] == [
        ["run.py", "asg=none", f"hydra.run.dir={tmp_path / 'runs' / 'none'}"],
        ["run.py", "asg=pq", f"hydra.run.dir={tmp_path / 'runs' / 'pq'}"],
    ]


def _fit(seed: int, version: int | None, error: float, method: str = "pq") -> dict:
    run = {"seed": seed, "compression": {"method": method, "rel_error": error}}
    if method != "lowrank":
        run["compression"]["code_bytes"] = 100  # a code table: codes from a k-means fit
    return run | ({"fit_version": version} if version is not None else {})


def test_seeds_of_two_k_means_versions_are_named_in_a_note():
    groups = {
        "pq": [_fit(0, 3, 0.58431), _fit(1, 4, 0.58426), _fit(2, 4, 0.5843)],
        "rq": [_fit(0, 4, 0.40411), _fit(1, 4, 0.4041)],  # one version: pooled without a word
        "lowrank": [_fit(0, 3, 0.9, "lowrank"), _fit(1, 4, 0.9, "lowrank")],  # no k-means codes, version moot
        "dense": [{"seed": 0, "compression": {"method": "none"}}],
        "sg": [_fit(0, None, 0.7, "sg"), _fit(1, 4, 0.7, "sg")],  # unknown (dirty tree) is its own version
    }
    assert runner.fit_version_notes(groups) == [
        "",
        "- pq pools seeds fitted by different k-means versions: seed 0 at version 3 (fit rel. error 0.58431); "
        "seeds 1, 2 at version 4 (fit rel. error 0.58426, 0.58430).",
        "- sg pools seeds fitted by different k-means versions: seed 1 at version 4 (fit rel. error 0.70000); "
        "seed 0 at an unknown version (fit rel. error 0.70000).",
    ]


def test_a_run_from_before_run_configs_is_checked_by_the_settings_its_metrics_record(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "pq"
    run_dir.mkdir(parents=True)
    asg = {"method": "pq", "m": 8, "k": 256, "seed": 3, "iters": 25}
    (run_dir / "metrics.json").write_text(json.dumps({"seed": 3, "asg": asg, "scores": {"test/en/f1": 40.0}}))
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: pytest.fail("a finished run was started again"))
    same = ["asg=pq", "asg.m=8", "asg.k=256", "seed=3", "asg.seed=3"]
    assert runner.run_config("pq", same, "runs")["scores"] == {"test/en/f1": 40.0}
    with pytest.raises(ValueError, match=r"finished with asg.m=8, but these overrides give asg.m=16 today: delete it"):
        runner.run_config("pq", ["asg=pq", "asg.m=16", "asg.k=256", "seed=3", "asg.seed=3"], "runs")


def test_a_finished_run_whose_defaults_changed_since_is_refused(tmp_path, monkeypatch):
    overrides = ["asg=pq", "asg.m=8", "seed=1"]
    with initialize_config_dir(config_dir=str(runner.CONF), version_base="1.3"):
        config = comparable_config(compose("config", overrides=overrides))
    run_dir = tmp_path / "runs" / "pq"
    finished_run(run_dir, overrides, {"test/en/f1": 40.0})
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: pytest.fail("a finished run was started again"))

    # what today's defaults give, plus a key since removed from the config: the same run
    (run_dir / "run_config.json").write_text(
        json.dumps({"config": config | {"removed_since": 1}, "overrides": overrides})
    )
    assert runner.run_config("pq", overrides, "runs")["scores"] == {"test/en/f1": 40.0}

    # made when the codebook lr scale's default was another: not this run, though its overrides are the same
    config["asg"]["codebook_lr_scale"] = 1.0
    (run_dir / "run_config.json").write_text(json.dumps({"config": config, "overrides": overrides}))
    with pytest.raises(
        ValueError,
        match=r"finished with asg.codebook_lr_scale=1.0, but these overrides give "
        r"asg.codebook_lr_scale=10.0 today: delete it",
    ):
        runner.run_config("pq", overrides, "runs")
