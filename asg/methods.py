"""Compression methods selectable as `asg.method=...`: how each sizes itself, validates and builds its embedding.

A method turns the `asg` config into concrete settings for one (V, d) matrix (`resolve`, which also fails early
with an error naming the fix) and fits a `CompressedEmbedding` from the dense weight (`build`). `asg.budget_pct`,
when set, sizes every method to the same kept-parameter budget, so methods compare at equal cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from asg.embedding import ASGEmbedding, CompressedEmbedding
from asg.quantize import check_shape


@dataclass(frozen=True)
class Method:
    name: str
    # (asg config, vocab, hidden) -> the concrete settings; raises ValueError naming the fix
    resolve: Callable[[Mapping[str, Any], int, int], dict[str, Any]]
    # (dense weight, resolved settings, padding_idx) -> the fitted module
    build: Callable[[Tensor, Mapping[str, Any], int | None], CompressedEmbedding]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def budget_k(cfg: Mapping[str, Any], vocab: int) -> int:
    """Centroids per sub-space: asg.k, or from asg.budget_pct (k centroids of a V-row matrix keep k / V)."""
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
    settings = dict(cfg) | {"k": budget_k(cfg, vocab)}
    check_shape(vocab, hidden, m=settings["m"], k=settings["k"])
    return settings


def _build_pq(weight: Tensor, settings: Mapping[str, Any], padding_idx: int | None) -> CompressedEmbedding:
    module = ASGEmbedding.from_embedding(weight, m=settings["m"], k=settings["k"], **pq_options(settings))
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
    # the baselines register themselves on import; imported lazily to keep this module free of cycles
    import asg.baselines  # noqa: F401
