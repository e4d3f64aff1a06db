"""Product quantization of an embedding matrix with batched k-means.

Every row of E (V, d) is split into m sub-vectors of size s = d / m; each of the m
sub-spaces gets its own k-means codebook. All m problems run as one batch of tensor
ops, so the cost is a few large matmuls rather than m small ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

log = logging.getLogger(__name__)

INITS = ("kmeans++", "random")
# k-means++ seeding is sequential in k, so it runs on a subsample of this many rows per centroid.
_SEED_ROWS_PER_CENTROID = 16
# rows per distance block: measured faster on CPU than 65536-row blocks, with 16x less scratch memory
_CHUNK_ROWS = 4096


@dataclass
class PQResult:
    """Outcome of `product_quantize`."""

    codes: Tensor  # (V, m) int64, centroid index per sub-space
    codebooks: Tensor  # (m, k, s) float32
    rel_error: float  # ||E - reconstruct(codes, codebooks)||_F / ||E||_F


def smallest_code_dtype(k: int) -> torch.dtype:
    """Smallest integer dtype that holds code values 0..k-1."""
    if k <= 256:
        return torch.uint8
    if k <= 32768:
        return torch.int16
    return torch.int32


def reconstruct(codes: Tensor, codebooks: Tensor) -> Tensor:
    """Explicit inverse of PQ: codes (..., m) and codebooks (m, k, s) -> vectors (..., m * s).

    Differentiable with respect to `codebooks`; uses one flat embedding lookup, whose
    backward is a small dense (m * k, s) gradient.
    """
    m, k, s = codebooks.shape
    if codes.shape[-1] != m:
        raise ValueError(f"codes have {codes.shape[-1]} sub-spaces but codebooks have {m}")
    offsets = torch.arange(m, device=codes.device) * k  # (m,)
    flat = codes.long() + offsets  # (..., m) indices into the stacked codebooks
    vectors = F.embedding(flat, codebooks.reshape(m * k, s))  # (..., m, s)
    return vectors.reshape(*codes.shape[:-1], m * s)


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init={init!r} is not supported; use one of {', '.join(INITS)}")


def _assign(x: Tensor, centroids: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Nearest centroid per row: x (m, n, s), centroids (m, k, s) -> codes (m, n), sq. dist (m, n)."""
    m, n, _ = x.shape
    c_sq = centroids.square().sum(-1).unsqueeze(1)  # (m, 1, k)
    c_t = centroids.transpose(1, 2)  # (m, s, k)
    codes = torch.empty(m, n, dtype=torch.long, device=x.device)
    dist = torch.empty(m, n, dtype=torch.float32, device=x.device)
    for start in range(0, n, chunk_size):
        xb = x[:, start : start + chunk_size]  # (m, b, s)
        # ||x||^2 is constant per row, so the argmin only needs ||c||^2 - 2 x.c
        scores = torch.baddbmm(c_sq, xb, c_t, alpha=-2)  # (m, b, k)
        best, idx = scores.min(-1)  # (m, b)
        codes[:, start : start + chunk_size] = idx
        dist[:, start : start + chunk_size] = (best + xb.square().sum(-1)).clamp_min(0)
    return codes, dist


def _update(x: Tensor, codes: Tensor, dist: Tensor, k: int) -> Tensor:
    """New centroids (m, k, s) as cluster means; empty clusters take the farthest points."""
    m, _, s = x.shape
    flat = (codes + torch.arange(m, device=x.device).unsqueeze(1) * k).reshape(-1)  # (m * n,)
    sums = torch.zeros(m * k, s, device=x.device).index_add_(0, flat, x.reshape(-1, s))
    counts = torch.bincount(flat, minlength=m * k).view(m, k)  # (m, k)
    centroids = sums.view(m, k, s) / counts.clamp_min(1).unsqueeze(-1)  # (m, k, s)
    empty = counts == 0  # (m, k)
    if not empty.any():
        return centroids
    # the worst-served points become new centroids: distinct per sub-space and deterministic
    n_empty = int(empty.sum(1).max())
    far = dist.topk(n_empty, dim=1).indices  # (m, n_empty)
    rank = (empty.cumsum(1) - 1).clamp(0, n_empty - 1)  # (m, k) i-th empty cluster -> i-th far point
    rows = far.gather(1, rank)  # (m, k)
    reseed = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, s))  # (m, k, s)
    return torch.where(empty.unsqueeze(-1), reseed, centroids)


def _kmeans_pp(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Batched k-means++ (D^2 sampling) seeding on a row subsample: x (m, n, s) -> (m, k, s)."""
    m, n, s = x.shape
    n_seed = min(n, max(k * _SEED_ROWS_PER_CENTROID, 4096))
    if n_seed < n:
        x = x[:, torch.randperm(n, generator=gen, device=x.device)[:n_seed]]  # (m, n_seed, s)
    batch = torch.arange(m, device=x.device)
    x_sq = x.square().sum(-1)  # (m, n_seed)
    centroids = torch.empty(m, k, s, device=x.device)
    first = torch.randint(n_seed, (m,), generator=gen, device=x.device)
    centroids[:, 0] = x[batch, first]
    min_d = torch.full_like(x_sq, float("inf"))
    for j in range(1, k):
        c = centroids[:, j - 1]  # (m, s) newest centroid
        d = x_sq - 2 * torch.bmm(x, c.unsqueeze(-1)).squeeze(-1) + c.square().sum(-1, keepdim=True)
        min_d = torch.minimum(min_d, d.clamp_min(0))  # (m, n_seed)
        # fewer distinct rows than k leaves no mass to sample from: fall back to uniform
        weights = torch.where(min_d.sum(1, keepdim=True) > 0, min_d, torch.ones_like(min_d))
        pick = torch.multinomial(weights, 1, generator=gen).squeeze(1)  # (m,)
        centroids[:, j] = x[batch, pick]
    return centroids


def kmeans(
    x: Tensor,
    k: int,
    *,
    iters: int = 25,  # Lloyd iterations at most
    init: str = "kmeans++",  # "kmeans++" (D^2 sampling) or "random" (k distinct rows)
    seed: int = 0,  # seeds a local generator; the global RNG is never touched
    tol: float = 1e-4,  # stop once inertia falls by less than this fraction
    chunk_size: int = _CHUNK_ROWS,  # rows per distance block; memory ~ m * chunk_size * k floats
    progress: bool = False,  # show a tqdm bar over iterations
) -> tuple[Tensor, Tensor]:
    """Run m independent k-means problems at once.

    x is (m, n, s); returns centroids (m, k, s) float32 and assignments (m, n) int64,
    where the assignments are the nearest returned centroids.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (m, n, s), got shape {tuple(x.shape)}")
    m, n, s = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of rows n={n}")
    _check_init(init)
    if iters < 1 or chunk_size < 1:
        raise ValueError(f"iters={iters} and chunk_size={chunk_size} must be at least 1")
    x = x.float().contiguous()
    if k == n:  # every row its own centroid: the exact optimum, no search needed
        return x.clone(), torch.arange(n, device=x.device).expand(m, n).clone()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if init == "kmeans++":
        centroids = _kmeans_pp(x, k, gen)
    else:
        rows = torch.rand(m, n, generator=gen, device=x.device).argsort(1)[:, :k]  # (m, k)
        centroids = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, s))

    codes, dist = _assign(x, centroids, chunk_size)
    inertia = dist.sum(dtype=torch.float64).item()
    bar = tqdm(range(iters), desc="k-means", disable=not progress)
    for it in bar:
        centroids = _update(x, codes, dist, k)
        codes, dist = _assign(x, centroids, chunk_size)
        previous, inertia = inertia, dist.sum(dtype=torch.float64).item()
        bar.set_postfix(inertia=f"{inertia:.4g}")
        log.debug("k-means iter %d: inertia %.6g", it, inertia)
        if previous - inertia <= tol * previous:
            break
    bar.close()
    return centroids, codes


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def check_shape(vocab: int, dim: int, *, m: int, k: int) -> None:
    """Raise a ValueError naming the fix when m or k cannot quantize a (vocab, dim) matrix."""
    if not isinstance(m, int) or m < 1 or dim % m != 0:
        choices = ", ".join(map(str, _divisors(dim)))
        raise ValueError(f"asg.m={m} does not divide hidden size {dim}; choose one of {choices}")
    if not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"asg.k={k} must be between 1 and the vocabulary size V={vocab}; lower asg.k")


def product_quantize(
    weight: Tensor,
    *,
    m: int,  # number of sub-spaces; must divide the hidden size
    k: int,  # centroids per sub-space
    iters: int = 25,  # Lloyd iterations at most
    init: str = "kmeans++",  # "kmeans++" or "random"
    seed: int = 0,  # seeds row sampling and k-means
    sample_rows: int | None = None,  # fit centroids on this many random rows, then assign all
    tol: float = 1e-4,  # relative inertia change that stops k-means early
    progress: bool = False,  # show a tqdm bar
) -> PQResult:
    """Product-quantize a (V, d) matrix into m codebooks of k centroids each."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (vocab_size, hidden_size) matrix, got shape {tuple(weight.shape)}")
    vocab, dim = weight.shape
    check_shape(vocab, dim, m=m, k=k)
    _check_init(init)
    if iters < 1:
        raise ValueError(f"iters={iters} must be at least 1")
    if sample_rows is not None and sample_rows < k:
        raise ValueError(f"sample_rows={sample_rows} must be at least k={k} (or None to fit on all rows)")

    s = dim // m
    e = weight.detach().float()
    x = e.reshape(vocab, m, s).transpose(0, 1).contiguous()  # (m, V, s)
    options = dict(iters=iters, init=init, seed=seed, tol=tol, progress=progress)
    if sample_rows is not None and sample_rows < vocab:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        rows = torch.randperm(vocab, generator=gen, device=x.device)[:sample_rows]
        codebooks, _ = kmeans(x[:, rows], k, **options)
        codes, _ = _assign(x, codebooks, _CHUNK_ROWS)  # every row, not only the sampled ones
    else:
        codebooks, codes = kmeans(x, k, **options)

    codes = codes.t().contiguous()  # (V, m)
    norm = e.norm().item()
    err = (e - reconstruct(codes, codebooks)).norm().item()
    rel_error = err / norm if norm > 0 else err
    log.info("PQ of %dx%d with m=%d k=%d: rel_error %.4f", vocab, dim, m, k, rel_error)
    return PQResult(codes=codes, codebooks=codebooks, rel_error=rel_error)
