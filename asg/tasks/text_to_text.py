"""Generative fine-tuning (mT5): teacher-forced loss, `generate()` at evaluation, text-level scores per language."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers import PreTrainedModel

from asg.squad import qa_scores
from asg.tasks.common import TaskModule, log_language_scores, model_inputs


def accuracy(predictions: list[str], references: list[list[str]], lang: str) -> dict[str, float]:
    """Percent of generated strings equal (after stripping) to one of the references."""
    hits = sum(p.strip() in {r.strip() for r in refs} for p, refs in zip(predictions, references, strict=True))
    return {"accuracy": 100 * hits / max(1, len(predictions))}


def squad(predictions: list[str], references: list[list[str]], lang: str) -> dict[str, float]:
    """SQuAD EM/F1, and MLQA's language-aware variants (per character for Chinese), of generated answers."""
    return qa_scores(predictions, [{"text": refs} for refs in references], lang)


SCORERS = {"accuracy": accuracy, "squad": squad}


class TextToTextModule(TaskModule):
    """Fine-tunes a `*ForConditionalGeneration` model on (source, target) text pairs; scores generated text."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        scorer: str = "accuracy",
        max_new_tokens: int = 32,
        num_beams: int = 1,
        **common: Any,  # TaskModule settings: optimizer, warmup_ratio, codebook_lr_scale, asg
    ) -> None:
        super().__init__(model, **common)
        if scorer not in SCORERS:
            raise ValueError(f"scorer={scorer!r} is unknown; choose one of {', '.join(SCORERS)}")
        self.scorer = SCORERS[scorer]
        self.generation = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False}
        self._outputs: dict[int, list[tuple[list[int], list[str]]]] = defaultdict(list)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**model_inputs(batch), labels=batch["labels"]).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        generated = self.model.generate(**model_inputs(batch), **self.generation)  # (B, T_out)
        texts = self.trainer.datamodule.tokenizer.batch_decode(generated, skip_special_tokens=True)
        self._outputs[dataloader_idx].append((batch["example_id"].tolist(), texts))

    def _score(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        langs = datamodule.val_langs if stage == "val" else datamodule.eval_langs
        per_lang = {}
        for idx, lang in enumerate(langs):
            references = datamodule.references[(stage, lang)]
            seen = [(i, text) for ids, texts in self._outputs[idx] for i, text in zip(ids, texts, strict=True)]
            per_lang[lang] = self.scorer([t for _, t in seen], [references[i] for i, _ in seen], lang)
        self._outputs.clear()
        self.scores.update(log_language_scores(self, stage, per_lang))
