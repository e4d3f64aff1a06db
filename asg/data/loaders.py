"""DataLoader plumbing shared by the task datamodules: one training loader, one evaluation loader per language."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader


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

    def _loader(self, rows: list[dict[str, Any]], batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            rows, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collator(), num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._rows("train", self.train_lang), self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._rows("val", lang), self.eval_batch_size, False) for lang in self.val_langs]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._rows("test", lang), self.eval_batch_size, False) for lang in self.eval_langs]
