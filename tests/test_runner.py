"""experiments.runner: one run per process; a finished run is reused, so a study resumes across sessions."""

from __future__ import annotations

import json
import subprocess

import pytest

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
