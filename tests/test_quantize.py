"""Value checks for the product quantizer: exact round trips, monotone error, brute-force codes."""

import itertools
import json
import re
import sys

import pytest
import torch

from asg.quantize import kmeans, product_quantize, reconstruct, smallest_code_dtype


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

    assert [(r["setting"], r["backend"]) for r in rows] == [
        (name, backend) for name, *_ in pq_fit.QUICK_SETTINGS for backend in ("faiss", "torch")
    ]
    saved = json.loads((tmp_path / "pq_fit.json").read_text())
    assert saved["rows"] == rows and saved["threads"] == 1 and "Gaussian" in saved["data"]
    assert saved["command"].startswith("python -m experiments.pq_fit --quick")
    assert all(0 < r["rel_error"] < 1 and r["seconds"] > 0 for r in rows)
    assert all(r["ratio_torch_faiss"] > 0 for r in rows if r["backend"] == "torch")
    text = (tmp_path / "pq_fit.md").read_text()
    assert "| quick-a | 4,000 | 64 | 8 | 64 | torch |" in text and "synthetic" in text


@pytest.mark.parametrize(
    ("k", "dtype"),
    [(2, torch.uint8), (256, torch.uint8), (257, torch.int16), (32768, torch.int16), (32769, torch.int32)],
)
def test_smallest_code_dtype(k, dtype):
    assert smallest_code_dtype(k) == dtype
