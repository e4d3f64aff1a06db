"""An export's config.json (`ASGConfig`, model_type "asg") and its registration with transformers' Auto classes.

The export layout is described in `asg.export`. This module is apart from it so that `import asg` can register the
config without importing `asg.export`, which `python -m asg.export` runs as a script.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.utils import CONFIG_NAME, cached_file

from asg.models import AUTO_CLASSES

# 4: compressed float tensors stored in asg.storage_dtype (e.g. float16); 3: code tables bit-packed in
# asg.safetensors; 2: the same with codes in their integer dtype (2 and 3 still read); 1: asg.json and
# model.safetensors (refused)
FORMAT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
WEIGHTS = "asg.safetensors"  # not model.safetensors, which every transformers model class would read
# the base config's `transformers_weights`: the error a model class of the base's type raises (see asg.export)
REFUSAL = "an asg export: load it with asg.export.load_compressed, or with transformers' Auto classes after import asg"


class ASGConfig(PreTrainedConfig):
    """An export's config.json: what `asg.export.load_compressed` rebuilds the model from."""

    model_type = "asg"

    format_version: int = FORMAT_VERSION
    architecture: str = ""  # the transformers model class
    family: str | None = None  # the task family, a key of asg.models.AUTO_CLASSES, when the exporter named one
    tied_head: bool = False
    specs: dict | None = None  # asg.surgery.compressed_specs(model)
    base_config: dict | None = None  # the model's own config as its config.json would hold it, REFUSAL added

    def model_config(self) -> PreTrainedConfig:
        """The config the model class is built from."""
        settings = {k: v for k, v in self.base_config.items() if k != "transformers_weights"}
        return AutoConfig.for_model(**settings)


def read_config(path: str | Path) -> ASGConfig:
    """The ASGConfig of an export directory, with an error that says what else the directory holds."""
    settings, _ = ASGConfig.get_config_dict(path, local_files_only=True)
    model_type = settings.get("model_type")
    if model_type != ASGConfig.model_type:
        what = "an asg export of format 1: re-export it" if (Path(path) / "asg.json").is_file() else "no asg export"
        raise ValueError(f"{path} is {what} (its {CONFIG_NAME} has model_type {model_type!r})")
    config = ASGConfig.from_dict(settings)
    if config.format_version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: format version {config.format_version}, this asg reads {READABLE_VERSIONS}")
    return config


# what the Auto classes pass to a model class's from_pretrained besides the user's own arguments and the config
_HUB_ARGUMENTS = {"cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token"}
_AUTO_ARGUMENTS = {"trust_remote_code", "adapter_kwargs", "_from_auto", "_from_pipeline"}


class _AutoLoader:
    """What an Auto model class calls for an "asg" config: `asg.export.load_compressed`, for one task family."""

    config_class = ASGConfig
    family: str

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *args: Any, config: ASGConfig | None = None, **kwargs: Any
    ) -> PreTrainedModel:
        from asg.export import load_compressed

        if kwargs.get("dtype") == "auto":  # the checkpoint's dtypes, which load_compressed keeps (pipelines ask so)
            del kwargs["dtype"]
        hub = {k: v for k, v in kwargs.items() if k in _HUB_ARGUMENTS}
        path = Path(cached_file(name_or_path, WEIGHTS, **hub)).parent  # a Hub repo is fetched into the cache
        saved = read_config(path)
        unknown = [*args, *sorted(set(kwargs) - _HUB_ARGUMENTS - _AUTO_ARGUMENTS)]
        if config is not None and config.to_diff_dict() != saved.to_diff_dict():
            unknown.append("config overrides")  # the Auto class put e.g. num_labels=... into the config
        if unknown:  # dtype, device_map, num_labels...: ignoring them would give another model than the one asked for
            raise TypeError(f"an asg export loads as it was saved; from_pretrained got {unknown}")
        if saved.family not in (None, cls.family):
            auto_class = AUTO_CLASSES[saved.family].__name__
            raise ValueError(f"{name_or_path} holds a {saved.family} model: load it with {auto_class}")
        return load_compressed(path)


def register_auto_classes() -> None:
    """Make `AutoConfig` read an export's config.json and each family's Auto model class load it (`import asg` does)."""
    AutoConfig.register(ASGConfig.model_type, ASGConfig)
    for family, auto_class in AUTO_CLASSES.items():
        name = auto_class.__name__.replace("AutoModel", "ASG")  # ASGForTokenClassification, ...
        auto_class.register(ASGConfig, type(name, (_AutoLoader,), {"family": family}))
