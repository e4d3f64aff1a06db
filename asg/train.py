"""The one orchestration function: config -> data, model, ASG surgery, trainer -> fit, test, metrics.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asg.loggers import finish_wandb
from asg.methods import get_method
from asg.models import hidden_and_vocab, load_config, load_model, load_tokenizer, resolve_name_or_path
from asg.results import environment, write_json_atomic

log = logging.getLogger(__name__)

def check_asg_config(asg_cfg: DictConfig, *, hidden: int, vocab: int) -> None:
    """Fail before any data is read when the compression settings cannot fit this model."""
    if asg_cfg.method == "none":
        return
    get_method(asg_cfg.method).resolve(OmegaConf.to_container(asg_cfg, resolve=True), vocab, hidden)


def task_recipe(cfg: DictConfig) -> tuple[str, DictConfig, DictConfig]:
    """(model family, datamodule config, module config) for this model x task cell."""
    task = cfg.task
    if cfg.model.get("text_to_text") and task.get("text_to_text"):
        recipe = task.text_to_text
        family = "text_to_text"
    else:
        recipe, family = task, task.family
    if recipe.get("datamodule") is None or recipe.get("module") is None:
        raise NotImplementedError(
            f"task={task.name} ({family}) is not implemented yet: conf/task/{task.name}.yaml has no datamodule/module"
        )
    return family, recipe.datamodule, recipe.module


def summary(metrics: dict[str, Any]) -> str:
    c = metrics["compression"]
    lines = [
        f"{metrics['task']} | {metrics['model_label']} | asg.method={c['method']}"
        + (f" m={metrics['asg']['m']} k={metrics['asg']['k']}" if c["method"] != "none" else ""),
        f"  embedding kept: {c['params_kept_pct']:.3f}% of parameters, {c['bytes_kept_pct']:.3f}% of bytes",
    ]
    lines += [f"  {name}: {value:.2f}" for name, value in sorted(metrics["scores"].items()) if "/avg/" in name]
    lines.append(f"  wall time {metrics['wall_seconds']:.0f}s; metrics in {metrics['output_dir']}/metrics.json")
    return "\n".join(lines)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune and evaluate one configuration; write `metrics.json` into the run's output dir."""
    started = time.perf_counter()
    task = cfg.task
    family, datamodule_cfg, module_cfg = task_recipe(cfg)
    name_or_path = resolve_name_or_path(cfg.model)
    hidden, vocab = hidden_and_vocab(load_config(name_or_path))
    check_asg_config(cfg.asg, hidden=hidden, vocab=vocab)
    pl.seed_everything(cfg.seed, workers=True)

    tokenizer = load_tokenizer(name_or_path)
    datamodule = instantiate(datamodule_cfg)(tokenizer)
    labels = list(task.labels) if family in ("token_classification", "sequence_classification") else None
    model = load_model(name_or_path, family, labels=labels)
    module = instantiate(module_cfg)(
        model,
        optimizer=instantiate(cfg.optimizer),
        warmup_ratio=cfg.scheduler.warmup_ratio,
        codebook_lr_scale=cfg.asg.codebook_lr_scale,
        asg=OmegaConf.to_container(cfg.asg, resolve=True),
    )
    loggers = [instantiate(cfg.logger)] if cfg.get("logger") else []
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    failed = True
    try:
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        train_seconds = time.perf_counter() - fit_started
        for logger in loggers:
            logger.log_hyperparams({"compression": module.compression})
        trainer.test(module, datamodule=datamodule)
        failed = False
    finally:
        finish_wandb(loggers, failed=failed)

    output_dir = Path(cfg.paths.output_dir)
    metrics = {
        "task": task.name,
        "family": family,
        "model": cfg.model.name,
        "model_label": cfg.model.label,
        "name_or_path": name_or_path,
        "seed": cfg.seed,
        "metric": task.metric,
        "data": cfg.data.dir or "hub",
        "transfer": {
            "name": cfg.transfer.name,
            "train_lang": datamodule.train_lang,
            "eval_langs": datamodule.eval_langs,
        },
        "asg": OmegaConf.to_container(cfg.asg, resolve=True),
        "compression": module.compression,
        "scores": {name: float(value) for name, value in module.scores.items()},
        "train_samples": datamodule.num_train_samples,
        # Where the setting departs from the paper's (e.g. offline training data), said next to the scores.
        "notes": list(getattr(datamodule, "notes", [])),
        "steps": trainer.global_step,
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "versions": environment(),
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", metrics)
        log.info("Result summary\n%s", summary(metrics))
    return metrics
