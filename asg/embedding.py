"""Compressed input embeddings: the shared interface, and ASG's drop-in for nn.Embedding built from m codebooks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asg.quantize import packed_code_bytes, product_quantize, reconstruct, smallest_code_dtype


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
    # asg.storage_dtype: the precision its float tensors are exported in and counted at; training keeps float32
    storage_dtype: torch.dtype = torch.float32

    def code_tables(self) -> dict[str, int]:
        """The integer code tables an export bit-packs: state-dict name -> the centroids k its codes index."""
        return {}

    def narrows(self, tensor: Tensor) -> bool:
        """Whether an export stores this tensor in `storage_dtype`: a float tensor wider than it (never widened)."""
        return tensor.is_floating_point() and self.storage_dtype.itemsize < tensor.element_size()

    def stored_bytes(self, tensor: Tensor) -> int:
        """Bytes of a float tensor as exported (a bf16 model's stay 2 bytes under float32 storage)."""
        return tensor.numel() * (self.storage_dtype.itemsize if self.narrows(tensor) else tensor.element_size())

    def round_to_storage(self) -> None:
        """Round every float tensor to `storage_dtype` in place, so that what is scored is what an export stores."""
        with torch.no_grad():
            for tensor in [*self.parameters(), *self.buffers()]:
                if self.narrows(tensor):
                    tensor.copy_(tensor.to(self.storage_dtype))

    def dense_weight(self) -> Tensor:
        raise NotImplementedError

    def logits(self, hidden: Tensor) -> Tensor:
        """Scores of hidden states (..., d) against every row: (..., V), in hidden's dtype, as an output head.

        This default builds the (V, d) matrix; the methods override it with their factorised forms, which never do.
        """
        return F.linear(hidden, self.dense_weight().to(hidden.dtype))

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


def quantized_stats(module: CompressedEmbedding, codebooks: list[Tensor]) -> dict[str, Any]:
    """Accounting of a module's code tables plus its float codebooks against the dense (V, d) matrix they replace.

    `module` supplies V, d, its code tables (`code_tables`), the replaced matrix's dtype, the codebooks' storage
    dtype and the fit's rel_error.
    """
    vocab, dim = module.num_embeddings, module.embedding_dim
    params_before = vocab * dim
    params_after = sum(c.numel() for c in codebooks)
    bytes_before = params_before * module.source_dtype.itemsize
    codebook_bytes = sum(module.stored_bytes(c) for c in codebooks)
    state = module.state_dict()
    tables = [(state[name], k) for name, k in module.code_tables().items()]
    code_bytes = sum(codes.numel() * codes.element_size() for codes, _ in tables)
    code_bytes_packed = sum(packed_code_bytes(codes.numel(), k) for codes, k in tables)  # as exported
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
        "code_dtype": ", ".join(sorted({str(codes.dtype) for codes, _ in tables})),
    }


# elements in one chunk's temporaries (16 MiB of float32): small next to a (V, d) matrix or large (N, V) logits
_CHUNK_ELEMENTS = 1 << 22


class _CodeLogits(torch.autograd.Function):
    """logits[n, v] = sum_j scores[n, j * k + codes[v, j]], and its gradient, as summed row gathers.

    Forward: an embedding_bag over the transposed scores, each token a bag of its M centroids' rows, in chunks of
    tokens. Backward: the same with the roles swapped, each centroid a bag of the tokens that use it (the code table
    inverted by one sort), over the transposed gradient in blocks of its rows. Only the code table is saved: neither
    pass holds anything of size (V, d) or (N, V, M); the sort briefly holds a few int tensors of M * V entries.
    Measured against index_add/scatter_add into the centroids' rows, that backward was 2-10x faster on 2 CPU cores
    (mT5's V with m=32, N from 8 to 1024).
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, codes: Tensor, k: int) -> Tensor:  # (N, M * k), (V, M) -> (N, V)
        tokens, (vocab, m) = scores.shape[0], codes.shape
        table = scores.t().contiguous()  # (M * k, N): one row of scores per centroid; free if computed so
        offsets = torch.arange(m, device=codes.device, dtype=torch.int32) * k  # (M,)
        logits = scores.new_empty(tokens, vocab)  # (N, V)
        step = max(1, _CHUNK_ELEMENTS // max(tokens, m))  # vocabulary rows per chunk
        for start in range(0, vocab, step):
            bags = codes[start : start + step].int() + offsets  # (c, M) rows of the table
            logits[:, start : start + step] = F.embedding_bag(bags, table, mode="sum").t()
        ctx.save_for_backward(codes)
        ctx.k = k
        return logits

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # (N, V) -> (N, M * k)
        (codes,) = ctx.saved_tensors
        tokens, (vocab, m) = grad.shape[0], codes.shape
        offsets = torch.arange(m, device=codes.device, dtype=torch.int32) * ctx.k
        flat = (codes.t().int() + offsets[:, None]).reshape(-1)  # (M * V,) centroid of each (sub-space, token)
        members = torch.argsort(flat, stable=True).remainder_(vocab).int()  # token ids grouped by centroid, ascending
        sizes = torch.bincount(flat, minlength=m * ctx.k)  # (M * k,)
        starts = (sizes.cumsum(0) - sizes).int()
        # float32 sums: a centroid collects the gradients of some V / k tokens, too many to add up in half precision
        table_grad = grad.new_empty(m * ctx.k, tokens, dtype=torch.float32)  # (M * k, N)
        step = max(1, _CHUNK_ELEMENTS // vocab)  # rows of the gradient per block
        for start in range(0, tokens, step):
            block = grad[start : start + step].t().contiguous().float()  # (V, b)
            table_grad[:, start : start + step] = F.embedding_bag(members, block, starts, mode="sum")
        return table_grad.t().to(grad.dtype), None, None


def code_logits(scores: Tensor, codes: Tensor) -> Tensor:
    """Logits of every code-table row from per-centroid scores: (..., M, k) and codes (V, M) -> (..., V).

    Equal to summing scores[..., j, codes[v, j]] over the M sub-spaces, and differentiable in `scores`.
    """
    *lead, m, k = scores.shape
    logits = _CodeLogits.apply(scores.reshape(-1, m * k), codes, k)  # (N, V)
    return logits.view(*lead, codes.shape[0])


class ASGEmbedding(CompressedEmbedding):
    """Token vectors as concatenations of m trainable centroids picked by fixed codes.

    Only the codebooks (m, k, s) are trained; the codes (V, m) are a buffer in the
    smallest integer dtype that fits k. `padding_idx` is kept for interface parity
    with nn.Embedding: the padding token's centroids are shared with other tokens,
    so its vector is not frozen. `sparse` is nn.Embedding's: the lookup's codebook
    gradient is then a sparse tensor of the looked-up rows, for SGD or SparseAdam
    (AdamW, which fine-tuning here uses, needs the default dense one).
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
        sparse: bool = False,  # a sparse codebook gradient from forward(), as nn.Embedding(sparse=True)
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
        self.sparse = sparse
        self.register_buffer("codes", codes.detach().to(smallest_code_dtype(k)).contiguous())
        self.codebooks = nn.Parameter(codebooks.detach().clone())

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding | Tensor,
        *,
        m: int,  # sub-spaces; must divide the hidden size
        k: int,  # centroids per sub-space
        sparse: bool = False,  # a sparse codebook gradient from forward(), as nn.Embedding(sparse=True)
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
            sparse=sparse,
        )

    def forward(self, input_ids: Tensor) -> Tensor:
        """Look up ids (...) -> vectors (..., d); gradients flow to the codebooks only."""
        # index_select, not codes[ids]: a uint8/bool ids tensor would be read as a mask
        codes = self.codes.index_select(0, input_ids.reshape(-1))  # (N, m)
        return reconstruct(codes.view(*input_ids.shape, self.m), self.codebooks, sparse=self.sparse)  # (..., d)

    def dense_weight(self) -> Tensor:
        """The full (V, d) matrix, differentiable with respect to the codebooks."""
        return reconstruct(self.codes, self.codebooks)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) -> (..., V) as hidden @ dense_weight().T, from each sub-vector's scores against its codebook."""
        m, k, s = self.codebooks.shape
        parts = hidden.reshape(-1, m, s).permute(1, 2, 0)  # (m, s, N)
        # centroid-major (m, k, N) scores are the gather's table as they stand: no transposed copy of them
        scores = (self.codebooks.to(hidden.dtype) @ parts).permute(2, 0, 1)  # (N, m, k), a view
        return code_logits(scores.reshape(*hidden.shape[:-1], m, k), self.codes)

    def stats(self) -> dict[str, Any]:
        """Parameter and byte accounting against the dense matrix this module replaced."""
        return {"m": self.m, "k": self.k, **quantized_stats(self, [self.codebooks])}

    def code_tables(self) -> dict[str, int]:
        return {"codes": self.k}

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
        return f"m={self.m}, k={self.k}" + (", sparse=True" if self.sparse else "")
