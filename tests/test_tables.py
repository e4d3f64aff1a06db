"""experiments.tables: tables and plots from hand-written run directories (metrics.json + .hydra/config.yaml).

Fixture runs (tests/fixtures/tables/runs): XLM-R on WikiANN zero-shot with a dense base (seed 42), ASG pq m=8
k=1024 with seeds 1 and 2, and sg k=4096 run with transfer.eval_langs=[en,de] (another experiment than the base,
whose avg covers sw too, so sg has no base); MiniLM on XQuAD, one older pq run without a base whose metrics.json
lacks `seed` and `metric` (7 and f1 come from its .hydra/config.yaml) and has stand-in notes.
Hydra's `multirun/` and `outputs/` folders are called `sweep/` and `single/` here: .gitignore drops the real names.

tests/fixtures/tables/lr/runs: MiniLM on BC5CDR with configs as run.py writes them: a dense base and pq m=32 k=128
with seeds 1 and 2 at the default lr 1e-4, and pq with seeds 1 and 2 at optimizer.lr=5e-05. The seed-2 run at
1e-4 also differs in keys that cannot change a result (data.num_workers, progress bar, checkpoint.keep, logger,
the data folder's path), so it pools with seed 1; the 5e-05 runs are their own cell, with no base.

The goldens were checked by hand: pq avg F1 64 and 66 -> 65.00 ± 1.41 (sample std sqrt(2)), 65 / 70 = 92.86%;
per language en 76/78 -> 77.00 ± 1.41 (96.25%), de 66/66 -> 66.00 ± 0.00, sw 50/54 -> 52.00 ± 2.83 (86.67%);
kept params pq 786,432 / 192,001,536 = 0.410%, bytes as exported (codebooks 3,145,728 + 250,002 x 8
codes of 10 bits 2,500,020) 5,645,748 / 768,006,144 = 0.735%; fit rel. error
0.6123, the mean of its runs' (0.6123 each). lr: 46/48 -> 47.00 ± 1.41,
47 / 50 = 94.00%; 40/44 -> 42.00 ± 2.83 (pooled, the four would have been 44.50 ± 3.42). Regenerate them after an
intended change of the output with
    python -m experiments.tables tests/fixtures/tables/runs --out tests/fixtures/tables/expected --no-plot
    python -m experiments.tables tests/fixtures/tables/lr/runs --out tests/fixtures/tables/lr/expected --no-plot
and check the diff by hand.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.tables import main

FIXTURES = Path(__file__).parent / "fixtures" / "tables"
RUNS, EXPECTED = FIXTURES / "runs", FIXTURES / "expected"
LR_RUNS, LR_EXPECTED = FIXTURES / "lr" / "runs", FIXTURES / "lr" / "expected"
SG = 'sg k=4096 transfer.eval_langs=["en", "de"]'
PQ = "pq m=8 k=1024 transfer.eval_langs=null"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables")
    main([str(RUNS), "--out", str(out)])
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", sorted(p.name for p in EXPECTED.iterdir()))
def test_matches_golden(tables, name):
    assert (tables / name).read_bytes() == (EXPECTED / name).read_bytes()


def test_writes_exactly_the_expected_tables(tables):
    expected = {p.name for p in EXPECTED.iterdir()} | {"pareto_wikiann_xlmr.png"}
    assert {p.name for p in tables.iterdir()} == expected


def test_pareto_png_only_where_a_base_exists(tables):
    assert (tables / "pareto_wikiann_xlmr.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tables / "pareto_xquad_minilm.png").exists()  # MiniLM x XQuAD has no dense run


def test_no_plot_writes_no_png(tmp_path):
    main([str(RUNS), "--out", str(tmp_path), "--no-plot"])
    assert (tmp_path / "main.md").is_file()
    assert not list(tmp_path.glob("*.png"))


def test_missing_values_are_shown_missing_not_zero(tables):
    xquad = next(r for r in _csv_rows(tables / "main.csv") if r["task"] == "xquad")
    assert (xquad["base_mean"], xquad["base_std"], xquad["relative_pct"]) == ("", "", "")
    assert xquad["seeds"] == "7" and xquad["metric"] == "f1"  # read from .hydra/config.yaml
    assert "| pq | m=32 k=128 | 41.25 | — | — | 0.419 |" in (tables / "main.md").read_text()
    assert "& 41.25 & --- & --- &" in (tables / "main.tex").read_text()

    sw = next(r for r in _csv_rows(tables / "lang_wikiann_xlmr.csv") if r["language"] == "sw")
    assert (sw[f"{SG} mean"], sw[f"{SG} n"]) == ("", "0") and f"{SG} relative_pct" not in sw  # sg has no base
    assert "| sw | 60.00 | 52.00 ± 2.83 | 86.67 | — |" in (tables / "lang_wikiann_xlmr.md").read_text()


def test_language_missing_in_one_seed_is_averaged_over_the_others(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    seed2 = next(runs.rglob("2_*/metrics.json"))
    metrics = json.loads(seed2.read_text())
    metrics["scores"] = {k: v for k, v in metrics["scores"].items() if not k.startswith("test/sw/")}
    seed2.write_text(json.dumps(metrics))
    main([str(runs), "--out", str(tmp_path / "out"), "--no-plot"])
    text = (tmp_path / "out" / "lang_wikiann_xlmr.md").read_text()
    # only seed 1 has sw (50.00); relative to the base's 60.00
    assert "| sw | 60.00 | 50.00 (n=1) | 83.33 | — |" in text
    assert f"{PQ} runs differ in evaluated languages" in text


def test_base_evaluated_on_other_languages_is_a_caveat(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    base = next(runs.rglob("0_*/metrics.json"))
    metrics = json.loads(base.read_text())
    metrics["scores"] = {k: v for k, v in metrics["scores"].items() if not k.startswith("test/sw/")}
    base.write_text(json.dumps(metrics))
    main([str(runs), "--out", str(tmp_path / "out"), "--no-plot"])
    text = (tmp_path / "out" / "main.md").read_text()
    assert f"{PQ} differs from its base in evaluated languages (de, en, sw vs de, en)" in text


def test_seeds_of_one_setting_are_pooled_and_other_settings_split(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    seed2 = next(runs.rglob("2_*/metrics.json"))
    metrics = json.loads(seed2.read_text())
    metrics["asg"]["codebook_lr_scale"] = 1.0  # a swept setting, not another seed
    seed2.write_text(json.dumps(metrics))
    main([str(runs), "--out", str(tmp_path / "out"), "--no-plot"])
    pq = [r for r in _csv_rows(tmp_path / "out" / "main.csv") if r["method"] == "pq" and r["task"] == "wikiann"]
    assert [(r["setting"], r["score_mean"], r["n_seeds"]) for r in pq] == [
        ("m=8 k=1024 asg.codebook_lr_scale=1 transfer.eval_langs=null", "66.00", "1"),
        ("m=8 k=1024 asg.codebook_lr_scale=10 transfer.eval_langs=null", "64.00", "1"),
    ]


def test_no_metrics_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert exc.value.code != 0 and "no metrics.json found" in str(exc.value.code)
    assert not (tmp_path / "out").exists()


def test_unreadable_run_is_skipped_and_listed(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    old = next(runs.rglob("xquad/**/metrics.json"))
    shutil.rmtree(old.parent / ".hydra")  # no config: nothing tells which runs it may be pooled with
    main([str(runs), "--out", str(tmp_path / "out"), "--no-plot"])
    text = (tmp_path / "out" / "main.md").read_text()
    assert "## Skipped" in text and f"- {old.resolve()}: ValueError(" in text
    assert "xquad" not in {r["task"] for r in _csv_rows(tmp_path / "out" / "main.csv")}
    with pytest.raises(SystemExit, match="could be read"):
        main([str(old.parent), "--out", str(tmp_path / "out2")])


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        main([str(RUNS), str(tmp_path / "typo"), "--out", str(tmp_path / "out")])


@pytest.fixture(scope="module")
def lr_tables(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lr_tables")
    main([str(LR_RUNS), "--out", str(out), "--no-plot"])
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in LR_EXPECTED.iterdir()))
def test_lr_matches_golden(lr_tables, name):
    assert (lr_tables / name).read_bytes() == (LR_EXPECTED / name).read_bytes()


def test_configurations_that_differ_only_in_lr_are_two_cells(lr_tables):
    rows = [r for r in _csv_rows(lr_tables / "main.csv") if r["method"] == "pq"]
    assert [(r["setting"], r["score_mean"], r["seeds"], r["base_mean"]) for r in rows] == [
        ("m=32 k=128 optimizer.lr=5e-05", "42.00", "1 2", ""),  # no dense run at this lr: no base
        ("m=32 k=128 optimizer.lr=0.0001", "47.00", "1 2", "50.00"),
    ]
    assert "repeats seed" not in (lr_tables / "main.md").read_text()


def _edit_seed_2_run(runs: Path, key: str, value) -> None:
    """Change one config key (or `data` / `fit_version`, which metrics.json records) of the lr=1e-4 seed-2 run."""
    run = next(runs.glob("sweep/*/1"))
    if key in ("data", "fit_version"):
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps(metrics | {key: value}))
        return
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    OmegaConf.update(config, key, value, force_add=True)
    OmegaConf.save(config, run / ".hydra" / "config.yaml")


@pytest.mark.parametrize(
    ("key", "value", "split_as"),
    [
        ("data.max_eval_samples", 500, "data.max_eval_samples=500"),
        ("trainer.max_epochs", 3, "trainer.max_epochs=3"),
        ("model.lr", 0.001, "model.lr=0.001"),
        ("data", "hub", "data.dir=hub"),  # MultiNLI train instead of a local dev split
        ("callbacks.stop._target_", "pytorch_lightning.callbacks.EarlyStopping", "callbacks.stop._target_="),
        ("data.num_workers", 8, None),
        ("model.name_or_path", "/elsewhere/minilm", None),
        ("trainer.log_every_n_steps", 1, None),
        ("data", "/elsewhere/data", None),  # another folder holding the same local copy
        ("hydra.run.dir", "elsewhere", None),
        ("model.activation_checkpointing", True, None),  # the same training step, recomputed (test_pipeline)
        ("asg.storage_dtype", "float16", "asg.storage_dtype=float16"),
        ("asg.storage_dtype", "float32", None),  # the fixtures predate the key: float32 is what they stored
        ("fit_version", 4, "asg.fit_version=4"),  # another k-means: not a seed of the unrecorded version's runs
    ],
)
def test_what_splits_a_cell_and_what_does_not(tmp_path, key, value, split_as):
    runs = tmp_path / "runs"
    shutil.copytree(LR_RUNS, runs)
    _edit_seed_2_run(runs, key, value)
    main([str(runs), "--out", str(tmp_path / "out"), "--no-plot"])
    rows = [
        r for r in _csv_rows(tmp_path / "out" / "main.csv") if r["method"] == "pq" and "lr=5e-05" not in r["setting"]
    ]
    if split_as is None:
        assert [(r["seeds"], r["base_mean"]) for r in rows] == [("1 2", "50.00")]
    else:
        assert sorted(r["seeds"] for r in rows) == ["1", "2"]
        changed = next(r for r in rows if r["seeds"] == "2")
        assert split_as in changed["setting"]
        # no base of its own, but for `asg` keys: the dense base matches everything except `asg`
        assert changed["base_mean"] == ("50.00" if key.startswith("asg.") or key == "fit_version" else "")
