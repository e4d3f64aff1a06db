"""The output head's factorised logits equal the dense product hidden @ W.T, forward and backward, per method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, MT5ForConditionalGeneration

import asg.embedding
from asg.baselines import LowRankEmbedding, RQEmbedding, SGEmbedding
from asg.embedding import ASGEmbedding, CompressedEmbedding
from asg.opq import OPQEmbedding
from asg.surgery import ASGOutputHead, compress_model
from asg.tiered import TieredEmbedding
from tests.test_baselines import asg_cfg
from tests.test_surgery import ids_for, untie_head

VOCAB, DIM = 301, 16
METHODS = ("pq", "sg", "rq", "lowrank", "opq", "tiered")


def random_embedding(method: str, seed: int = 0) -> CompressedEmbedding:
    """A compressed embedding with random codes and trained tensors: the logits' algebra needs no fit."""
    g = torch.Generator().manual_seed(seed)
    if method == "pq":  # centroid 6 of every sub-space unused: its gradient is zero, as the dense product's
        return ASGEmbedding(torch.randint(0, 6, (VOCAB, 4), generator=g), torch.randn(4, 7, DIM // 4, generator=g))
    if method == "sg":
        return SGEmbedding(torch.randint(0, 9, (VOCAB, 1), generator=g), torch.randn(1, 9, DIM, generator=g))
    if method == "rq":
        codes = torch.randint(0, 5, (VOCAB, 3, 2), generator=g)  # 3 stages of 2 sub-spaces
        return RQEmbedding(codes, torch.randn(3, 2, 5, DIM // 2, generator=g))
    if method == "opq":  # a random orthogonal rotation after pq's codes
        rotation = torch.linalg.qr(torch.randn(DIM, DIM, generator=g, dtype=torch.float64))[0].float()
        codes, codebooks = torch.randint(0, 6, (VOCAB, 4), generator=g), torch.randn(4, 7, DIM // 4, generator=g)
        return OPQEmbedding(codes, codebooks, rotation)
    if method == "tiered":  # id ranges of 100, 101 and 100 tokens at 4, 2 and 1 sub-spaces
        return TieredEmbedding(
            [
                ASGEmbedding(torch.randint(0, 6, (rows, m), generator=g), torch.randn(m, 7, DIM // m, generator=g))
                for rows, m in ((100, 4), (101, 2), (100, 1))
            ]
        )
    return LowRankEmbedding(torch.randn(VOCAB, 3, generator=g), torch.randn(3, DIM, generator=g))


def dense_forward(head: ASGOutputHead, hidden: torch.Tensor) -> torch.Tensor:
    """The head as it was: the (V, d) matrix rebuilt, then one matmul."""
    return F.linear(hidden, head.weight.to(hidden.dtype), head.bias)


def forward_and_grads(fn, hidden: torch.Tensor, module: torch.nn.Module, upstream: torch.Tensor):
    """Logits, and the gradients of <logits, upstream> w.r.t. the hidden states and every parameter."""
    hidden = hidden.detach().requires_grad_()
    logits = fn(hidden)
    params = [p for _, p in sorted(module.named_parameters())]
    grads = torch.autograd.grad(logits, [hidden, *params], upstream)
    return logits.detach(), grads


@pytest.mark.parametrize("chunk", [None, 40])  # 40 elements: many vocabulary chunks, the last one short
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_logits_and_gradients_equal_the_dense_product(monkeypatch, method, bias, chunk):
    if chunk is not None:
        monkeypatch.setattr(asg.embedding, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(1)
    head = ASGOutputHead(random_embedding(method), torch.randn(VOCAB, generator=g) if bias else None)
    hidden = torch.randn(2, 3, DIM, generator=g)
    upstream = torch.randn(2, 3, VOCAB, generator=g)
    logits, grads = forward_and_grads(head, hidden, head, upstream)
    dense_logits, dense_grads = forward_and_grads(lambda h: dense_forward(head, h), hidden, head, upstream)
    assert logits.shape == (2, 3, VOCAB)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-5, atol=1e-5)
    assert len(grads) == 1 + len(list(head.embedding.parameters())) + bias  # hidden, the method's tensors, bias
    for grad, dense_grad in zip(grads, dense_grads, strict=True):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grad, dense_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_head_never_builds_the_dense_matrix(method):
    head = ASGOutputHead(random_embedding(method))

    def refuse() -> torch.Tensor:
        raise AssertionError("the forward built the (V, d) matrix")

    head.embedding.dense_weight = refuse  # the `weight` property goes through it too
    hidden = torch.randn(5, DIM, requires_grad=True)
    head(hidden).sum().backward()  # any leading shape: here (N, d)
    assert hidden.grad.shape == (5, DIM) and all(p.grad is not None for p in head.embedding.parameters())
    with pytest.raises(AssertionError, match="built the"):
        head.weight  # noqa: B018 - still there for readers of head.weight, and it builds the matrix


def close_in_norm(actual: torch.Tensor, expected: torch.Tensor, tol: float = 2e-2) -> bool:
    """Relative Frobenius error within tol: half precision rounds every element (bfloat16's eps is 7.8e-3)."""
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item() < tol


@pytest.mark.parametrize("method", METHODS)
def test_half_precision_follows_the_hidden_states(method):
    g = torch.Generator().manual_seed(2)
    head = ASGOutputHead(random_embedding(method), torch.randn(VOCAB, generator=g))
    hidden, upstream = torch.randn(2, 3, DIM, generator=g), torch.randn(2, 3, VOCAB, generator=g)
    exact, exact_grads = forward_and_grads(lambda h: dense_forward(head, h), hidden, head, upstream)
    for dtype in (torch.bfloat16, torch.float16):  # half hidden states, float32 codebooks: computed in half
        logits, grads = forward_and_grads(head, hidden.to(dtype), head, upstream.to(dtype))
        assert logits.dtype == grads[0].dtype == dtype  # the float32 tensors get float32 gradients
        assert all(grad.dtype == torch.float32 for grad in grads[1:])
        assert close_in_norm(logits, exact)
        assert all(close_in_norm(grad, exact_grad) for grad, exact_grad in zip(grads, exact_grads, strict=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, dense = head(hidden), dense_forward(head, hidden)
    assert logits.dtype == dense.dtype == torch.bfloat16
    assert close_in_norm(logits, exact) and close_in_norm(dense, exact)


def model_logits_and_grads(model, batch: dict[str, torch.Tensor]):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    head = model.get_output_embeddings()
    return out.logits.detach(), {name: p.grad.clone() for name, p in head.named_parameters()}


@pytest.mark.parametrize("method", METHODS)
def test_tied_mlm_head_matches_the_dense_head(tiny_dirs, monkeypatch, method):
    model = AutoModelForMaskedLM.from_pretrained(tiny_dirs["mbert"]).eval()
    stats = compress_model(model, asg_cfg(method, m=4, k=32, rank=2, stages=2))
    assert stats["head"] == "tied" and stats["rel_error"] > 0.1  # lossy: the codes matter
    ids = ids_for(model)
    batch = {"input_ids": ids, "labels": ids}
    logits, grads = model_logits_and_grads(model, batch)
    assert set(grads) >= {"bias"} and len(grads) > 1  # the shared tensors and the decoder's bias
    monkeypatch.setattr(ASGOutputHead, "forward", dense_forward)
    dense_logits, dense_grads = model_logits_and_grads(model, batch)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-4, atol=1e-4)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, dense_grads[name], rtol=1e-4, atol=1e-5)


def test_mt5_compressed_head_matches_the_dense_head(tiny_dirs, monkeypatch):
    model = untie_head(MT5ForConditionalGeneration.from_pretrained(tiny_dirs["mt5"]).eval())
    stats = compress_model(model, asg_cfg("pq", m=4, k=32, compress_head=True))
    assert stats["head"] == "compressed"
    batch = {"input_ids": ids_for(model), "labels": ids_for(model, length=5, seed=1)}
    logits, grads = model_logits_and_grads(model, batch)
    options = {"max_new_tokens": 6, "do_sample": False, "num_beams": 1}
    generated = model.generate(input_ids=batch["input_ids"], **options)
    monkeypatch.setattr(ASGOutputHead, "forward", dense_forward)
    dense_logits, dense_grads = model_logits_and_grads(model, batch)
    torch.testing.assert_close(logits, dense_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads["embedding.codebooks"], dense_grads["embedding.codebooks"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.generate(input_ids=batch["input_ids"], **options), generated, rtol=0, atol=0)
