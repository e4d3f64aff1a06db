"""Token classification (NER) with per-language seqeval entity F1."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch
from transformers import PreTrainedModel

from asg.metrics import ner_scores, word_predictions
from asg.tasks.common import TaskModule, log_language_scores, model_inputs

log = logging.getLogger(__name__)


class TokenClassificationModule(TaskModule):
    """Fine-tunes a `*ForTokenClassification` model; scores whole words against the untruncated gold tags."""

    def __init__(
        self,
        model: PreTrainedModel,
        **common: Any,  # TaskModule settings: optimizer, warmup_ratio, codebook_lr_scale, asg
    ) -> None:
        super().__init__(model, **common)
        self.id2label = {int(i): label for i, label in model.config.id2label.items()}
        self._outputs: dict[int, list[tuple[torch.Tensor, ...]]] = defaultdict(list)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**model_inputs(batch), labels=batch["labels"]).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        logits = self.model(**model_inputs(batch)).logits  # (B, T, C)
        self._outputs[dataloader_idx].append(
            (batch["example_id"].cpu(), logits.argmax(-1).cpu(), batch["word_index"].cpu())
        )

    def _score(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        langs = datamodule.val_langs if stage == "val" else datamodule.eval_langs
        per_lang = {}
        for idx, lang in enumerate(langs):
            gold = datamodule.gold[(stage, lang)]
            pred: list[list[str] | None] = [None] * len(gold)
            for example_ids, preds, word_index in self._outputs[idx]:
                lengths = [len(gold[i]) for i in example_ids.tolist()]
                for i, tags in zip(
                    example_ids.tolist(), word_predictions(preds, word_index, lengths, self.id2label), strict=True
                ):
                    pred[i] = tags
            done = [i for i, p in enumerate(pred) if p is not None]
            if len(done) < len(gold):  # limit_*_batches or fast_dev_run: score what was seen, say so
                log.warning("%s/%s: scored %d of %d sentences", stage, lang, len(done), len(gold))
            per_lang[lang] = ner_scores([gold[i] for i in done], [pred[i] for i in done])
        self._outputs.clear()
        self.scores.update(log_language_scores(self, stage, per_lang))
