"""Aggregate Semantic Grouping: product-quantized input embeddings for pretrained transformers."""

__version__ = "0.1.0"
