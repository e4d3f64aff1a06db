"""The cross-lingual WikiANN study: seeds interleaved, one process per run, a per-language table over seeds."""

from __future__ import annotations

import argparse

from experiments import wikiann_xlingual as study


def _metrics(method: str, en: float, sw: float) -> dict:
    compression = {"method": method, "m": 32, "k": 1024, "params_kept_pct": 0.41, "bytes_kept_pct_packed": 4.4}
    compression |= {"rel_error": 0.0 if method == "none" else 0.58}
    return {"scores": {"test/en/f1": en, "test/sw/f1": sw, "test/avg/f1": (en + sw) / 2}, "compression": compression}


def test_dense_and_asg_run_seed_by_seed_and_the_report_gives_mean_std_per_language(monkeypatch):
    started = {}

    def fake_run(name, overrides, runs_dir):
        started[name] = overrides
        seed = int(name.rsplit("seed", 1)[1])
        method = name.split("_")[0]
        en, sw = {"none": (60.0, 50.0), "pq": (54.0, 40.0)}[method]
        return _metrics(method, en + seed, sw + seed)

    monkeypatch.setattr(study, "run_config", fake_run)
    args = argparse.Namespace(data_dir="data", e5_dir="e5", train_samples=2000, eval_samples=500, report_only=False)
    result = study.run_study(args)
    assert list(started) == [f"{p}_seed{s}" for s in study.SEEDS for p in ("none", "pq")]  # a seed at a time
    pq = started["pq_seed2"]
    assert {"asg=pq", "asg.m=32", "asg.k=1024", "seed=2", "trainer.max_epochs=1", "model=e5_small"} <= set(pq)
    assert {"data.max_train_samples=2000", "data.max_eval_samples=500", "model.name_or_path=e5"} <= set(pq)

    text = study.report(result, args, "python -m experiments.wikiann_xlingual")
    assert "0.410% of the embedding parameters, 4.400% of its bytes as exported (fit rel. error 0.580)" in text
    assert "| en | 62.00 ± 1.00 | 56.00 ± 1.00 | 90.3% |" in text
    assert "| sw | 52.00 ± 1.00 | 42.00 ± 1.00 | 80.8% |" in text
    assert text.rstrip().endswith("| avg | 57.00 ± 1.00 | 49.00 ± 1.00 | 86.0% |")
