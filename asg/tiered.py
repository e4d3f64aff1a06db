"""Frequency-tiered ASG (`asg.method=tiered`): frequent tokens get more sub-spaces than rare ones.

Near 1% of an embedding's bytes the code table (V x m codes) decides what fits, and plain ASG gives every token the
same m codes, although a few tens of thousands of a 250k vocabulary's tokens make up most text. The sentencepiece
vocabularies of XLM-R, mT5 and multilingual-e5 list tokens by unigram probability (checked for e5-small in
tests/test_tiered.py), and BERT's WordPiece roughly so after its ~1,000 unused and ~1,000 single-character entries,
so contiguous id ranges are frequency tiers. Tier t holds ids [start_t, end_t) and is its own ASG: codes (V_t, m_t)
and trainable codebooks (m_t, k, d / m_t), more sub-spaces for the earlier tiers. A token's tier follows from its
id, so no tier map is stored.

A WordPiece vocabulary (BERT, mBERT, BioBERT) is not in frequency order. There `asg.tier_order=frequency` ranks
the rows by their `asg.row_weights` (the training split's token counts, or unigram probabilities) and fills the
tiers in that order; each row's tier is then stored, bit-packed like a code table: ceil(log2 T) bits per row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from asg.embedding import ASGEmbedding, CompressedEmbedding, quantized_stats
from asg.methods import (
    BYTES_TOLERANCE,
    FLOAT32_BYTES,
    Method,
    budget_bytes,
    float_bytes,
    nearest_setting,
    pq_options,
    quantized_bytes,
    register,
)
from asg.quantize import check_shape, packed_code_bytes


class TieredEmbedding(CompressedEmbedding):
    """Tiers of ids, each an `ASGEmbedding` with its own number of sub-spaces: consecutive id ranges, or the ids a
    stored (V,) map `tier_of` gives each tier, in id order within it."""

    method = "tiered"

    def __init__(
        self,
        tiers: list[ASGEmbedding],
        *,
        tier_of: Tensor | None = None,  # (V,) each id's tier; None: consecutive id ranges
        padding_idx: int | None = None,  # recorded like nn.Embedding's, not frozen
        rel_error: float | None = None,  # over the whole matrix at fit time
        source_dtype: torch.dtype = torch.float32,  # dtype of the replaced matrix, for byte counts
    ) -> None:
        super().__init__()
        if not tiers or len({t.embedding_dim for t in tiers}) != 1:
            raise ValueError("expected one or more tiers of the same embedding dim")
        self.tiers = nn.ModuleList(tiers)
        self.num_embeddings = sum(t.num_embeddings for t in tiers)
        self.embedding_dim = tiers[0].embedding_dim
        self.k = max(t.k for t in tiers)
        self.padding_idx = padding_idx
        self.rel_error = rel_error
        self.source_dtype = source_dtype
        # on the tiers' device, not the ambient default one (Lightning's configure_model may set meta or CUDA)
        ends = torch.tensor([t.num_embeddings for t in tiers], device=tiers[0].codes.device).cumsum(0)
        self.register_buffer("ends", ends, persistent=False)  # follows from the tiers' sizes: not stored
        if tier_of is not None and tier_of.shape != (self.num_embeddings,):
            raise ValueError(f"tier_of has shape {tuple(tier_of.shape)}, expected ({self.num_embeddings},)")
        tier_of = None if tier_of is None else tier_of.to(device=ends.device, dtype=torch.uint8)
        self.register_buffer("tier_of", tier_of)  # stored (a code table); None: not in the state dict
        row = None if tier_of is None else torch.empty_like(tier_of, dtype=torch.long)
        self.register_buffer("row", row, persistent=False)  # follows from tier_of
        if tier_of is not None:
            self._index_rows()
            self.register_load_state_dict_post_hook(lambda module, _: module._index_rows())

    def _index_rows(self) -> None:
        """row[id]: the id's row in the tiers' concatenation (tier by tier, in id order within each)."""
        order = torch.argsort(self.tier_of, stable=True)
        self.row[order] = torch.arange(len(order), device=order.device)

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding | Tensor,
        *,
        rows: list[int],  # ids per tier, in id order; they sum to V
        m: list[int],  # sub-spaces per tier; each divides the hidden size
        k: int,  # centroids per sub-space, every tier
        row_weights: Tensor | None = None,  # (V,) k-means weights (asg.row_weights), split by tier
        tier_of: Tensor | None = None,  # (V,) each id's tier, rows[t] ids in tier t; None: consecutive ranges
        **pq_kwargs: Any,  # passed on to product_quantize for every tier
    ) -> TieredEmbedding:
        """Product-quantize each tier of an nn.Embedding (or a (V, d) weight) at its own number of sub-spaces."""
        weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
        padding_idx = embedding.padding_idx if isinstance(embedding, nn.Embedding) else None
        e = weight.detach().float()
        if tier_of is not None:  # the tiers' ids side by side, as the ranges would be
            if torch.bincount(tier_of.long(), minlength=len(rows)).tolist() != list(rows):
                raise ValueError(f"tier_of puts {torch.bincount(tier_of.long()).tolist()} ids in the tiers, not {rows}")
            order = torch.argsort(tier_of, stable=True)
            e = e.index_select(0, order)
            row_weights = None if row_weights is None else row_weights.index_select(0, order)
        weights = [None] * len(rows) if row_weights is None else row_weights.split(rows)
        tiers = [
            ASGEmbedding.from_embedding(part, m=tier_m, k=k, row_weights=w, **pq_kwargs)
            for part, tier_m, w in zip(e.split(rows), m, weights, strict=True)
        ]
        # each tier's error is relative to its own rows: weight it back by their norm
        error = sum((t.rel_error * part.norm().item()) ** 2 for t, part in zip(tiers, e.split(rows), strict=True))
        rel_error = math.sqrt(error) / e.norm().item()
        return cls(tiers, tier_of=tier_of, padding_idx=padding_idx, rel_error=rel_error, source_dtype=weight.dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Look up ids (...) -> vectors (..., d): each id through its tier's codebooks."""
        flat = input_ids.reshape(-1).long()
        if self.row is not None:
            flat = self.row[flat]
        tier_of = torch.bucketize(flat, self.ends[:-1], right=True)  # ends[t-1] <= id < ends[t]
        out = None
        for t, tier in enumerate(self.tiers):
            where = (tier_of == t).nonzero().squeeze(1)
            start = self.ends[t - 1] if t else 0
            vectors = tier(flat.index_select(0, where) - start)
            out = vectors.new_zeros(flat.numel(), self.embedding_dim) if out is None else out
            out = out.index_copy(0, where, vectors)  # out of place: gradients reach every tier
        return out.view(*input_ids.shape, self.embedding_dim)

    def dense_weight(self) -> Tensor:
        weight = torch.cat([t.dense_weight() for t in self.tiers])
        return weight if self.row is None else weight.index_select(0, self.row)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., d) -> (..., V): each tier's scores for its ids, put in id order."""
        scores = torch.cat([t.logits(hidden) for t in self.tiers], dim=-1)
        return scores if self.row is None else scores.index_select(-1, self.row)

    def code_tables(self) -> dict[str, int]:
        tables = {f"tiers.{i}.codes": t.k for i, t in enumerate(self.tiers)}
        return tables | ({} if self.tier_of is None else {"tier_of": len(self.tiers)})

    def stats(self) -> dict[str, Any]:
        """ASG's accounting over all tiers; `tier_rows` and `tier_m` give their sizes."""
        sizes = {"k": self.k, "tier_rows": [t.num_embeddings for t in self.tiers], "tier_m": [t.m for t in self.tiers]}
        sizes["tier_order"] = "id" if self.tier_of is None else "frequency"
        return sizes | quantized_stats(self, [t.codebooks for t in self.tiers])

    def spec(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tiers": [t.spec() for t in self.tiers],
            "tier_map": self.tier_of is not None,
            "padding_idx": self.padding_idx,
            "rel_error": self.rel_error,
            "source_dtype": str(self.source_dtype).removeprefix("torch."),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TieredEmbedding:
        tiers = [ASGEmbedding.from_spec(t) for t in spec["tiers"]]
        rows = torch.tensor([t.num_embeddings for t in tiers])
        return cls(
            tiers,
            # a placeholder map of the right shape; loading the state dict sets the stored one
            tier_of=torch.arange(len(tiers)).repeat_interleave(rows) if spec.get("tier_map") else None,
            padding_idx=spec["padding_idx"],
            rel_error=spec["rel_error"],
            source_dtype=getattr(torch, spec["source_dtype"]),
        )

    def _repr_settings(self) -> str:
        order = "" if self.tier_of is None else ", tiers by frequency"
        return ", ".join(f"{t.num_embeddings} ids: m={t.m}" for t in self.tiers) + f", k={self.k}{order}"


def tier_rows(cfg: Mapping[str, Any], vocab: int) -> list[int]:
    """Ids per tier from asg.tier_fractions (where each tier but the last ends, as fractions of V)."""
    fractions, m = list(cfg["tier_fractions"]), list(cfg["tier_m"])
    if len(m) != len(fractions) + 1:
        raise ValueError(
            f"asg.tier_m={m} needs one entry more than asg.tier_fractions={fractions}: a sub-space count per tier"
        )
    steps = [0.0, *fractions, 1.0]
    if not all(a < b for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"asg.tier_fractions={fractions} must increase strictly within (0, 1)")
    ends = [round(f * vocab) for f in fractions] + [vocab]
    rows = [b - a for a, b in zip([0, *ends], ends, strict=False)]
    if min(rows) < 1:
        raise ValueError(f"asg.tier_fractions={fractions} leave a tier without ids at V={vocab}; spread them")
    return rows


TIER_ORDERS = ("id", "frequency")


def tiered_bytes(
    vocab: int, hidden: int, *, rows: list[int], m: list[int], k: int, float_bytes: int, tier_map: bool = False
) -> int:
    """Exported bytes: every tier's codebooks and bit-packed code table, and the bit-packed tier map if stored."""
    tables = sum(quantized_bytes(r, hidden, m=n, k=k, float_bytes=float_bytes) for r, n in zip(rows, m, strict=True))
    return tables + (packed_code_bytes(vocab, len(rows)) if tier_map else 0)


def frequency_tiers(row_weights: Tensor, rows: list[int]) -> Tensor:
    """(V,) tier of each id: the rows[0] heaviest rows in tier 0, the next rows[1] in tier 1, ... (ties in id
    order)."""
    rank = torch.argsort(row_weights, descending=True, stable=True)
    device = rank.device  # the weights' (a GPU fit's)
    tier_of = torch.empty(len(rank), dtype=torch.uint8, device=device)
    tiers = torch.arange(len(rows), dtype=torch.uint8, device=device)
    tier_of[rank] = tiers.repeat_interleave(torch.tensor(rows, device=device))
    return tier_of


def _resolve_tiered(cfg: Mapping[str, Any], vocab: int, hidden: int) -> dict[str, Any]:
    rows, m = tier_rows(cfg, vocab), list(cfg["tier_m"])
    for tier_m in m:
        check_shape(vocab, hidden, m=tier_m, k=1)
    order = cfg.get("tier_order", "id")
    if order not in TIER_ORDERS:
        raise ValueError(f"asg.tier_order={order!r} is not one of {', '.join(TIER_ORDERS)}")
    if order == "frequency" and not cfg.get("row_weights"):
        raise ValueError(
            "asg.tier_order=frequency ranks the rows by their asg.row_weights: set asg.row_weights=train (any "
            "tokenizer) or unigram (sentencepiece), or keep asg.tier_order=id"
        )
    allowed = budget_bytes(cfg, vocab, hidden)
    if allowed is not None:
        width, stored = float_bytes(cfg), order == "frequency"

        def size(k: int) -> int:
            return tiered_bytes(vocab, hidden, rows=rows, m=m, k=k, float_bytes=width, tier_map=stored)

        k = nearest_setting(size, allowed, 2, min(rows))
        if k is None:
            dense = vocab * hidden * FLOAT32_BYTES
            smallest = 100 * size(2) / dense
            raise ValueError(
                f"asg.budget_bytes_pct={cfg['budget_bytes_pct']} cannot be met within {BYTES_TOLERANCE:.0%} by "
                f"tiered with asg.tier_m={m}: its smallest code tables are {smallest:.3f}% of the float32 matrix; "
                "lower asg.tier_m or raise the budget"
            )
    elif cfg.get("budget_pct") is not None:  # the tiers' codebooks together keep budget_pct of the parameters
        budget = cfg["budget_pct"]
        if not 0 < budget <= 100:
            raise ValueError(f"asg.budget_pct={budget} must be a percentage in (0, 100]")
        k = max(1, round(budget / 100 * vocab / len(rows)))
    else:
        k = cfg["k"]
    if k > min(rows):
        raise ValueError(f"k={k} centroids exceed the smallest tier's {min(rows)} ids; lower asg.k or widen the tier")
    return dict(cfg) | {"k": k, "tier_rows": rows, "tier_m": m, "tier_order": order}


def _build_tiered(
    weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None, row_weights: Tensor | None = None
) -> CompressedEmbedding:
    rows, m = settings["tier_rows"], settings["tier_m"]
    tier_of = None
    if settings.get("tier_order", "id") == "frequency":
        if row_weights is None:
            raise ValueError("asg.tier_order=frequency needs the rows' asg.row_weights, and none were given")
        tier_of = frequency_tiers(row_weights, rows)
    module = TieredEmbedding.from_embedding(
        weight, rows=rows, m=m, k=settings["k"], row_weights=row_weights, tier_of=tier_of, **pq_options(settings)
    )
    module.padding_idx = padding_idx
    return module


register(Method("tiered", _resolve_tiered, _build_tiered))
