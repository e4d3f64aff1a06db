"""The full-split BC5CDR study: every configuration a seed at a time, and a table of means over seeds."""

from __future__ import annotations

import argparse

from experiments import bc5cdr_benchmark as study


def _metrics(method: str, f1: float, m: int = 0) -> dict:
    compression = {"method": method, "params_kept_pct": 100.0 if method == "none" else 0.419}
    compression |= {"bytes_kept_pct": 100.0, "rel_error": 0.0}
    if method != "none":
        compression |= {"m": m, "k": 128, "bytes_kept_pct_packed": 2.5, "rel_error": 0.7}
    return {"scores": {"test/avg/f1": f1}, "compression": compression}


def test_runs_a_seed_at_a_time_and_reports_mean_std_against_dense(monkeypatch):
    started = {}

    def fake_run(name, overrides, runs_dir):
        started[name] = overrides
        seed = int(name.rsplit("seed", 1)[1])
        if name.startswith("none"):
            return _metrics("none", 70.0 + seed)
        m = int(name.split("_")[1][1:])
        return None if m == 16 else _metrics("pq", 60.0 + seed, m)

    monkeypatch.setattr(study, "run_config", fake_run)
    args = argparse.Namespace(data_dir="data", ms=[8, 16], k=128, report_only=False)
    result = study.run_study(args)
    assert list(started)[:3] == ["none_seed1", "pq_m8_seed1", "pq_m16_seed1"]  # every configuration per seed
    assert {"asg=pq", "asg.m=8", "asg.k=128", "seed=3", "model=minilm", "trainer.max_epochs=1"} <= set(
        started["pq_m8_seed3"]
    )
    text = study.report(result, "python -m experiments.bc5cdr_benchmark")
    assert "| none | - | - | 72.00 ± 1.00 | 100.0% | 3 | 100.000 | 100.000 | 0.000 |" in text
    assert "| asg | 8 | 128 | 62.00 ± 1.00 | 86.1% | 3 | 0.419 | 2.500 | 0.700 |" in text  # 62 / 72
    assert "| pq_m16 | not run yet |" in text  # its runs failed: no row of numbers
    assert "k-means versions" not in text


def test_the_report_names_seeds_fitted_by_two_k_means_versions():
    runs = {
        f"pq_m8_seed{seed}": _metrics("pq", 60.0, 8) | {"seed": seed, "fit_version": 3 + (seed > 1)} for seed in (1, 2)
    }
    for run in runs.values():
        run["compression"]["code_bytes"] = 1
    text = study.report({"none": {}, "pq_m8": runs}, "cmd")
    assert "- pq_m8 pools seeds fitted by different k-means versions: seed 1 at version 3" in text
