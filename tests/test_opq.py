"""OPQ: lossless at k = V, recovers a rotated PQ-exact matrix that plain PQ cannot, and counts its rotation."""

from __future__ import annotations

import math

import pytest
import torch

from asg.embedding import ASGEmbedding
from asg.methods import get_method
from asg.opq import OPQEmbedding, learn_rotation
from tests.test_baselines import asg_cfg, fit


def _orthogonal(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0].float()


def test_every_row_its_own_centroid_reproduces_the_matrix():
    weight = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    opq = OPQEmbedding.from_embedding(weight, m=2, k=40, rounds=2, rotation_iters=2, rotation_rows=None)
    rotation = opq.rotation
    assert torch.allclose(rotation @ rotation.t(), torch.eye(8), atol=1e-5)  # orthogonal
    assert (opq.dense_weight() - weight).abs().max() < 1e-5 and opq.rel_error < 1e-5


def test_a_rotated_pq_exact_matrix_is_recovered_where_pq_is_not():
    # 2 sub-spaces of 4 dims, each taking one of 8 random sub-vectors: PQ with k=8 is exact on z, not on z @ Q
    g = torch.Generator().manual_seed(1)
    parts = [torch.randn(8, 4, generator=g)[torch.randint(0, 8, (2000,), generator=g)] for _ in range(2)]
    z = torch.cat(parts, 1) * torch.tensor([3.0] * 4 + [1.0] * 4)  # unequal sub-spaces: the split matters
    weight = z @ _orthogonal(8, 2).t()
    pq = ASGEmbedding.from_embedding(weight, m=2, k=8, seed=0)
    opq = OPQEmbedding.from_embedding(weight, m=2, k=8, seed=0, rounds=20, rotation_iters=10, rotation_rows=None)
    assert pq.rel_error > 0.3
    assert opq.rel_error < 0.5 * pq.rel_error


def test_rotation_learning_never_raises_the_sample_error_much():
    weight = torch.randn(3000, 16, generator=torch.Generator().manual_seed(3)) @ torch.randn(16, 16)
    rotation = learn_rotation(weight, m=4, k=16, rounds=4, iters=4, seed=0)
    after = ASGEmbedding.from_embedding(weight @ rotation, m=4, k=16, seed=0).rel_error
    before = ASGEmbedding.from_embedding(weight, m=4, k=16, seed=0).rel_error
    assert after < before  # correlated columns: a rotation helps


def test_bytes_are_the_stored_tensors():
    weight = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
    opq = OPQEmbedding.from_embedding(weight, m=3, k=20, rounds=1, rotation_iters=2)
    stats = opq.stats()
    stored = sum(t.numel() * t.element_size() for t in opq.state_dict().values())
    assert stats["bytes_after"] == stored == 300 * 3 * 1 + 3 * 20 * 4 * 4 + 12 * 12 * 4
    assert stats["params_after"] == 3 * 20 * 4 + 12 * 12 and stats["rotation_bytes"] == 12 * 12 * 4
    assert stats["bytes_kept_pct"] == pytest.approx(100 * stored / (300 * 12 * 4))


def test_forward_logits_and_dense_weight_agree():
    opq = OPQEmbedding(torch.randint(0, 5, (30, 2)), torch.randn(2, 5, 3), _orthogonal(6, 4))
    ids = torch.tensor([[1, 7, 29]])
    hidden = torch.randn(4, 6)
    assert torch.allclose(opq(ids), opq.dense_weight()[ids], atol=1e-6)
    assert torch.allclose(opq.logits(hidden), hidden @ opq.dense_weight().t(), atol=1e-5)


@pytest.mark.parametrize("budget", [1.0, 2.0])
def test_byte_budget_counts_the_rotation(budget):
    vocab, dim = 250037, 384
    settings = get_method("opq").resolve(asg_cfg("opq", m=4, budget_bytes_pct=budget), vocab, dim)
    k = settings["k"]
    stored = k * dim * 4 + math.ceil(vocab * 4 * (k - 1).bit_length() / 8) + dim * dim * 4  # codes bit-packed
    assert abs(stored - budget / 100 * vocab * dim * 4) <= 0.05 * budget / 100 * vocab * dim * 4
    pq_k = get_method("pq").resolve(asg_cfg("pq", m=4, budget_bytes_pct=budget), vocab, dim)["k"]
    assert k < pq_k  # the rotation's bytes come out of the codebooks


def test_fitted_module_meets_its_parameter_budget():
    weight = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    stats = fit(weight, "opq", m=4, budget_pct=5.0, rounds=1, rotation_iters=2, rotation_rows=None).stats()
    assert stats["params_after"] == pytest.approx(0.05 * 2000 * 16, abs=16)  # k rounds to whole centroids
    with pytest.raises(ValueError, match="below opq's rotation alone"):
        get_method("opq").resolve(asg_cfg("opq", m=4, budget_pct=0.1), 2000, 16)


def test_opq_fit_benchmark_quick_run_writes_its_table(tmp_path):
    from experiments import opq_fit

    [row] = opq_fit.main(["--quick", "--out-dir", str(tmp_path)])
    assert all(0 < row[key] < 1 for key in ("asg_pq", "faiss_pq", "asg_opq", "faiss_opq"))
    assert row["asg_opq"] < row["asg_pq"]  # a rotation learned on the same matrix does not lose
    assert "| Gaussian 3,000 x 32 | 4 | 16 |" in (tmp_path / "opq_fit.md").read_text()
