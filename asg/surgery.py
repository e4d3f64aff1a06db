"""Swap a transformers model's input embedding (and optionally its output head) for compressed modules."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from asg.embedding import CompressedEmbedding
from asg.methods import get_method, storage_dtype
from asg.row_weights import check_row_weights

log = logging.getLogger(__name__)


class ASGOutputHead(nn.Module):
    """An output projection scored through a compressed embedding (ASG's codebooks), never through its (V, d) matrix.

    `embedding.logits` uses the method's factorised form (per-sub-space scores gathered by the codes, or the low-rank
    bottleneck). `weight` still rebuilds the matrix, for code that reads `head.weight` (transformers' tie checks).
    """

    def __init__(self, embedding: CompressedEmbedding, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.embedding = embedding
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.dense_weight()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., V)
        logits = self.embedding.logits(hidden)
        if self.bias is None:
            return logits
        return logits.add_(self.bias.to(logits.dtype))  # in place: a second (..., V) tensor is what this head avoids


def heads_tied(model: PreTrainedModel) -> bool:
    """Whether the output head shares its weight with the input embedding (dense or compressed)."""
    head = model.get_output_embeddings()
    if head is None:
        return False
    embedding = model.get_input_embeddings()
    if isinstance(head, ASGOutputHead):  # already compressed: tied when it reads the input's codebooks
        return head.embedding is embedding
    if not isinstance(embedding, nn.Embedding):  # a compressed input with a dense head
        return False
    return head.weight is embedding.weight or head.weight.data_ptr() == embedding.weight.data_ptr()


def resolve_fit_device(value: str | None, trainer_device: torch.device | str = "cpu") -> torch.device:
    """The device `asg.fit_device` names: "auto" (or None) is the trainer's; a CUDA device must be visible."""
    if value in (None, "auto"):
        return torch.device(trainer_device)
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"asg.fit_device={value} is not a device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"asg.fit_device={value} but no CUDA device is visible here; use asg.fit_device=auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"asg.fit_device={value}: fits run on cpu or cuda; use auto, cpu, cuda or cuda:N")
    return device


def fit_compression(
    model: PreTrainedModel,
    settings: Mapping[str, Any],
    *,
    device: torch.device | str | None = None,
    row_weights: torch.Tensor | None = None,  # (V,) k-means weights of the rows (asg.row_weights)
) -> tuple[CompressedEmbedding, CompressedEmbedding | None]:
    """Fit the compressed input embedding (and the untied head's, if `compress_head`): the expensive part.

    `settings` are a method's resolved settings (`asg.methods`); the fit runs on `device` (default: where the
    embedding is) in float32, whatever the ambient default device and dtype, and the modules come back on the CPU.
    Nothing in the model changes here, so in distributed training one rank fits and the others receive the modules.
    """
    dense = model.get_input_embeddings()
    if not isinstance(dense, nn.Embedding):
        raise TypeError(f"expected a dense nn.Embedding as input embedding, found {type(dense).__name__}")
    method, stored = get_method(settings["method"]), storage_dtype(settings)
    device = torch.device(device) if device is not None else dense.weight.device

    weighted = {}
    if row_weights is not None:
        check_row_weights(settings)
        weighted = {"row_weights": row_weights.to(device)}

    def build(weight: torch.Tensor, padding_idx: int | None) -> CompressedEmbedding:
        # CPU copies: a broadcast to other ranks pickles tensors with their device, and the fit device may be busy
        module = method.build(weight.detach().to(device), settings, padding_idx, **weighted).cpu()
        module.storage_dtype = stored
        return module

    start = time.perf_counter()
    embedding = build(dense.weight, dense.padding_idx)
    embedding.fit_seconds, embedding.fit_device = time.perf_counter() - start, str(device)
    head = model.get_output_embeddings()
    head_embedding = None
    if head is not None and not heads_tied(model) and settings.get("compress_head"):
        head_embedding = build(head.weight, None)
    return embedding, head_embedding


def _refused_save_pretrained(*args: Any, **kwargs: Any) -> None:
    raise TypeError(
        "save_pretrained would write this compressed model as a dense checkpoint, which loads a random embedding "
        "in place of its codebooks; use asg.export.save_compressed(model, out_dir, tokenizer, family=...) or "
        "`python -m asg.export RUN_DIR OUT_DIR`"
    )


def install(
    model: PreTrainedModel, embedding: CompressedEmbedding, head_embedding: CompressedEmbedding | None = None
) -> dict[str, Any]:
    """Put fitted modules into the model, in place; return the compression statistics.

    The new module goes in through `set_input_embeddings`, so models that share one embedding across
    encoder and decoder (mT5) keep sharing it. A head tied to the input embedding is rebuilt from the same
    trainable tensors; an untied head (mT5's lm_head) is replaced only when `head_embedding` is given.
    """
    dense = model.get_input_embeddings()
    if not isinstance(dense, nn.Embedding):
        raise TypeError(f"expected a dense nn.Embedding as input embedding, found {type(dense).__name__}")
    tied = heads_tied(model)
    # the model's device and float dtype (integer codes stay integers); a trainer's precision converts them later
    device, dtype = dense.weight.device, dense.weight.dtype
    model.set_input_embeddings(embedding.to(device, dtype))
    model.save_pretrained = _refused_save_pretrained  # and so push_to_hub, which calls it
    stats: dict[str, Any] = {"method": embedding.method, **embedding.stats()}
    if getattr(embedding, "fit_seconds", None) is not None:
        stats["fit_seconds"], stats["fit_device"] = round(embedding.fit_seconds, 3), embedding.fit_device
    head = model.get_output_embeddings()
    if tied:
        model.set_output_embeddings(ASGOutputHead(embedding, getattr(head, "bias", None)))
        model.config.tie_word_embeddings = False  # the sharing now lives inside ASGOutputHead
        stats["head"] = "tied"
    elif head is not None and head_embedding is not None:
        model.set_output_embeddings(ASGOutputHead(head_embedding.to(device, dtype), head.bias))
        stats["head"] = "compressed"
        stats["head_stats"] = head_embedding.stats()
    else:
        stats["head"] = "dense" if head is not None else "none"
    log.info(
        "%s: kept %.3f%% of embedding parameters, %.3f%% of bytes, relative error %.4f",
        embedding.method,
        stats["params_kept_pct"],
        stats["bytes_kept_pct"],
        stats["rel_error"],
    )
    return stats


def compress_model(
    model: PreTrainedModel,
    asg_cfg: Mapping[str, Any],
    *,
    rank: int = 0,
    broadcast: Callable[[Any], Any] | None = None,
    device: torch.device | str | None = None,  # the trainer's device, which asg.fit_device=auto fits on
    row_weights: torch.Tensor | None = None,  # what asg.row_weights gives (asg.row_weights.fit_row_weights)
) -> dict[str, Any]:
    """Compress the model per the `asg` config; return the statistics (the settings under `settings`).

    In distributed training pass the strategy's rank and `broadcast`: only rank 0 fits, every rank installs
    the same modules, so all ranks start from identical codebooks. When the fit fails on rank 0, every rank
    raises at once rather than wait in the broadcast until the process group times out.
    """
    if asg_cfg["method"] == "none":
        return dense_stats(model)
    hidden, vocab = model.get_input_embeddings().weight.shape[1], model.get_input_embeddings().weight.shape[0]
    settings = get_method(asg_cfg["method"]).resolve(asg_cfg, vocab, hidden)
    fit_device = resolve_fit_device(asg_cfg.get("fit_device"), device or model.get_input_embeddings().weight.device)
    fitted: Any = None
    if rank == 0:
        try:
            fitted = fit_compression(model, settings, device=fit_device, row_weights=row_weights)
        except Exception as err:
            if broadcast is not None:  # the message instead of the modules, so the other ranks stop waiting
                broadcast(f"{type(err).__name__}: {err}")
            raise
    if broadcast is not None:
        fitted = broadcast(fitted)
    if isinstance(fitted, str):
        raise RuntimeError(f"the compression fit failed on rank 0 ({fitted}); this rank stops too")
    stats = install(model, *fitted)
    return stats | {"settings": {key: value for key, value in settings.items() if _plain(value)}}


def compressed_modules(model: nn.Module) -> dict[str, CompressedEmbedding]:
    """The model's outermost compressed embeddings by every name they have (a tied head's is the input's; a tier
    of `asg.method=tiered` is part of its embedding, not one of its own)."""
    found = {n: m for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, CompressedEmbedding)}
    inner = {id(c) for m in found.values() for c in m.modules() if c is not m}
    return {name: m for name, m in found.items() if id(m) not in inner}


def compressed_specs(model: PreTrainedModel) -> dict[str, dict[str, Any]]:
    """Specs of the compressed input embedding and head, keyed `input` / `head` (empty for a dense model)."""

    def spec(embedding: CompressedEmbedding) -> dict[str, Any]:
        return embedding.spec() | {"storage_dtype": str(embedding.storage_dtype).removeprefix("torch.")}

    specs = {}
    if isinstance(model.get_input_embeddings(), CompressedEmbedding):
        specs["input"] = spec(model.get_input_embeddings())
    head = model.get_output_embeddings()
    if isinstance(head, ASGOutputHead):
        specs["head"] = {"tied": head.embedding is model.get_input_embeddings(), **spec(head.embedding)}
        specs["head"]["bias"] = head.bias is not None
    return specs


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def apply_asg(
    model: PreTrainedModel, *, m: int, k: int, compress_head: bool = False, **pq_kwargs: Any
) -> dict[str, Any]:
    """ASG (product quantization) with explicit settings: fit and install in one call."""
    settings = {"method": "pq", "m": m, "k": k, "compress_head": compress_head, "progress": False, **pq_kwargs}
    return install(model, *fit_compression(model, settings))


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
        "head": "none" if head is None else ("tied" if heads_tied(model) else "dense"),
    }
