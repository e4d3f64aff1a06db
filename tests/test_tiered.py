"""Frequency-tiered ASG: exact where every tier keeps all its rows, the lookup agrees with the dense matrix it
stands for, every tier trains, and the byte budget and its errors hold."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asg.methods import get_method
from asg.results import exported_bytes_pct
from asg.tiered import TieredEmbedding
from tests.test_baselines import asg_cfg, fit, random_weight

TIERS = {"tier_fractions": [0.25, 0.5], "tier_m": [8, 4, 2]}


def test_tiers_with_one_centroid_per_row_are_lossless():
    weight = random_weight(96, 16)  # tiers of 24, 24 and 48 ids; k=24 gives each of the first two a centroid per id
    module = fit(weight, "tiered", **TIERS, k=24)
    assert [t.num_embeddings for t in module.tiers] == [24, 24, 48] and [t.m for t in module.tiers] == [8, 4, 2]
    first = module.dense_weight()[:48]
    assert torch.equal(first, weight[:48])
    ids = torch.randint(0, 48, (3, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(module(ids), F.embedding(ids, weight))


def fit_by_frequency(weight, row_weights, **overrides):
    """Tiers filled by the rows' weights, as asg.tier_order=frequency asg.row_weights=... builds them."""
    spec = get_method("tiered")
    cfg = asg_cfg("tiered", **(TIERS | {"tier_order": "frequency", "row_weights": "train"} | overrides))
    return spec.build(weight, spec.resolve(cfg, *weight.shape), None, row_weights=row_weights)


def test_frequency_tiers_put_the_heaviest_rows_first_and_stay_exact_there():
    weight = random_weight(96, 16)
    row_weights = torch.rand(96, generator=torch.Generator().manual_seed(1))
    module = fit_by_frequency(weight, row_weights, k=24)  # 24 ids in each of the first two tiers: lossless there
    heaviest = torch.argsort(row_weights, descending=True)[:48]
    assert sorted(module.tier_of[heaviest].tolist()) == [0] * 24 + [1] * 24
    assert torch.equal(module(heaviest), weight[heaviest])
    assert torch.equal(module.dense_weight()[heaviest], weight[heaviest])
    assert module.code_tables()["tier_of"] == 3 and module.stats()["tier_order"] == "frequency"


@pytest.mark.parametrize("order", ["id", "frequency"])
def test_lookup_logits_and_gradients_follow_the_dense_matrix(order):
    weight = random_weight(300, 16)
    if order == "id":
        module = fit(weight, "tiered", **TIERS, k=8)
    else:
        module = fit_by_frequency(weight, torch.rand(300, generator=torch.Generator().manual_seed(1)), k=8)
    dense = module.dense_weight()
    ids = torch.tensor([[0, 74, 75, 149, 150, 299], [5, 5, 200, 100, 1, 298]])  # both sides of every tier's edge
    assert torch.equal(module(ids), F.embedding(ids, dense))
    hidden = torch.randn(2, 3, 16)
    torch.testing.assert_close(module.logits(hidden), hidden @ dense.T)
    module(ids).square().sum().backward()
    assert all(t.codebooks.grad is not None and t.codebooks.grad.abs().sum() > 0 for t in module.tiers)
    assert module.rel_error == pytest.approx((weight - dense).norm().item() / weight.norm().item(), rel=1e-5)
    with pytest.raises(IndexError):
        module(torch.tensor([300]))


@pytest.mark.parametrize("order", ["id", "frequency"])
def test_spec_rebuilds_the_same_shapes(order):
    weight = random_weight(300, 16)
    if order == "id":
        module = fit(weight, "tiered", **TIERS, k=8)
    else:  # the rebuilt module's placeholder map is replaced by the stored one, and its row index follows
        module = fit_by_frequency(weight, torch.rand(300, generator=torch.Generator().manual_seed(1)), k=8)
    empty = TieredEmbedding.from_spec(module.spec())
    empty.load_state_dict(module.state_dict())
    ids = torch.arange(300)
    assert torch.equal(empty(ids), module(ids))


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_budget_bytes_pct_sizes_the_tiers_within_five_percent(storage):
    vocab, dim = 250037, 384
    cfg = asg_cfg("tiered", tier_fractions=[0.08, 0.4], tier_m=[32, 16, 4], budget_bytes_pct=1.0, storage_dtype=storage)
    settings = get_method("tiered").resolve(cfg, vocab, dim)
    rows, k, width = settings["tier_rows"], settings["k"], {"float32": 4, "float16": 2}[storage]
    assert rows == [20003, 80012, 150022]
    bits = (k - 1).bit_length()  # one code, bit-packed
    stored = sum(k * dim * width + math.ceil(r * m * bits / 8) for r, m in zip(rows, [32, 16, 4], strict=True))
    assert abs(stored - 0.01 * vocab * dim * 4) <= 0.05 * 0.01 * vocab * dim * 4
    module = fit(random_weight(3000, 48), "tiered", **TIERS, budget_bytes_pct=20.0, storage_dtype=storage)
    assert exported_bytes_pct(module.stats()) == pytest.approx(20.0, rel=0.05)
    # by frequency, the stored tier map (2 bits a row for 3 tiers) is counted in the budget
    ordered = get_method("tiered").resolve(cfg | {"tier_order": "frequency", "row_weights": "train"}, vocab, dim)
    tier_map = math.ceil(vocab * 2 / 8)
    stored = sum(
        ordered["k"] * dim * width + math.ceil(r * m * (ordered["k"] - 1).bit_length() / 8)
        for r, m in zip(rows, [32, 16, 4], strict=True)
    )
    assert abs(stored + tier_map - 0.01 * vocab * dim * 4) <= 0.05 * 0.01 * vocab * dim * 4
    row_weights = torch.rand(3000, generator=torch.Generator().manual_seed(0))
    module = fit_by_frequency(random_weight(3000, 48), row_weights, budget_bytes_pct=20.0, storage_dtype=storage)
    module.storage_dtype = getattr(torch, storage)
    assert exported_bytes_pct(module.stats()) == pytest.approx(20.0, rel=0.05)
    assert module.stats()["code_bytes_packed"] == math.ceil(3000 * 2 / 8) + sum(
        math.ceil(t.num_embeddings * t.m * (t.k - 1).bit_length() / 8) for t in module.tiers
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"tier_m": [8, 4]}, r"asg.tier_m=\[8, 4\] needs one entry more than asg.tier_fractions"),
        ({"tier_fractions": [0.5, 0.25]}, "must increase strictly within"),
        ({"tier_fractions": [0.25, 1.0]}, "must increase strictly within"),
        ({"tier_m": [8, 5, 2]}, "asg.m=5 does not divide hidden size 16"),
        ({"k": 30}, "k=30 centroids exceed the smallest tier's 25 ids"),
        ({"budget_bytes_pct": 0.01}, r"cannot be met .* by tiered with asg.tier_m=\[8, 4, 2\]"),
        ({"tier_order": "rank"}, "asg.tier_order='rank' is not one of id, frequency"),
        ({"tier_order": "frequency"}, "set asg.row_weights=train"),
    ],
)
def test_bad_tier_settings_fail_early_with_the_fix(overrides, match):
    with pytest.raises(ValueError, match=match):
        get_method("tiered").resolve(asg_cfg("tiered", **(TIERS | overrides)), 100, 16)


def test_e5_vocabulary_is_in_unigram_probability_order(e5_dir):
    """What the tiers rest on: a sentencepiece vocabulary lists its pieces by score, so low ids are frequent."""
    import json
    from pathlib import Path

    model = json.loads((Path(e5_dir) / "tokenizer.json").read_text())["model"]
    assert model["type"] == "Unigram"
    scores = [score for _, score in model["vocab"][4:]]  # after <s>, <pad>, </s>, <unk>
    rises = sum(b > a for a, b in zip(scores, scores[1:], strict=False))
    assert len(scores) > 249_000 and rises <= 1  # the one rise: <mask>, the last piece
