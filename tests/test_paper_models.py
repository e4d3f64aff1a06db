"""The paper's four models as their Hub repositories really are (tests/paper_models.py), through the pipeline's path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, BertConfig

import asg.train
from asg.models import load_config, load_model, load_tokenizer, loader_settings
from asg.train import train
from tests.paper_models import MT5_VOCAB_PADDING, save_paper_models
from tests.test_pipeline import CONF, make_cfg

# the files each fixture holds: the real repository's, less README, .gitattributes and other frameworks' weights
HUB_FILES = {
    "mbert": ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"],
    "xlmr": ["config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json"],
    "mt5": [
        "config.json",
        "generation_config.json",
        "pytorch_model.bin",
        "special_tokens_map.json",
        "spiece.model",
        "tokenizer_config.json",
    ],
    "biobert": ["config.json", "pytorch_model.bin", "vocab.txt"],
}
ENCODER_TASKS = ["bc5cdr", "wikiann", "xnli", "xquad", "mlqa"]
CELLS = [(model, task) for model in ("mbert", "xlmr", "biobert") for task in ENCODER_TASKS]
CELLS += [("mt5", task) for task in ENCODER_TASKS]  # xnli, xquad, mlqa generative; bc5cdr, wikiann on the encoder


@pytest.fixture(scope="session")
def paper_dirs(tmp_path_factory) -> dict[str, Path]:
    return save_paper_models(tmp_path_factory.mktemp("paper"))


def loader(model: str) -> tuple[dict, dict]:
    return loader_settings(OmegaConf.load(CONF / "model" / f"{model}.yaml"))


def tokenizer_for(paper_dirs, model: str):
    config_kwargs, tokenizer_kwargs = loader(model)
    path = str(paper_dirs[model])
    return load_tokenizer(path, config=load_config(path, **config_kwargs), **tokenizer_kwargs)


def test_fixtures_have_the_hub_layout(paper_dirs):
    assert {name: sorted(p.name for p in path.iterdir()) for name, path in paper_dirs.items()} == HUB_FILES
    biobert = json.loads((paper_dirs["biobert"] / "config.json").read_text())
    assert "model_type" not in biobert and "architectures" not in biobert
    assert json.loads((paper_dirs["mt5"] / "config.json").read_text())["tie_word_embeddings"] is False
    checkpoint = torch.load(paper_dirs["mt5"] / "pytorch_model.bin", weights_only=True)
    assert not torch.equal(checkpoint["lm_head.weight"], checkpoint["shared.weight"])


def test_biobert_config_loads_with_the_model_type_from_its_yaml(paper_dirs):
    with pytest.raises(ValueError, match="model_type"):
        AutoConfig.from_pretrained(paper_dirs["biobert"])
    config_kwargs, _ = loader("biobert")
    assert isinstance(load_config(str(paper_dirs["biobert"]), **config_kwargs), BertConfig)


@pytest.mark.parametrize("model", ["mbert", "xlmr", "mt5", "biobert"])
def test_tokenizers_keep_case(paper_dirs, model):
    tokenizer = tokenizer_for(paper_dirs, model)
    assert tokenizer.is_fast
    assert tokenizer.tokenize("Aspirin") != tokenizer.tokenize("aspirin")


@pytest.mark.parametrize(("model", "positions"), [("mbert", 512), ("xlmr", 512), ("biobert", 512), ("mt5", None)])
def test_tokenizers_know_how_many_positions_the_model_takes(paper_dirs, model, positions):
    # BioBERT's repo has no tokenizer_config.json, so its tokenizer alone would take sequences of any length
    bound = tokenizer_for(paper_dirs, model).model_max_length
    assert bound == positions if positions else bound > 10**6  # mT5's relative positions have no bound


def test_biobert_without_its_tokenizer_setting_would_lower_case(paper_dirs):
    path = str(paper_dirs["biobert"])
    tokenizer = load_tokenizer(path, config=load_config(path, model_type="bert"))
    assert tokenizer.tokenize("Aspirin") == tokenizer.tokenize("aspirin")


def test_mt5_head_loads_untied_and_stays_untied(paper_dirs):
    stored = torch.load(paper_dirs["mt5"] / "pytorch_model.bin", weights_only=True)["lm_head.weight"]
    model = load_model(str(paper_dirs["mt5"]), "text_to_text")
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight is not model.shared.weight
    assert torch.equal(model.lm_head.weight, stored)
    model.tie_weights()  # recomputes the tying from the config: a no-op only because the config says untied
    assert model.lm_head.weight is not model.shared.weight and torch.equal(model.lm_head.weight, stored)
    # one input embedding still feeds encoder and decoder
    assert model.encoder.embed_tokens.weight is model.shared.weight is model.decoder.embed_tokens.weight
    model.resize_token_embeddings(model.config.vocab_size + MT5_VOCAB_PADDING)
    assert model.lm_head.weight is not model.shared.weight
    assert torch.equal(model.lm_head.weight[: len(stored)], stored)


def spy(monkeypatch, name: str) -> list:
    """Record what `asg.train.<name>` returns during a run."""
    returned = []
    real = getattr(asg.train, name)

    def recording(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(asg.train, name, recording)
    return returned


def paper_run(tmp_path, paper_dirs, shared_data, model: str, task: str, *overrides: str) -> dict:
    langs = [] if task == "bc5cdr" else ["transfer.eval_langs=[de,zh]"]
    # a random mT5 never stops early: generating full-length answers is most of a run's time
    short = ["task.max_answer_length=8"] if task in ("xquad", "mlqa") else []
    cfg = make_cfg(
        tmp_path,
        f"model={model}",
        f"task={task}",
        f"model.name_or_path={paper_dirs[model]}",
        f"data.dir={shared_data}",
        "data.max_train_samples=8",
        "data.max_eval_samples=8",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "logger=csv",
        "trainer.fast_dev_run=true",
        "trainer.accelerator=cpu",
        "asg.iters=3",
        "asg.k=32",
        *langs,
        *short,
        *overrides,
    )
    return train(cfg)


@pytest.mark.parametrize(("model", "task"), CELLS)
def test_every_task_runs_a_step_on_the_hub_layout(tmp_path, paper_dirs, shared_data, monkeypatch, model, task):
    tokenizers = spy(monkeypatch, "load_tokenizer")
    metrics = paper_run(tmp_path, paper_dirs, shared_data, model, task)
    assert metrics["steps"] == 1 and metrics["name_or_path"] == str(paper_dirs[model])
    assert metrics["scores"] and all(value == value for value in metrics["scores"].values())  # no NaN
    assert tokenizers[0].tokenize("Aspirin") != tokenizers[0].tokenize("aspirin")
    expected_head = "dense" if metrics["family"] == "text_to_text" else "none"
    assert metrics["compression"]["head"] == expected_head


@pytest.mark.parametrize(("compress_head", "head"), [(False, "dense"), (True, "compressed")])
def test_mt5_head_policy_is_a_switch(tmp_path, paper_dirs, shared_data, monkeypatch, compress_head, head):
    models = spy(monkeypatch, "load_model")
    metrics = paper_run(tmp_path, paper_dirs, shared_data, "mt5", "xnli", f"asg.compress_head={compress_head}")
    assert metrics["compression"]["head"] == head
    assert json.loads((tmp_path / "metrics.json").read_text())["compression"]["head"] == head
    model = models[0]
    assert model.config.tie_word_embeddings is False
    model.tie_weights()  # after surgery and training, nothing may tie the head back to the input embedding
    input_params = {p.data_ptr() for p in model.get_input_embeddings().parameters()}
    if compress_head:
        assert model.lm_head.embedding is not model.get_input_embeddings()
    else:
        assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.data_ptr() not in input_params
