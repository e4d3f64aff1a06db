"""The tier-layout search: its usage-weighted error, the training text it counts, and layouts that fit the budget."""

from __future__ import annotations

import pytest
import torch

from asg.methods import get_method
from experiments import tier_search


def test_weighted_error_weights_rows_by_use_and_is_the_relative_error_with_unit_counts():
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    approx = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])  # row errors^2: 0, 1, 1; norms^2: 25, 1, 4
    assert tier_search.weighted_error(weight, approx, torch.ones(3, dtype=torch.float64)) == pytest.approx(
        (2 / 30) ** 0.5
    )
    counts = tier_search.usage_counts(torch.tensor([1, 1, 0]), 3)  # row 1 twice, row 0 once, row 2 never
    assert counts.tolist() == [1.0, 2.0, 0.0]
    assert tier_search.weighted_error(weight, approx, counts) == pytest.approx((2 / 27) ** 0.5)


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
