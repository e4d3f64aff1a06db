"""Parity: a lossless ASG (m=1, k=V: every row its own centroid) leaves each architecture's outputs unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForTokenClassification,
    MT5ForConditionalGeneration,
    MT5ForTokenClassification,
)

from asg.embedding import ASGEmbedding
from asg.surgery import ASGOutputHead, apply_asg


def ids_for(model, batch=2, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, (batch, length), generator=g)


def lossless(model):
    return apply_asg(model, m=1, k=model.config.vocab_size, iters=2, seed=0)


@pytest.mark.parametrize("family", ["mbert", "xlmr"])
def test_lossless_asg_keeps_encoder_logits(tiny_dirs, family):
    model = AutoModelForTokenClassification.from_pretrained(tiny_dirs[family], num_labels=5).eval()
    ids = ids_for(model)
    before = model(input_ids=ids).logits
    stats = lossless(model)
    assert isinstance(model.get_input_embeddings(), ASGEmbedding)
    assert stats["rel_error"] < 1e-6 and stats["head"] == "none"
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)


def test_lossless_asg_keeps_tied_mlm_head_tied(tiny_dirs):
    model = AutoModelForMaskedLM.from_pretrained(tiny_dirs["mbert"]).eval()
    ids = ids_for(model)
    before = model(input_ids=ids).logits  # (B, T, V) through the tied decoder
    stats = lossless(model)
    head = model.get_output_embeddings()
    assert stats["head"] == "tied"
    assert isinstance(head, ASGOutputHead) and head.embedding is model.get_input_embeddings()
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)


def untie_head(model):
    """The real mT5 layout: lm_head has its own weights (transformers 5.x ties it at load time)."""
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 0.5)
    return model


@pytest.mark.parametrize(("tied", "compress_head"), [(False, False), (False, True), (True, False)])
def test_lossless_asg_on_mt5_shares_one_embedding(tiny_dirs, tied, compress_head):
    model = MT5ForConditionalGeneration.from_pretrained(tiny_dirs["mt5"]).eval()
    if not tied:
        untie_head(model)
    ids, labels = ids_for(model), ids_for(model, length=5, seed=1)
    before = model(input_ids=ids, labels=labels).logits
    dense_head = model.lm_head
    stats = apply_asg(model, m=1, k=model.config.vocab_size, iters=2, compress_head=compress_head)
    asg = model.get_input_embeddings()
    assert isinstance(asg, ASGEmbedding)
    assert model.shared is asg and model.encoder.embed_tokens is asg and model.decoder.embed_tokens is asg
    if tied:
        assert stats["head"] == "tied" and model.lm_head.embedding is asg
    elif compress_head:
        assert stats["head"] == "compressed" and isinstance(model.lm_head, ASGOutputHead)
        assert model.lm_head.embedding is not asg  # untied: its own codebooks
    else:
        assert stats["head"] == "dense" and model.lm_head is dense_head
    torch.testing.assert_close(model(input_ids=ids, labels=labels).logits, before, rtol=1e-5, atol=1e-5)


def test_mt5_token_classification_swaps_the_encoder_embedding(tiny_dirs):
    model = MT5ForTokenClassification.from_pretrained(tiny_dirs["mt5"], num_labels=3).eval()
    ids = ids_for(model)
    before = model(input_ids=ids).logits
    lossless(model)
    assert model.transformer.encoder.embed_tokens is model.get_input_embeddings()
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)


def test_lossy_asg_changes_outputs_and_trains_only_codebooks(tiny_dirs):
    model = AutoModelForTokenClassification.from_pretrained(tiny_dirs["xlmr"], num_labels=5)
    ids = ids_for(model)
    before = model.eval()(input_ids=ids).logits
    stats = apply_asg(model, m=4, k=16, iters=5)
    assert stats["params_after"] == 16 * 32 and stats["rel_error"] > 0.1
    after = model(input_ids=ids).logits
    assert not torch.allclose(after, before, atol=1e-3)
    after.sum().backward()
    asg = model.get_input_embeddings()
    assert asg.codebooks.grad is not None and asg.codebooks.grad.abs().sum() > 0
    assert not asg.codes.is_floating_point() and asg.codes.grad is None


def test_mt5_generation_after_asg(tiny_dirs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["mt5"])
    model = untie_head(MT5ForConditionalGeneration.from_pretrained(tiny_dirs["mt5"]).eval())
    batch = tokenizer(
        ["question: Who? context: Anton Wilhelm lived in Paris.", "xnli premise: a hypothesis: b"],
        return_tensors="pt",
        padding=True,
    )
    options = {"max_new_tokens": 8, "do_sample": False, "num_beams": 1}
    before = model.generate(**batch, **options)
    lossless(model)
    torch.testing.assert_close(model.generate(**batch, **options), before, rtol=0, atol=0)

    with pytest.raises(TypeError, match="found ASGEmbedding"):
        lossless(model)  # compressing twice is refused
    model = untie_head(MT5ForConditionalGeneration.from_pretrained(tiny_dirs["mt5"]).eval())
    apply_asg(model, m=4, k=16, iters=3)  # lossy: still decodes through the shared ASG embedding
    texts = tokenizer.batch_decode(model.generate(**batch, **options), skip_special_tokens=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
