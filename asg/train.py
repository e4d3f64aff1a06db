"""The one orchestration function: config -> data, model, ASG surgery, trainer -> fit, test, metrics.json.

A run dir remembers its configuration (`run_config.json`), so starting a job in it again is safe: a finished run
is reused, an unfinished one continues from `checkpoints/last.ckpt`, and another configuration is refused.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.callbacks import ModelCheckpoint

from asg.data.loaders import build_datamodule
from asg.loggers import finish_wandb
from asg.methods import get_method, storage_dtype
from asg.models import (
    enable_activation_checkpointing,
    hidden_and_vocab,
    load_config,
    load_model,
    load_tokenizer,
    loader_settings,
    resolve_name_or_path,
)
from asg.quantize import FIT_VERSION
from asg.results import code_version, environment, exported_bytes_pct, write_json_atomic
from asg.row_weights import check_row_weights, fit_row_weights
from asg.surgery import compressed_modules, resolve_fit_device

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"
RUN_CONFIG = "run_config.json"
# what a finished run keeps of checkpoints/last.ckpt: the weights asg.export reads, everything, or nothing
KEEP = ("weights", "full", "none")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_training_settings(cfg: DictConfig) -> None:
    """Fail before anything loads on a seed or learning rate that cannot train as meant."""
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ValueError(f"seed={cfg.seed!r} must be an integer")
    lr = cfg.optimizer.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ValueError(f"optimizer.lr={lr!r} must be a positive number; set it with model.lr=..., e.g. model.lr=1e-4")


def check_asg_config(asg_cfg: DictConfig, *, hidden: int, vocab: int) -> None:
    """Fail before any data is read when the compression settings cannot fit this model."""
    if asg_cfg.method == "none":
        return
    scale = asg_cfg.get("codebook_lr_scale")
    if not _is_number(scale) or scale < 0:
        raise ValueError(f"asg.codebook_lr_scale={scale!r} must be a number >= 0 (its lr is this times optimizer.lr)")
    resolve_fit_device(asg_cfg.get("fit_device"))
    storage_dtype(asg_cfg)
    check_row_weights(asg_cfg)
    get_method(asg_cfg.method).resolve(OmegaConf.to_container(asg_cfg, resolve=True), vocab, hidden)


def checkpoint_keep(value: Any) -> str:
    """The `checkpoint.keep` policy; true / false are the earlier switch (keep everything / nothing)."""
    keep = {True: "full", False: "none"}[value] if isinstance(value, bool) else value
    if keep not in KEEP:
        raise ValueError(f"checkpoint.keep={value!r}: choose one of {', '.join(KEEP)}")
    return keep


def comparable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without what may differ between attempts of one run (resume switches, callbacks)."""
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.paths.output_dir = "<run dir>"  # keys that name the run dir compare equal however its path is spelled
    config = OmegaConf.to_container(cfg, resolve=True)
    for key in ("resume", "resume_sweep", "paths", "callbacks"):
        config.pop(key, None)
    return config


def extra_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra, e.g. in tests that compose)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def check_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a run dir that holds a run of another configuration, or one whose configuration is unknown."""
    saved_file = run_dir / RUN_CONFIG
    if not saved_file.is_file():
        found = [str(p) for p in (run_dir / METRICS, run_dir / CHECKPOINTS / "last.ckpt") if p.exists()]
        if found:
            raise ValueError(
                f"{run_dir} holds {' and '.join(found)} but no {RUN_CONFIG}: delete them, or use another dir"
            )
        return
    saved = json.loads(saved_file.read_text())
    current = comparable_config(cfg)
    keys = saved["config"].keys() | current.keys()
    changed = sorted(key for key in keys if saved["config"].get(key) != current.get(key))
    if changed:
        ignored = ("resume=", "resume_sweep=")
        new = [o for o in job_overrides() if o not in saved["overrides"] and not o.startswith(ignored)]
        raise ValueError(
            f"{run_dir} holds a run of a different configuration (differs in: {', '.join(changed)}). Its overrides: "
            f"{' '.join(saved['overrides']) or '(none)'}; this job's differ in: {' '.join(new) or '(none)'}. "
            "Repeat its overrides to continue it (a sweep: the same sweep, values in the same order), "
            "or run in another dir."
        )


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint an unfinished run continues from: its run dir's `checkpoints/last.ckpt`, if there is one.

    `check_run_dir` has made sure it belongs to this configuration. `resume=RUN_DIR` insists on it.
    """
    ckpt = run_dir / CHECKPOINTS / "last.ckpt"
    if cfg.get("resume"):
        if Path(cfg.resume).resolve() != run_dir.resolve():
            raise ValueError(f"resume={cfg.resume} but this run writes to {run_dir}; remove the hydra.run.dir override")
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"resume={cfg.resume}: no checkpoint at {ckpt}. Point resume= at the run dir of a run that saved one "
                "(checkpoint.every_n_steps), or drop resume= to start afresh."
            )
    if not ckpt.is_file():
        return None
    log.info("resuming from %s", ckpt)
    return ckpt


class RandomState(pl.Callback):
    """Keeps the torch generators' states in every checkpoint and restores them on resume.

    A resumed run then draws the dropout masks and the next epoch's shuffle an uninterrupted run would have drawn.
    """

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if state_dict["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state_dict["cuda"])


def finish_checkpoints(trainer: pl.Trainer, keep: str, ckpt_dir: Path) -> None:
    """Shrink a finished run's checkpoints to what `checkpoint.keep` asks for; called on every rank."""
    if keep == "weights" and not trainer.fast_dev_run:  # a smoke test saves no checkpoint to shrink
        # without optimizer state a checkpoint is a third of the size, and still all that asg.export reads
        tmp = ckpt_dir / ".weights.ckpt.tmp"
        trainer.save_checkpoint(tmp, weights_only=True)  # ends in a barrier: every rank calls it
        if trainer.is_global_zero:
            os.replace(tmp, ckpt_dir / "last.ckpt")
    elif keep == "none" and trainer.is_global_zero:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


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
        f"  embedding kept: {c['params_kept_pct']:.3f}% of parameters, "
        f"{exported_bytes_pct(c):.3f}% of bytes as exported",
    ]
    lines += [f"  {name}: {value:.2f}" for name, value in sorted(metrics["scores"].items()) if "/avg/" in name]
    lines.append(f"  wall time {metrics['wall_seconds']:.0f}s; metrics in {metrics['output_dir']}/metrics.json")
    return "\n".join(lines)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune and evaluate one configuration; write `metrics.json` into the run's output dir.

    In a run dir that already finished with this configuration, nothing runs: its `metrics.json` is returned.
    """
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    check_run_dir(cfg, output_dir)
    if (output_dir / METRICS).is_file():
        log.info(
            "%s finished with this configuration before: its metrics.json is reused (delete it to rerun)", output_dir
        )
        return json.loads((output_dir / METRICS).read_text())
    keep = checkpoint_keep(cfg.checkpoint.keep)
    check_training_settings(cfg)
    task = cfg.task
    family, datamodule_cfg, module_cfg = task_recipe(cfg)
    name_or_path = resolve_name_or_path(cfg.model)
    config_kwargs, tokenizer_kwargs = loader_settings(cfg.model)
    config = load_config(name_or_path, **config_kwargs)
    hidden, vocab = hidden_and_vocab(config)
    check_asg_config(cfg.asg, hidden=hidden, vocab=vocab)
    pl.seed_everything(cfg.seed, workers=True)

    tokenizer = load_tokenizer(name_or_path, config=config, **tokenizer_kwargs)
    asg_settings = OmegaConf.to_container(cfg.asg, resolve=True)
    datamodule = build_datamodule(datamodule_cfg, cfg, tokenizer)
    row_weights = (
        None if cfg.asg.method == "none" else fit_row_weights(asg_settings, tokenizer, vocab, datamodule.train_rows)
    )
    labels = list(task.labels) if family in ("token_classification", "sequence_classification") else None
    model = load_model(name_or_path, family, labels=labels, **config_kwargs)
    if cfg.model.activation_checkpointing:
        enable_activation_checkpointing(model)
    module = instantiate(module_cfg)(
        model,
        optimizer=instantiate(cfg.optimizer),
        warmup_ratio=cfg.scheduler.warmup_ratio,
        codebook_lr_scale=cfg.asg.codebook_lr_scale,
        asg=asg_settings,
        row_weights=row_weights,
    )
    ckpt_path = resume_checkpoint(cfg, output_dir)
    loggers = [instantiate(cfg.logger)] if cfg.get("logger") else []
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / CHECKPOINTS,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=cfg.checkpoint.every_n_steps,
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=[checkpoints, RandomState(), *extra_callbacks(cfg)]
    )
    if trainer.is_global_zero and not (output_dir / RUN_CONFIG).is_file():
        write_json_atomic(output_dir / RUN_CONFIG, {"config": comparable_config(cfg), "overrides": job_overrides()})
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    failed = True
    try:
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        train_seconds = time.perf_counter() - fit_started
        for embedding in compressed_modules(module.model).values():  # test what an export stores (storage_dtype)
            embedding.round_to_storage()
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
        # validation scores after each validation pass (`step` = optimizer steps so far): the learning curve
        "val_history": module.val_history,
        "train_samples": datamodule.num_train_samples,
        # Where the setting departs from the paper's (e.g. offline training data), said next to the scores.
        "notes": list(getattr(datamodule, "notes", [])),
        "steps": trainer.global_step,
        # a resumed run's steps and scores cover the whole run; its times only the part after the resume
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "versions": environment(),
        "code": code_version(),
        "fit_version": FIT_VERSION,  # the k-means algorithm behind the codes: runs across a change are not seeds
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / METRICS, metrics)  # first: from here on the run counts as finished
    finish_checkpoints(trainer, keep, output_dir / CHECKPOINTS)
    if trainer.is_global_zero:
        log.info("Result summary\n%s", summary(metrics))
    return metrics
