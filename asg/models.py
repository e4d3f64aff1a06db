"""Resolve where a backbone comes from and load it for a task family."""

from __future__ import annotations

import importlib
import os
from typing import Any

from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from asg.surgery import heads_tied

AUTO_CLASSES = {
    "token_classification": AutoModelForTokenClassification,
    "sequence_classification": AutoModelForSequenceClassification,
    "question_answering": AutoModelForQuestionAnswering,
    "text_to_text": AutoModelForSeq2SeqLM,
}


def resolve_name_or_path(model_cfg: Any) -> str:
    """Hub id or local directory of the backbone, with an error that says how to get a missing local model."""
    name = model_cfg.get("name_or_path")
    if not name and model_cfg.get("package"):
        try:
            package = importlib.import_module(model_cfg.package)
        except ImportError as err:
            raise FileNotFoundError(
                f"model={model_cfg.name} ships in the pip package {model_cfg.package!r}, which is not installed: "
                f"{model_cfg.hint}"
            ) from err
        name = str(package.get_model_path())
    if not name:
        raise FileNotFoundError(f"model={model_cfg.name} has no model directory set: {model_cfg.hint}")
    if model_cfg.get("local_only") and not os.path.isdir(name):
        raise FileNotFoundError(f"model={model_cfg.name}: directory {name!r} does not exist: {model_cfg.hint}")
    return str(name)


def hidden_and_vocab(config: PretrainedConfig) -> tuple[int, int]:
    """(hidden size, vocabulary size) of a transformers config, whatever the architecture calls them."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    return int(hidden), int(config.vocab_size)


def loader_settings(model_cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config kwargs, tokenizer kwargs) from the model config's optional `loader:` mapping (conf/model/*.yaml)."""
    loader = model_cfg.get("loader") or {}
    return dict(loader.get("config") or {}), dict(loader.get("tokenizer") or {})


def load_config(name_or_path: str, *, model_type: str | None = None, **overrides: Any) -> PretrainedConfig:
    """The backbone's config; `model_type` names the architecture of an old config.json that lacks the key (BioBERT)."""
    if model_type is None:
        return AutoConfig.from_pretrained(name_or_path, **overrides)
    return CONFIG_MAPPING[model_type].from_pretrained(name_or_path, **overrides)


def load_tokenizer(
    name_or_path: str, *, config: PretrainedConfig | None = None, **tokenizer_kwargs: Any
) -> PreTrainedTokenizerBase:
    """The fast tokenizer; `config` picks its class when the repo has no tokenizer_config.json naming one."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, config=config, **tokenizer_kwargs)
    if not tokenizer.is_fast:
        raise ValueError(f"{name_or_path}: a fast tokenizer is needed for word alignment and offset mapping")
    positions = getattr(config, "max_position_embeddings", None)
    if positions and tokenizer.model_max_length > positions:
        # repos without a tokenizer_config.json (BioBERT's) leave it unbounded; the model's positions bound it
        tokenizer.model_max_length = positions
    return tokenizer


def load_model(
    name_or_path: str, family: str, *, labels: list[str] | None = None, **config_kwargs: Any
) -> PreTrainedModel:
    """Pretrained backbone with the head of `family`; `labels` sizes a classification head.

    `config_kwargs` go to `load_config` (e.g. `model_type`) and override config values.
    """
    if family not in AUTO_CLASSES:
        raise ValueError(f"unknown task family {family!r}; expected one of {sorted(AUTO_CLASSES)}")
    if labels is not None:
        config_kwargs |= {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    config = load_config(name_or_path, **config_kwargs)
    model = AUTO_CLASSES[family].from_pretrained(name_or_path, config=config)
    if model.get_output_embeddings() is not None and not heads_tied(model):
        # transformers 5 forces MT5Config.tie_word_embeddings=True, yet keeps a checkpoint's own lm_head (mt5-base's);
        # the config must say so, or a later tie_weights() or resize_token_embeddings() ties the head silently
        model.config.tie_word_embeddings = False
    return model


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each layer's activations in the backward (non-reentrant torch checkpointing, which replays the
    layer's dropout masks); transformers 5 names what 4.x called gradient checkpointing activation checkpointing."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
