"""Sequence classification (XNLI) with per-language accuracy."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from asg.tasks.common import configure_adamw, log_language_scores, model_inputs

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # BERT tokenizers add segment ids for pairs


class SequenceClassificationModule(pl.LightningModule):
    """Fine-tunes a `*ForSequenceClassification` model; accuracy in percent per evaluation language."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float = 0.1,
        codebook_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode; dropout belongs in fine-tuning
        self.optimizer_factory = optimizer
        self.warmup_ratio, self.codebook_lr_scale = warmup_ratio, codebook_lr_scale
        self.scores: dict[str, float] = {}
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

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def _score(self, stage: str, loaders: list[DataLoader]) -> None:
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

    def on_validation_epoch_end(self) -> None:
        self._score("val", self.trainer.val_dataloaders)

    def on_test_epoch_end(self) -> None:
        self._score("test", self.trainer.test_dataloaders)

    def configure_optimizers(self) -> dict:
        return configure_adamw(
            self,
            self.optimizer_factory,
            warmup_ratio=self.warmup_ratio,
            codebook_lr_scale=self.codebook_lr_scale,
        )
