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


def run(score: float, error: float, bytes_pct: float, **asg) -> dict:
    compression = {"rel_error": error, "bytes_kept_pct_packed": bytes_pct}
    return {"scores": {"test/avg/f1": score}, "compression": compression, "asg": {"method": "pq", "seed": 1} | asg}


STUDY = {
    "none": {"tests": {"none_s1": run(50.0, 0.0, 100.0), "none_s2": run(52.0, 0.0, 100.0)}},
    "pq": {
        "tests": {"pq_s1": run(48.0, 0.58, 3.0, m=4, k=8), "pq_s2": run(50.0, 0.60, 3.0, m=4, k=8)},
        "bytes": {
            "": {"1": {"pq_b1_s1": run(30.0, 0.8, 1.0), "pq_b1_s2": None}, "2": {}},
            "float16 codebooks": {"5": {"pq_f16_s1": run(51.0, 0.4, 4.9, m=4, k=16)}},
        },
    },
}


def test_cells_are_the_fully_run_configurations_against_the_dense_mean():
    cells = rd.study_cells(STUDY, "test/avg/f1")
    assert [c["cell"] for c in cells] == [
        "pq at 0.4% of the parameters",  # the 1% cell misses a seed and the 2% one has none: both left out
        "pq, float16 codebooks at 5% of the bytes",
    ]
    assert cells[0] == {
        "cell": "pq at 0.4% of the parameters",
        "seeds": 2,
        "bytes_pct": 3.0,
        "rel_error": pytest.approx(0.59),
        "score_pct": pytest.approx(100 * 49 / 51),
        "asg": {"method": "pq", "seed": 1, "m": 4, "k": 8},  # the first seed's, to fit it again
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
    spec, error = rd.spectrum(weight), row["kept"]["rel_error"]
    assert rd.bytes_for_error(spec, 16, error, unigram) < row["kept"]["bound_bytes_pct"]
    assert "kept_unigram" not in row  # without --refit no cell's weighted error is known
    assert "no unigram tokenizer" in rd.report([rd.measure("gauss", weight, STUDY, "test/avg/f1")], [])


def test_weighted_error_weights_rows_by_use_and_is_the_relative_error_with_unit_counts():
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    approx = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])  # row errors^2: 0, 1, 1; norms^2: 25, 1, 4
    assert rd.weighted_error(weight, approx, torch.ones(3, dtype=torch.float64)) == pytest.approx((2 / 30) ** 0.5)
    counts = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)  # row 1 twice, row 0 once, row 2 never
    assert rd.weighted_error(weight, approx, counts) == pytest.approx((2 / 27) ** 0.5)


def test_refit_measures_each_cells_unigram_error_and_traces_the_kept_ones_to_the_weighted_bound(monkeypatch):
    weight = torch.randn(2_000, 16, generator=torch.Generator().manual_seed(3))
    unigram = torch.rand(2_000, generator=torch.Generator().manual_seed(4), dtype=torch.float64).pow(8)
    unigram /= unigram.sum()
    monkeypatch.setitem(rd.MATRICES, "gauss", ("a Gaussian", "none"))
    row = rd.measure("gauss", weight, STUDY, "test/avg/f1", unigram, refit=True)
    by_cell = {c["cell"]: c for c in row["cells"]}
    cell = by_cell["pq at 0.4% of the parameters"]
    approx = rd.fit(weight, {"method": "pq", "seed": 1, "m": 4, "k": 8}).dense_weight().detach()
    assert cell["unigram_error"] == pytest.approx(rd.weighted_error(weight, approx, unigram))
    assert cell["weighted_bound"] == pytest.approx(
        rd.bound_error(rd.spectrum(weight), rd.budget_bits(3.0, 16), unigram)
    )
    assert cell["fit_seed"] == 1 and "asg" not in cell  # the config is not written to the results
    worst = max(by_cell.values(), key=lambda c: c["unigram_error"])  # both cells kept >= 95% of dense
    kept = row["kept_unigram"]
    assert kept["cell"] == worst["cell"]
    spec = rd.spectrum(weight)
    assert rd.bound_error(spec, rd.budget_bits(kept["weighted_bytes_pct"], 16), unigram) == pytest.approx(
        worst["unigram_error"]
    )
    text = rd.report([row], [])
    assert "| unigram-weighted error (refit) | weighted bound | above it |" in text
    assert f"| {cell['unigram_error']:.3f} (seed 1) | {cell['weighted_bound']:.3f} |" in text
    assert f"reaches that error at {kept['weighted_bytes_pct']:.2f}% of the bytes" in text
    plain = rd.report([rd.measure("gauss", weight, STUDY, "test/avg/f1", unigram)], [])
    assert "run with --refit" in plain and "unigram-weighted error (refit)" not in plain
    weighted_cfg = {"method": "pq", "seed": 1, "m": 4, "k": 8, "row_weights": "unigram", "row_weight_power": 1.0}
    with pytest.raises(ValueError, match="needs a sentencepiece unigram tokenizer.*set asg.row_weights=train"):
        rd.fit(weight, weighted_cfg)  # a weighted cell without the probabilities to weigh it
