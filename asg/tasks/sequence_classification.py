"""Sequence classification (XNLI) with per-language accuracy."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch
from transformers import PreTrainedModel

from asg.tasks.common import TaskModule, log_language_scores, model_inputs

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # BERT tokenizers add segment ids for pairs


class SequenceClassificationModule(TaskModule):
    """Fine-tunes a `*ForSequenceClassification` model; accuracy in percent per evaluation language."""

    def __init__(
        self,
        model: PreTrainedModel,
        **common: Any,  # TaskModule settings: optimizer, warmup_ratio, codebook_lr_scale, asg
    ) -> None:
        super().__init__(model, **common)
        self._counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # dataloader -> [correct, seen]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**model_inputs(batch, INPUTS), labels=batch["labels"]).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        logits = self.model(**model_inputs(batch, INPUTS)).logits  # (B, C)
        counts = self._counts[dataloader_idx]
        counts[0] += int((logits.argmax(-1) == batch["labels"]).sum())
        counts[1] += len(batch["labels"])

    def _score(self, stage: str) -> None:
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        datamodule = self.trainer.datamodule
        langs = datamodule.val_langs if stage == "val" else datamodule.eval_langs
        per_lang = {}
        for idx, (lang, loader) in enumerate(zip(langs, loaders, strict=True)):
            correct, seen = self._counts[idx]
            if seen < len(loader.dataset):  # limit_*_batches or fast_dev_run: score what was seen, say so
                log.warning("%s/%s: scored %d of %d pairs", stage, lang, seen, len(loader.dataset))
            if seen:
                per_lang[lang] = {"accuracy": 100.0 * correct / seen}
        self._counts.clear()
        if per_lang:
            self.scores.update(log_language_scores(self, stage, per_lang))
