"""Optimized product quantization (`asg.method=opq`): a learned rotation before ASG's product quantization.

PQ splits each row into m fixed sub-vectors, so dimensions that vary together but land in different sub-spaces
are quantized as if independent. OPQ (Ge et al., 2013, non-parametric variant; faiss's OPQMatrix) learns an
orthogonal R (d, d) that makes the split fit: rows E R are product-quantized, and a token's vector is its PQ
reconstruction rotated back, Ê = PQ(E R) R^T. The fit alternates on a row sample: PQ of the rotated rows, then R
as the orthogonal Procrustes solution that maps E onto their reconstruction. R stays fixed while fine-tuning (the
codebooks train as in pq) and is stored: d^2 float32 numbers, counted in the parameter and byte accounting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from asg.embedding import ASGEmbedding, CompressedEmbedding, quantized_stats
from asg.methods import Method, budget_bytes, float_bytes, nearest_setting, pq_options, quantized_bytes, register
from asg.quantize import check_shape, product_quantize, reconstruct

log = logging.getLogger(__name__)


def learn_rotation(
    e: Tensor,
    *,
    m: int,
    k: int,
    rounds: int = 8,  # PQ / Procrustes alternations
    iters: int = 4,  # Lloyd iterations of each round's PQ
    sample_rows: int | None = None,  # rows the rotation is learned on (None: all); at least k
    seed: int = 0,
) -> Tensor:
    """An orthogonal R (d, d) for which PQ of e @ R loses less than PQ of e: alternating PQ and Procrustes."""
    vocab, dim = e.shape
    gen = torch.Generator().manual_seed(seed)
    rows = e if sample_rows is None or sample_rows >= vocab else e[torch.randperm(vocab, generator=gen)[:sample_rows]]
    rotation = torch.eye(dim, dtype=torch.float32, device=e.device)
    for round_ in range(rounds):
        fit = product_quantize(rows @ rotation, m=m, k=k, iters=iters, seed=seed + round_, sample_rows=None)
        target = reconstruct(fit.codes, fit.codebooks)  # (n, d), in the rotated space
        # argmin over orthogonal R of ||rows R - target||_F: U V^T from the SVD of rows^T target
        u, _, vh = torch.linalg.svd(rows.double().t() @ target.double())
        rotation = (u @ vh).float()
        log.debug("OPQ round %d: PQ rel_error %.4f before this rotation", round_, fit.rel_error)
    return rotation


class OPQEmbedding(ASGEmbedding):
    """ASG on rotated rows: codes (V, m) and trainable codebooks (m, k, s) of E R, and the fixed rotation R (d, d).

    A token's vector is its concatenated centroids times R^T; R is a buffer, not trained.
    """

    method = "opq"

    def __init__(self, codes: Tensor, codebooks: Tensor, rotation: Tensor, **kwargs: Any) -> None:
        super().__init__(codes, codebooks, **kwargs)
        if rotation.shape != (self.embedding_dim, self.embedding_dim):
            d = self.embedding_dim
            raise ValueError(f"rotation must be ({d}, {d}), got {tuple(rotation.shape)}")
        self.register_buffer("rotation", rotation.detach().float().clone())

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding | Tensor,
        *,
        m: int,
        k: int,
        rounds: int = 8,
        rotation_iters: int = 4,
        rotation_rows: int | None = 65536,
        **pq_kwargs: Any,  # the final fit's product_quantize settings (iters, init, seed, sample_rows, ...)
    ) -> OPQEmbedding:
        """Learn R on a row sample, then product-quantize E R with the given settings."""
        weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
        padding_idx = embedding.padding_idx if isinstance(embedding, nn.Embedding) else None
        e = weight.detach().float()
        rotation = learn_rotation(
            e, m=m, k=k, rounds=rounds, iters=rotation_iters, sample_rows=rotation_rows, seed=pq_kwargs.get("seed", 0)
        )
        # R is orthogonal, so the error of PQ(E R) is the error of the rotated-back reconstruction against E
        result = product_quantize(e @ rotation, m=m, k=k, **pq_kwargs)
        return cls(
            result.codes,
            result.codebooks,
            rotation,
            padding_idx=padding_idx,
            rel_error=result.rel_error,
            source_dtype=weight.dtype,
        )

    def forward(self, input_ids: Tensor) -> Tensor:
        return super().forward(input_ids) @ self.rotation.to(self.codebooks.dtype).t()

    def dense_weight(self) -> Tensor:
        return reconstruct(self.codes, self.codebooks) @ self.rotation.to(self.codebooks.dtype).t()

    def logits(self, hidden: Tensor) -> Tensor:
        # h . (y R^T) = (h R) . y: rotate the hidden states once, then score the rotated codebooks as pq does
        return super().logits(hidden @ self.rotation.to(hidden.dtype))

    def stats(self) -> dict[str, Any]:
        stats = {"m": self.m, "k": self.k, **quantized_stats(self, [self.codebooks])}
        extra_params, extra_bytes = self.rotation.numel(), self.stored_bytes(self.rotation)
        stats["params_after"] += extra_params
        stats["params_kept_pct"] = 100 * stats["params_after"] / stats["params_before"]
        stats["rotation_bytes"] = extra_bytes
        for key in ("bytes_after", "bytes_kept_pct", "bytes_kept_pct_packed"):
            stats[key] += extra_bytes if key == "bytes_after" else 100 * extra_bytes / stats["bytes_before"]
        return stats

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> OPQEmbedding:
        m, k, s = spec["m"], spec["k"], spec["sub_dim"]
        return cls(
            torch.zeros(spec["num_embeddings"], m, dtype=torch.long),
            torch.zeros(m, k, s),
            torch.eye(m * s),
            padding_idx=spec["padding_idx"],
            rel_error=spec["rel_error"],
            source_dtype=getattr(torch, spec["source_dtype"]),
        )


def _resolve_opq(cfg: Mapping[str, Any], vocab: int, hidden: int) -> dict[str, Any]:
    m = cfg["m"]
    check_shape(vocab, hidden, m=m, k=1)
    rotation = hidden * hidden  # stored floats
    allowed, width = budget_bytes(cfg, vocab, hidden), float_bytes(cfg)
    if allowed is not None:
        k = nearest_setting(
            lambda k: quantized_bytes(vocab, hidden, m=m, k=k, float_bytes=width) + rotation * width, allowed, 2, vocab
        )
        if k is None:
            raise ValueError(
                f"asg.budget_bytes_pct={cfg['budget_bytes_pct']} cannot be met by opq at asg.m={m}: its smallest "
                "code table and rotation are larger; lower asg.m or raise the budget"
            )
    elif cfg.get("budget_pct") is not None:
        budget = cfg["budget_pct"]
        if not 0 < budget <= 100:
            raise ValueError(f"asg.budget_pct={budget} must be a percentage in (0, 100]")
        k = round((budget / 100 * vocab * hidden - rotation) / hidden)  # the rotation's d^2 counts as parameters
        if k < 1:
            raise ValueError(f"asg.budget_pct={budget} is below opq's rotation alone ({100 * hidden / vocab:.3f}%)")
    else:
        k = cfg["k"]
    check_shape(vocab, hidden, m=m, k=k)
    return dict(cfg) | {"k": k}


def _build_opq(weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None) -> CompressedEmbedding:
    module = OPQEmbedding.from_embedding(
        weight,
        m=settings["m"],
        k=settings["k"],
        rounds=settings.get("rounds", 8),
        rotation_iters=settings.get("rotation_iters", 4),
        rotation_rows=settings.get("rotation_rows", 65536),
        **pq_options(settings),
    )
    module.padding_idx = padding_idx
    return module


register(Method("opq", _resolve_opq, _build_opq))
