"""The tier-layout search: its usage-weighted error, the training text it counts, and layouts that fit the budget."""

from __future__ import annotations

import pytest
import torch

from asg.methods import get_method
from experiments import tier_search


def test_usage_counts_count_each_id():
    assert tier_search.usage_counts(torch.tensor([1, 1, 0]), 3).tolist() == [1.0, 2.0, 0.0]


def test_counts_the_english_training_text_as_the_pipeline_tokenizes_it(shared_data, minilm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    ids = tier_search.english_train_ids(str(shared_data), tokenizer, 3, 8)
    first = (shared_data / "wikiann" / "train-en.tsv").read_text(encoding="utf-8").split("\n\n")[0]
    words = [line.split("\t")[0] for line in first.splitlines()]
    expected = tokenizer(words, is_split_into_words=True, truncation=True, max_length=8)["input_ids"]
    assert ids[: len(expected)].tolist() == expected  # the first sentence, with its special tokens, truncated
    assert (ids == tokenizer.cls_token_id).sum() == 3 and len(ids) <= 3 * 8  # three sentences, at most 8 each


@pytest.mark.parametrize("layout", tier_search.LAYOUTS)
def test_every_layout_fits_one_percent_of_e5_bytes(layout):
    fractions, m = layout
    cfg = {"method": "tiered", "tier_fractions": fractions, "tier_m": m, "k": None, "budget_pct": None}
    cfg |= {"budget_bytes_pct": 1.0, "storage_dtype": "float16"}
    settings = get_method("tiered").resolve(cfg, 250037, 384)
    assert settings["k"] >= 64 and len(settings["tier_rows"]) == len(m)


def test_report_sets_the_unigram_errors_against_the_weighted_bound():
    import argparse

    args = argparse.Namespace(budget=1.0, train_samples=2000, max_length=64)
    rows = [
        {"tier_fractions": [0.1], "tier_m": [32, 4], "tier_rows": [10, 90], "k": 8, "bytes_kept_pct": 1.0}
        | {"rel_error": 0.8, "usage_error": 0.6, "unigram_error": u}
        for u in (0.55, 0.5)
    ]
    text = tier_search.report(rows, "cmd", args, 100, unigram_bound=0.42)
    assert (
        "| none | 1.000 | 0.8000 | **0.6000** | 0.5500 |" in text
    )  # the first of two equal usage errors is the choice
    assert "is 0.4200; the lowest layout's unigram error is 0.5000 (10 m=32, 90 m=4; k-means weights none)." in text
    assert "bound" not in tier_search.report(
        [{k: v for k, v in r.items() if k != "unigram_error"} for r in rows], "cmd", args, 100
    )


def test_a_unigram_weighted_fit_lowers_the_unigram_error_and_the_choice_stays_a_plain_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(tier_search, "LAYOUTS", [([0.25], [4, 2])])
    weight = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
    unigram = torch.arange(400, 0, -1, dtype=torch.float64).pow(-3.0).flip(0)  # a few rows hold most of the mass
    unigram /= unigram.sum()
    counts = torch.ones(400, dtype=torch.float64)
    monkeypatch.chdir(tmp_path)  # the fit cache goes under .cache/codebooks
    plain, weighted = tier_search.search(weight, counts, 20.0, unigram, powers=(1.0,))
    assert (plain["row_weight_power"], weighted["row_weight_power"]) == (None, 1.0)
    assert plain["k"] == weighted["k"] and plain["bytes_kept_pct"] == weighted["bytes_kept_pct"]
    assert weighted["unigram_error"] < plain["unigram_error"] - 0.05  # the fit serves the heavy rows
    assert tier_search.choice([weighted | {"usage_error": 0.0}, plain]) is plain
    with pytest.raises(ValueError, match="unigram tokenizer"):
        tier_search.search(weight, counts, 20.0, None, powers=(1.0,))
