"""Aggregate Semantic Grouping: product-quantized token embeddings for pretrained transformers."""

from omegaconf import OmegaConf

from asg.export_config import register_auto_classes

__version__ = "0.1.0"


def _first_set(*values: object) -> object:
    return next((value for value in values if value is not None), None)


# `${first_set:${resume},...}` in conf/config.yaml: a resumed run goes back into its own run dir.
OmegaConf.register_new_resolver("first_set", _first_set, replace=True)

# an export's config.json (model_type "asg") becomes known to transformers' AutoConfig and Auto model classes
register_auto_classes()
