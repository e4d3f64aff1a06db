"""asg.row_weights: unigram weights come from the model's own tokenizer, reach the fit, and bad settings fail early."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoTokenizer

import asg.embedding
from asg.row_weights import check_row_weights, fit_row_weights, unigram_probabilities
from tests.test_pipeline import tiny_run


def test_unigram_probabilities_come_from_sentencepiece_scores():
    pieces = [["<s>", 0.0], ["a", math.log(0.5)], ["b", math.log(0.25)]]
    text = json.dumps({"model": {"type": "Unigram", "vocab": pieces}})
    weights = unigram_probabilities(text, 4)  # one embedding row past the pieces
    assert weights.tolist() == pytest.approx([0.4, 0.4, 0.2, 0.0])  # the control symbol at the likeliest piece's
    assert unigram_probabilities(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}), 4) is None


def test_weights_follow_the_tokenizer_and_the_power(tiny_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["xlmr"])
    vocab = len(tokenizer)
    probs = unigram_probabilities(tokenizer.backend_tokenizer.to_str(), vocab)
    full = fit_row_weights({"method": "pq", "row_weights": "unigram", "row_weight_power": 1.0}, tokenizer, vocab)
    half = fit_row_weights({"method": "pq", "row_weights": "unigram", "row_weight_power": 0.5}, tokenizer, vocab)
    assert torch.equal(full, probs) and torch.allclose(half, probs.sqrt())
    assert fit_row_weights({"method": "pq", "row_weights": None}, tokenizer, vocab) is None


def test_wordpiece_has_no_unigram_weights(minilm_dir):
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    with pytest.raises(ValueError, match="needs a sentencepiece unigram tokenizer.*set asg.row_weights=null"):
        fit_row_weights({"method": "pq", "row_weights": "unigram"}, tokenizer, len(tokenizer))


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"method": "pq", "row_weights": "zipf"}, "asg.row_weights='zipf' is not supported; use null or one of"),
        ({"method": "sg", "row_weights": "unigram"}, "asg.method=sg fits no row weights; use asg.row_weights=null"),
        ({"method": "pq", "row_weights": "unigram", "row_weight_power": 2}, r"must be a number in \(0, 1\]"),
        ({"method": "pq", "row_weights": "unigram", "row_weight_power": 0}, r"must be a number in \(0, 1\]"),
    ],
)
def test_bad_settings_name_the_fix(cfg, match):
    with pytest.raises(ValueError, match=match):
        check_row_weights(cfg)


@pytest.mark.parametrize("method", ["pq", "tiered"])
def test_a_run_fits_with_its_tokenizers_weights(tmp_path, tiny_dirs, shared_data, monkeypatch, method):
    seen = []
    fit = asg.embedding.product_quantize

    def recording(weight, **options):
        seen.append(options.get("row_weights"))
        return fit(weight, **options)

    monkeypatch.setattr(asg.embedding, "product_quantize", recording)
    tiers = ["asg.tier_m=[8,4,2]", "asg.k=16"] if method == "tiered" else []
    overrides = [f"asg={method}", *tiers, "asg.row_weights=unigram", "asg.row_weight_power=1", "asg.cache_dir=null"]
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, "xlmr", "task=wikiann", *overrides)

    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["xlmr"])
    vocab = metrics["compression"]["vocab_size"]
    expected = unigram_probabilities(tokenizer.backend_tokenizer.to_str(), vocab)
    assert torch.equal(torch.cat(seen), expected.to(seen[0].dtype))  # every row's weight, split over the tiers
    assert metrics["asg"]["row_weights"] == "unigram"
