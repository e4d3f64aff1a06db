"""DataLoader plumbing shared by the task datamodules: one training loader, one evaluation loader per language."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler


class LanguageDataModule(pl.LightningDataModule):
    """Subclasses fill `self.encoded[(stage, lang)]` with rows and define `collator()`."""

    batch_size: int
    eval_batch_size: int
    num_workers: int
    train_lang: str
    val_langs: list[str]
    eval_langs: list[str]
    encoded: dict[tuple[str, str], list[dict[str, Any]]]

    def collator(self) -> Callable[[list[dict[str, Any]]], dict]:
        raise NotImplementedError

    def _rows(self, stage: str, lang: str) -> list[dict[str, Any]]:
        return self.encoded[(stage, lang)]

    def _loader(self, rows: list[dict[str, Any]], batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            rows, batch_size=batch_size, sampler=sampler, collate_fn=self.collator(), num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        rows = self._rows("train", self.train_lang)
        # Under DDP each rank trains on its own shard; evaluation stays whole on every rank (the trainer runs with
        # use_distributed_sampler=False) so scores are over the full test sets, never padded or split.
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler: Sampler = DistributedSampler(rows, shuffle=True, seed=torch.initial_seed() % 2**31)
        else:
            sampler = RandomSampler(rows)
        return self._loader(rows, self.batch_size, sampler)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._rows("val", lang), self.eval_batch_size) for lang in self.val_langs]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._rows("test", lang), self.eval_batch_size) for lang in self.eval_langs]
