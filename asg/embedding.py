"""Compressed input embeddings: the shared interface, and ASG's drop-in for nn.Embedding built from m codebooks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from asg.quantize import product_quantize, reconstruct, smallest_code_dtype


class CompressedEmbedding(nn.Module):
    """What the pipeline needs of any compressed embedding (ASG and the baselines).

    `forward` maps ids (...) to vectors (..., d); `dense_weight` is the (V, d) matrix it stands for, differentiable
    in its trainable tensors; `stats` is its parameter and byte accounting; `spec` is a JSON-able description from
    which `from_spec` builds an empty module of the same shapes, so a saved state dict can be loaded into it.
    All trainable tensors of a compressed embedding get `asg.codebook_lr_scale`.
    """

    method: str = ""
    num_embeddings: int
    embedding_dim: int

    def dense_weight(self) -> Tensor:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CompressedEmbedding:
        raise NotImplementedError

    def _repr_settings(self) -> str:
        """The method's own settings in the module's repr, e.g. "m=8, k=1024"."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}, {self._repr_settings()}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


def quantized_stats(module: CompressedEmbedding, codes: Tensor, codebooks: Tensor, k: int) -> dict[str, Any]:
    """Accounting of a code table (any shape) plus float codebooks against the dense (V, d) matrix they replace.

    `module` supplies V, d, the replaced matrix's dtype and the fit's rel_error; `k` sizes one code.
    """
    vocab, dim = module.num_embeddings, module.embedding_dim
    params_before = vocab * dim
    params_after = codebooks.numel()
    bytes_before = params_before * module.source_dtype.itemsize
    codebook_bytes = params_after * codebooks.element_size()
    code_bytes = codes.numel() * codes.element_size()
    # ideal table: ceil(log2 k) bits per code, which is (k - 1).bit_length() exactly
    code_bytes_packed = math.ceil(codes.numel() * (k - 1).bit_length() / 8)
    bytes_after = codebook_bytes + code_bytes
    return {
        "vocab_size": vocab,
        "hidden_size": dim,
        "params_before": params_before,
        "params_after": params_after,
        "params_kept_pct": 100 * params_after / params_before,
        "bytes_before": bytes_before,
        "codebook_bytes": codebook_bytes,
        "code_bytes": code_bytes,
        "code_bytes_packed": code_bytes_packed,
        "bytes_after": bytes_after,
        "bytes_kept_pct": 100 * bytes_after / bytes_before,
        "bytes_kept_pct_packed": 100 * (codebook_bytes + code_bytes_packed) / bytes_before,
        "rel_error": module.rel_error,
        "code_dtype": str(codes.dtype),
    }


class ASGEmbedding(CompressedEmbedding):
    """Token vectors as concatenations of m trainable centroids picked by fixed codes.

    Only the codebooks (m, k, s) are trained; the codes (V, m) are a buffer in the
    smallest integer dtype that fits k. `padding_idx` is kept for interface parity
    with nn.Embedding: the padding token's centroids are shared with other tokens,
    so its vector is not frozen.
    """

    method = "pq"

    def __init__(
        self,
        codes: Tensor,
        codebooks: Tensor,
        *,
        padding_idx: int | None = None,  # recorded like nn.Embedding's, not frozen
        rel_error: float | None = None,  # PQ reconstruction error, reported by stats()
        source_dtype: torch.dtype = torch.float32,  # dtype of the replaced matrix, for byte counts
    ) -> None:
        super().__init__()
        if codes.dim() != 2 or codebooks.dim() != 3 or codes.shape[1] != codebooks.shape[0]:
            raise ValueError(
                f"expected codes (V, m) and codebooks (m, k, s), got {tuple(codes.shape)} and {tuple(codebooks.shape)}"
            )
        m, k, s = codebooks.shape
        if codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"codes must lie in [0, {k}) for k={k} centroids")
        self.num_embeddings = codes.shape[0]
        self.embedding_dim = m * s
        self.m = m
        self.k = k
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
        m: int,  # sub-spaces; must divide the hidden size
        k: int,  # centroids per sub-space
        **pq_kwargs: Any,  # passed on to product_quantize (iters, init, seed, sample_rows, ...)
    ) -> ASGEmbedding:
        """Compress an nn.Embedding (or a (V, d) weight) with product quantization."""
        weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
        padding_idx = embedding.padding_idx if isinstance(embedding, nn.Embedding) else None
        result = product_quantize(weight.detach().float(), m=m, k=k, **pq_kwargs)
        return cls(
            result.codes,
            result.codebooks,
            padding_idx=padding_idx,
            rel_error=result.rel_error,
            source_dtype=weight.dtype,
        )

    def forward(self, input_ids: Tensor) -> Tensor:
        """Look up ids (...) -> vectors (..., d); gradients flow to the codebooks only."""
        # index_select, not codes[ids]: a uint8/bool ids tensor would be read as a mask
        codes = self.codes.index_select(0, input_ids.reshape(-1))  # (N, m)
        return reconstruct(codes.view(*input_ids.shape, self.m), self.codebooks)  # (..., d)

    def dense_weight(self) -> Tensor:
        """The full (V, d) matrix, differentiable with respect to the codebooks."""
        return reconstruct(self.codes, self.codebooks)

    def stats(self) -> dict[str, Any]:
        """Parameter and byte accounting against the dense matrix this module replaced."""
        return {"m": self.m, "k": self.k, **quantized_stats(self, self.codes, self.codebooks, self.k)}

    def spec(self) -> dict[str, Any]:
        m, k, s = self.codebooks.shape
        return {
            "method": self.method,
            "num_embeddings": self.num_embeddings,
            "m": m,
            "k": k,
            "sub_dim": s,
            "padding_idx": self.padding_idx,
            "rel_error": self.rel_error,
            "source_dtype": str(self.source_dtype).removeprefix("torch."),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ASGEmbedding:
        m, k, s = spec["m"], spec["k"], spec["sub_dim"]
        return cls(
            torch.zeros(spec["num_embeddings"], m, dtype=torch.long),
            torch.zeros(m, k, s),
            padding_idx=spec["padding_idx"],
            rel_error=spec["rel_error"],
            source_dtype=getattr(torch, spec["source_dtype"]),
        )

    def _repr_settings(self) -> str:
        return f"m={self.m}, k={self.k}"
