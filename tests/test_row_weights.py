"""asg.row_weights: unigram weights come from the model's own tokenizer, train weights from the training split's
tokens; both reach the fit, and bad settings fail early."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoTokenizer

import asg.data.ner
import asg.embedding
from asg.row_weights import check_row_weights, fit_row_weights, train_token_probabilities, unigram_probabilities
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
    with pytest.raises(ValueError, match="needs a sentencepiece unigram tokenizer.*set asg.row_weights=train"):
        fit_row_weights({"method": "pq", "row_weights": "unigram"}, tokenizer, len(tokenizer))


def test_train_weights_are_the_splits_smoothed_token_shares(minilm_dir):
    rows = [{"input_ids": [0, 2, 2]}, {"input_ids": [2, 3]}]  # 5 tokens over a vocabulary of 5
    assert train_token_probabilities(rows, 5).tolist() == pytest.approx([2 / 10, 1 / 10, 4 / 10, 2 / 10, 1 / 10])
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)  # WordPiece: no unigram scores, a split's counts instead
    cfg = {"method": "pq", "row_weights": "train", "row_weight_power": 0.5}
    weights = fit_row_weights(cfg, tokenizer, 5, lambda: rows)
    assert callable(weights)  # the split is read later, by the datamodule
    assert torch.allclose(weights(), train_token_probabilities(rows, 5).sqrt())
    with pytest.raises(ValueError, match="needs the run's training split"):
        fit_row_weights(cfg, tokenizer, 5)


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


def test_a_run_fits_with_its_training_splits_token_counts(tmp_path, tiny_dirs, shared_data, monkeypatch):
    seen, splits = [], []
    fit = asg.embedding.product_quantize
    setup = asg.data.ner.NERDataModule.setup

    def recording(weight, **options):
        seen.append(options.get("row_weights"))
        return fit(weight, **options)

    def reading(datamodule, stage=None):  # the training split the run trains on
        setup(datamodule, stage)
        splits.append([row["input_ids"] for row in datamodule.train_rows()])

    monkeypatch.setattr(asg.embedding, "product_quantize", recording)
    monkeypatch.setattr(asg.data.ner.NERDataModule, "setup", reading)
    overrides = ["asg.row_weights=train", "asg.row_weight_power=1", "asg.cache_dir=null"]
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, "mbert", *overrides)  # BC5CDR, WordPiece

    vocab = metrics["compression"]["vocab_size"]
    counts = torch.bincount(torch.tensor([i for ids in splits[0] for i in ids]), minlength=vocab).double() + 1
    (weights,) = seen
    assert torch.equal(weights, (counts / counts.sum()).to(weights.dtype))  # each row: (count + 1) / (tokens + V)
    assert metrics["asg"]["row_weights"] == "train"
