"""Token-classification datamodule: first-sub-token labelling, one evaluation loader per language."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from asg.data import conll
from asg.data.loaders import LanguageDataModule

log = logging.getLogger(__name__)

IGNORE = -100  # label of special tokens and of every sub-token after a word's first


def encode_sentence(
    tokens: list[str],
    tags: list[str],
    tokenizer: PreTrainedTokenizerBase,
    label2id: dict[str, int],
    max_length: int,
) -> dict[str, list[int]]:
    """Tokenize one pre-split sentence; label only each word's first sub-token.

    `word_index` holds the word number at labelled positions (else -100) so predictions map back to words
    even when truncation or an empty tokenization drops some of them.
    """
    enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    labels, word_index, previous = [], [], None
    for word in enc.word_ids():
        first = word is not None and word != previous
        labels.append(label2id[tags[word]] if first else IGNORE)
        word_index.append(word if first else IGNORE)
        previous = word
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": labels,
        "word_index": word_index,
    }


class PadCollator:
    """Pads model inputs with the tokenizer and the label-like columns with -100."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = self.tokenizer.pad(
            [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in features],
            padding="max_length",
            max_length=width,
            return_tensors="pt",
        )
        for key in ("labels", "word_index"):
            batch[key] = torch.tensor([f[key] + [IGNORE] * (width - len(f[key])) for f in features])
        batch["example_id"] = torch.tensor([f["example_id"] for f in features])
        return dict(batch)


class NERDataModule(LanguageDataModule):
    """WikiANN or BC5CDR from a local release folder (`data_dir`) or the Hub (`data_dir=None`)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        labels: Sequence[str],
        hub_languages: Sequence[str] = ("en",),
        variant: str | None = None,
        hub_source: str | None = None,
        **shared: Any,  # LanguageDataModule's settings
    ) -> None:
        super().__init__(tokenizer, **shared)
        if self.task not in conll.SPLIT_FILES:
            raise ValueError(f"NERDataModule reads {sorted(conll.SPLIT_FILES)}, not task={self.task!r}")
        self.variant, self.hub_source = variant, hub_source
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.folder = conll.task_dir(self.data_dir, self.task, variant) if self.data_dir else None
        if self.folder is not None:
            self._resolve_languages(
                conll.local_languages(self.folder, self.task, "train"),
                conll.local_languages(self.folder, self.task, "test"),
            )
        else:
            self._resolve_languages(list(hub_languages), list(hub_languages))
        self.val_langs = [self.train_lang]
        self.gold: dict[tuple[str, str], list[list[str]]] = {}
        self.encoded: dict[tuple[str, str], list[dict[str, Any]]] = {}

    @property
    def num_train_samples(self) -> int:
        return len(self.encoded[("train", self.train_lang)])

    def _sentences(self, split: str, lang: str, limit: int | None) -> list[conll.Sentence]:
        if self.folder is not None:
            sentences = conll.load_local(self.folder, self.task, split, lang)
        else:
            sentences = conll.load_hub(self.task, self.hub_source, self.variant, split, lang)
        sentences = sentences[:limit] if limit else sentences
        unknown = {t for s in sentences for t in s["tags"]} - set(self.label2id)
        if unknown:
            raise ValueError(f"{self.task} {split}/{lang} has tags {sorted(unknown)} not in task.labels={self.labels}")
        return sentences

    def _encode(self, stage: str, split: str, lang: str, limit: int | None) -> None:
        if (stage, lang) in self.encoded:
            return
        sentences = self._sentences(split, lang, limit)
        self.gold[(stage, lang)] = [s["tags"] for s in sentences]
        self.encoded[(stage, lang)] = [
            encode_sentence(s["tokens"], s["tags"], self.tokenizer, self.label2id, self.max_length) | {"example_id": i}
            for i, s in enumerate(sentences)
        ]
        log.info("%s %s/%s: %d sentences", self.task, split, lang, len(sentences))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._encode("train", "train", self.train_lang, self.max_train_samples)
        if stage in (None, "fit", "validate"):
            for lang in self.val_langs:
                self._encode("val", "validation", lang, self.max_eval_samples)
        # On the Hub path the test sets are read before training too, so a language the dataset lacks fails at once.
        if stage in (None, "test") or (stage == "fit" and self.folder is None):
            for lang in self.eval_langs:
                self._encode("test", "test", lang, self.max_eval_samples)

    def collator(self) -> Callable[[list[dict[str, Any]]], dict]:
        return PadCollator(self.tokenizer)
