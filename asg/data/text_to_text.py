"""Text-to-text versions of the XNLI and QA datamodules for generative models (mT5).

Each reuses its task's reading, language checks and notes, and replaces only the encoding: a source string in,
a target string out, with the references kept for scoring the generated text.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from asg.data.qa import QADataModule
from asg.data.xnli import XNLIDataModule

IGNORE = -100  # target padding the loss skips


class Seq2SeqCollator:
    """Pads sources with the tokenizer and targets with -100."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad(
            [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in features],
            return_tensors="pt",
        )
        width = max(len(f["labels"]) for f in features)
        batch["labels"] = torch.tensor([f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features])
        batch["example_id"] = torch.tensor([f["example_id"] for f in features])
        return dict(batch)


def encode_text_pairs(
    tokenizer: PreTrainedTokenizerBase,
    sources: list[str],
    targets: list[str],
    *,
    max_length: int,
    max_target_length: int,
) -> list[dict[str, Any]]:
    """Tokenized (source, target) rows with their example index."""
    enc = tokenizer(sources, truncation=True, max_length=max_length)
    labels = tokenizer(text_target=targets, truncation=True, max_length=max_target_length)["input_ids"]
    return [
        {
            "input_ids": enc["input_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "labels": labels[i],
            "example_id": i,
        }
        for i in range(len(sources))
    ]


def xnli_source(pair: dict[str, str]) -> str:
    return f"xnli premise: {pair['premise']} hypothesis: {pair['hypothesis']}"


def qa_source(example: dict[str, Any]) -> str:
    return f"question: {example['question']} context: {example['context']}"


class XNLITextDataModule(XNLIDataModule):
    """XNLI as "xnli premise: ... hypothesis: ..." -> the English label word (entailment/neutral/contradiction)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, max_target_length: int = 8, **kwargs: Any) -> None:
        super().__init__(tokenizer, **kwargs)
        self.max_target_length = max_target_length
        self.references: dict[tuple[str, str], list[list[str]]] = {}

    def _encode(self, stage: str, lang: str, limit: int | None) -> None:
        if (stage, lang) in self.encoded:
            return
        pairs = self._pairs(stage, lang, limit)
        targets = [p["label"] for p in pairs]
        self.encoded[(stage, lang)] = encode_text_pairs(
            self.tokenizer,
            [xnli_source(p) for p in pairs],
            targets,
            max_length=self.max_length,
            max_target_length=self.max_target_length,
        )
        self.references[(stage, lang)] = [[t] for t in targets]

    def collator(self) -> Seq2SeqCollator:
        return Seq2SeqCollator(self.tokenizer)


class QATextDataModule(QADataModule):
    """Extractive QA as "question: ... context: ..." -> the answer text; contexts past max_length are cut."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, max_target_length: int = 32, **kwargs: Any) -> None:
        super().__init__(tokenizer, **kwargs)
        self.max_target_length = max_target_length
        self.references: dict[tuple[str, str], list[list[str]]] = {}

    def _store(self, stage: str, lang: str, examples: list[dict[str, Any]], limit: int | None) -> None:
        examples = examples[:limit] if limit else examples
        self.examples[(stage, lang)] = examples
        self.features[(stage, lang)] = encode_text_pairs(
            self.tokenizer,
            [qa_source(e) for e in examples],
            [e["answers"]["text"][0] for e in examples],
            max_length=self.max_length,
            max_target_length=self.max_target_length,
        )
        self.references[(stage, lang)] = [list(e["answers"]["text"]) for e in examples]

    def collator(self) -> Seq2SeqCollator:
        return Seq2SeqCollator(self.tokenizer)
