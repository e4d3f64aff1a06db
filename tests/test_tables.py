"""experiments.tables: tables and plots from hand-written run directories (metrics.json + .hydra/config.yaml).

Fixture runs (tests/fixtures/tables/runs): XLM-R on WikiANN zero-shot with a dense base (seed 42), ASG pq m=8
k=1024 with seeds 1 and 2, and sg k=4096 evaluated without sw; MiniLM on XQuAD, one older pq run without a base
whose metrics.json lacks `seed` and `metric` (7 and f1 come from its .hydra/config.yaml) and has stand-in notes.
Hydra's `multirun/` and `outputs/` folders are called `sweep/` and `single/` here: .gitignore drops the real names.

The goldens were checked by hand: pq avg F1 64 and 66 -> 65.00 ± 1.41 (sample std sqrt(2)), 65 / 70 = 92.86%;
per language en 76/78 -> 77.00 ± 1.41 (96.25%), de 66/66 -> 66.00 ± 0.00, sw 50/54 -> 52.00 ± 2.83 (86.67%);
sg avg 68 / 70 = 97.14%; kept params pq 786,432 / 192,001,536 = 0.410%, bytes 7,145,760 / 768,006,144 = 0.930%.
Regenerate them after an intended change of the output with
    python -m experiments.tables tests/fixtures/tables/runs --out tests/fixtures/tables/expected --no-plot
and check the diff by hand.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from experiments.tables import main

FIXTURES = Path(__file__).parent / "fixtures" / "tables"
RUNS, EXPECTED = FIXTURES / "runs", FIXTURES / "expected"
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
    assert (sw["sg k=4096 mean"], sw["sg k=4096 relative_pct"], sw["sg k=4096 n"]) == ("", "", "0")
    assert "| sw | 60.00 | 52.00 ± 2.83 | 86.67 | — | — |" in (tables / "lang_wikiann_xlmr.md").read_text()


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
    assert "| sw | 60.00 | 50.00 (n=1) | 83.33 | — | — |" in text
    assert "pq m=8 k=1024 runs differ in evaluated languages" in text


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
        ("m=8 k=1024 codebook_lr_scale=1", "66.00", "1"),
        ("m=8 k=1024 codebook_lr_scale=10", "64.00", "1"),
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
    shutil.rmtree(old.parent / ".hydra")  # no `metric` in the file and no config to take it from: not guessed
    main([str(runs), "--out", str(tmp_path / "out"), "--no-plot"])
    text = (tmp_path / "out" / "main.md").read_text()
    assert "## Skipped" in text and f"- {old.resolve()}: ValueError(" in text
    assert "xquad" not in {r["task"] for r in _csv_rows(tmp_path / "out" / "main.csv")}
    with pytest.raises(SystemExit, match="could be read"):
        main([str(old.parent), "--out", str(tmp_path / "out2")])


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        main([str(RUNS), str(tmp_path / "typo"), "--out", str(tmp_path / "out")])
