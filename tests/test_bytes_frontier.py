"""The bytes-frontier study: which runs it starts, that every configuration composes, and what its report says."""

from __future__ import annotations

import argparse

import pytest

from experiments import bytes_frontier as study


def _metrics(method: str, scores: dict[str, float]) -> dict:
    compression = {"method": method, "m": 12, "k": 512, "params_kept_pct": 0.2, "bytes_kept_pct_packed": 1.0}
    compression |= {"rel_error": 0.0 if method == "none" else 0.8}
    if method == "tiered":
        compression |= {"tier_rows": [20003, 80012, 150022], "tier_m": [32, 16, 4], "k": 436}
    scores = {f"test/{lang}/f1": v for lang, v in scores.items()}
    return {"scores": scores | {"test/avg/f1": sum(scores.values()) / len(scores)}, "compression": compression}


def test_runs_every_method_over_the_seeds_and_reports_the_lowest_language(monkeypatch, tmp_path):
    started = {}

    def fake_run(name, overrides, runs_dir):
        started[name] = overrides
        seed = int(name.rsplit("seed", 1)[1])
        method = name.split("_")[0]
        en, sw = {"none": (60.0, 50.0), "pq": (48.0, 30.0), "tiered": (57.0, 45.0)}[method]
        return _metrics(method, {"en": en + seed, "sw": sw + seed})

    monkeypatch.setattr(study, "run_config", fake_run)
    monkeypatch.setattr(study, "searched_layout", lambda setting, budget: None)
    args = argparse.Namespace(data_dir="data", e5_dir="e5", report_only=False)
    result = study.run_study("wikiann_e5", 1.0, args)
    assert sorted(started) == sorted(
        [f"none_seed{s}" for s in study.SEEDS] + [f"{m}_bytes1_seed{s}" for m in ("pq", "tiered") for s in study.SEEDS]
    )
    pq = started["pq_bytes1_seed2"]
    assert {"asg=pq", "asg.m=12", "asg.budget_bytes_pct=1.0", "asg.storage_dtype=float16", "seed=2"} <= set(pq)
    assert "model.name_or_path=e5" in pq and "trainer.max_epochs=1" in pq and "model=e5_small" in pq

    text = study.report("wikiann_e5", 1.0, result, "python -m experiments.bytes_frontier")
    tiered = next(line for line in text.splitlines() if line.startswith("| tiered |"))
    assert "20,003 ids m=32, 80,012 ids m=16, 150,022 ids m=4; k=436" in tiered
    assert "| 59.00 ± 1.00 | 47.00 ± 1.00 |" in tiered and tiered.endswith("| sw 90.4% |")  # 47 / 52
    assert "| tiered / dense | | | | | | 95.2% | 90.4% | 93.0% | |" in text  # en 59/62, sw 47/52, avg 53/57


def test_the_searched_tier_layout_runs_where_the_search_ran_at_that_budget(monkeypatch, tmp_path):
    import json

    monkeypatch.setattr(study.tier_search, "OUT", tmp_path)
    assert study.searched_layout("wikiann_e5", 1.0) is None  # not searched yet
    choice = {"tier_fractions": [0.008, 0.1], "tier_m": [96, 24, 3]}
    (tmp_path / "results.json").write_text(json.dumps({"budget": 1.0, "choice": choice}))
    layout = ["asg.tier_fractions=[0.008,0.1]", "asg.tier_m=[96,24,3]"]
    assert study.searched_layout("wikiann_e5", 1.0) == layout
    assert study.searched_layout("wikiann_e5", 2.0) is None and study.searched_layout("bc5cdr_minilm", 1.0) is None
    from tests.test_pipeline import make_cfg

    cfg = make_cfg(tmp_path, "asg=tiered", *layout)  # the overrides compose as Hydra lists
    assert list(cfg.asg.tier_fractions) == [0.008, 0.1] and list(cfg.asg.tier_m) == [96, 24, 3]

    started = {}
    monkeypatch.setattr(study, "run_config", lambda name, overrides, runs_dir: started.setdefault(name, overrides))
    study.run_study("wikiann_e5", 1.0, argparse.Namespace(data_dir="data", e5_dir="e5", report_only=False))
    assert set(layout) | {"asg=tiered", "asg.storage_dtype=float16", "seed=3"} <= set(
        started["tiered_search_bytes1_seed3"]
    )


@pytest.mark.parametrize("setting", sorted(study.SETTINGS))
def test_every_configuration_composes_and_resolves_its_budget(tmp_path, setting):
    from asg.methods import get_method
    from tests.test_pipeline import make_cfg

    shape = study.SETTINGS[setting]["shape"]
    for prefix, overrides in study.methods(1.0, shape).items():
        cfg = make_cfg(tmp_path, *study.SETTINGS[setting]["overrides"], *overrides)
        if prefix != "none":
            settings = get_method(cfg.asg.method).resolve(dict(cfg.asg), *shape)
            assert settings["k"] >= 64 and cfg.asg.storage_dtype == "float16"
