"""Compression methods selectable as `asg.method=...`: how each sizes itself, validates and builds its embedding.

A method turns the `asg` config into concrete settings for one (V, d) matrix (`resolve`, which also fails early
with an error naming the fix) and fits a `CompressedEmbedding` from the dense weight (`build`). `asg.budget_pct`,
when set, sizes every method to the same kept-parameter budget; `asg.budget_bytes_pct` to the same stored bytes
(code table included), so methods compare at equal cost either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from asg.embedding import ASGEmbedding, CompressedEmbedding
from asg.quantize import check_shape, divisors, packed_code_bytes


@dataclass(frozen=True)
class Method:
    name: str
    # (asg config, vocab, hidden) -> the concrete settings; raises ValueError naming the fix
    resolve: Callable[[Mapping[str, Any], int, int], dict[str, Any]]
    # (dense weight, resolved settings, padding_idx) -> the fitted module; the methods of
    # asg.row_weights.WEIGHTED_METHODS also take row_weights=(V,) tensor
    build: Callable[..., CompressedEmbedding]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


# bytes of one float32 parameter: the byte budget is a share of the float32 V x d matrix
FLOAT32_BYTES = 4
# asg.storage_dtype: the precision a compressed embedding's float tensors are exported in and counted at
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
# a byte budget is met when the stored bytes are within this fraction of it
BYTES_TOLERANCE = 0.05


def storage_dtype(cfg: Mapping[str, Any]) -> torch.dtype:
    """asg.storage_dtype as a torch dtype (float32 when unset, as in configs written before it existed)."""
    name = cfg.get("storage_dtype") or "float32"
    if name not in STORAGE_DTYPES:
        raise ValueError(f"asg.storage_dtype={name!r} is not supported; use one of {', '.join(STORAGE_DTYPES)}")
    return getattr(torch, name)


def float_bytes(cfg: Mapping[str, Any]) -> int:
    """Bytes of one stored float of a compressed embedding under this config."""
    return storage_dtype(cfg).itemsize


def budget_bytes(cfg: Mapping[str, Any], vocab: int, hidden: int) -> float | None:
    """Bytes allowed by asg.budget_bytes_pct (a percentage of the float32 V x d matrix), or None when unset."""
    pct = cfg.get("budget_bytes_pct")
    if pct is None:
        return None
    if cfg.get("budget_pct") is not None:
        raise ValueError(
            "asg.budget_pct (parameters) and asg.budget_bytes_pct (bytes) are both set; set one of them to null"
        )
    if not 0 < pct <= 100:
        raise ValueError(f"asg.budget_bytes_pct={pct} must be a percentage in (0, 100]")
    return pct / 100 * vocab * hidden * FLOAT32_BYTES


def quantized_bytes(
    vocab: int, hidden: int, *, m: int, k: int, stages: int = 1, float_bytes: int = FLOAT32_BYTES
) -> int:
    """Exported bytes of `stages` PQ tables: codebooks (stages x k x d floats of `float_bytes` each) and
    V x stages x m codes bit-packed at ceil(log2 k) bits each, as `asg.export` stores them (`bytes_kept_pct_packed`)."""
    return stages * k * hidden * float_bytes + packed_code_bytes(vocab * stages * m, k)


def nearest_setting(sizes: Callable[[int], int], allowed: float, low: int, high: int) -> int | None:
    """The n in [low, high] whose sizes(n) (non-decreasing in n) is nearest `allowed`, or None if none is within
    BYTES_TOLERANCE of it; on a tie the smaller."""
    if sizes(low) > allowed:
        under = None
    else:  # binary search for the largest n that fits
        lo, hi = low, high
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if sizes(mid) <= allowed else (lo, mid - 1)
        under = lo
    candidates = [n for n in (under, low if under is None else under + 1) if n is not None and n <= high]
    best = min(candidates, key=lambda n: abs(sizes(n) - allowed))
    return best if abs(sizes(best) - allowed) <= BYTES_TOLERANCE * allowed else None


def bytes_k(
    allowed: float, vocab: int, hidden: int, *, m: int, stages: int = 1, float_bytes: int = FLOAT32_BYTES
) -> int:
    """Centroids per sub-space (per stage) whose stored bytes come nearest `allowed` at this m and stages.

    Raises a ValueError naming the sub-space counts that can meet the budget when this m cannot: the code table
    alone (V x stages x m integers) may already be larger.
    """

    def size(m: int, k: int) -> int:
        return quantized_bytes(vocab, hidden, m=m, k=k, stages=stages, float_bytes=float_bytes)

    def solve(m: int) -> int | None:  # k >= 2: one centroid per sub-space would give every token the same vector
        return nearest_setting(lambda k: size(m, k), allowed, 2, vocab)

    k = solve(m)
    if k is None:
        fits = [f"{mm} (k={solve(mm)})" for mm in divisors(hidden) if solve(mm) is not None]
        dense = vocab * hidden * FLOAT32_BYTES
        table_pct = 100 * size(m, 2) / dense
        raise ValueError(
            f"asg.budget_bytes_pct={100 * allowed / dense:g} cannot be met within {BYTES_TOLERANCE:.0%} with "
            f"asg.m={m} (stages={stages}): its smallest code table is {table_pct:.3f}% of the float32 matrix; "
            + (f"choose asg.m from {', '.join(fits)}" if fits else "no asg.m can; raise the budget")
        )
    return k


def widest_m(
    budget_bytes_pct: float,
    vocab: int,
    hidden: int,
    *,
    stages: int = 1,
    min_k: int = 64,
    float_bytes: int = FLOAT32_BYTES,
) -> int:
    """The most sub-spaces whose byte budget still leaves at least min_k centroids each: a sizing rule for
    comparisons at equal bytes (more sub-spaces cost code-table bytes, fewer centroids cost accuracy)."""
    allowed = budget_bytes_pct / 100 * vocab * hidden * FLOAT32_BYTES

    def size(m: int, k: int) -> int:
        return quantized_bytes(vocab, hidden, m=m, k=k, stages=stages, float_bytes=float_bytes)

    fits = []
    for m in divisors(hidden):
        k = nearest_setting(lambda k, m=m: size(m, k), allowed, 2, vocab)
        if k is not None and k >= min_k:
            fits.append(m)
    if not fits:
        raise ValueError(f"no asg.m meets asg.budget_bytes_pct={budget_bytes_pct} with k >= {min_k}; raise the budget")
    return max(fits)


def budget_k(cfg: Mapping[str, Any], vocab: int, hidden: int, *, m: int = 1, stages: int = 1) -> int:
    """Centroids per sub-space, over all stages: asg.k; from asg.budget_pct (k centroids of a V-row matrix keep
    k / V of the parameters); or stages x the per-stage k whose bytes meet asg.budget_bytes_pct at this m."""
    allowed = budget_bytes(cfg, vocab, hidden)
    if allowed is not None:
        return stages * bytes_k(allowed, vocab, hidden, m=m, stages=stages, float_bytes=float_bytes(cfg))
    budget = cfg.get("budget_pct")
    if budget is None:
        return cfg["k"]
    if not 0 < budget <= 100:
        raise ValueError(f"asg.budget_pct={budget} must be a percentage in (0, 100]")
    return max(1, round(budget / 100 * vocab))


def pq_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The k-means settings every quantizing method passes on to `product_quantize`."""
    options = {key: cfg[key] for key in ("iters", "init", "seed") if cfg.get(key) is not None}
    options["sample_rows"] = cfg.get("sample_rows")  # null in the config means all rows, not the function default
    for key in ("backend", "cache_dir"):  # optional: older configs and the tests may leave them out
        if cfg.get(key) is not None:
            options[key] = cfg[key]
    return options | {"progress": bool(cfg.get("progress", True))}


def _resolve_pq(cfg: Mapping[str, Any], vocab: int, hidden: int) -> dict[str, Any]:
    check_shape(vocab, hidden, m=cfg["m"], k=1)  # m first: the byte budget depends on it
    settings = dict(cfg) | {"k": budget_k(cfg, vocab, hidden, m=cfg["m"])}
    check_shape(vocab, hidden, m=settings["m"], k=settings["k"])
    return settings


def _build_pq(
    weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None, row_weights: Tensor | None = None
) -> CompressedEmbedding:
    module = ASGEmbedding.from_embedding(
        weight, m=settings["m"], k=settings["k"], row_weights=row_weights, **pq_options(settings)
    )
    module.padding_idx = padding_idx
    return module


register(Method("pq", _resolve_pq, _build_pq))


def method_names() -> list[str]:
    _load_baselines()
    return ["none", *METHODS]


def get_method(name: str) -> Method:
    _load_baselines()
    if name not in METHODS:
        raise ValueError(f"asg.method={name!r} is unknown; choose one of {', '.join(method_names())}")
    return METHODS[name]


def _load_baselines() -> None:
    # the other methods register themselves on import; imported lazily to keep this module free of cycles
    import asg.baselines  # noqa: F401
    import asg.opq  # noqa: F401
    import asg.tiered  # noqa: F401
