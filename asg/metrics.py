"""Task scores with the reference definitions: seqeval entity F1 for NER."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from seqeval.metrics import f1_score, precision_score, recall_score


def word_predictions(
    pred_ids: torch.Tensor, word_index: torch.Tensor, num_words: Sequence[int], id2label: Mapping[int, str]
) -> list[list[str]]:
    """Per-word tags from sub-token predictions: each word takes its first sub-token's label.

    pred_ids, word_index: (B, T); word_index is the word number at first sub-tokens and -100 elsewhere.
    Words with no first sub-token (cut by truncation) are predicted "O", so they still count against recall.
    """
    out = []
    for preds, words, n in zip(pred_ids.tolist(), word_index.tolist(), num_words, strict=True):
        tags = ["O"] * n
        for pred, word in zip(preds, words, strict=True):
            if word >= 0:
                tags[word] = id2label[pred]
        out.append(tags)
    return out


def ner_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, CoNLL-style span matching), in percent."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred, strict=True)):
        raise ValueError("gold and predicted tag sequences must have the same shapes")
    return {
        "precision": 100 * precision_score(gold, pred, zero_division=0),
        "recall": 100 * recall_score(gold, pred, zero_division=0),
        "f1": 100 * f1_score(gold, pred, zero_division=0),
    }
