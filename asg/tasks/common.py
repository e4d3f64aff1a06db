"""Pieces every task module shares: optimizer groups, the LR schedule, per-language score logging."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import get_linear_schedule_with_warmup

from asg.embedding import CompressedEmbedding
from asg.results import write_json_atomic
from asg.surgery import compress_model, compressed_specs

# the learning curve so far, in the run dir (what a resumed run's curve starts from)
VAL_HISTORY = "val_history.json"
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")


def parameter_groups(
    model: torch.nn.Module, *, lr: float, weight_decay: float, codebook_lr_scale: float = 1.0
) -> list[dict]:
    """AdamW groups: no decay on biases and norms; compressed embeddings (codebooks) get their own learning rate."""
    compressed = {
        id(p) for module in model.modules() if isinstance(module, CompressedEmbedding) for p in module.parameters()
    }
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if any(key in name for key in NO_DECAY) else weight_decay
        group_lr = lr * codebook_lr_scale if id(param) in compressed else lr
        groups.setdefault((group_lr, decay), []).append(param)
    return [{"params": params, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), params in groups.items()]


def configure_adamw(
    module: pl.LightningModule,
    optimizer: Callable[..., torch.optim.Optimizer],
    *,
    warmup_ratio: float,
    codebook_lr_scale: float,
) -> dict:
    """The partial optimizer from the config over `module.model`, with linear warm-up and decay."""
    defaults = optimizer.keywords if hasattr(optimizer, "keywords") else {}
    groups = parameter_groups(
        module.model,
        lr=defaults.get("lr", 1e-3),
        weight_decay=defaults.get("weight_decay", 0.0),
        codebook_lr_scale=codebook_lr_scale,
    )
    opt = optimizer(groups)
    total = max(1, int(module.trainer.estimated_stepping_batches))
    schedule = get_linear_schedule_with_warmup(opt, int(warmup_ratio * total), total)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def log_language_scores(
    module: pl.LightningModule, stage: str, scores: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Log `<stage>/<lang>/<metric>` and the average over languages `<stage>/avg/<metric>`.

    Test scores are named for the split the evaluation sets are (`eval_split` of the datamodule, e.g. MLQA's dev),
    so dev scores are never passed off as test scores.
    """
    if stage == "test":
        stage = getattr(module.trainer.datamodule, "eval_split", "test")
    flat = {f"{stage}/{lang}/{name}": value for lang, metrics in scores.items() for name, value in metrics.items()}
    for name in next(iter(scores.values()), {}):
        flat[f"{stage}/avg/{name}"] = sum(m[name] for m in scores.values()) / len(scores)
    module.log_dict(flat, add_dataloader_idx=False, sync_dist=False)
    return flat


def model_inputs(batch: Mapping[str, torch.Tensor], keys: Iterable[str] = ("input_ids", "attention_mask")) -> dict:
    return {key: batch[key] for key in keys if key in batch}


class TaskModule(pl.LightningModule):
    """The plumbing every task module shares: the wrapped model, optimizer settings, scores, Lightning hooks.

    Subclasses define `training_step`, `_eval_step(batch, dataloader_idx)` and `_score(stage)`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float = 0.1,
        codebook_lr_scale: float = 1.0,
        asg: Mapping[str, Any] | None = None,  # the `asg` config; None leaves the model as it is
        # (V,) k-means weights of the embedding rows (asg.row_weights), or a function that gives them once the
        # datamodule has read the training split (asg.row_weights=train)
        row_weights: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode; dropout belongs in fine-tuning
        self.optimizer_factory = optimizer
        self.warmup_ratio, self.codebook_lr_scale = warmup_ratio, codebook_lr_scale
        self.asg_cfg, self.row_weights = asg, row_weights
        self.compression: dict[str, Any] = {}
        self.scores: dict[str, float] = {}
        # every validation's scores with its optimizer step and epoch: the learning curve metrics.json keeps
        self.val_history: list[dict[str, Any]] = []
        self._train_losses: list[float] = []  # since the last validation, for the curve's mean training loss

    def configure_model(self) -> None:
        # Lightning calls this after the process group is up and before DDP wraps the model, the optimizer is
        # built or a checkpoint is restored: rank 0 fits the compression once and every rank installs it.
        if self.compression or self.asg_cfg is None:
            return
        distributed = self.trainer.world_size > 1
        self.compression = compress_model(
            self.model,
            self.asg_cfg,
            rank=self.trainer.global_rank,
            broadcast=self.trainer.strategy.broadcast if distributed else None,
            device=self.trainer.strategy.root_device,
            row_weights=self.row_weights() if callable(self.row_weights) else self.row_weights,
        )
        # The code table never changes and every rank now holds the same one: DDP must not send it from rank 0
        # before every forward (16 MB a step for XLM-R at m=32). DDP skips the buffers named here.
        constant = {id(b) for m in self.modules() if isinstance(m, CompressedEmbedding) for b in m.buffers()}
        self._ddp_params_and_buffers_to_ignore = [name for name, b in self.named_buffers() if id(b) in constant]
        for logger in self.loggers:  # seen as soon as the fit ends, also for a run that fails or is still training
            logger.log_hyperparams({"compression": self.compression})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # what `asg.export` needs to rebuild the compressed modules' shapes before loading the weights
        checkpoint["asg_compression"] = {
            "stats": self.compression,
            "specs": compressed_specs(self.model),
        }

    def _history_file(self) -> Path:
        return Path(self.trainer.default_root_dir) / VAL_HISTORY

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run's curve starts with the validations up to its checkpoint's step. They are read from the run
        # dir, not the checkpoint: one saved at the end of an epoch precedes that epoch's validation, which the
        # resumed run does not repeat.
        path = self._history_file()
        saved = json.loads(path.read_text()) if path.is_file() else []
        self.val_history = [point for point in saved if point["step"] <= checkpoint["global_step"]]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._train_losses.append(float(outputs["loss"]))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        for name in [name for name in self.scores if name.startswith("val/")]:
            del self.scores[name]  # a validation that scores nothing must not repeat the previous one's scores
        self._score("val")
        current = {name: float(value) for name, value in self.scores.items() if name.startswith("val/")}
        if current and not self.trainer.sanity_checking:
            losses, self._train_losses = self._train_losses, []
            step = self.trainer.global_step
            self.val_history = [point for point in self.val_history if point["step"] != step] + [
                {
                    "step": step,
                    "epoch": self.current_epoch,
                    "train_loss": sum(losses) / len(losses) if losses else None,
                    "scores": current,
                }
            ]
            if self.trainer.is_global_zero:
                write_json_atomic(self._history_file(), self.val_history)

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def configure_optimizers(self) -> dict:
        return configure_adamw(
            self, self.optimizer_factory, warmup_ratio=self.warmup_ratio, codebook_lr_scale=self.codebook_lr_scale
        )
