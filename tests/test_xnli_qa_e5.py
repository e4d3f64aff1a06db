"""experiments.xnli_qa_e5: dev-only selection, the tables written from run data, the runs a study starts."""

from __future__ import annotations

import argparse
import json

from experiments import xnli_qa_e5 as study_script

XNLI = study_script.STUDIES["xnli"]


def fake_run(dev: float, test: dict[str, float] | None = None, method: str = "pq", epochs: int = 3) -> dict:
    scores = {"val/en/accuracy": dev, "val/avg/accuracy": dev}
    scores |= {f"test/{lang}/accuracy": v for lang, v in (test or {}).items()}
    return {
        "scores": scores,
        "transfer": {"eval_langs": [lang for lang in (test or {}) if lang != "avg"]},
        "compression": {
            "method": method,
            "params_kept_pct": 0.41 if method == "pq" else 100.0,
            "bytes_kept_pct": 4.6,
            "rel_error": 0.5843 if method == "pq" else 0.0,
        },
        "asg": {"codebook_lr_scale": 10.0},
        "train_samples": 1998,
        "steps": 125 * epochs,
        "epochs": epochs,
        "train_seconds": 60.0,
        "notes": ["trained on XNLI en dev (1,998 pairs)"],
        "val_history": [
            {"step": 62 * e, "epoch": (e - 1) // 2, "train_loss": 1.0 / e, "scores": {"val/en/accuracy": dev - 6 + e}}
            for e in range(1, 2 * epochs + 1)
        ],
    }


def test_selection_waits_for_every_candidate_and_uses_dev_alone():
    runs = {"none": fake_run(60, {"en": 66.0}, "none"), "pq": fake_run(50, {"en": 51.0})}
    runs |= {"pq_cb3": fake_run(51), "pq_cb30": None, "pq_ep6": fake_run(52, epochs=6)}
    assert study_script.choose(XNLI, runs) is None  # pq_cb30 has not run: nothing is chosen yet
    runs["pq_cb30"] = fake_run(55)
    assert study_script.choose(XNLI, runs) == "pq_cb30"
    # the test score of the default would beat every candidate's dev score: it chooses nothing
    runs["pq"] = fake_run(54, {"en": 99.0})
    assert study_script.choose(XNLI, runs) == "pq_cb30"


def run_study_choosing_cb30(monkeypatch, results) -> tuple[dict, list[tuple[str, list[str]]]]:
    """The xnli study run with fake runs (dev 55 for pq_cb30, 50 for the others) over a results dir of its own:
    its runs, and the (name, overrides) of every run it started."""
    monkeypatch.setattr(study_script, "RESULTS", results)
    monkeypatch.setattr(study_script, "ROOT", results)
    started = []

    def fake_run_config(name, overrides, runs_dir):
        started.append((name, overrides))
        dev = {"pq_cb30": 55.0}.get(name, 50.0)
        return fake_run(dev, None if "+trainer.limit_test_batches=0" in overrides else {"en": 50.0})

    monkeypatch.setattr(study_script, "run_config", fake_run_config)
    monkeypatch.setattr(
        study_script.OmegaConf, "load", lambda path: argparse.Namespace(trainer=argparse.Namespace(max_epochs=3))
    )
    args = argparse.Namespace(e5_dir=".cache/e5-small", data_dir="../shared/data")
    return study_script.run_all(XNLI, args, None), started


def test_a_chosen_candidate_is_tested_once_with_its_own_settings(monkeypatch, tmp_path):
    runs, started = run_study_choosing_cb30(monkeypatch, tmp_path)
    selection = ["none", "pq", "pq_cb3", "pq_cb30", "pq_ep6", "pq_cb30_test"]
    repeats = ["none_s1", "pq_cb30_test_s1", "none_s2", "pq_cb30_test_s2"]  # dense and the chosen, other seeds
    assert [name for name, _ in started] == selection + repeats
    overrides = dict(started)
    assert overrides["pq_cb30_test_s2"] == [*overrides["pq_cb30_test"], "seed=2"]
    assert overrides["none_s1"] == [*overrides["none"], "seed=1"]
    assert "+trainer.limit_test_batches=0" in overrides["pq_cb30"]
    assert overrides["pq_cb30_test"] == [o for o in overrides["pq_cb30"] if o != "+trainer.limit_test_batches=0"]
    assert "trainer.max_epochs=6" in overrides["pq_ep6"] and "trainer.max_epochs=3" not in overrides["pq_ep6"]
    text = study_script.report(XNLI, runs, "python -m experiments.xnli_qa_e5 --study xnli")
    assert "chosen by final dev accuracy: `pq_cb30` (55.00); tested once as `pq_cb30_test`" in text
    assert "## Test (accuracy, ASG = `pq_cb30_test`)" in text


def test_a_study_without_candidates_repeats_the_default_over_the_other_seeds(monkeypatch):
    started = []

    def fake_run_config(name, overrides, runs_dir):
        started.append(name)
        return {"scores": {"val/en/f1": 50.0, "test/en/f1": 50.0}}

    monkeypatch.setattr(study_script, "run_config", fake_run_config)
    monkeypatch.setattr(
        study_script.OmegaConf, "load", lambda path: argparse.Namespace(trainer=argparse.Namespace(max_epochs=2))
    )
    args = argparse.Namespace(e5_dir=".cache/e5-small", data_dir="../shared/data")
    qa = study_script.STUDIES["qa"]
    assert not qa.candidates
    study_script.run_all(qa, args, None)
    assert started == ["none", "pq", "none_s1", "pq_s1", "none_s2", "pq_s2"]


def test_only_starts_the_named_runs_and_reads_the_others(monkeypatch, tmp_path):
    monkeypatch.setattr(study_script, "run_config", lambda name, *a: fake_run(50.0, {"en": 50.0}))
    monkeypatch.setattr(study_script, "RESULTS", tmp_path)  # no finished run there
    monkeypatch.setattr(study_script, "ROOT", tmp_path)
    monkeypatch.setattr(
        study_script.OmegaConf, "load", lambda path: argparse.Namespace(trainer=argparse.Namespace(max_epochs=3))
    )
    args = argparse.Namespace(e5_dir=".cache/e5-small", data_dir="../shared/data")
    runs = study_script.run_all(XNLI, args, {"pq"})
    assert [name for name, r in runs.items() if r is not None] == ["pq"]
    assert all(r is None for r in study_script.run_all(XNLI, args, set()).values())


def test_tables_show_relative_scores_and_the_learning_curve():
    runs = {
        "none": fake_run(60, {"en": 66.0, "de": 62.0, "avg": 64.0}, "none"),
        "pq": fake_run(50, {"en": 49.5, "de": 46.5, "avg": 48.0}),
        "pq_cb30": None,
    }
    text = study_script.report(XNLI, runs, "cmd")
    assert "| en | 66.00 | 49.50 | 75.0% |" in text
    assert "| avg | 64.00 | 48.00 | 75.0% |" in text
    assert "Seeds: dense 1, ASG 1 (of 42, 1, 2)." in text
    # a second dense seed: mean ± sample std, and ASG against the dense mean
    runs["none_s1"] = fake_run(60, {"en": 68.0, "de": 62.0, "avg": 65.0}, "none")
    text = study_script.report(XNLI, runs, "cmd")
    assert "| en | 67.00 ± 1.41 | 49.50 | 73.9% |" in text
    assert "none_s1 dev" not in text  # the learning curve shows the selection runs only
    assert "| 62 | 1 | 55.00 (1.000) | 45.00 (1.000) |" in text  # step, epoch, dev (mean training loss) per run
    assert "- `pq`: 48.00 -> 50.00 (+2.00) over its last epoch; best dev point at step 372 of 372" in text
    assert "The best held-out dev point is the last one in 3 of 3 runs" in text  # none, pq, none_s1: still rising
    runs["pq"]["val_history"][2]["scores"]["val/en/accuracy"] = 99.0  # a peak at step 186, half way
    text = study_script.report(XNLI, runs, "cmd")
    assert "best dev point at step 186 of 372" in text and "is the last one in 2 of 3 runs" in text
    assert "| pq_cb30 | not run or failed |" in text
    assert "| 0.410 | 4.600 | 0.5843 |" in text  # kept parameters, bytes, and the fit's error beside the scores
    assert "k-means versions" not in text
    # an ASG seed fitted by another k-means version is named next to the table that pools it
    runs["pq"] |= {"seed": 42, "fit_version": 3}
    runs["pq"]["compression"]["code_bytes"] = 1
    runs["pq_s1"] = fake_run(50, {"en": 51.5, "de": 46.5, "avg": 49.0}) | {"seed": 1, "fit_version": 4}
    runs["pq_s1"]["compression"]["code_bytes"] = 1
    assert (
        "ASG (`pq`) pools seeds fitted by different k-means versions: seed 42 at version 3 (fit rel. error "
        "0.58430); seed 1 at version 4 (fit rel. error 0.58430)." in study_script.report(XNLI, runs, "cmd")
    )


def test_a_chosen_candidate_reports_the_defaults_finished_repeats_without_starting_more(monkeypatch, tmp_path):
    for seed in (1, 2):  # the default's repeats, finished while it was the choice
        run_dir = tmp_path / "xnli_e5" / "runs" / f"pq_s{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(fake_run(50.0, {"en": 40.0 + seed})))
    runs, started = run_study_choosing_cb30(monkeypatch, tmp_path)
    assert not {"pq_s1", "pq_s2"} & {name for name, _ in started}
    assert runs["pq_s1"]["scores"]["test/en/accuracy"] == 41.0
    text = study_script.report(XNLI, runs, "python -m experiments.xnli_qa_e5 --study xnli")
    comparison = text.split("## Test of the default `pq`, for comparison")[1]
    assert "Seeds: dense 3, ASG 3" in comparison  # pq (seed 42) and its two repeats
    assert "| en | 50.00 ± 0.00 | 44.33 ± 4.93 | 88.7% |" in comparison  # test en 50, 41 and 42
    assert "## Test of the default" not in study_script.report(XNLI, {**runs, "pq_s1": None, "pq_s2": None}, "")
