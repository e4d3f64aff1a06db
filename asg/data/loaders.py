"""DataLoader plumbing shared by the task datamodules: one training loader, one evaluation loader per language."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from transformers import PreTrainedTokenizerBase

from asg.transfer import resolve_languages


class LanguageDataModule(pl.LightningDataModule):
    """The settings every task's datamodule shares; subclasses fill `self.encoded[(stage, lang)]` with rows and
    define `collator()`. `build_datamodule` (below) passes these from the run's `data` and `transfer` settings."""

    val_langs: list[str]
    encoded: dict[tuple[str, str], list[dict[str, Any]]]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        task: str,
        train_lang: str,
        eval_langs: Sequence[str] | None,
        data_dir: str | None = None,  # a local copy in the release layout; None: the Hugging Face Hub
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        max_train_samples: int | None = None,  # keep the first N examples of the split (None: all)
        max_eval_samples: int | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(tokenizer, max_length, batch_size, eval_batch_size, max_train_samples, max_eval_samples)
        self.tokenizer, self.task, self.data_dir, self.max_length = tokenizer, task, data_dir, max_length
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.train_lang, self.eval_langs = train_lang, eval_langs

    def _resolve_languages(self, train_available: Sequence[str], eval_available: Sequence[str]) -> None:
        """Check the asked languages against those the data has (the error names the fix)."""
        self.train_lang, self.eval_langs = resolve_languages(
            self.task,
            train_lang=self.train_lang,
            eval_langs=self.eval_langs,
            train_available=train_available,
            eval_available=eval_available,
        )

    def collator(self) -> Callable[[list[dict[str, Any]]], dict]:
        raise NotImplementedError

    def _rows(self, stage: str, lang: str) -> list[dict[str, Any]]:
        return self.encoded[(stage, lang)]

    def train_rows(self) -> list[dict[str, Any]]:
        """The encoded training split (after `setup("fit")`), every example whatever the rank trains on."""
        return self._rows("train", self.train_lang)

    def _loader(self, rows: list[dict[str, Any]], batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            rows, batch_size=batch_size, sampler=sampler, collate_fn=self.collator(), num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        rows = self.train_rows()
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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_sizes(
    tokenizer: PreTrainedTokenizerBase | None,
    max_length: Any,
    batch_size: Any,
    eval_batch_size: Any,
    max_train_samples: Any,
    max_eval_samples: Any,
) -> None:
    """Fail before any data is read on sizes that would train on something else than asked, or fail mid-run."""
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if not _positive_int(value):
            raise ValueError(f"data.{key}={value!r} must be a positive integer")
    for key, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
        if value is not None and not _positive_int(value):
            raise ValueError(f"data.{key}={value!r} must be a positive integer, or null for the whole split")
    if tokenizer is None:  # a datamodule that only lists its languages
        return
    special = tokenizer.num_special_tokens_to_add()
    if not _positive_int(max_length) or max_length <= special:
        raise ValueError(
            f"max_length={max_length!r} must be an integer above the {special} special tokens a sequence carries; "
            "raise data.max_length (task.max_length for QA)"
        )
    if max_length > tokenizer.model_max_length:
        raise ValueError(
            f"max_length={max_length} exceeds the {tokenizer.model_max_length} positions the model takes; lower "
            "data.max_length (task.max_length for QA)"
        )


SHARED_DATA_KEYS = (
    "max_length",
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "max_train_samples",
    "max_eval_samples",
)


def build_datamodule(
    datamodule_cfg: DictConfig, cfg: DictConfig, tokenizer: PreTrainedTokenizerBase
) -> LanguageDataModule:
    """The task's datamodule from its config (`task.datamodule`), given the run's `data` and `transfer` settings
    that every task shares, except those the task's config sets itself (QA's windows: `task.max_length`)."""
    shared = {
        "task": cfg.task.name,
        "data_dir": cfg.data.dir,
        "train_lang": cfg.transfer.train_lang,
        "eval_langs": cfg.transfer.eval_langs,
    } | {key: cfg.data[key] for key in SHARED_DATA_KEYS}
    return instantiate(datamodule_cfg)(tokenizer, **{k: v for k, v in shared.items() if k not in datamodule_cfg})
