"""Extractive QA scoring: n-best span selection over strided windows, SQuAD v1.1 and MLQA-style EM/F1.

Pure Python + torch; nothing here knows about Lightning or Hydra.
"""

from __future__ import annotations

import functools
import logging
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

Offsets = Sequence[tuple[int, int] | None]  # per token: (start char, end char) in the context, None outside it


def best_answers(
    contexts: Mapping[Hashable, str],
    features: Sequence[Mapping[str, Any]],
    start_logits: Sequence[torch.Tensor],
    end_logits: Sequence[torch.Tensor],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[Hashable, str]:
    """Predicted answer text per example id, from the logits of every window (feature) of each example.

    `features[i]` has `example_id` and `offset_mapping` (None at question, special and padding tokens);
    `start_logits[i]` / `end_logits[i]` are that window's (T,) logits, T >= its number of offsets. In each window
    the `n_best` highest starts x `n_best` highest ends are tried; spans leaving the context, ending before
    they start or longer than `max_answer_length` tokens are dropped; the highest start + end score over all
    windows wins. An example whose windows hold no valid span is answered with "".
    """
    best: dict[Hashable, tuple[float, str]] = {}
    for feature, starts, ends in zip(features, start_logits, end_logits, strict=True):
        example_id, offsets = feature["example_id"], feature["offset_mapping"]
        starts, ends = torch.as_tensor(starts)[: len(offsets)], torch.as_tensor(ends)[: len(offsets)]
        top_starts = torch.topk(starts, min(n_best, len(starts))).indices.tolist()
        top_ends = torch.topk(ends, min(n_best, len(ends))).indices.tolist()
        starts, ends = starts.tolist(), ends.tolist()  # plain floats: n_best^2 tensor ops per window are slow
        best.setdefault(example_id, (float("-inf"), ""))
        for s in top_starts:
            for e in top_ends:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                if starts[s] + ends[e] > best[example_id][0]:
                    best[example_id] = (starts[s] + ends[e], contexts[example_id][offsets[s][0] : offsets[e][1]])
    return {example_id: text for example_id, (_, text) in best.items()}


# --- SQuAD v1.1 (the official evaluate-v1.1.py definitions) ---------------------------------------------------

_ENGLISH_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lower case, drop ASCII punctuation, drop English articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCTUATION)
    return " ".join(_ENGLISH_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str, normalize: Callable[[str], str] = normalize_answer) -> float:
    return float(normalize(prediction) == normalize(gold))


def token_f1(prediction: str, gold: str, normalize: Callable[[str], str] = normalize_answer) -> float:
    """Bag-of-tokens F1 between the normalised strings (0 when nothing overlaps, empty answers included)."""
    pred_tokens, gold_tokens = normalize(prediction).split(), normalize(gold).split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _scores(
    predictions: Sequence[str], answers: Sequence[Mapping[str, Sequence]], normalize: Callable[[str], str]
) -> dict[str, float]:
    if len(predictions) != len(answers) or not answers:
        raise ValueError(f"need one prediction per example, got {len(predictions)} for {len(answers)} examples")
    em = f1 = 0.0
    for prediction, gold in zip(predictions, answers, strict=True):
        em += max(exact_match(prediction, g, normalize) for g in gold["text"])
        f1 += max(token_f1(prediction, g, normalize) for g in gold["text"])
    return {"exact_match": 100 * em / len(answers), "f1": 100 * f1 / len(answers)}


@functools.cache
def _hub_squad_metric() -> Any | None:
    """`evaluate.load("squad")` once per process; None where the Hub (or evaluate) is unavailable."""
    try:
        import evaluate

        return evaluate.load("squad")
    except (ImportError, OSError) as err:  # offline: FileNotFoundError / ConnectionError are OSErrors
        log.info("evaluate.load('squad') unavailable (%s); scoring with asg.squad's own SQuAD v1.1 code", err)
        return None


def squad_scores(predictions: Sequence[str], answers: Sequence[Mapping[str, Sequence]]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 in percent, max over each example's gold answers.

    `answers[i]` is example i's SQuAD-format `{"text": [...], "answer_start": [...]}`. Uses the Hub's `squad`
    metric when it loads, else the same definitions implemented here (they agree; see tests/test_qa.py).
    """
    metric = _hub_squad_metric()
    if metric is None:
        return _scores(predictions, answers, normalize_answer)
    result = metric.compute(
        predictions=[{"id": str(i), "prediction_text": p} for i, p in enumerate(predictions)],
        references=[{"id": str(i), "answers": dict(a)} for i, a in enumerate(answers)],
    )
    return {"exact_match": float(result["exact_match"]), "f1": float(result["f1"])}


# --- MLQA-style, language-aware (MLQA's mlqa_evaluation_v1.py definitions) -------------------------------------

# Articles MLQA removes per language; hi and zh have none. Arabic's pattern (MLQA's '\sال^|ال') deletes the
# prefix "ال" wherever it occurs, even inside a word: kept as is so scores match the official script.
_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile(r"ال"),
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # MLQA's range: each such character is its own token in zh
_CHARACTER_LANGS = frozenset({"zh"})


def _is_punctuation(ch: str) -> bool:
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def normalize_answer_mlqa(text: str, lang: str) -> str:
    """MLQA: lower case, drop all Unicode punctuation, drop `lang`'s articles, then split into tokens.

    Tokens are whitespace-separated, except in Chinese where every CJK character is a token of its own.
    Languages outside MLQA (e.g. ru, th, el) get no article removal and whitespace tokens.
    """
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    if lang in _ARTICLES:
        text = _ARTICLES[lang].sub(" ", text)
    if lang in _CHARACTER_LANGS:
        text = _CJK.sub(lambda m: f" {m.group()} ", text)
    return " ".join(text.split())


def mlqa_scores(predictions: Sequence[str], answers: Sequence[Mapping[str, Sequence]], lang: str) -> dict[str, float]:
    """Exact match and F1 in percent with MLQA's language-aware normalisation for `lang`."""
    return _scores(predictions, answers, functools.partial(normalize_answer_mlqa, lang=lang))


def qa_scores(predictions: Sequence[str], answers: Sequence[Mapping[str, Sequence]], lang: str) -> dict[str, float]:
    """SQuAD v1.1 `exact_match`/`f1` plus MLQA's language-aware `lang_exact_match`/`lang_f1` for `lang`."""
    lang_scores = mlqa_scores(predictions, answers, lang)
    return squad_scores(predictions, answers) | {f"lang_{k}": v for k, v in lang_scores.items()}
