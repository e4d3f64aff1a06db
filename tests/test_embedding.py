"""Value checks for ASGEmbedding: lossless parity with nn.Embedding, exact accounting, gradients."""

import math

import pytest
import torch
from torch import nn

from asg import quantize
from asg.embedding import ASGEmbedding


def _random_module(vocab: int, m: int, k: int, s: int, **kwargs) -> ASGEmbedding:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (vocab, m), generator=gen)
    return ASGEmbedding(codes, torch.randn(m, k, s, generator=gen), **kwargs)


@pytest.mark.parametrize("m", [1, 4])
def test_lossless_matches_nn_embedding(m):
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 12, padding_idx=1)
    asg = ASGEmbedding.from_embedding(embedding, m=m, k=50, iters=2)
    ids = torch.randint(0, 50, (4, 7))
    assert torch.equal(asg(ids), embedding(ids))
    assert asg.padding_idx == 1 and asg.rel_error == 0.0
    assert (asg.num_embeddings, asg.embedding_dim, asg.m, asg.k) == (50, 12, m, 50)


def test_from_tensor_keeps_source_dtype_for_accounting():
    weight = torch.randn(40, 8).to(torch.bfloat16)
    asg = ASGEmbedding.from_embedding(weight, m=2, k=4, iters=2)
    assert asg.padding_idx is None
    assert asg.codebooks.dtype == torch.float32
    assert asg.stats()["bytes_before"] == 40 * 8 * 2


@pytest.mark.parametrize(("k", "dtype"), [(256, torch.uint8), (1024, torch.int16)])
def test_codes_stored_in_smallest_dtype(k, dtype):
    asg = _random_module(2000, 4, k, 3)
    assert asg.codes.dtype == dtype
    asg.to(torch.float64)  # casting the module must not touch the integer codes
    assert asg.codes.dtype == dtype and asg.codebooks.dtype == torch.float64


def test_stats_are_exact():
    asg = _random_module(2000, 4, 256, 4, rel_error=0.25, source_dtype=torch.float16)
    assert asg.stats() == {
        "vocab_size": 2000,
        "hidden_size": 16,
        "m": 4,
        "k": 256,
        "params_before": 32000,
        "params_after": 4096,  # k * d
        "params_kept_pct": 12.8,  # 100 * k / V
        "bytes_before": 64000,  # fp16 source
        "codebook_bytes": 16384,  # fp32 codebooks
        "code_bytes": 8000,  # V * m uint8
        "code_bytes_packed": 8000,  # 8 bits per code
        "bytes_after": 24384,
        "bytes_kept_pct": 100 * 24384 / 64000,
        "bytes_kept_pct_packed": 100 * 24384 / 64000,
        "rel_error": 0.25,
        "code_dtype": "torch.uint8",
    }


@pytest.mark.parametrize(("k", "bits", "itemsize"), [(1024, 10, 2), (100, 7, 1), (1, 0, 1)])
def test_packed_code_bytes_use_ceil_log2_k_bits(k, bits, itemsize):
    stats = _random_module(3001, 4, k, 2).stats()
    assert stats["code_bytes"] == 3001 * 4 * itemsize
    assert stats["code_bytes_packed"] == math.ceil(3001 * 4 * bits / 8)
    assert stats["params_after"] == k * 8
    assert stats["params_kept_pct"] == pytest.approx(100 * k / 3001)
    assert stats["bytes_after"] == stats["codebook_bytes"] + stats["code_bytes"]


def test_gradients_reach_codebooks_only_and_codes_are_saved():
    asg = _random_module(100, 4, 8, 3)
    assert [name for name, _ in asg.named_parameters()] == ["codebooks"]
    assert "codes" in asg.state_dict()
    ids = torch.tensor([[3, 3, 7]])
    asg(ids).sum().backward()
    grad = asg.codebooks.grad  # (m, k, s)
    # each used centroid gets one unit of gradient per lookup, unused ones none
    expected = torch.zeros(4, 8)
    for token in ids.flatten().tolist():
        expected[torch.arange(4), asg.codes[token].long()] += 1
    assert torch.equal(grad[..., 0], expected)
    assert not asg.codes.requires_grad


def test_state_dict_round_trip():
    source = _random_module(100, 4, 8, 3)
    target = ASGEmbedding(torch.zeros(100, 4, dtype=torch.long), torch.zeros(4, 8, 3))
    target.load_state_dict(source.state_dict())
    ids = torch.arange(100)
    assert torch.equal(target(ids), source(ids))


def test_dense_weight_matches_forward_and_is_differentiable():
    asg = _random_module(60, 3, 5, 2)
    dense = asg.dense_weight()  # (V, d)
    assert dense.shape == (60, 6)
    assert torch.equal(dense, asg(torch.arange(60)))
    dense.sum().backward()
    assert asg.codebooks.grad.abs().sum() > 0


def test_forward_shape_and_repr():
    asg = _random_module(30, 2, 4, 5, padding_idx=0)
    assert asg(torch.zeros(2, 3, 4, dtype=torch.long)).shape == (2, 3, 4, 10)
    assert asg(torch.tensor(5)).shape == (10,)
    assert "30, 10, m=2, k=4, padding_idx=0" in repr(asg)


def test_invalid_codes_are_rejected():
    with pytest.raises(ValueError, match="codes must lie in"):
        ASGEmbedding(torch.full((5, 2), 4), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="expected codes"):
        ASGEmbedding(torch.zeros(5, 3, dtype=torch.long), torch.zeros(2, 4, 3))


def _lookup_gradients(dtype: torch.dtype, sparse: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The codebook gradient of a lookup, through ASGEmbedding and through autograd's plain index_select, and the
    float64 sum that both round; repeated ids and shared centroids make many rows add into one codebook row."""
    gen = torch.Generator().manual_seed(0)
    m, k, s = 8, 16, 4
    codes, codebooks = torch.randint(0, k, (50, m), generator=gen), torch.randn(m, k, s, generator=gen).to(dtype)
    emb = ASGEmbedding(codes, codebooks, sparse=sparse)
    ids = torch.randint(0, 50, (6, 40), generator=gen)
    upstream = torch.randn(6, 40, m * s, generator=gen).to(dtype)
    emb(ids).backward(upstream)
    flat = (emb.codes.long().index_select(0, ids.reshape(-1)) + torch.arange(m) * k).reshape(-1)  # stacked rows
    plain = emb.codebooks.detach().clone().requires_grad_()
    plain.reshape(m * k, s).index_select(0, flat).view(6, 40, m * s).backward(upstream)
    exact = torch.zeros(m * k, s, dtype=torch.float64).index_add_(0, flat, upstream.double().reshape(-1, s))
    return emb.codebooks.grad, plain.grad, exact.view(m, k, s)


def test_lookup_gradient_equals_autograd_through_the_plain_gather():
    ours, plain, _ = _lookup_gradients(torch.float32)
    assert torch.equal(ours, plain)  # bit for bit: the same additions in the same order


def test_half_precision_lookup_gradient_is_rounded_once():
    ours, plain, exact = _lookup_gradients(torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    # summed in float32, then one rounding to bfloat16's 8 significant bits: within half a unit in the last place
    assert ((ours.double() - exact).abs() <= 2.0**-8 * exact.abs() + 1e-30).all()
    assert (ours.double() - exact).abs().max() <= (plain.double() - exact).abs().max()  # no worse than autograd's


def test_lookup_without_the_kernels_gives_the_same_vectors_and_gradients(monkeypatch):
    ours, _, _ = _lookup_gradients(torch.float32)
    monkeypatch.setattr(quantize.kernels, "gather", lambda codes, codebooks: None)
    monkeypatch.setattr(quantize.kernels, "scatter", lambda grad, codes, k: None)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # index_put_(accumulate=True) keeps index order on one thread only
        torch_path, plain, _ = _lookup_gradients(torch.float32)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch_path, ours) and torch.equal(torch_path, plain)


@pytest.mark.parametrize("kernels", [True, False])
def test_sparse_lookup_gradient_holds_every_row_and_coalesces_to_the_dense_one(kernels, monkeypatch):
    if not kernels:
        monkeypatch.setattr(quantize.kernels, "gather", lambda codes, codebooks: None)
    sparse, plain, _ = _lookup_gradients(torch.float32, sparse=True)
    assert sparse.is_sparse and sparse.shape == plain.shape == (8, 16, 4)
    assert sparse._nnz() == 6 * 40 * 8  # one row per looked-up sub-vector, added by the optimizer's coalesce
    summed = sparse.coalesce().to_dense()
    # coalesce's summation order is torch's to choose: equal to autograd's sums within float32 rounding
    torch.testing.assert_close(summed, plain)


def test_sparse_lookup_trains_with_sparse_optimizers_and_leaves_unused_rows():
    dense, sparse = _random_module(40, 4, 8, 3), _random_module(40, 4, 8, 3, sparse=True)
    assert "sparse=True" in repr(sparse) and "sparse" not in repr(dense)
    ids = torch.tensor([[1, 5, 5, 9]])
    upstream = torch.randn(1, 4, 12, generator=torch.Generator().manual_seed(1))
    for module in (dense, sparse):
        module(ids).backward(upstream)
        torch.optim.SGD(module.parameters(), lr=0.1).step()
    torch.testing.assert_close(sparse.codebooks, dense.codebooks)
    before = sparse.codebooks.detach().clone()
    sparse.codebooks.grad = None
    sparse(ids).backward(upstream)
    torch.optim.SparseAdam(sparse.parameters(), lr=0.1).step()
    used = torch.zeros(4, 8, dtype=torch.bool)
    used[torch.arange(4), sparse.codes[ids.flatten()].long()] = True
    changed = (sparse.codebooks.detach() != before).any(-1)
    assert torch.equal(changed, used)  # SparseAdam moved the looked-up centroids, and only those
