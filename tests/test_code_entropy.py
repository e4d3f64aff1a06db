"""experiments.code_entropy: bits per code of a fitted table, packed, mixed-radix and at its entropy."""

from __future__ import annotations

import math

import pytest
import torch

from experiments import code_entropy


def test_entropy_of_code_columns_in_bits():
    uniform = torch.arange(64).repeat(10).unsqueeze(1)  # every one of 64 codes equally often: 6 bits
    skewed = torch.tensor([0, 0, 0, 1]).unsqueeze(1)  # p = 3/4, 1/4
    assert code_entropy.entropy_bits(uniform, 64) == pytest.approx(6.0)
    assert code_entropy.entropy_bits(skewed, 2) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert code_entropy.entropy_bits(torch.cat([uniform[:4], skewed], 1), 64) == pytest.approx(
        (2.0 + code_entropy.entropy_bits(skewed, 2)) / 2  # the mean over sub-spaces; 4 distinct codes: 2 bits
    )


def test_savings_are_shares_of_the_exported_bytes():
    weight = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    row = code_entropy.measure(weight, m=4, k=33, cache_dir=None)  # 33 centroids: 6 bits packed, 5.04 mixed-radix
    assert (row["packed_bits"], row["log2_k"]) == (6, pytest.approx(math.log2(33)))
    assert row["entropy_bits"] <= row["log2_k"] + 1e-9  # no histogram of 33 codes beats a uniform one
    codes = 2000 * 4 * 6 // 8
    assert row["exported_bytes"] == codes + 4 * 33 * 4 * 2  # packed table + float16 codebooks
    assert row["radix_saving_pct"] == pytest.approx(100 * (6 - math.log2(33)) * 2000 * 4 / 8 / row["exported_bytes"])
    assert row["entropy_saving_pct"] >= row["radix_saving_pct"]
