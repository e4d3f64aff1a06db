"""The one orchestration function: config -> data, model, ASG surgery, trainer -> fit, test, metrics.json."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from asg.loggers import finish_wandb
from asg.methods import get_method
from asg.models import hidden_and_vocab, load_config, load_model, load_tokenizer, loader_settings, resolve_name_or_path
from asg.results import environment, write_json_atomic
from asg.surgery import resolve_fit_device

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


def check_asg_config(asg_cfg: DictConfig, *, hidden: int, vocab: int) -> None:
    """Fail before any data is read when the compression settings cannot fit this model."""
    if asg_cfg.method == "none":
        return
    resolve_fit_device(asg_cfg.get("fit_device"))
    get_method(asg_cfg.method).resolve(OmegaConf.to_container(asg_cfg, resolve=True), vocab, hidden)


def comparable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without what may differ between a run and its resume."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for key in ("resume", "paths", "callbacks"):
        config.pop(key, None)
    return config


def extra_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra, e.g. in tests that compose)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint `resume=RUN_DIR` continues from, after checking the run is the same configuration."""
    if not cfg.get("resume"):
        return None
    run_dir = Path(cfg.resume)
    ckpt = run_dir / CHECKPOINTS / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"resume={run_dir}: no checkpoint at {ckpt}. Point resume= at the run dir of a run that saved one "
            "(checkpoint.every_n_steps), or drop resume= to start afresh."
        )
    if run_dir.resolve() != output_dir.resolve():
        raise ValueError(f"resume={run_dir} but this run writes to {output_dir}; remove the hydra.run.dir override")
    saved_file = run_dir / CHECKPOINTS / "config.json"
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        current = comparable_config(cfg)
        changed = sorted(
            key for key in saved["config"].keys() | current.keys() if saved["config"].get(key) != current.get(key)
        )
        if changed:
            raise ValueError(
                f"resume={run_dir} was started with a different configuration (differs in: {', '.join(changed)}); "
                f"repeat its overrides plus resume=: {' '.join(saved['overrides'])} resume={run_dir}"
            )
    log.info("resuming from %s", ckpt)
    return ckpt


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
    settings = " ".join(
        f"{key}={c[key]}" for key in ("m", "k", "rank", "stages") if c["method"] != "none" and c.get(key) is not None
    )
    lines = [
        f"{metrics['task']} | {metrics['model_label']} | asg.method={c['method']} {settings}".rstrip(),
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
    config_kwargs, tokenizer_kwargs = loader_settings(cfg.model)
    config = load_config(name_or_path, **config_kwargs)
    hidden, vocab = hidden_and_vocab(config)
    check_asg_config(cfg.asg, hidden=hidden, vocab=vocab)
    pl.seed_everything(cfg.seed, workers=True)

    tokenizer = load_tokenizer(name_or_path, config=config, **tokenizer_kwargs)
    datamodule = instantiate(datamodule_cfg)(tokenizer)
    labels = list(task.labels) if family in ("token_classification", "sequence_classification") else None
    model = load_model(name_or_path, family, labels=labels, **config_kwargs)
    module = instantiate(module_cfg)(
        model,
        optimizer=instantiate(cfg.optimizer),
        warmup_ratio=cfg.scheduler.warmup_ratio,
        codebook_lr_scale=cfg.asg.codebook_lr_scale,
        asg=OmegaConf.to_container(cfg.asg, resolve=True),
    )
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    loggers = [instantiate(cfg.logger)] if cfg.get("logger") else []
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / CHECKPOINTS,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=cfg.checkpoint.every_n_steps,
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=[checkpoints, *extra_callbacks(cfg)]
    )
    if ckpt_path is None and trainer.is_global_zero:
        write_json_atomic(
            output_dir / CHECKPOINTS / "config.json", {"config": comparable_config(cfg), "overrides": job_overrides()}
        )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    failed = True
    try:
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        train_seconds = time.perf_counter() - fit_started
        for logger in loggers:
            logger.log_hyperparams({"compression": module.compression})
        trainer.test(module, datamodule=datamodule)
        failed = False
    finally:
        finish_wandb(loggers, failed=failed)

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
        # a resumed run's steps and scores cover the whole run; its times only the part after the resume
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "versions": environment(),
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", metrics)
        if not cfg.checkpoint.keep:
            shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
        log.info("Result summary\n%s", summary(metrics))
    return metrics
