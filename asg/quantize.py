"""Product quantization of an embedding matrix with k-means per sub-space.

Every row of E (V, d) is split into m sub-vectors of size s = d / m; each of the m
sub-spaces gets its own k-means codebook. The sub-spaces are independent, so they run
side by side on torch's CPU threads, each with single-threaded ops: nearest centroids from
a compiled kernel where it serves (asg.kernels: sub-vectors of 2 to 96 floats on an
AVX2 or AVX-512 CPU) or else one matmul per block of rows, new centroids from one
scatter-add. Lloyd's iterations assign every row to its exact nearest centroid, and skip
the rows that provably keep theirs, so kernel and matmul give the same codes.

Like faiss's ProductQuantizer, the centroids are fitted on at most 256 random rows per
centroid (sample_rows="auto"), then every row is encoded; `backend="faiss"` runs faiss
itself. Fits can be cached on disk (`cache_dir`, see asg.cache).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor
from tqdm import tqdm

from asg import cache, kernels

log = logging.getLogger(__name__)
T = TypeVar("T")

INITS = ("kmeans++", "random")
BACKENDS = ("torch", "faiss")
# Part of every cache key: bump it whenever the same settings would give different codes, so stale fits miss.
# 2: k-means++ seeding rewrite (ef88867). 3: exact nearest centroids (near-ties decided in float64), new seeding
# arithmetic (one matmul per step), Hamerly-pruned Lloyd (same result as plain Lloyd). 4: k-means++ seeds on
# s rows per centroid in [16, 64] instead of 64. 5: and at most half of the rows Lloyd's iterations fit on.
FIT_VERSION = 5
# k-means++ seeding is sequential in k, so it runs on a row subsample: s rows per centroid in a sub-space of s
# floats, within [16, 64], and at most half of the Lloyd sample (at least _SEED_ROWS_MIN rows). Lloyd's iterations
# recover from a coarse seeding in few dimensions but not in many. `python -m experiments.seeding_rows` measures
# the trade (experiments/results/seeding_rows/, 1 thread): at s=12 (m=32, k=1024) 8 to 64 rows move the relative
# error by 0.0001 on e5-small and 0.0011 on MiniLM; at s=48 (m=8), 16 rows instead of 48 raise e5-small's error
# above faiss's (0.82093 against 0.82069 at k=1024), where 32 or more rows stay at or below it. But where the
# vocabulary is small for k (MiniLM's 30,522 rows at k=1024: all of them seeded), seeding costs as much as Lloyd
# itself: 16 rows per centroid there cut the fit from 1.13-1.20x to 0.86-0.87x of faiss's cpu time, at errors
# still below faiss's. The share cap gives MiniLM those rows (k=1024: 15, k=512: 30) and leaves e5-small's as they
# were (its 256 k-row sample is never seeded past half).
_SEED_ROWS_PER_CENTROID = (16, 64)
_SEED_ROWS_MIN = 4096
_SEED_SHARE = 0.5
# floats per (rows, k) block of distance scores. On CPU 4 MiB blocks beat 1 MiB ones although they leave L2: each
# block costs a dozen small ops (2^18..2^21 floats measured on e5-small's sub-spaces); an accelerator wants few
# large matmuls, and 256 MiB blocks leave a GPU's memory to the model
_SCORE_BLOCK = 1 << 20
_SCORE_BLOCK_ACCELERATOR = 1 << 26
# A block of scores is viewed as (rows, depth, lanes): the min over depth is an elementwise (vectorized) reduction,
# so an argmin takes index reductions over lanes + depth values instead of k (torch's argmin is 3x a matmul here)
_LANES = 64
# faiss's default training sample (ClusteringParameters.max_points_per_centroid)
_SAMPLE_ROWS_PER_CENTROID = 256


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


def code_bits(k: int) -> int:
    """Bits of one code among k centroids when bit-packed: ceil(log2 k), which is (k - 1).bit_length() exactly."""
    return (k - 1).bit_length()


def packed_code_bytes(count: int, k: int) -> int:
    """Bytes of `count` codes among k centroids, bit-packed as `asg.export` stores a code table."""
    return math.ceil(count * code_bits(k) / 8)


class _Lookup(torch.autograd.Function):
    """Vectors (n, m * s) of codes (n, m) from codebooks (m, k, s), with a backward that accumulates straight into
    the codebooks' gradient, or with `sparse` hands the looked-up rows on as they are.

    On CPU both directions run the compiled `kernels.gather` / `kernels.scatter`, reading the codes as they are:
    no flat (n * m) index is built, and the backward adds rows in autograd's order (float32: the same sums as
    index_select's index_add backward, bit for bit, on any thread count). Elsewhere, one flat index_select whose
    backward is index_put_(accumulate=True): bit-equal to index_add on one CPU thread, while on several, or on
    CUDA unless trainer.deterministic=true, it may add a row's terms in another order. Half-precision gradients
    are summed in float32 and rounded once, as index_put_ would otherwise round after every addition.
    """

    @staticmethod
    def forward(ctx: Any, codebooks: Tensor, codes: Tensor, sparse: bool) -> Tensor:
        m, k, s = codebooks.shape
        ctx.save_for_backward(codes)
        ctx.k, ctx.sparse = k, sparse
        vectors = kernels.gather(codes, codebooks)
        if vectors is None:
            vectors = codebooks.reshape(m * k, s).index_select(0, _flat_index(codes, k)).view(-1, m * s)
        return vectors

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (codes,) = ctx.saved_tensors
        m, k = codes.shape[1], ctx.k
        if ctx.sparse:
            return _sparse_rows(grad, codes, k), None, None
        summed = grad.float()
        table_grad = kernels.scatter(summed, codes, k)
        if table_grad is None:
            s = summed.shape[1] // m
            table_grad = summed.new_zeros(m * k, s)
            table_grad.index_put_((_flat_index(codes, k),), summed.reshape(-1, s), accumulate=True)
        return table_grad.view(m, k, -1).to(grad.dtype), None, None


def _sparse_rows(grad: Tensor, codes: Tensor, k: int) -> Tensor:
    """The codebook gradient as nn.Embedding(sparse=True) gives its own: grad (n, m * s) as n * m uncoalesced rows
    of a sparse (m, k, s) tensor at (sub-space, code), in grad's dtype; the optimizer's coalesce adds them up."""
    n, m = codes.shape
    index = torch.empty(2, n, m, dtype=torch.long, device=codes.device)
    index[0] = torch.arange(m, device=codes.device)
    index[1] = codes
    s = grad.shape[1] // m
    # the forward's gather already refused out-of-range codes, so torch's own index check would only repeat it
    return torch.sparse_coo_tensor(index.view(2, -1), grad.reshape(n * m, s), (m, k, s), check_invariants=False)


def _flat_index(codes: Tensor, k: int) -> Tensor:
    """Codes (n, m) -> rows (n * m,) of the (m * k, s) stacked codebooks."""
    return (codes.long() + torch.arange(codes.shape[1], device=codes.device) * k).reshape(-1)


def reconstruct(codes: Tensor, codebooks: Tensor, *, sparse: bool = False) -> Tensor:
    """Explicit inverse of PQ: codes (..., m) and codebooks (m, k, s) -> vectors (..., m * s).

    Differentiable with respect to `codebooks`, whose gradient accumulates into a small dense (m, k, s) tensor
    (`_Lookup`), or with `sparse` is a sparse one holding every looked-up row, for optimizers that take sparse
    gradients (SGD, SparseAdam).
    """
    m, k, s = codebooks.shape
    if codes.shape[-1] != m:
        raise ValueError(f"codes have {codes.shape[-1]} sub-spaces but codebooks have {m}")
    vectors = _Lookup.apply(codebooks, codes.reshape(-1, m), sparse)  # (n, m * s)
    return vectors.view(*codes.shape[:-1], m * s)


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init={init!r} is not supported; use one of {', '.join(INITS)}")


def _slack(x_sq: Tensor, centroids: Tensor) -> Tensor:
    """Per row (n,), a bound on the float32 rounding error of ||x||^2 + ||c||^2 - 2 x.c for any centroid c.

    Each of the s products and sums rounds by at most 2^-24 of (|x| + |c|)^2; (s + 8) * 2^-23 leaves a factor 2.
    On CUDA with TF32 matmuls allowed, the products keep 10 bits instead of 23.
    """
    s = centroids.shape[1]
    tf32 = centroids.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    c_max = centroids.square().sum(-1).max().sqrt()
    return (s + 8) * 2.0 ** (-9 if tf32 else -23) * (x_sq.sqrt() + c_max).square()


def _exact_nearest(x: Tensor, centroids: Tensor) -> Tensor:
    """Nearest centroid in float64, the lowest index on ties: x (t, s), centroids (k, s) -> codes (t,)."""
    c = centroids.double()
    return torch.addmm(c.square().sum(-1), x.double(), c.t(), alpha=-2).argmin(1)


def _argmin(scores: Tensor, lanes: int) -> Tensor:
    """Row-wise argmin of scores (r, depth * lanes): index reductions over lanes + depth values instead of k."""
    rows = scores.shape[0]
    block = scores.view(rows, scores.shape[1] // lanes, lanes)
    lane = block.amin(1).argmin(1, keepdim=True)  # (rows, 1): the lane of the minimum
    column = block.gather(2, lane.unsqueeze(1).expand(rows, block.shape[1], 1)).squeeze(2)  # (rows, depth)
    return column.argmin(1) * lanes + lane.squeeze(1)


def _nearest(
    x: Tensor, centroids: Tensor, slack: Tensor, prev: Tensor | None = None, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every row: x (n, s), centroids (k, s) -> codes (n,), runner-up score (n,).

    Scores are ||c||^2 - 2 x.c in float32, from the compiled kernel where it serves (`asg.kernels`) or else
    torch ops; a row whose two best scores are within 2 * slack (twice the rounding error) is decided by
    `_exact_nearest`, so codes are the exact nearest centroids whatever computed the scores. The runner-up
    score + ||x||^2 is the squared distance to the nearest other centroid.
    """
    fused = kernels.nearest(x, centroids)
    codes, best, second = fused if fused is not None else _scores_torch(x, centroids, prev, chunk_size)
    close = (second - best <= 2 * slack).nonzero().squeeze(1)
    codes[close] = _exact_nearest(x[close], centroids)
    return codes, second


def _scores_torch(
    x: Tensor, centroids: Tensor, prev: Tensor | None, chunk_size: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """`_nearest`'s float32 search with torch ops: codes, best and runner-up scores, from (rows, k) score blocks.

    prev (n,), the codes of an earlier pass, saves the index search for the rows whose minimum is still there.
    """
    n, (k, s) = x.shape[0], centroids.shape
    lanes = min(_LANES, k)
    padded = torch.zeros(-(-k // lanes) * lanes, s, dtype=torch.float32, device=x.device)
    padded[:k] = centroids
    c_sq = padded.square().sum(-1)
    c_sq[k:] = math.inf  # padding is never nearest
    block = _SCORE_BLOCK if x.device.type == "cpu" else _SCORE_BLOCK_ACCELERATOR
    chunk_size = chunk_size or max(16, block // len(padded))
    codes = torch.empty(n, dtype=torch.long, device=x.device)
    best = torch.empty(n, dtype=torch.float32, device=x.device)
    second = torch.empty(n, dtype=torch.float32, device=x.device)
    scores = torch.empty(min(chunk_size, n), len(padded), dtype=torch.float32, device=x.device)  # reused
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = torch.addmm(c_sq, x[start:stop], padded.t(), alpha=-2, out=scores[: stop - start])
        low = torch.amin(block, 1, keepdim=True, out=best[start:stop].unsqueeze(1))  # (rows, 1)
        if prev is None:
            code = _argmin(block, lanes)
        else:
            code = prev[start:stop].clone()
            moved = (block.gather(1, code.unsqueeze(1)) != low).squeeze(1).nonzero().squeeze(1)
            code[moved] = _argmin(block.index_select(0, moved), lanes)
        codes[start:stop] = code
        torch.amin(block.scatter_(1, code.unsqueeze(1), math.inf), 1, out=second[start:stop])
    return codes, best, second


def _sq_dist(x: Tensor, centroids: Tensor, codes: Tensor) -> Tensor:
    """Squared distance of every row of x (n, s) to its centroid: (n,), in row blocks that stay in cache."""
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    step = 1 << 13
    for start in range(0, x.shape[0], step):
        rows = slice(start, start + step)
        torch.sum((x[rows] - centroids.index_select(0, codes[rows])).square_(), 1, out=out[rows])
    return out


def _update(
    x: Tensor, codes: Tensor, dist: Tensor, k: int, w: Tensor | None = None, wx: Tensor | None = None
) -> Tensor:
    """New centroids (k, s) of one sub-space as cluster means, weighted by w (n,) when given (wx = w * x);
    clusters without rows (or weight) take the worst-served points."""
    rows = x if w is None else wx
    sums = kernels.scatter(rows, codes.unsqueeze(1), k)  # (1, k, s): index_add's sums in its order, 2-3x faster
    if sums is None:
        sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, codes, rows)[None]
    counts = torch.bincount(codes, w, minlength=k).to(x.dtype)  # (k,)
    empty = counts == 0
    centroids = sums[0] / counts.masked_fill(empty, 1).unsqueeze(-1)  # (k, s)
    if empty.any():  # distinct and deterministic
        centroids[empty] = x[(dist if w is None else dist * w).topk(int(empty.sum())).indices]
    return centroids


def _kmeans_pp(x: Tensor, k: int, gen: torch.Generator, w: Tensor | None = None) -> Tensor:
    """Greedy k-means++ seeding of one sub-space on a row subsample: x (n, s) -> (k, s).

    As in scikit-learn, each step draws 2 + ln k candidates by D^2 sampling and keeps the one that lowers the
    potential most. On Gaussian 50k x 768 data (m=8, k=1024, 16 seeding rows per centroid), 25 Lloyd iterations
    then end at 0.9217 relative error; from plain k-means++ at 0.9230, from random rows (faiss's seeding) 0.9232.
    With row weights w (n,), a subsample is drawn in proportion to them (the rows that carry the weight seed), and
    where every weighted row is seeded, the D^2 draws and the potential are weighted instead.
    """
    n = x.shape[0]
    per_centroid = min(max(x.shape[1], _SEED_ROWS_PER_CENTROID[0]), _SEED_ROWS_PER_CENTROID[1])
    n_seed = min(n, max(_SEED_ROWS_MIN, min(k * per_centroid, int(n * _SEED_SHARE))))
    if w is not None and n_seed < int(w.count_nonzero()):
        x, w = x[torch.multinomial(w, n_seed, generator=gen)], None  # (n_seed, s): the draw did the weighting
    elif w is not None:
        n_seed = n
    elif n_seed < n:
        x = x[torch.randperm(n, generator=gen, device=x.device)[:n_seed]]  # (n_seed, s)
    trials = 2 + int(math.log(k))
    x_sq = x.square().sum(-1, keepdim=True)  # (n_seed, 1)
    ones = torch.ones(n_seed, 1, dtype=x.dtype, device=x.device)
    rows = torch.cat([x, x_sq, ones], 1).t().contiguous()  # (s + 2, n_seed): one matmul gives squared distances
    weights = torch.cat([-2 * x, ones, x_sq], 1)  # (n_seed, s + 2): a candidate's row of that matmul
    first = (
        torch.randint(n_seed, (), generator=gen, device=x.device)
        if w is None
        else torch.multinomial(w, 1, generator=gen)
    )
    chosen = torch.empty(k, dtype=torch.long, device=x.device)  # rows picked; the centroids are gathered once
    chosen[0] = first
    c = x[first].view(-1)
    min_d = torch.addmv(x_sq.squeeze(1) + c.dot(c), x, c, alpha=-2).clamp_min_(0)
    if not kernels.seed_steps(weights, rows, min_d, w, chosen, trials, gen):
        _seed_steps_torch(weights, rows, min_d, w, chosen, trials, gen)
    return x[chosen]


def _seed_steps_torch(
    weights: Tensor, rows: Tensor, min_d: Tensor, w: Tensor | None, chosen: Tensor, trials: int, gen: torch.Generator
) -> None:
    """k-means++ steps 1..k-1 into chosen (k,): D^2-draw `trials` candidates, keep the one leaving least potential.

    weights (n, s + 2) times rows (s + 2, n) gives squared distances; min_d (n,) is each row's D^2 so far.
    csrc/kmeans.cpp's seed_steps makes these same calls from C++.
    """
    n = min_d.shape[0]
    # buffers reused by every step: the same arithmetic as fresh tensors, without ~1 MiB of allocation per step
    cdf, d = torch.empty_like(min_d), torch.empty(trials, n, dtype=min_d.dtype, device=min_d.device)
    potential = torch.empty(trials, dtype=min_d.dtype, device=min_d.device)
    for i in range(1, len(chosen)):
        # inverse-CDF sampling: row r with probability min_d[r] / sum(min_d) (times its weight)
        total = torch.cumsum(min_d if w is None else min_d * w, 0, out=cdf)[-1].item()
        if total > 0:
            u = torch.rand(trials, generator=gen, dtype=min_d.dtype, device=min_d.device).mul_(total)
            cand = torch.searchsorted(cdf, u, right=True).clamp_max_(n - 1)
        else:  # fewer distinct rows than k leave no mass to sample from: fall back to uniform
            cand = torch.randint(n, (trials,), generator=gen, device=min_d.device)
        # (trials, n): each candidate's new D^2
        torch.minimum(torch.mm(weights.index_select(0, cand), rows, out=d), min_d, out=d)
        # least potential left; a tensor index, so an accelerator does not wait on the host every step
        best = (torch.sum(d, 1, out=potential) if w is None else torch.mv(d, w)).argmin()
        min_d = d[best].clamp_min(0)  # a copy (d is reused); rounding can dip below 0
        chosen[i] = cand[best]


def _lloyd(
    x: Tensor,
    k: int,
    *,
    iters: int,
    init: str,
    seed: int,
    tol: float,
    tick: Callable[[], None],  # called after every iteration (the progress bar)
    chunk_size: int | None = None,
    w: Tensor | None = None,  # (n,) row weights of the objective, sum(w * ||x - c||^2); None: all 1
) -> tuple[Tensor, Tensor]:
    """k-means of one sub-space: rows x (n, s) -> centroids (k, s), codes (n,) of the nearest centroids.

    Lloyd's iterations, each row assigned to its exact nearest centroid (`_nearest`), with Hamerly's bound to skip
    rows that cannot change: `lower` stays below a row's distance to every centroid but its own, falling by the
    largest move of another centroid each iteration. A row is rescanned only once its own distance reaches it;
    on real embeddings half the rows or fewer after 10 iterations. The result is that of plain Lloyd iterations.
    """
    n = x.shape[0]
    if k == n:  # every row its own centroid: the exact optimum, no search needed
        return x.clone(), torch.arange(n, device=x.device)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if init == "kmeans++":
        centroids = _kmeans_pp(x, k, gen, w)
    else:
        centroids = x[torch.randperm(n, generator=gen, device=x.device)[:k]]  # k distinct rows
    wx = None if w is None else x * w.unsqueeze(1)

    x_sq = x.square().sum(-1)  # (n,), once: rows do not move
    shrink = 1 - 2.0**-22  # keeps a bound below the truth through float32 rounding

    def bound(second: Tensor, x_sq: Tensor, slack: Tensor) -> Tensor:  # runner-up score -> distance lower bound
        return (second + x_sq - slack).clamp_min_(0).sqrt_().mul_(shrink)

    slack = _slack(x_sq, centroids)
    codes, second = _nearest(x, centroids, slack, chunk_size=chunk_size)
    lower = bound(second, x_sq, slack)
    dist = _sq_dist(x, centroids, codes)

    def objective() -> float:
        return (dist if w is None else dist * w).sum(dtype=torch.float64).item()

    inertia = objective()
    for it in range(iters):
        new = _update(x, codes, dist, k, w, wx)
        shift = (new - centroids).norm(dim=1).mul_(1 + 2.0**-10)  # (k,), rounded up
        top = shift.topk(min(2, k))
        runner_up = top.values[-1] if k > 1 else 0.0
        lower.sub_(torch.where(codes == top.indices[0], runner_up, top.values[0])).mul_(shrink)
        centroids, slack = new, _slack(x_sq, new)
        dist = _sq_dist(x, centroids, codes)
        redo = (lower <= (dist + 2 * slack).sqrt_()).nonzero().squeeze(1)  # another centroid may be as near
        if len(redo):
            x_r, sq_r, slack_r = x.index_select(0, redo), x_sq.index_select(0, redo), slack.index_select(0, redo)
            codes_r, second = _nearest(x_r, centroids, slack_r, codes.index_select(0, redo), chunk_size)
            moved = redo[codes_r != codes.index_select(0, redo)]  # the others keep their distance
            codes.index_copy_(0, redo, codes_r)
            lower.index_copy_(0, redo, bound(second, sq_r, slack_r))
            dist.index_copy_(0, moved, _sq_dist(x.index_select(0, moved), centroids, codes.index_select(0, moved)))
        previous, inertia = inertia, objective()
        tick()
        log.debug("k-means iter %d: inertia %.6g, %d of %d rows rescanned", it, inertia, len(redo), n)
        if previous - inertia <= tol * previous:
            break
    return centroids, codes


@contextmanager
def _one_thread() -> Iterator[None]:
    """Let torch use one CPU thread (MKL included) inside the block, then restore the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _per_space(fn: Callable[[int], T], m: int, device: torch.device) -> list[T]:
    """fn(j) for every sub-space j < m, the sub-spaces spread over torch's CPU threads.

    Each thread runs whole sub-spaces with single-threaded torch ops. A multi-threaded op ends in a barrier,
    and on a busy machine a barrier waits for a descheduled thread: measured on 2 shared cores, 12 ms per
    op whatever its size, 20x slower than the same ops on one thread. Independent sub-spaces need none.
    """
    workers = min(m, torch.get_num_threads())
    if workers == 1 or device.type != "cpu":
        return [fn(j) for j in range(m)]
    with _one_thread(), ThreadPoolExecutor(workers) as pool:  # torch ops release the GIL
        return list(pool.map(fn, range(m)))


def _seeds(seed: int, m: int) -> list[int]:
    """One seed per sub-space, drawn from `seed`: results do not depend on which thread runs which sub-space."""
    return torch.randint(2**62, (m,), generator=torch.Generator().manual_seed(seed), device="cpu").tolist()


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """A tqdm bar over k-means iterations; yields the tick that the sub-spaces' threads call."""
    lock = threading.Lock()
    with tqdm(total=total, desc="k-means", unit="iter", disable=not enabled) as bar:

        def tick() -> None:
            with lock:
                bar.update()

        yield tick


def _fit_spaces(
    rows_of: Callable[[int], Tensor],  # j -> the (n, s) rows k-means fits in sub-space j
    m: int,
    k: int,
    *,
    iters: int,
    init: str,
    seed: int,
    tol: float,
    progress: bool,
    device: torch.device,
    chunk_size: int | None = None,
    encode: Callable[[int, Tensor], Tensor] | None = None,  # (j, centroids) -> codes; default: the fitted rows'
    weights: Tensor | None = None,  # (n,) weight of each fitted row, every sub-space
) -> tuple[Tensor, Tensor]:
    """k-means in each of m sub-spaces, spread over torch's CPU threads -> centroids (m, k, s), codes (m, n)."""
    seeds = _seeds(seed, m)

    def fit(j: int) -> tuple[Tensor, Tensor]:
        centroids, codes = _lloyd(
            rows_of(j), k, iters=iters, init=init, seed=seeds[j], tol=tol, tick=tick, chunk_size=chunk_size, w=weights
        )
        return centroids, codes if encode is None else encode(j, centroids)

    with _progress(m * iters, progress) as tick:
        fits = _per_space(fit, m, device)
    return torch.stack([c for c, _ in fits]), torch.stack([codes for _, codes in fits])


def kmeans(
    x: Tensor,
    k: int,
    *,
    iters: int = 25,  # Lloyd iterations at most
    init: str = "kmeans++",  # "kmeans++" (greedy D^2 sampling) or "random" (k distinct rows)
    seed: int = 0,  # seeds local generators; the global RNG is never touched
    tol: float = 1e-5,  # stop a sub-space once its inertia falls by less than this fraction
    chunk_size: int | None = None,  # rows per distance block (None: 1 MiB of scores per block)
    progress: bool = False,  # show a tqdm bar over iterations
    weights: Tensor | None = None,  # (n,) non-negative row weights: minimise sum(w * ||x - c||^2); None: all 1
) -> tuple[Tensor, Tensor]:
    """Run m independent k-means problems, spread over torch's CPU threads.

    x is (m, n, s); returns centroids (m, k, s) float32 and assignments (m, n) int64,
    where the assignments are the nearest returned centroids. With weights, each centroid is the weighted mean
    of its rows and k-means++ draws in proportion to weight times squared distance.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (m, n, s), got shape {tuple(x.shape)}")
    m, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of rows n={n}")
    _check_init(init)
    if iters < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"iters={iters} and chunk_size={chunk_size} must be at least 1")
    x = x.float()
    options = dict(iters=iters, init=init, seed=seed, tol=tol, progress=progress, chunk_size=chunk_size)
    w = None if weights is None else check_weights(weights, n).to(x.device)
    return _fit_spaces(lambda j: x[j].contiguous(), m, k, device=x.device, weights=w, **options)


def check_weights(weights: Tensor, n: int) -> Tensor:
    """Row weights as float32 with mean 1 (a scale that leaves the fit unchanged); ValueError naming the problem."""
    if weights.shape != (n,):
        raise ValueError(f"row weights must have one entry per row, shape ({n},), got {tuple(weights.shape)}")
    w = weights.detach().double()
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("row weights must be finite, non-negative and not all zero")
    return (w * (n / w.sum())).float()


def divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def check_shape(vocab: int, dim: int, *, m: int, k: int) -> None:
    """Raise a ValueError naming the fix when m or k cannot quantize a (vocab, dim) matrix."""
    if not isinstance(m, int) or m < 1 or dim % m != 0:
        choices = ", ".join(map(str, divisors(dim)))
        raise ValueError(f"asg.m={m} does not divide hidden size {dim}; choose one of {choices}")
    if not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"asg.k={k} must be between 1 and the vocabulary size V={vocab}; lower asg.k")


def _sample_size(sample_rows: int | str | None, vocab: int, k: int) -> int:
    """Rows the centroids are fitted on: "auto" is faiss's default of 256 rows per centroid."""
    if sample_rows == "auto":
        return min(vocab, _SAMPLE_ROWS_PER_CENTROID * k)
    if sample_rows is None:
        return vocab
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int):
        raise ValueError(f"sample_rows={sample_rows!r} must be an integer, 'auto' or None (all rows)")
    if sample_rows < k:
        raise ValueError(f"sample_rows={sample_rows} must be at least k={k} (or None to fit on all rows)")
    return min(vocab, sample_rows)


def _fit_torch(
    e: Tensor,
    m: int,
    k: int,
    *,
    n_fit: int,
    iters: int,
    init: str,
    seed: int,
    tol: float,
    progress: bool,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """k-means per sub-space on n_fit random rows of e (V, d), then every row encoded: -> codes (V, m), codebooks."""
    vocab, dim = e.shape
    x = e.view(vocab, m, dim // m)  # (V, m, s) without a copy
    rows = None
    if n_fit < vocab:  # one sample for all sub-spaces, as faiss takes it
        gen = torch.Generator().manual_seed(seed)  # on the CPU, so every fit device draws the same rows
        rows = torch.randperm(vocab, generator=gen, device="cpu")[:n_fit].to(e.device)
    encode = None
    if rows is not None:  # every row, not only the sampled ones; BLAS reads the strided view

        def encode(j: int, centroids: Tensor) -> Tensor:
            rows = x[:, j]
            return _nearest(rows, centroids, _slack(rows.square().sum(-1), centroids))[0]

    codebooks, codes = _fit_spaces(
        lambda j: (x[:, j] if rows is None else x[rows, j]).contiguous(),
        m,
        k,
        iters=iters,
        init=init,
        seed=seed,
        tol=tol,
        progress=progress,
        device=e.device,
        encode=encode,
        weights=None if weights is None else weights if rows is None else weights[rows],
    )
    return codes.t().contiguous(), codebooks


def _fit_faiss(
    e: Tensor, m: int, k: int, *, n_fit: int, iters: int, seed: int, progress: bool
) -> tuple[Tensor, Tensor]:
    """faiss.ProductQuantizer trained on n_fit random rows of e (V, d), then every row encoded."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("backend='faiss' needs faiss: pip install 'asg[faiss]' (or faiss-cpu)") from err
    vocab, dim = e.shape
    nbits = k.bit_length() - 1
    pq = faiss.ProductQuantizer(dim, m, nbits)
    pq.cp.niter, pq.cp.seed, pq.verbose = iters, seed, progress
    data = e.cpu().numpy()  # float32, C-contiguous: shared with e, not copied
    train = data
    if n_fit < vocab:
        gen = torch.Generator().manual_seed(seed)
        train = data[torch.randperm(vocab, generator=gen, device="cpu")[:n_fit].numpy()]
    pq.cp.max_points_per_centroid = -(-len(train) // k)  # train on exactly these rows: no second subsample
    pq.train(train)
    codes = faiss.unpack_bitstrings(pq.compute_codes(data), m, nbits)  # (V, m) from nbits-wide bit fields
    codebooks = faiss.vector_to_array(pq.centroids).reshape(m, k, dim // m)
    return torch.from_numpy(codes).long().to(e.device), torch.from_numpy(codebooks).to(e.device)


def _relative_error(e: Tensor, codes: Tensor, codebooks: Tensor, chunk_size: int = 8192) -> float:
    """||E - reconstruct(codes, codebooks)||_F / ||E||_F, in row blocks so no second (V, d) matrix is built."""
    err = norm = 0.0
    for start in range(0, e.shape[0], chunk_size):
        block = e[start : start + chunk_size]
        # float32 norms: torch sums in a cascade, and a float64 copy costs 10x the time
        err += torch.linalg.vector_norm(block - reconstruct(codes[start : start + chunk_size], codebooks)).item() ** 2
        norm += torch.linalg.vector_norm(block).item() ** 2
    return math.sqrt(err / norm) if norm > 0 else math.sqrt(err)


def product_quantize(
    weight: Tensor,
    *,
    m: int,  # number of sub-spaces; must divide the hidden size
    k: int,  # centroids per sub-space
    iters: int = 25,  # Lloyd iterations at most
    init: str = "kmeans++",  # "kmeans++" or "random"
    seed: int = 0,  # seeds row sampling and k-means
    sample_rows: int | str | None = "auto",  # fit centroids on this many random rows, then assign all
    # relative inertia change that stops k-means early; 1e-4 stopped Gaussian data after 16 of 25 iterations,
    # 0.01% above faiss's error (experiments/pq_fit.py)
    tol: float = 1e-5,
    progress: bool = False,  # show a tqdm bar
    backend: str = "torch",  # "torch" (k-means per sub-space here) or "faiss" (faiss.ProductQuantizer)
    cache_dir: str | os.PathLike | None = None,  # reuse fits saved here; None disables the cache
    row_weights: Tensor | None = None,  # (V,) how much each row counts in k-means (asg.row_weights); None: all 1
) -> PQResult:
    """Product-quantize a (V, d) matrix into m codebooks of k centroids each.

    sample_rows: "auto" fits the centroids on min(V, 256 k) random rows (faiss's default training sample),
    an integer on that many, None on all rows; every row is encoded either way.
    backend="faiss" trains faiss.ProductQuantizer (k a power of two) with the same iters, seed and sample;
    init and tol do not apply (faiss seeds with random rows and runs every iteration).
    row_weights: k-means minimises sum_i w_i ||x_i - c(x_i)||^2, so heavy rows (frequent tokens) are served
    better; "auto" then fits on all rows, since a uniform sample would drop most of the heavy ones. rel_error is
    still over the whole matrix, unweighted.
    cache_dir: the fit is saved there and reused for the same matrix and settings (see asg.cache). The model id
    is not known here: the sha256 of the float32 matrix identifies it.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (vocab_size, hidden_size) matrix, got shape {tuple(weight.shape)}")
    vocab, dim = weight.shape
    check_shape(vocab, dim, m=m, k=k)
    _check_init(init)
    if iters < 1:
        raise ValueError(f"iters={iters} must be at least 1")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; use one of {', '.join(BACKENDS)}")
    if backend == "faiss" and (k < 2 or k & (k - 1)):
        raise ValueError(f"backend='faiss' needs k to be a power of two (it stores log2(k)-bit codes), got k={k}")
    if row_weights is not None and backend == "faiss":
        raise ValueError("backend='faiss' cannot weight rows; use backend='torch' with row weights")
    w = None if row_weights is None else check_weights(row_weights, vocab).to(weight.device)
    n_fit = vocab if w is not None and sample_rows == "auto" else _sample_size(sample_rows, vocab, k)
    e = weight.detach().float().contiguous()

    if cache_dir is not None:
        # everything the result depends on; the checksum stands in for the (unknown) model id
        key = {"matrix_sha256": cache.matrix_checksum(e), "shape": [vocab, dim], "m": m, "k": k, "iters": iters}
        key |= {"init": init, "seed": seed, "sample_rows": n_fit, "tol": tol, "backend": backend}
        key |= {"fit_version": FIT_VERSION} | ({} if w is None else {"row_weights_sha256": cache.matrix_checksum(w)})
        hit = cache.load(cache_dir, key)
        if hit is not None:
            codes, codebooks, rel_error = hit
            return PQResult(codes=codes.long().to(e.device), codebooks=codebooks.to(e.device), rel_error=rel_error)

    if backend == "faiss":
        if init != "random":
            log.info("faiss seeds k-means with random rows and runs every iteration: init=%s and tol are unused", init)
        codes, codebooks = _fit_faiss(e, m, k, n_fit=n_fit, iters=iters, seed=seed, progress=progress)
    else:
        codes, codebooks = _fit_torch(
            e, m, k, n_fit=n_fit, iters=iters, init=init, seed=seed, tol=tol, progress=progress, weights=w
        )
    rel_error = _relative_error(e, codes, codebooks)
    log.info("PQ of %dx%d with m=%d k=%d (%s): rel_error %.4f", vocab, dim, m, k, backend, rel_error)
    if cache_dir is not None:
        try:
            cache.store(cache_dir, key, codes.to(smallest_code_dtype(k)), codebooks, rel_error)
        except OSError as err:  # a read-only or full disk costs the next run a refit, not this run its result
            log.warning("could not write the PQ cache in %s: %s", cache_dir, err)
    return PQResult(codes=codes, codebooks=codebooks, rel_error=rel_error)
