"""Swap a transformers model's input embedding (and optionally its output head) for ASG modules."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from asg.embedding import ASGEmbedding

log = logging.getLogger(__name__)


class ASGOutputHead(nn.Module):
    """An output projection whose (V, d) weight is rebuilt from an ASG embedding's codebooks."""

    def __init__(self, embedding: ASGEmbedding, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.embedding = embedding
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.dense_weight()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., V)
        return F.linear(hidden, self.weight.to(hidden.dtype), self.bias)


def _heads_tied(model: PreTrainedModel) -> bool:
    head = model.get_output_embeddings()
    if head is None:
        return False
    embedding = model.get_input_embeddings()
    return head.weight is embedding.weight or head.weight.data_ptr() == embedding.weight.data_ptr()


def apply_asg(
    model: PreTrainedModel, *, m: int, k: int, compress_head: bool = False, **pq_kwargs: Any
) -> dict[str, Any]:
    """Replace the model's input embedding by its ASG compression, in place; return the statistics.

    The new module goes in through `set_input_embeddings`, so models that share one embedding across
    encoder and decoder (mT5) keep sharing it. A head tied to the input embedding is rebuilt from the same
    codebooks; an untied head (mT5's lm_head) is compressed with its own codebooks only if `compress_head`.
    """
    dense = model.get_input_embeddings()
    if not isinstance(dense, nn.Embedding):
        raise TypeError(f"expected a dense nn.Embedding as input embedding, found {type(dense).__name__}")
    tied = _heads_tied(model)
    start = time.perf_counter()
    asg = ASGEmbedding.from_embedding(dense, m=m, k=k, **pq_kwargs)
    fit_seconds = time.perf_counter() - start
    asg.to(dense.weight.device)
    model.set_input_embeddings(asg)
    stats: dict[str, Any] = {"method": "pq", **asg.stats(), "fit_seconds": round(fit_seconds, 3)}
    head = model.get_output_embeddings()
    if tied:
        model.set_output_embeddings(ASGOutputHead(asg, getattr(head, "bias", None)))
        model.config.tie_word_embeddings = False  # the sharing now lives inside ASGOutputHead
        stats["head"] = "tied"
    elif head is not None and compress_head:
        head_asg = ASGEmbedding.from_embedding(head.weight, m=m, k=k, **pq_kwargs)
        model.set_output_embeddings(ASGOutputHead(head_asg.to(head.weight.device), head.bias))
        stats["head"] = "compressed"
        stats["head_stats"] = head_asg.stats()
    else:
        stats["head"] = "dense" if head is not None else "none"
    log.info(
        "ASG m=%d k=%d: kept %.3f%% of embedding parameters, %.3f%% of bytes, relative error %.4f (%.1fs)",
        m,
        k,
        stats["params_kept_pct"],
        stats["bytes_kept_pct"],
        stats["rel_error"],
        fit_seconds,
    )
    return stats


def dense_stats(model: PreTrainedModel) -> dict[str, Any]:
    """Statistics of an uncompressed model in the same keys as ASG's, for the baseline's results."""
    weight = model.get_input_embeddings().weight
    vocab, hidden = weight.shape
    nbytes = weight.numel() * weight.element_size()
    head = model.get_output_embeddings()
    return {
        "method": "none",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "params_before": weight.numel(),
        "params_after": weight.numel(),
        "params_kept_pct": 100.0,
        "bytes_before": nbytes,
        "bytes_after": nbytes,
        "bytes_kept_pct": 100.0,
        "rel_error": 0.0,
        "head": "none" if head is None else ("tied" if _heads_tied(model) else "dense"),
    }
