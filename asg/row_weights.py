"""Row weights for a weighted fit (`asg.row_weights`): how much of the text each embedding row serves.

k-means over an embedding treats a token seen once per billion words like "the". Weighted by how often each token
occurs, the fit spends its centroids where the text is. Two sources of those frequencies:
  - `unigram`: sentencepiece unigram tokenizers (XLM-R, mT5, multilingual-e5) store each piece's log probability,
    so the weights come with the model and depend on no task data: a zero-shot run stays zero-shot;
  - `train`: each token's share of the run's own training split (the training language only), add-one smoothed so
    that a token the split never shows keeps the weight of one occurrence; for any tokenizer, WordPiece included.
`asg.row_weight_power` p flattens either (w = prob^p): 1 is the distribution itself, 0 every row alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

ROW_WEIGHTS = ("unigram", "train")  # the values asg.row_weights takes besides null (every row alike)
WEIGHTED_METHODS = ("pq", "tiered")  # the methods whose fit takes row weights


def unigram_probabilities(tokenizer_json: str, vocab: int) -> Tensor | None:
    """Each embedding row's probability under a tokenizer's unigram model, from its tokenizer.json text (pieces'
    scores are log probabilities): control symbols (score 0) at the most likely piece's, rows past the pieces at 0.
    None where the tokenizer is not a unigram one (WordPiece and BPE keep no frequencies)."""
    model = json.loads(tokenizer_json)["model"]
    if model.get("type") != "Unigram":
        return None
    scores = torch.tensor([score for _, score in model["vocab"]], dtype=torch.float64)
    probs = scores.exp()
    probs[scores == 0] = probs[scores != 0].max()
    weights = torch.zeros(vocab, dtype=torch.float64)
    weights[: min(vocab, len(probs))] = probs[:vocab]
    return weights / weights.sum()


def check_row_weights(cfg: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the fix for an asg.row_weights or asg.row_weight_power that cannot be used."""
    name, power = cfg.get("row_weights"), cfg.get("row_weight_power", 1.0)
    if name is None:
        return
    if name not in ROW_WEIGHTS:
        raise ValueError(f"asg.row_weights={name!r} is not supported; use null or one of {', '.join(ROW_WEIGHTS)}")
    if cfg.get("method") not in WEIGHTED_METHODS:
        raise ValueError(
            f"asg.method={cfg.get('method')} fits no row weights; use asg.row_weights=null, or a method of "
            f"{', '.join(WEIGHTED_METHODS)}"
        )
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 < power <= 1:
        raise ValueError(f"asg.row_weight_power={power!r} must be a number in (0, 1] (1: the unigram probabilities)")


def train_token_probabilities(rows: Iterable[Mapping[str, Any]], vocab: int) -> Tensor:
    """Each embedding row's share of the tokens in `rows` (encoded examples with `input_ids`), add-one smoothed:
    (count + 1) / (tokens + V)."""
    ids = torch.tensor(list(chain.from_iterable(row["input_ids"] for row in rows)), dtype=torch.long)
    counts = torch.bincount(ids, minlength=vocab).to(torch.float64) + 1
    return counts / counts.sum()


def fit_row_weights(
    cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    vocab: int,
    train_rows: Callable[[], Iterable[Mapping[str, Any]]] | None = None,  # the encoded training split, once read
) -> Tensor | Callable[[], Tensor] | None:
    """The (V,) weights asg.row_weights asks for; None for null. `unigram` reads the model's own tokenizer; `train`
    counts the training split's tokens, so it is returned as a function to call once the datamodule has read it."""
    check_row_weights(cfg)
    if cfg.get("row_weights") == "train":
        if train_rows is None:
            raise ValueError("asg.row_weights=train needs the run's training split; this caller has none")
        return lambda: row_weights_from(cfg, train_token_probabilities(train_rows(), vocab), "the training split")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    wanted = cfg.get("row_weights") is not None and backend is not None
    probs = unigram_probabilities(backend.to_str(), vocab) if wanted else None
    return row_weights_from(cfg, probs, tokenizer.name_or_path)


def row_weights_from(cfg: Mapping[str, Any], probs: Tensor | None, source: str) -> Tensor | None:
    """The (V,) weights asg.row_weights asks for, given the row probabilities of its source (`source`'s unigram
    model, `unigram_probabilities`, None where it has none; or `train_token_probabilities`); None for null."""
    check_row_weights(cfg)
    if cfg.get("row_weights") is None:
        return None
    if probs is None:
        raise ValueError(
            f"asg.row_weights=unigram needs a sentencepiece unigram tokenizer (XLM-R, mT5, multilingual-e5); "
            f"{source} has none (WordPiece keeps no token frequencies): set asg.row_weights=train (the training "
            "split's token counts) or null"
        )
    return probs ** cfg.get("row_weight_power", 1.0)
