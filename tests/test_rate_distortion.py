"""experiments.rate_distortion: the water-filling bound against closed forms, and the cells read from a study."""

from __future__ import annotations

import json
import math

import pytest
import torch

from experiments import rate_distortion as rd


def flat(eigenvalues: list[float], vocab: int = 1) -> dict:
    """A spectrum of centred rows, each of squared norm the eigenvalues' sum."""
    lam = torch.tensor(eigenvalues, dtype=torch.float64)
    return {"eigenvalues": lam, "row_sq": torch.full((vocab,), float(lam.sum()), dtype=torch.float64)}


@pytest.mark.parametrize("bits", [0, 8, 96, 400])
def test_white_spectrum_loses_half_a_bit_of_error_per_bit_per_dimension(bits):
    # d equal eigenvalues: every dimension gets bits / d, and the error is 2^(-bits / d)
    assert rd.bound_error(flat([1.0] * 48, vocab=10), bits) == pytest.approx(2 ** (-bits / 48), rel=1e-6)


def test_water_filling_gives_bits_to_the_large_eigenvalue_first():
    spec = flat([4.0, 1.0])
    # half a bit: theta = 2 covers the small one, D = 2 + 1
    assert rd.bound_error(spec, 0.5) == pytest.approx(math.sqrt(3 / 5), rel=1e-6)
    # two bits: both active at theta = 1/2, D = 1
    assert rd.bound_error(spec, 2) == pytest.approx(math.sqrt(1 / 5), rel=1e-6)


def test_row_weights_share_the_bits_as_the_weighted_variances_ask():
    # one dimension of variance 1, rows weighted 4 and 1: the components of variance 4 and 1 of the case above
    spec = {"eigenvalues": torch.tensor([1.0], dtype=torch.float64), "row_sq": torch.ones(2, dtype=torch.float64)}
    weights = torch.tensor([4.0, 1.0])
    assert rd.bound_error(spec, 0.25, weights) == pytest.approx(math.sqrt(3 / 5), rel=1e-6)  # 0.5 bits, all to row 0
    assert rd.bound_error(spec, 1.0, weights) == pytest.approx(math.sqrt(1 / 5), rel=1e-6)
    assert rd.bound_error(spec, 0.25) == pytest.approx(2**-0.25, rel=1e-6)  # unweighted: a quarter bit each
    # a row of weight 0 takes no bits: the other row gets them all
    assert rd.bound_error(spec, 0.5, torch.tensor([1.0, 0.0])) == pytest.approx(0.5, rel=1e-6)
    # uniform weights are the unweighted bound
    white = flat([1.0, 2.0, 3.0], vocab=5)
    assert rd.bound_error(white, 3.0, torch.full((5,), 7.0)) == pytest.approx(rd.bound_error(white, 3.0), rel=1e-6)


def test_spectrum_of_a_scaled_gaussian_and_the_inverse_budget():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(40_000, 4, generator=gen) * torch.tensor([2.0, 1.0, 1.0, 0.5]) + 3.0
    spec = rd.spectrum(weight)
    assert spec["eigenvalues"].tolist() == pytest.approx([0.25, 1.0, 1.0, 4.0], rel=0.05)
    assert spec["row_sq"].sum() == pytest.approx(float((weight.double() ** 2).sum()))
    pct = rd.bytes_for_error(spec, 4, 0.2)  # the mean (3.0 per dimension) is free: the error starts below 1
    assert rd.bound_error(spec, rd.budget_bits(pct, 4)) == pytest.approx(0.2, abs=1e-6)
    assert rd.bound_error(spec, rd.budget_bits(0.99 * pct, 4)) > 0.2
    assert rd.budget_bits(1, 384) == pytest.approx(122.88)


def run(score: float, error: float, bytes_pct: float) -> dict:
    return {"scores": {"test/avg/f1": score}, "compression": {"rel_error": error, "bytes_kept_pct_packed": bytes_pct}}


STUDY = {
    "none": {"tests": {"none_s1": run(50.0, 0.0, 100.0), "none_s2": run(52.0, 0.0, 100.0)}},
    "pq": {
        "tests": {"pq_s1": run(48.0, 0.58, 3.0), "pq_s2": run(50.0, 0.60, 3.0)},
        "bytes": {
            "": {"1": {"pq_b1_s1": run(30.0, 0.8, 1.0), "pq_b1_s2": None}, "2": {}},
            "float16 codebooks": {"5": {"pq_f16_s1": run(51.0, 0.4, 4.9)}},
        },
    },
}


def test_cells_are_the_fully_run_configurations_against_the_dense_mean():
    cells = rd.study_cells(STUDY, "test/avg/f1")
    assert [c["cell"] for c in cells] == [
        "pq at 0.4% of the parameters",  # the 1% cell misses a seed and the 2% one has none: both left out
        "pq, float16 codebooks at 5% of the bytes",
    ]
    assert cells[0] | {} == {
        "cell": "pq at 0.4% of the parameters",
        "seeds": 2,
        "bytes_pct": 3.0,
        "rel_error": pytest.approx(0.59),
        "score_pct": pytest.approx(100 * 49 / 51),
    }


def test_report_traces_the_kept_cells_error_back_to_bytes(monkeypatch):
    weight = torch.randn(5_000, 16, generator=torch.Generator().manual_seed(1))
    monkeypatch.setitem(rd.MATRICES, "gauss", ("a Gaussian", "none"))
    row = rd.measure("gauss", weight, STUDY, "test/avg/f1")
    assert [b["bytes_pct"] for b in row["bound"]] == list(rd.BUDGETS)
    assert [b["rel_error"] for b in row["bound"]] == sorted((b["rel_error"] for b in row["bound"]), reverse=True)
    kept = row["kept"]  # 96.1% and 100% of dense kept; the highest error among them is the 0.4%-parameters cell's
    assert kept["cell"] == "pq at 0.4% of the parameters" and kept["rel_error"] == pytest.approx(0.59)
    assert rd.bound_error(rd.spectrum(weight), rd.budget_bits(kept["bound_bytes_pct"], 16)) == pytest.approx(0.59)
    text = rd.report([row], ["- e5: no matrix"])
    assert f"The bound reaches that error only at {kept['bound_bytes_pct']:.2f}% of the bytes" in text
    assert "| pq at 0.4% of the parameters | 2 | 3.000 | 0.590 |" in text
    assert text.rstrip().endswith("- e5: no matrix")
    assert "Every cell's fit sits" in text


def test_unigram_weights_come_from_sentencepiece_scores(tmp_path):
    pieces = [["<s>", 0.0], ["a", math.log(0.5)], ["b", math.log(0.25)]]
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": pieces}}))
    weights = rd.unigram_weights(tmp_path / "tokenizer.json", 4)  # one embedding row past the pieces
    assert weights.tolist() == pytest.approx([0.4, 0.4, 0.2, 0.0])  # the control symbol at the likeliest piece's
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}))
    assert rd.unigram_weights(tmp_path / "tokenizer.json", 4) is None
    assert rd.unigram_weights(tmp_path / "absent.json", 4) is None


def test_weighted_bound_needs_fewer_bytes_where_few_rows_carry_the_weight(monkeypatch):
    weight = torch.randn(2_000, 16, generator=torch.Generator().manual_seed(2))
    monkeypatch.setitem(rd.MATRICES, "gauss", ("a Gaussian", "none"))
    unigram = torch.zeros(2_000, dtype=torch.float64)
    unigram[:20] = 1 / 20  # a hundredth of the rows carry every occurrence
    row = rd.measure("gauss", weight, STUDY, "test/avg/f1", unigram)
    assert all(b["weighted"] < b["rel_error"] for b in row["bound"])
    assert row["kept"]["weighted_bytes_pct"] < row["kept"]["bound_bytes_pct"]
    text = rd.report([row], [])
    assert f"the bound reaches that error at {row['kept']['weighted_bytes_pct']:.2f}% of the bytes" in text
    assert "no unigram tokenizer" in rd.report([rd.measure("gauss", weight, STUDY, "test/avg/f1")], [])
