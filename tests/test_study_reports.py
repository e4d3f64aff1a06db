"""The full-budget WikiANN study reports mean ± std over the seeds it has, relative to dense, and what is left."""

from __future__ import annotations

import argparse
import json

from experiments import wikiann_full_e5 as study


def _metrics(en: float, de: float, compression: dict | None = None) -> dict:
    return {
        "transfer": {"eval_langs": ["en", "de"]},
        "scores": {"test/en/f1": en, "test/de/f1": de, "test/avg/f1": (en + de) / 2},
        "compression": compression or {},
        "val_history": [{"epoch": 0, "step": 10, "scores": {"val/en/f1": en - 1}}],
    }


def test_report_pools_seeds_of_one_method_and_lists_the_runs_left():
    pq_size = {"params_kept_pct": 0.41, "bytes_kept_pct": 3.12}
    runs = {key: None for key in study.ORDER}
    runs |= {("none", 0): _metrics(60, 40), ("none", 1): _metrics(62, 44), ("pq", 0): _metrics(55, 42, pq_size)}
    text = study.report(runs, argparse.Namespace(epochs=2), "python -m experiments.wikiann_full_e5")

    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "61.00 ± 1.41 (n=2)" in rows["en"]  # dense: two seeds, sample std
    assert "55.00 (n=1), 90.2%" in rows["en"]  # pq against the dense mean, 55 / 61
    assert "42.00 (n=1), 100.0%" in rows["de"] and rows["avg"].count("—") == 1  # rq has no run yet
    assert "0.410% of the embedding's parameters, 3.12% of its bytes" in text
    assert "- dense, seed 1: epoch 1: 61.00" in text
    assert "Not run yet: residual PQ (rq, m=32, 2 x 512) seed 0, ASG (pq, m=32, k=1024) seed 1" in text
    assert "k-means versions" not in text  # pq's one seed has no version to differ from


def test_report_says_when_a_methods_seeds_come_from_two_k_means_versions():
    def pq(version: int) -> dict:
        size = {"params_kept_pct": 0.41, "bytes_kept_pct": 3.12, "code_bytes": 1, "rel_error": 0.5}
        return _metrics(55, 42, size) | {"fit_version": version}

    runs = {key: None for key in study.ORDER} | {("pq", 0): pq(3) | {"seed": 0}, ("pq", 1): pq(4) | {"seed": 1}}
    text = study.report(runs, argparse.Namespace(epochs=2), "python -m experiments.wikiann_full_e5")
    assert (
        "- ASG (pq, m=32, k=1024) pools seeds fitted by different k-means versions: seed 0 at version 3 "
        "(fit rel. error 0.50000); seed 1 at version 4 (fit rel. error 0.50000)." in text
    )


def test_report_only_reads_the_committed_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "STUDY", tmp_path)
    run = tmp_path / "runs" / "none_e2_s0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(_metrics(60, 40)))
    study.main(["--report-only"])
    saved = json.loads((tmp_path / "wikiann_full_e5.json").read_text())
    assert saved["runs"]["none_s0"]["scores"]["test/en/f1"] == 60 and saved["runs"]["pq_s0"] is None
    assert "60.00 (n=1)" in (tmp_path / "wikiann_full_e5.md").read_text()


def test_every_run_of_the_study_composes_and_resolves(tmp_path):
    from asg.methods import get_method
    from tests.test_pipeline import make_cfg

    args = argparse.Namespace(e5_dir="e5", data_dir="data", epochs=2)
    for method, seed in study.ORDER:
        cfg = make_cfg(tmp_path, *study.overrides(args, method, seed))
        assert cfg.seed == seed and cfg.trainer.max_epochs == 2 and cfg.data.max_eval_samples == 2000
        if method != "none":  # pq and rq keep the same parameters: k=1024 centroids per sub-space in all
            settings = get_method(cfg.asg.method).resolve(dict(cfg.asg), 250037, 384)
            assert settings["m"] == 32 and settings["k"] == 1024
