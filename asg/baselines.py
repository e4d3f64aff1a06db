"""Baselines ASG is compared with at equal budgets, registered as `asg.method=...`.

- `sg`: Semantic Grouping, k-means over whole rows (PQ with one sub-space); the k cluster means are trained.
- `lowrank`: truncated SVD, E ~ A @ B with both factors trained.
- `rq`: residual product quantization, a stronger ASG: each stage product-quantizes the previous stages' residual.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asg.embedding import ASGEmbedding, CompressedEmbedding, code_logits, quantized_stats
from asg.methods import (
    BYTES_TOLERANCE,
    FLOAT32_BYTES,
    Method,
    budget_bytes,
    budget_k,
    float_bytes,
    nearest_setting,
    pq_options,
    register,
)
from asg.quantize import check_shape, product_quantize, reconstruct, smallest_code_dtype

log = logging.getLogger(__name__)


def _relative_error(weight: Tensor, approx: Tensor) -> float:
    norm = weight.norm().item()
    err = (weight - approx).norm().item()
    return err / norm if norm > 0 else err


def _check_sample_rows(settings: Mapping[str, Any], k: int) -> None:
    # product_quantize checks this too, but only once the data is loaded and the model built
    rows = settings.get("sample_rows")
    if isinstance(rows, int) and rows < k:
        raise ValueError(f"asg.sample_rows={rows} must be at least k={k} centroids; raise it or set it to null")


class SGEmbedding(ASGEmbedding):
    """Semantic Grouping: every token's vector is its k-means cluster's mean; the k means (1, k, d) are trained.

    This is product quantization with a single sub-space, so it reuses ASG's module and k-means.
    """

    method = "sg"

    def __init__(self, codes: Tensor, codebooks: Tensor, **kwargs: Any) -> None:
        if codebooks.dim() == 3 and codebooks.shape[0] != 1:
            raise ValueError(f"SG clusters whole rows: codebooks must be (1, k, d), got {tuple(codebooks.shape)}")
        super().__init__(codes, codebooks, **kwargs)

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding | Tensor,
        *,
        k: int,  # clusters
        m: int = 1,  # accepted for ASGEmbedding's signature; anything but 1 is refused
        **pq_kwargs: Any,  # passed on to product_quantize (iters, init, seed, sample_rows, ...)
    ) -> SGEmbedding:
        """Cluster the rows of an nn.Embedding (or a (V, d) weight) into k groups."""
        return super().from_embedding(embedding, m=m, k=k, **pq_kwargs)


def _resolve_sg(cfg: Mapping[str, Any], vocab: int, hidden: int) -> dict[str, Any]:
    # asg.m is ignored rather than refused, so a sweep can switch asg.method alone on pq's config
    settings = dict(cfg) | {"m": 1, "k": budget_k(cfg, vocab, hidden)}
    check_shape(vocab, hidden, m=1, k=settings["k"])
    _check_sample_rows(settings, settings["k"])
    return settings


def _build_sg(weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None) -> CompressedEmbedding:
    module = SGEmbedding.from_embedding(weight, k=settings["k"], **pq_options(settings))
    module.padding_idx = padding_idx
    return module


class LowRankEmbedding(CompressedEmbedding):
    """Truncated SVD: the (V, d) matrix as left (V, r) @ right (r, d); both factors are trained.

    The factors split the singular values evenly (U sqrt(S), sqrt(S) Vh): the product is the same as U S @ Vh,
    but the two factors get gradients of comparable scale. `padding_idx` is recorded, not frozen.
    """

    method = "lowrank"

    def __init__(
        self,
        left: Tensor,
        right: Tensor,
        *,
        padding_idx: int | None = None,
        rel_error: float | None = None,  # ||E - left @ right||_F / ||E||_F at fit time
        source_dtype: torch.dtype = torch.float32,  # dtype of the replaced matrix, for byte counts
    ) -> None:
        super().__init__()
        if left.dim() != 2 or right.dim() != 2 or left.shape[1] != right.shape[0]:
            raise ValueError(f"expected left (V, r) and right (r, d), got {tuple(left.shape)} and {tuple(right.shape)}")
        self.num_embeddings, self.rank = left.shape
        self.embedding_dim = right.shape[1]
        self.padding_idx = padding_idx
        self.rel_error = rel_error
        self.source_dtype = source_dtype
        self.left = nn.Parameter(left.detach().clone())
        self.right = nn.Parameter(right.detach().clone())

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding | Tensor, *, rank: int) -> LowRankEmbedding:
        """The best rank-r approximation (Eckart-Young) of an nn.Embedding or a (V, d) weight."""
        weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
        padding_idx = embedding.padding_idx if isinstance(embedding, nn.Embedding) else None
        vocab, dim = weight.shape
        if not isinstance(rank, int) or not 1 <= rank <= min(vocab, dim):
            raise ValueError(f"asg.rank={rank} must be between 1 and min(V, d)={min(vocab, dim)}")
        e = weight.detach().float()
        # Exact thin SVD, not torch.svd_lowrank: its randomized range finder is only near-optimal, while the thin
        # SVD costs O(V d^2) -- about one k-means pass with k=d, seconds even for V=250k, d=768.
        u, s, vh = torch.linalg.svd(e, full_matrices=False)
        root = s[:rank].sqrt()
        left = u[:, :rank] * root  # (V, r)
        right = root.unsqueeze(1) * vh[:rank]  # (r, d)
        rel_error = _relative_error(e, left @ right)
        log.info("rank-%d SVD of %dx%d: rel_error %.4f", rank, vocab, dim, rel_error)
        return cls(left, right, padding_idx=padding_idx, rel_error=rel_error, source_dtype=weight.dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Look up ids (...) -> vectors (..., d)."""
        return F.embedding(input_ids, self.left) @ self.right

    def dense_weight(self) -> Tensor:
        return self.left @ self.right

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) -> (..., V) through the rank-r bottleneck: (hidden @ right.T) @ left.T."""
        return F.linear(F.linear(hidden, self.right.to(hidden.dtype)), self.left.to(hidden.dtype))  # via (..., r)

    def stats(self) -> dict[str, Any]:
        """Parameter and byte accounting: no code table, the factors are all there is."""
        vocab, dim = self.num_embeddings, self.embedding_dim
        params_before = vocab * dim
        params_after = self.left.numel() + self.right.numel()  # r * (V + d)
        bytes_before = params_before * self.source_dtype.itemsize
        bytes_after = self.stored_bytes(self.left) + self.stored_bytes(self.right)
        return {
            "vocab_size": vocab,
            "hidden_size": dim,
            "rank": self.rank,
            "params_before": params_before,
            "params_after": params_after,
            "params_kept_pct": 100 * params_after / params_before,
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
            "bytes_kept_pct": 100 * bytes_after / bytes_before,
            "rel_error": self.rel_error,
        }

    def spec(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "rank": self.rank,
            "padding_idx": self.padding_idx,
            "rel_error": self.rel_error,
            "source_dtype": str(self.source_dtype).removeprefix("torch."),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LowRankEmbedding:
        return cls(
            torch.zeros(spec["num_embeddings"], spec["rank"]),
            torch.zeros(spec["rank"], spec["embedding_dim"]),
            padding_idx=spec["padding_idx"],
            rel_error=spec["rel_error"],
            source_dtype=getattr(torch, spec["source_dtype"]),
        )

    def _repr_settings(self) -> str:
        return f"rank={self.rank}"


def _budget_rank(cfg: Mapping[str, Any], vocab: int, hidden: int) -> int:
    """asg.rank; the rank whose factors (at asg.storage_dtype) come nearest asg.budget_bytes_pct; the largest rank whose
    r (V + d) parameters fit asg.budget_pct; else pq's k * d parameters at asg.k."""
    allowed = budget_bytes(cfg, vocab, hidden)
    if allowed is not None:
        per_rank = (vocab + hidden) * float_bytes(cfg)
        rank = nearest_setting(lambda r: r * per_rank, allowed, 1, min(vocab, hidden))
        if rank is None:
            dense = vocab * hidden * FLOAT32_BYTES
            raise ValueError(
                f"asg.budget_bytes_pct={cfg['budget_bytes_pct']} cannot be met within {BYTES_TOLERANCE:.0%} by "
                f"lowrank: each rank stores {100 * per_rank / dense:.3f}% of the float32 matrix; ask for a multiple"
            )
        return rank
    budget = cfg.get("budget_pct")
    if budget is None and cfg.get("rank") is not None:
        return cfg["rank"]
    if budget is not None:
        if not 0 < budget <= 100:
            raise ValueError(f"asg.budget_pct={budget} must be a percentage in (0, 100]")
        allowed, source = budget / 100 * vocab * hidden, f"asg.budget_pct={budget}"
    else:
        allowed, source = cfg["k"] * hidden, f"pq's budget at asg.k={cfg['k']}"
    rank = min(int(allowed // (vocab + hidden)), vocab, hidden)
    if rank < 1:
        # rank 1 is the smallest factorization there is: run it, and say it is over budget
        log.warning(
            "lowrank: %s allows %d parameters, less than rank 1's %d (%.3f%% of the matrix); using rank 1",
            source,
            int(allowed),
            vocab + hidden,
            100 * (vocab + hidden) / (vocab * hidden),
        )
        rank = 1
    return rank


def _resolve_lowrank(cfg: Mapping[str, Any], vocab: int, hidden: int) -> dict[str, Any]:
    rank = _budget_rank(cfg, vocab, hidden)
    if not isinstance(rank, int) or not 1 <= rank <= min(vocab, hidden):
        raise ValueError(f"asg.rank={rank} must be between 1 and min(V, d)={min(vocab, hidden)}; change asg.rank")
    return dict(cfg) | {"rank": rank}


def _build_lowrank(weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None) -> CompressedEmbedding:
    module = LowRankEmbedding.from_embedding(weight, rank=settings["rank"])
    module.padding_idx = padding_idx
    return module


class RQEmbedding(CompressedEmbedding):
    """Residual product quantization: a token's vector is the sum of `stages` PQ reconstructions.

    Stage t product-quantizes what stages 0..t-1 left over. The codebooks (stages, m, k, s) are trained, the codes
    (V, stages, m) are a buffer in the smallest integer dtype that fits k (centroids per stage and sub-space).
    `padding_idx` is recorded, not frozen.
    """

    method = "rq"

    def __init__(
        self,
        codes: Tensor,
        codebooks: Tensor,
        *,
        padding_idx: int | None = None,
        rel_error: float | None = None,  # error of the summed reconstruction at fit time
        source_dtype: torch.dtype = torch.float32,  # dtype of the replaced matrix, for byte counts
    ) -> None:
        super().__init__()
        if codes.dim() != 3 or codebooks.dim() != 4 or codes.shape[1:] != codebooks.shape[:2]:
            raise ValueError(
                "expected codes (V, stages, m) and codebooks (stages, m, k, s), "
                f"got {tuple(codes.shape)} and {tuple(codebooks.shape)}"
            )
        stages, m, k, s = codebooks.shape
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"codes must lie in [0, {k}) for k={k} centroids per stage")
        self.num_embeddings = codes.shape[0]
        self.embedding_dim = m * s
        self.stages, self.m, self.k = stages, m, k
        self.padding_idx = padding_idx
        self.rel_error = rel_error
        self.source_dtype = source_dtype
        self.register_buffer("codes", codes.detach().to(smallest_code_dtype(k)).contiguous())
        self.codebooks = nn.Parameter(codebooks.detach().clone())

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding | Tensor,
        *,
        m: int,  # sub-spaces per stage; must divide the hidden size
        k: int,  # centroids per stage and sub-space
        stages: int = 2,
        **pq_kwargs: Any,  # passed on to product_quantize for every stage
    ) -> RQEmbedding:
        """Quantize an nn.Embedding (or a (V, d) weight) stage by stage, each stage fitting the last residual."""
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f"asg.stages={stages} must be an integer of at least 1; set asg.stages=1 or more")
        weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
        padding_idx = embedding.padding_idx if isinstance(embedding, nn.Embedding) else None
        e = weight.detach().float()
        residual, codes, codebooks = e, [], []
        for stage in range(stages):
            result = product_quantize(residual, m=m, k=k, **pq_kwargs)
            residual = residual - reconstruct(result.codes, result.codebooks)
            codes.append(result.codes)
            codebooks.append(result.codebooks)
            log.info("RQ stage %d/%d: rel_error %.4f", stage + 1, stages, _relative_error(e, e - residual))
        return cls(
            torch.stack(codes, 1),
            torch.stack(codebooks),
            padding_idx=padding_idx,
            rel_error=_relative_error(e, e - residual),
            source_dtype=weight.dtype,
        )

    def _decode(self, codes: Tensor) -> Tensor:
        """codes (N, stages, m) -> vectors (N, d): one flat lookup over all stages' sub-spaces, summed per stage."""
        stages, m, k, s = self.codebooks.shape
        parts = reconstruct(codes.reshape(-1, stages * m), self.codebooks.reshape(stages * m, k, s))
        return parts.view(-1, stages, m * s).sum(1)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Look up ids (...) -> vectors (..., d); gradients flow to every stage's codebooks."""
        # index_select, not codes[ids]: a uint8/bool ids tensor would be read as a mask
        codes = self.codes.index_select(0, input_ids.reshape(-1))  # (N, stages, m)
        return self._decode(codes).view(*input_ids.shape, self.embedding_dim)

    def dense_weight(self) -> Tensor:
        return self._decode(self.codes)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) -> (..., V): every stage's sub-vector scores, gathered by the codes and summed over all stages."""
        stages, m, k, s = self.codebooks.shape
        parts = hidden.reshape(-1, m, s).permute(1, 2, 0)  # (m, s, N), shared by the stages
        # centroid-major (stages, m, k, N) scores: the gather's table as they stand, as in ASGEmbedding.logits
        scores = (self.codebooks.to(hidden.dtype) @ parts).permute(3, 0, 1, 2)  # (N, stages, m, k), a view
        flat = scores.reshape(*hidden.shape[:-1], stages * m, k)  # (..., stages * m, k), the codes' order
        return code_logits(flat, self.codes.view(-1, stages * m))

    def stats(self) -> dict[str, Any]:
        """ASG's accounting; the code table holds stages x m codes per token."""
        return {
            "m": self.m,
            "k": self.stages * self.k,  # centroids per sub-space over all stages: parameters = k * d, as for pq
            "k_per_stage": self.k,
            "stages": self.stages,
            **quantized_stats(self, [self.codebooks]),
        }

    def code_tables(self) -> dict[str, int]:
        return {"codes": self.k}

    def spec(self) -> dict[str, Any]:
        stages, m, k, s = self.codebooks.shape
        return {
            "method": self.method,
            "num_embeddings": self.num_embeddings,
            "stages": stages,
            "m": m,
            "k_per_stage": k,
            "sub_dim": s,
            "padding_idx": self.padding_idx,
            "rel_error": self.rel_error,
            "source_dtype": str(self.source_dtype).removeprefix("torch."),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RQEmbedding:
        stages, m, k = spec["stages"], spec["m"], spec["k_per_stage"]
        return cls(
            torch.zeros(spec["num_embeddings"], stages, m, dtype=torch.long),
            torch.zeros(stages, m, k, spec["sub_dim"]),
            padding_idx=spec["padding_idx"],
            rel_error=spec["rel_error"],
            source_dtype=getattr(torch, spec["source_dtype"]),
        )

    def _repr_settings(self) -> str:
        return f"stages={self.stages}, m={self.m}, k={self.k}"


def _resolve_rq(cfg: Mapping[str, Any], vocab: int, hidden: int) -> dict[str, Any]:
    stages = cfg.get("stages", 2)  # pq's config has no asg.stages
    if not isinstance(stages, int) or stages < 1:
        raise ValueError(f"asg.stages={stages} must be an integer of at least 1; set asg.stages=1 or more")
    check_shape(vocab, hidden, m=cfg["m"], k=1)  # m first: the byte budget depends on it
    k = budget_k(cfg, vocab, hidden, m=cfg["m"], stages=stages)  # split over the stages: pq's parameters at asg.k
    per_stage = k // stages
    if per_stage < 1:
        raise ValueError(f"asg.k={k} leaves no centroid per stage for asg.stages={stages}; raise asg.k or lower it")
    if per_stage > vocab:
        raise ValueError(f"asg.k={k} gives {per_stage} centroids per stage, more than V={vocab}; lower asg.k")
    check_shape(vocab, hidden, m=cfg["m"], k=per_stage)
    _check_sample_rows(cfg, per_stage)
    return dict(cfg) | {"k": k, "k_per_stage": per_stage, "stages": stages}


def _build_rq(weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None) -> CompressedEmbedding:
    module = RQEmbedding.from_embedding(
        weight, m=settings["m"], k=settings["k_per_stage"], stages=settings["stages"], **pq_options(settings)
    )
    module.padding_idx = padding_idx
    return module


register(Method("sg", _resolve_sg, _build_sg))
register(Method("lowrank", _resolve_lowrank, _build_lowrank))
register(Method("rq", _resolve_rq, _build_rq))
